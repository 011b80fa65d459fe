"""Audio length from a file's header: never a full decode, never the network.

The one header reader of the package: estimates and budgets, the long-audio planner (does
a file fit the model's limits?) and the local gateway's admission check all ask
:func:`read_header` or :func:`audio_seconds`. They try, in order, whatever is installed:

1. libsndfile (``soundfile.info``, the ``[local]`` extra): WAV, FLAC, OGG/Vorbis/Opus,
   AIFF, MP3 (libsndfile >= 1.1). It reads the header (and, for some MP3s, scans frame
   headers), not the samples.
2. PyAV (``av``, if importable): the container's duration for m4a/mp4, webm, opus, aac, ...
   from its metadata, without decoding a frame.
3. The standard library's ``wave`` for plain PCM WAV, so WAV works with no extra at all.

A URL gives ``None``: the estimate sends nothing, and fetching the audio to measure it
would be a request of its own. Bytes that no reader understands give ``None`` too.

Examples
--------
>>> import io, wave
>>> buf = io.BytesIO()
>>> with wave.open(buf, "wb") as w:
...     w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
...     w.writeframes(bytes(2 * 8000 * 3))
>>> audio_seconds(buf.getvalue())
3.0
>>> audio_seconds("https://example.com/talk.mp3") is None
True
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._audio import AudioSource, normalize_audio

__all__ = ["Header", "audio_seconds", "read_header"]


def _positive(seconds: float | None) -> float | None:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return float(seconds)


def _open(target: Path | bytes) -> IO[bytes]:
    return target.open("rb") if isinstance(target, Path) else io.BytesIO(target)


@dataclass(frozen=True)
class Header:
    """What an audio header says: its length, and which library understood it.

    Parameters
    ----------
    seconds : float or None
        Length, when the header gives one.
    reader : {"soundfile", "av", "wave"}
        The first library that opened it; the chunker decodes with the same one.
    """

    seconds: float | None
    reader: str


def _by_soundfile(target: Path | bytes) -> Header | None:
    try:
        import soundfile
    except ImportError:
        return None
    try:
        with _open(target) as fh:
            info = soundfile.info(fh)
    except Exception:  # libsndfile refuses what it cannot parse with several error types
        return None
    seconds = info.frames / info.samplerate if info.samplerate and info.frames > 0 else None
    return Header(_positive(seconds), "soundfile")


def _by_av(target: Path | bytes) -> Header | None:
    try:
        import av
    except ImportError:
        return None
    try:
        with _open(target) as fh, av.open(fh, mode="r") as container:
            if not container.streams.audio:
                return None
            return Header(_container_seconds(container), "av")
    except Exception:  # PyAV raises its own error family (and OSError, ValueError)
        return None


def _container_seconds(container: Any) -> float | None:
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        return _positive(float(stream.duration * stream.time_base))
    if container.duration is not None:
        # Container durations are in av.time_base units (microseconds).
        return _positive(container.duration / 1_000_000)
    return None


def _by_wave(target: Path | bytes) -> Header | None:
    try:
        with _open(target) as fh, contextlib.closing(wave.open(fh, "rb")) as w:
            rate, frames = w.getframerate(), w.getnframes()
    except Exception:  # besides wave.Error, a malformed chunk header raises RuntimeError
        return None
    return Header(_positive(frames / rate) if rate else None, "wave")


def read_header(target: Path | bytes) -> Header | None:
    """The header of a file or of bytes, by the first installed library that reads it.

    A reader that opens the audio but gives no length (a stream without a frame count)
    leaves the length to the next one; the ``reader`` stays the first that opened it.
    ``None`` when no reader understands it.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> header = read_header(pn.sample_paths()[0])
    >>> header.seconds > 0, header.reader in ("soundfile", "av", "wave")
    (True, True)
    >>> read_header(b"not audio") is None
    True
    """
    first: Header | None = None
    for read in (_by_soundfile, _by_av, _by_wave):
        header = read(target)
        if header is None:
            continue
        if header.seconds is not None:
            return header if first is None else Header(header.seconds, first.reader)
        first = first or header
    return first


def audio_seconds(source: AudioSource | str | os.PathLike[str] | bytes) -> float | None:
    """The length of an audio input in seconds, from its header, or ``None``.

    Parameters
    ----------
    source : AudioSource, str, os.PathLike or bytes
        An input as :func:`phaseo_notebook._audio.normalize_audio` takes it (path, bytes,
        data URI, URL), or the normalised source.

    Returns
    -------
    float or None
        Seconds of audio; ``None`` for a URL (not fetched) or when no installed reader
        knows the format.

    Raises
    ------
    AudioInputError
        If the input is invalid (a missing file, not audio, too large), as it would be
        when sent.

    Examples
    --------
    >>> audio_seconds("../shared/audio/jfk.flac")  # doctest: +SKIP
    11.0
    """
    src = source if isinstance(source, AudioSource) else normalize_audio(source)
    target: Path | bytes
    if src.data is not None:
        target = src.data
    elif src.path is not None:
        target = src.path
    else:
        return None
    header = read_header(target)
    return header.seconds if header is not None else None
