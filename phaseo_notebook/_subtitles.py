"""Subtitles: SRT, WebVTT and JSON from timed segments (and words), one file per row.

Cues follow the common broadcast rules: at most :data:`MAX_LINE_CHARS` characters a line,
at most :data:`MAX_LINES` lines, at most :data:`MAX_CUE_SECONDS` on screen. A segment
that breaks a rule is split at word boundaries: at the words' own times when the answer
has words, otherwise at times interpolated by character position. Two lines are balanced
(the break nearest the middle) rather than filled greedily.

Examples
--------
>>> print(to_srt([{"start": 0.0, "end": 2.5, "text": "Hello there."}]), end="")
1
00:00:00,000 --> 00:00:02,500
Hello there.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

__all__ = [
    "MAX_CUE_SECONDS",
    "MAX_LINES",
    "MAX_LINE_CHARS",
    "Cue",
    "SubtitleFormat",
    "SubtitleRow",
    "build_cues",
    "format_timestamp",
    "subtitle_file_names",
    "to_json",
    "to_srt",
    "to_vtt",
    "write_subtitles",
]

SubtitleFormat = Literal["srt", "vtt", "json"]
_FORMATS: Final = ("srt", "vtt", "json")

MAX_LINE_CHARS: Final = 42
MAX_LINES: Final = 2
MAX_CUE_SECONDS: Final = 7.0
_MAX_NAME_CHARS: Final = 120
# Letters of any script are kept (\w); separators, controls and punctuation are not.
_UNSAFE: Final = re.compile(r"[^\w.-]+")
_RESERVED_NAMES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)}
)

Segments = Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle: a span in seconds and its lines."""

    start: float
    end: float
    lines: tuple[str, ...]


def format_timestamp(seconds: float, *, fmt: Literal["srt", "vtt"] = "srt") -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (WebVTT).

    Examples
    --------
    >>> format_timestamp(62.345), format_timestamp(3723.5, fmt="vtt")
    ('00:01:02,345', '01:02:03.500')
    """
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    sep = "," if fmt == "srt" else "."
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _wrap(text: str) -> tuple[str, ...] | None:
    """``text`` as at most two balanced lines within the line length, or ``None``."""
    if len(text) <= MAX_LINE_CHARS:
        return (text,)
    best: tuple[str, str] | None = None
    for match in re.finditer(" ", text):
        first, second = text[: match.start()], text[match.end() :]
        if (
            len(first) <= MAX_LINE_CHARS
            and len(second) <= MAX_LINE_CHARS
            and (best is None or max(len(first), len(second)) < max(len(best[0]), len(best[1])))
        ):
            best = (first, second)
    return best


def _force_lines(text: str) -> tuple[str, ...]:
    """Lines for text that no balanced split fits (a single overlong word)."""
    return _wrap(text) or (text,)


def _timed_tokens(segment: Mapping[str, Any], words: Segments) -> list[tuple[str, float, float]]:
    start, end = float(segment["start"]), float(segment["end"])
    inside = [
        w for w in words if start - 0.01 <= (float(w["start"]) + float(w["end"])) / 2 <= end + 0.01
    ]
    tokens = [(str(w.get("word", "")).strip(), float(w["start"]), float(w["end"])) for w in inside]
    tokens = [t for t in tokens if t[0]]
    if tokens:
        return tokens
    # No words for this segment: spread its tokens over its span by character position.
    pieces = str(segment.get("text", "")).split()
    total = sum(len(p) + 1 for p in pieces) or 1
    out: list[tuple[str, float, float]] = []
    position = 0
    for piece in pieces:
        lo = start + (end - start) * position / total
        position += len(piece) + 1
        out.append((piece, lo, start + (end - start) * position / total))
    return out


def build_cues(segments: Segments, words: Segments | None = None) -> list[Cue]:
    """Cues for segments, split where a segment is too long to show as one.

    Parameters
    ----------
    segments : sequence of mappings
        ``{"start", "end", "text"}`` in seconds.
    words : sequence of mappings or None
        ``{"start", "end", "word"}``; where given, long segments split at word times.

    Examples
    --------
    >>> cues = build_cues([{"start": 0, "end": 20, "text": "word " * 40}])
    >>> all(c.end - c.start <= MAX_CUE_SECONDS and len(c.lines) <= MAX_LINES for c in cues)
    True
    """
    cues: list[Cue] = []
    for segment in segments:
        text = " ".join(str(segment.get("text", "")).split())
        if not text:
            continue
        start, end = float(segment["start"]), float(segment["end"])
        lines = _wrap(text)
        if lines is not None and end - start <= MAX_CUE_SECONDS:
            cues.append(Cue(start, end, lines))
            continue
        group: list[tuple[str, float, float]] = []
        for token in _timed_tokens(segment, words or ()):
            if group:
                candidate = " ".join(t[0] for t in [*group, token])
                if _wrap(candidate) is None or token[2] - group[0][1] > MAX_CUE_SECONDS:
                    cues.append(
                        Cue(group[0][1], group[-1][2], _force_lines(" ".join(t[0] for t in group)))
                    )
                    group = []
            group.append(token)
        if group:
            cues.append(Cue(group[0][1], group[-1][2], _force_lines(" ".join(t[0] for t in group))))
    # Players show overlapping cues stacked; keep each cue from starting before the last ends.
    fixed: list[Cue] = []
    for cue in cues:
        start = max(cue.start, fixed[-1].end) if fixed else cue.start
        fixed.append(Cue(start, max(cue.end, start + 0.001), cue.lines))
    return fixed


def _payload(lines: tuple[str, ...], *, vtt: bool) -> str:
    # "-->" in a cue's text would read as a timing line; WebVTT text is HTML-like markup.
    text = "\n".join(line.replace("-->", "->") for line in lines)
    if vtt:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def to_srt(segments: Segments, words: Segments | None = None) -> str:
    """SubRip text for ``segments`` (numbered cues, ``,`` before milliseconds)."""
    blocks = [
        f"{n}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n"
        + _payload(c.lines, vtt=False)
        for n, c in enumerate(build_cues(segments, words), start=1)
    ]
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def to_vtt(segments: Segments, words: Segments | None = None) -> str:
    """WebVTT text for ``segments`` (``WEBVTT`` header, ``.`` before milliseconds).

    Examples
    --------
    >>> print(to_vtt([{"start": 1, "end": 2, "text": "Hi"}]), end="")
    WEBVTT
    <BLANKLINE>
    00:00:01.000 --> 00:00:02.000
    Hi
    """
    blocks = [
        f"{format_timestamp(c.start, fmt='vtt')} --> {format_timestamp(c.end, fmt='vtt')}\n"
        + _payload(c.lines, vtt=True)
        for c in build_cues(segments, words)
    ]
    return "WEBVTT\n\n" + "\n\n".join(blocks) + ("\n" if blocks else "")


def to_json(segments: Segments, words: Segments | None = None, *, text: str | None = None) -> str:
    """The transcript as JSON: ``text``, ``segments``, ``words`` and the subtitle ``cues``."""
    joined = (
        text if text is not None else " ".join(str(s.get("text", "")).strip() for s in segments)
    )
    body = {
        "text": joined.strip(),
        "segments": [dict(s) for s in segments],
        "words": [dict(w) for w in words] if words is not None else None,
        "cues": [
            {"start": c.start, "end": c.end, "text": "\n".join(c.lines)}
            for c in build_cues(segments, words)
        ],
    }
    return json.dumps(body, ensure_ascii=False, indent=1, default=str) + "\n"


@dataclass(frozen=True, slots=True)
class SubtitleRow:
    """One row to export.

    Parameters
    ----------
    audio : object
        The row's audio input (path, URL, ...): names the file; bytes or ``None`` give
        ``audio``.
    segments : sequence of mappings or None
        The row's segments (``None``: a row without a result, written empty).
    words : sequence of mappings or None
        The row's words.
    text : str or None
        The row's text, for the JSON form.
    """

    audio: Any
    segments: Segments | None
    words: Segments | None = None
    text: str | None = None


def _stem(audio: Any) -> str:
    if isinstance(audio, str | os.PathLike) and not isinstance(audio, bytes):
        raw = os.fspath(audio)
        if "://" in raw:
            raw = unquote(urlsplit(raw).path)
        name = raw.replace("\\", "/").rstrip("/").rpartition("/")[2]
        stem = name.rpartition(".")[0] if "." in name.strip(".") else name
        safe = _UNSAFE.sub("_", stem).strip("._-")[:_MAX_NAME_CHARS]
        if safe.upper() in _RESERVED_NAMES:
            safe = "_" + safe  # names Windows refuses, whatever the suffix
        if safe:
            return safe
    return "audio"


def subtitle_file_names(audios: Iterable[Any], suffix: str) -> list[str]:
    """Safe, distinct file names for rows' audio inputs (``-2``, ``-3`` ... on clashes).

    Names are compared case-insensitively, as on macOS and Windows file systems.

    Examples
    --------
    >>> subtitle_file_names(["a/talk.wav", "b/talk.mp3", "https://x/y/My%20Talk.m4a?sig=1", b".."], ".srt")
    ['talk.srt', 'talk-2.srt', 'My_Talk.srt', 'audio.srt']
    """
    taken: set[str] = set()
    names: list[str] = []
    for audio in audios:
        stem = _stem(audio)
        candidate, n = stem, 1
        while (candidate + suffix).lower() in taken:
            n += 1
            candidate = f"{stem}-{n}"
        taken.add((candidate + suffix).lower())
        names.append(candidate + suffix)
    return names


def _as_row(row: SubtitleRow | Sequence[Any]) -> SubtitleRow:
    if isinstance(row, SubtitleRow):
        return row
    return SubtitleRow(*row)


def _is_missing(value: Any) -> bool:
    # A dataframe column holds NaN (a float) where a row has no segments.
    return value is None or isinstance(value, float)


def write_subtitles(
    rows: Iterable[SubtitleRow | Sequence[Any]],
    directory: str | os.PathLike[str],
    *,
    fmt: SubtitleFormat = "srt",
) -> list[Path]:
    """Write one subtitle file per row into ``directory``, named from the row's audio.

    Parameters
    ----------
    rows : iterable
        :class:`SubtitleRow` objects or tuples ``(audio, segments[, words[, text]])``;
        ``zip(df["audio"], df["segments"], df["words"])`` works as it is.
    directory : path
        Created if missing. Existing files of the same names are replaced.
    fmt : {"srt", "vtt", "json"}
        The format, also the file suffix.

    Returns
    -------
    list of Path
        The files written, in row order.

    Examples
    --------
    >>> rows = [("talk.wav", [{"start": 0, "end": 1, "text": "hi"}])]
    >>> write_subtitles(rows, "subs", fmt="vtt")  # doctest: +SKIP
    [PosixPath('subs/talk.vtt')]
    """
    if fmt not in _FORMATS:
        raise ValueError(f"unknown subtitle format {fmt!r}; valid: {', '.join(_FORMATS)}")
    items = [_as_row(r) for r in rows]
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for row, name in zip(
        items, subtitle_file_names((r.audio for r in items), "." + fmt), strict=True
    ):
        segments: Segments = [] if _is_missing(row.segments) else row.segments  # type: ignore[assignment]
        words = None if _is_missing(row.words) else row.words
        if fmt == "srt":
            content = to_srt(segments, words)
        elif fmt == "vtt":
            content = to_vtt(segments, words)
        else:
            text = row.text if isinstance(row.text, str) else None
            content = to_json(segments, words, text=text)
        path = out_dir / name
        path.write_text(content, encoding="utf-8")
        paths.append(path)
    return paths
