"""Audio length from a file's header, for estimates: never a full decode, never the network.

:func:`audio_seconds` tries, in order, whatever is installed:

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
from pathlib import Path
from typing import IO, Any

from ._audio import AudioSource, normalize_audio

__all__ = ["audio_seconds"]


def _positive(seconds: float | None) -> float | None:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return float(seconds)


def _open(target: Path | bytes) -> IO[bytes]:
    return target.open("rb") if isinstance(target, Path) else io.BytesIO(target)


def _by_soundfile(target: Path | bytes) -> float | None:
    try:
        import soundfile
    except ImportError:
        return None
    try:
        with _open(target) as fh:
            info = soundfile.info(fh)
    except Exception:  # libsndfile refuses what it cannot parse with several error types
        return None
    if not info.samplerate or info.frames <= 0:
        return None
    return _positive(info.frames / info.samplerate)


def _by_av(target: Path | bytes) -> float | None:
    try:
        import av
    except ImportError:
        return None
    try:
        with _open(target) as fh, av.open(fh, mode="r") as container:
            return _container_seconds(container)
    except Exception:  # PyAV raises its own error family (and OSError, ValueError)
        return None


def _container_seconds(container: Any) -> float | None:
    if container.duration is not None:
        # Container durations are in av.time_base units (microseconds).
        return _positive(container.duration / 1_000_000)
    for stream in container.streams.audio:
        if stream.duration is not None and stream.time_base is not None:
            return _positive(float(stream.duration * stream.time_base))
    return None


def _by_wave(target: Path | bytes) -> float | None:
    try:
        with _open(target) as fh, contextlib.closing(wave.open(fh, "rb")) as w:
            rate, frames = w.getframerate(), w.getnframes()
    except (wave.Error, EOFError, OSError):
        return None
    return _positive(frames / rate) if rate else None


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
    for reader in (_by_soundfile, _by_av, _by_wave):
        seconds = reader(target)
        if seconds is not None:
            return seconds
    return None
