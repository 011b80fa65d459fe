"""Stitching chunk transcripts into a row's: text in order, times from the start of the file."""

from __future__ import annotations

from phaseo_notebook._stitch import PROMPT_MAX_CHARS, ChunkTranscript, chained_prompt, stitch


def test_text_is_the_chunks_texts_in_order() -> None:
    parts = [
        ChunkTranscript(20.0, 30.0, "  third\n"),
        ChunkTranscript(0.0, 10.0, "first  part"),
        ChunkTranscript(10.0, 20.0, ""),
        ChunkTranscript(30.0, 31.0, "fourth"),
    ]
    out = stitch(parts)
    assert out.text == "first part third fourth"
    assert out.duration == 31.0


def test_segments_and_words_are_shifted_by_the_chunks_start() -> None:
    parts = [
        ChunkTranscript(
            0.0,
            700.0,
            "ask not",
            segments=[{"id": 0, "start": 1.5, "end": 2.25, "text": "ask not", "avg_logprob": -0.2}],
            words=[
                {"start": 1.5, "end": 1.8, "word": "ask"},
                {"start": 1.9, "end": 2.25, "word": "not"},
            ],
        ),
        ChunkTranscript(
            700.0,
            1400.0,
            "what your country",
            segments=[{"id": 0, "start": 0.25, "end": 1.5, "text": "what your country"}],
            words=[{"start": 0.25, "end": 0.5, "word": "what"}],
        ),
    ]
    out = stitch(parts)
    assert [(s["id"], s["start"], s["end"], s["text"]) for s in out.segments] == [
        (0, 1.5, 2.25, "ask not"),
        (1, 700.25, 701.5, "what your country"),
    ]
    assert out.segments[0]["avg_logprob"] == -0.2  # other keys kept
    assert out.words == [
        {"start": 1.5, "end": 1.8, "word": "ask"},
        {"start": 1.9, "end": 2.25, "word": "not"},
        {"start": 700.25, "end": 700.5, "word": "what"},
    ]
    # The inputs are not modified.
    assert parts[1].segments is not None and parts[1].segments[0]["start"] == 0.25


def test_a_chunk_without_segments_becomes_one_segment() -> None:
    parts = [
        ChunkTranscript(0.0, 12.5, "hello", segments=[{"start": 0.5, "end": 1.0, "text": "hello"}]),
        ChunkTranscript(12.5, 30.0, "no segments here"),
        ChunkTranscript(30.0, 40.0, "  "),  # silence: no segment
    ]
    out = stitch(parts)
    assert [(s["start"], s["end"], s["text"]) for s in out.segments] == [
        (0.5, 1.0, "hello"),
        (12.5, 30.0, "no segments here"),
    ]
    assert out.words is None


def test_times_past_a_chunks_end_are_kept_inside_it() -> None:
    parts = [
        ChunkTranscript(0.0, 10.0, "a", segments=[{"start": 9.5, "end": 10.4, "text": "a"}]),
        ChunkTranscript(10.0, 20.0, "b", segments=[{"start": -0.1, "end": 0.5, "text": "b"}]),
        ChunkTranscript(20.0, 30.0, "c", segments=[{"start": "x", "end": 1, "text": "c"}]),
    ]
    out = stitch(parts)
    assert [(s["start"], s["end"]) for s in out.segments] == [(9.5, 10.0), (10.0, 10.5)]


def test_times_no_float_can_hold_are_dropped_not_fatal() -> None:
    # A hostile answer's integer of 400 digits: the item has no usable time, like "x" above.
    parts = [
        ChunkTranscript(0.0, 10.0, "a", segments=[{"start": 10**400, "end": 1, "text": "a"}]),
        ChunkTranscript(10.0, 20.0, "b", words=[{"start": 0.5, "end": 10**400, "word": "b"}]),
    ]
    out = stitch(parts)
    assert out.text == "a b" and out.words == []
    # Chunk "a"'s only segment is dropped; chunk "b" had none, so it is one segment whole.
    assert out.segments == [{"start": 10.0, "end": 20.0, "text": "b"}]


def test_no_chunks() -> None:
    out = stitch([])
    assert (out.text, out.segments, out.words, out.duration) == ("", [], None, 0.0)


def test_chained_prompt_keeps_the_end_of_the_previous_text_in_whole_words() -> None:
    previous = "ask not what your country can do for you"
    assert chained_prompt(previous, max_chars=20) == "can do for you"
    assert chained_prompt(previous, max_chars=18) == "can do for you"  # "can" starts the cut
    assert chained_prompt(previous) == previous
    assert chained_prompt(previous, "Names: JFK.", max_chars=30) == "Names: JFK. can do for you"
    assert chained_prompt("", None) is None
    assert chained_prompt("word " * 1000) == ("word " * 160).strip()
    assert len(chained_prompt("x" * 5000 + " tail") or "") <= PROMPT_MAX_CHARS
    assert chained_prompt(previous, "p" * 30, max_chars=20) == "p" * 30  # the user's prompt wins
