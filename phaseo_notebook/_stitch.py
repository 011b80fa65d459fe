"""Stitching: one row's result from the transcripts of its chunks.

Pure: no I/O, no HTTP. The text is the chunks' texts in order; segment and word times,
which each answer gives from the start of its own chunk, are shifted by the chunk's start
so all times are in seconds from the start of the original file. A chunk answered without
segments becomes one segment spanning the chunk.

Examples
--------
>>> parts = [
...     ChunkTranscript(0.0, 10.0, "hello there", [{"start": 1.0, "end": 2.0, "text": "hello there"}]),
...     ChunkTranscript(10.0, 20.0, " general kenobi "),
... ]
>>> out = stitch(parts)
>>> out.text
'hello there general kenobi'
>>> [(s["start"], s["end"]) for s in out.segments]
[(1.0, 2.0), (10.0, 20.0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._types import finite_float

__all__ = ["PROMPT_MAX_CHARS", "ChunkTranscript", "StitchedTranscript", "chained_prompt", "stitch"]


#: Whisper-family models read only the last 224 tokens of a prompt: about 800 characters.
PROMPT_MAX_CHARS: Final = 800


@dataclass(frozen=True, slots=True)
class ChunkTranscript:
    """One chunk's answer, with the chunk's span in the original file.

    Parameters
    ----------
    start, end : float
        The chunk's span in seconds from the start of the file.
    text : str
        The chunk's transcript.
    segments : sequence of mappings or None
        ``{"start", "end", "text", ...}`` in seconds from the chunk's start.
    words : sequence of mappings or None
        ``{"start", "end", "word", ...}`` in seconds from the chunk's start.
    """

    start: float
    end: float
    text: str
    segments: Sequence[Mapping[str, Any]] | None = None
    words: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class StitchedTranscript:
    """A row's result, stitched from its chunks.

    Parameters
    ----------
    text : str
        The chunks' texts in order, joined by single spaces.
    segments : list of dict
        Every segment, times from the start of the file, ``id`` renumbered from 0.
    words : list of dict or None
        Every word, times from the start of the file; ``None`` when no chunk had words.
    duration : float
        The end of the last chunk.
    """

    text: str
    segments: list[dict[str, Any]]
    words: list[dict[str, Any]] | None
    duration: float


def _shift(
    items: Sequence[Mapping[str, Any]], start: float, end: float
) -> Iterable[dict[str, Any]]:
    """Items moved by ``start`` and kept inside ``[start, end]``; items without times dropped."""
    for item in items:
        if not isinstance(item, Mapping):
            continue
        lo = finite_float(item.get("start"), strings=True)
        hi = finite_float(item.get("end"), strings=True)
        if lo is None or hi is None:
            continue
        # A model may place a time a little past its chunk's end; clamping keeps the
        # file's times ordered across the seam.
        new_lo = min(max(start + lo, start), end)
        new_hi = min(max(start + hi, new_lo), end)
        yield {**item, "start": round(new_lo, 3), "end": round(new_hi, 3)}


def stitch(chunks: Iterable[ChunkTranscript]) -> StitchedTranscript:
    """Join chunk transcripts into the row's transcript (see the module docstring).

    Parameters
    ----------
    chunks : iterable of ChunkTranscript
        The file's chunks, in any order (sorted by start here).

    Returns
    -------
    StitchedTranscript

    Examples
    --------
    >>> words = [{"start": 0.5, "end": 0.9, "word": "again"}]
    >>> stitch([ChunkTranscript(30.0, 40.0, "again", None, words)]).words
    [{'start': 30.5, 'end': 30.9, 'word': 'again'}]
    """
    ordered = sorted(chunks, key=lambda c: c.start)
    texts: list[str] = []
    segments: list[dict[str, Any]] = []
    words: list[dict[str, Any]] = []
    any_words = False
    for chunk in ordered:
        text = " ".join(chunk.text.split())
        if text:
            texts.append(text)
        if chunk.segments:
            segments.extend(_shift(chunk.segments, chunk.start, chunk.end))
        elif text:
            segments.append(
                {"start": round(chunk.start, 3), "end": round(chunk.end, 3), "text": text}
            )
        if chunk.words is not None:
            any_words = True
            words.extend(_shift(chunk.words, chunk.start, chunk.end))
    for number, segment in enumerate(segments):
        if "id" in segment:
            segment["id"] = number
    return StitchedTranscript(
        text=" ".join(texts),
        segments=segments,
        words=words if any_words else None,
        duration=ordered[-1].end if ordered else 0.0,
    )


def chained_prompt(
    previous_text: str | None, prompt: str | None = None, *, max_chars: int = PROMPT_MAX_CHARS
) -> str | None:
    """The ``prompt`` for a chunk: the run's own prompt, then the previous chunk's text.

    OpenAI's advice for split audio: passing the previous chunk's transcript keeps
    spelling, names and style consistent across a cut. The cost is order: a chunk can
    only be sent once the one before it is answered, so a file's chunks go one at a
    time instead of in parallel. The batch engine therefore does it only when asked.
    The previous text is cut at a word boundary to fit ``max_chars`` with the prompt.

    Examples
    --------
    >>> chained_prompt("ask not what your country can do for you", max_chars=20)
    'can do for you'
    >>> chained_prompt(None, "Glossary: Kenobi.")
    'Glossary: Kenobi.'
    """
    head = " ".join((prompt or "").split())
    room = max_chars - len(head) - (1 if head else 0)
    tail = " ".join((previous_text or "").split())
    if len(tail) > room:
        cut = len(tail) - room
        # Keep whole words only: drop the one the cut went through.
        tail = (
            ""
            if room <= 0
            else tail[cut:]
            if tail[cut - 1] == " "
            else tail[cut:].partition(" ")[2]
        )
    joined = " ".join(part for part in (head, tail) if part)
    return joined or None
