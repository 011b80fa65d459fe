"""SRT, WebVTT and JSON from segments and words; one safely named file per row."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from phaseo_notebook._subtitles import (
    MAX_CUE_SECONDS,
    MAX_LINE_CHARS,
    MAX_LINES,
    SubtitleRow,
    build_cues,
    format_timestamp,
    subtitle_file_names,
    to_json,
    to_srt,
    to_vtt,
    write_subtitles,
)

LONG_TEXT = (
    "And so my fellow Americans ask not what your country can do for you ask what you "
    "can do for your country and let the word go forth from this time and place"
)


def _words_for(text: str, start: float, end: float) -> list[dict[str, object]]:
    tokens = text.split()
    step = (end - start) / len(tokens)
    return [
        {"start": round(start + i * step, 3), "end": round(start + (i + 0.8) * step, 3), "word": w}
        for i, w in enumerate(tokens)
    ]


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (62.345, "00:01:02,345", "00:01:02.345"),
        (3599.9996, "01:00:00,000", "01:00:00.000"),
        (7322.5, "02:02:02,500", "02:02:02.500"),
        (-0.2, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps(seconds: float, srt: str, vtt: str) -> None:
    assert format_timestamp(seconds) == srt
    assert format_timestamp(seconds, fmt="vtt") == vtt


def test_srt_layout() -> None:
    segments = [
        {"start": 0.0, "end": 2.0, "text": " Hello there. "},
        {"start": 62.345, "end": 64.0, "text": "General Kenobi."},
    ]
    assert to_srt(segments) == (
        "1\n00:00:00,000 --> 00:00:02,000\nHello there.\n\n"
        "2\n00:01:02,345 --> 00:01:04,000\nGeneral Kenobi.\n"
    )


def test_cue_text_cannot_break_the_format() -> None:
    segments = [{"start": 0.0, "end": 1.0, "text": "a --> b <i>&</i>"}]
    assert to_vtt(segments).endswith("\na -&gt; b &lt;i&gt;&amp;&lt;/i&gt;\n")
    assert to_srt(segments).endswith("\na -> b <i>&</i>\n")


def test_vtt_layout() -> None:
    segments = [{"start": 0.5, "end": 2.0, "text": "Hello there."}]
    assert to_vtt(segments) == "WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello there.\n"
    assert to_vtt([]) == "WEBVTT\n\n"
    assert to_srt([]) == ""


def _check_cues(cues: list, start: float, end: float) -> None:
    for cue in cues:
        assert 1 <= len(cue.lines) <= MAX_LINES
        assert all(len(line) <= MAX_LINE_CHARS for line in cue.lines)
        assert cue.end - cue.start <= MAX_CUE_SECONDS + 1e-9
        assert start <= cue.start < cue.end <= end
    for before, after in itertools.pairwise(cues):
        assert before.end <= after.start


def test_long_segment_splits_at_word_times() -> None:
    segment = {"start": 10.0, "end": 40.0, "text": LONG_TEXT}
    words = _words_for(LONG_TEXT, 10.0, 40.0)
    cues = build_cues([segment], words)
    assert len(cues) >= 4
    _check_cues(cues, 10.0, 40.0)
    assert " ".join(" ".join(c.lines) for c in cues) == LONG_TEXT
    word_starts = {w["start"] for w in words}
    word_ends = {w["end"] for w in words}
    assert all(c.start in word_starts and c.end in word_ends for c in cues)


def test_long_segment_without_words_splits_by_characters() -> None:
    cues = build_cues([{"start": 0.0, "end": 30.0, "text": LONG_TEXT}])
    assert len(cues) >= 4
    _check_cues(cues, 0.0, 30.0)
    assert " ".join(" ".join(c.lines) for c in cues) == LONG_TEXT
    assert cues[0].start == 0.0 and cues[-1].end == pytest.approx(30.0)


def test_two_lines_are_balanced() -> None:
    text = "one two three four five six seven eight nine ten eleven"
    (cue,) = build_cues([{"start": 0, "end": 3, "text": text}])
    assert len(cue.lines) == 2
    assert abs(len(cue.lines[0]) - len(cue.lines[1])) <= 6


def test_short_segment_that_lasts_long_is_split_in_time() -> None:
    cues = build_cues([{"start": 0.0, "end": 20.0, "text": "a few words spoken very slowly"}])
    _check_cues(cues, 0.0, 20.0)
    assert len(cues) >= 3


def test_overlapping_segments_do_not_overlap_as_cues() -> None:
    cues = build_cues(
        [{"start": 0.0, "end": 3.0, "text": "first"}, {"start": 2.5, "end": 4.0, "text": "second"}]
    )
    assert cues[1].start == 3.0


def test_json_form() -> None:
    segments = [{"start": 0.0, "end": 2.0, "text": "hi there"}]
    words = [{"start": 0.0, "end": 0.5, "word": "hi"}, {"start": 0.6, "end": 2.0, "word": "there"}]
    body = json.loads(to_json(segments, words, text="hi there"))
    assert body["text"] == "hi there"
    assert body["segments"] == segments
    assert body["words"] == words
    assert body["cues"] == [{"start": 0.0, "end": 2.0, "text": "hi there"}]


def test_file_names_are_safe_and_distinct() -> None:
    names = subtitle_file_names(
        [
            "/data/calls/Call 1.wav",
            "/other/call 1.mp3",
            "C:\\rec\\call_1.m4a",
            "https://host/a/b/Interview%20%C3%A9t%C3%A9.mp3?X-Sig=abc",
            "../../etc/passwd",
            b"RIFF....",
            None,
            "...",
            "x" * 300 + ".wav",
            "rec/CON.wav",
        ],
        ".srt",
    )
    assert names[:4] == ["Call_1.srt", "call_1-2.srt", "call_1-3.srt", "Interview_été.srt"]
    assert names[4] == "passwd.srt"
    assert names[5:8] == ["audio.srt", "audio-2.srt", "audio-3.srt"]
    assert len(names[8]) <= 130
    assert names[9] == "_CON.srt"
    assert len({n.lower() for n in names}) == len(names)
    assert all(re.fullmatch(r"[\w.-]+", n) and not n.startswith(".") for n in names)


def test_write_subtitles_one_file_per_row(tmp_path: Path) -> None:
    segments = [{"start": 0.0, "end": 1.0, "text": "hello"}]
    rows = [
        ("talks/intro.wav", segments),
        ("other/intro.wav", segments, None),
        SubtitleRow("failed.wav", None),
        ("nan.wav", float("nan"), float("nan")),
    ]
    paths = write_subtitles(rows, tmp_path / "subs", fmt="vtt")
    assert [p.name for p in paths] == ["intro.vtt", "intro-2.vtt", "failed.vtt", "nan.vtt"]
    assert paths[0].read_text() == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhello\n"
    assert paths[2].read_text() == "WEBVTT\n\n"
    srt = write_subtitles(rows[:1], tmp_path / "subs", fmt="srt")
    assert srt[0].read_text().startswith("1\n00:00:00,000 --> 00:00:01,000\n")
    (js,) = write_subtitles([SubtitleRow("a.wav", segments, text="hello")], tmp_path, fmt="json")
    assert json.loads(js.read_text())["text"] == "hello"
    with pytest.raises(ValueError, match="format"):
        write_subtitles(rows, tmp_path, fmt="txt")  # type: ignore[arg-type]
