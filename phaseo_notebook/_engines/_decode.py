"""The engine contract's data, and audio bytes -> what an engine consumes.

This module holds what every engine shares: the result type (:class:`EngineResult`),
the error for undecodable audio (:class:`AudioDecodeError`), a header-only WAV
duration (:func:`wav_duration`, cheap enough for the fake engine's hot path) and the
full decode to 16 kHz mono int16 PCM (:func:`decode_to_pcm16k`) that recognisers need.

Decoding uses libsndfile (through ``soundfile``) and ``scipy``; both belong to the
``[local]`` extra and are imported only when :func:`decode_to_pcm16k` runs, so that
``import phaseo_notebook`` works without them. ``numpy`` is imported lazily too: the
fake engine imports this module and must stay cheap to import.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# The header-only duration is audio measurement, shared with the quality flags; the
# engines re-export it from here so their imports stay as they are.
from phaseo_notebook._audio import wav_duration

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "LOCAL_EXTRA_INSTALL",
    "TARGET_SAMPLE_RATE",
    "AudioDecodeError",
    "EngineResult",
    "decode_to_pcm16k",
    "wav_duration",
]

#: The sample rate every recogniser here expects (PocketSphinx's en-us model is 16 kHz).
TARGET_SAMPLE_RATE = 16_000

#: The exact line an ``ImportError`` names when the ``[local]`` extra is missing.
LOCAL_EXTRA_INSTALL = "pip install 'phaseo-notebook[local]'"


@dataclass(frozen=True, slots=True)
class EngineResult:
    """What an engine returns for one audio input.

    Parameters
    ----------
    text : str
        The transcript: lowercase words separated by single spaces, stripped;
        ``""`` when nothing was recognised.
    duration : float or None
        Seconds of audio, when known.
    language : str or None
        The language actually used to transcribe (e.g. ``"en"``), which may differ
        from the one asked for.

    Examples
    --------
    >>> EngineResult("one two three", duration=1.5, language="en").text
    'one two three'
    """

    text: str
    duration: float | None = None
    language: str | None = None


class AudioDecodeError(ValueError):
    """Audio bytes that cannot be decoded; the message says why.

    A ``ValueError`` because the input, not the engine, is at fault: the gateway maps
    it to a client error (4xx), never to a server error.

    Examples
    --------
    >>> try:
    ...     decode_to_pcm16k(b"not audio")
    ... except AudioDecodeError as err:
    ...     print("rejected")
    rejected
    """


def _import_decoders() -> tuple[Any, Any]:
    """Import ``soundfile`` and ``scipy.signal``, or say which extra to install."""
    try:
        import scipy.signal
        import soundfile
    except ImportError as err:
        raise ImportError(
            f"decoding audio for the local engine needs soundfile and scipy: {LOCAL_EXTRA_INSTALL}"
        ) from err
    return soundfile, scipy.signal


def decode_to_pcm16k(data: bytes) -> tuple[npt.NDArray[np.int16], float]:
    """Decode audio bytes to 16 kHz mono int16 PCM.

    Any container/codec the installed libsndfile reads is accepted (WAV, FLAC, OGG
    Vorbis/Opus, AIFF, and MP3 from libsndfile 1.1 on). Channels are averaged to mono,
    the signal is resampled with a polyphase filter at the exact rational ratio
    ``16000 / rate``, then clipped and scaled to int16.

    Parameters
    ----------
    data : bytes
        The encoded audio file.

    Returns
    -------
    tuple of (numpy.ndarray, float)
        The int16 samples at 16 kHz and the duration of the *original* audio in seconds.

    Raises
    ------
    AudioDecodeError
        If the bytes are empty, not a format libsndfile reads, or contain no samples.
    ImportError
        If ``soundfile``/``scipy`` are missing (the ``[local]`` extra).

    Examples
    --------
    >>> from pathlib import Path
    >>> pcm, seconds = decode_to_pcm16k(Path("english.wav").read_bytes())  # doctest: +SKIP
    >>> pcm.dtype, round(seconds, 2)  # doctest: +SKIP
    (dtype('int16'), 2.74)
    """
    if not data:
        raise AudioDecodeError("audio is empty (0 bytes)")
    soundfile, signal = _import_decoders()
    import numpy as np

    try:
        # float32 keeps the resampler's arithmetic cheap and the down-mix free of overflow.
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as err:
        # error_string omits the "Error opening <BytesIO at 0x...>" prefix of str(err).
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioDecodeError(
            f"cannot decode audio ({len(data)} bytes, starting {data[:8]!r}): {reason}"
        ) from err
    except (RuntimeError, TypeError, ValueError, EOFError) as err:
        # soundfile reports some malformed headers through plain Python errors.
        raise AudioDecodeError(
            f"cannot decode audio ({len(data)} bytes, starting {data[:8]!r}): {err}"
        ) from err
    rate = int(rate)
    frames = samples.shape[0]
    if frames == 0 or rate <= 0:
        raise AudioDecodeError("audio contains no samples")
    duration = frames / rate

    mono = samples.mean(axis=1, dtype=np.float32)
    if rate != TARGET_SAMPLE_RATE:
        common = math.gcd(TARGET_SAMPLE_RATE, rate)
        mono = signal.resample_poly(mono, TARGET_SAMPLE_RATE // common, rate // common)
    # 32768 is the scale libsndfile divided by, so 16 kHz int16 input comes back
    # bit-exact. Truncation (astype) rather than rounding is deliberate: PocketSphinx
    # flips words on 1-LSB differences, and truncation is the conversion its reference
    # results on ../shared/audio were measured with.
    pcm = np.clip(mono * 32768.0, -32768.0, 32767.0).astype(np.int16)
    return pcm, duration
