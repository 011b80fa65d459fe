"""The engine contract's data, and audio bytes -> what an engine consumes, safely.

This module holds what every engine shares: the request options
(:class:`TranscribeOptions`), the result type (:class:`EngineResult` with its
:class:`Segment` and :class:`Word` timestamps), the errors for audio an engine refuses
(:class:`AudioDecodeError`, :class:`AudioTooLongError`, :class:`UnsupportedLanguageError`),
a header-only WAV reader (:func:`wav_duration`, :func:`wav_sample_rate`, cheap enough for
the fake engine's hot path) and the one safe decoder to 16 kHz mono int16 PCM
(:func:`decode_to_pcm16k`) that every recogniser goes through.

Safety: a header is read before any sample. Sample rates outside
:data:`MIN_SAMPLE_RATE`-:data:`MAX_SAMPLE_RATE` are refused (a 40 KB WAV that claims
1 Hz stands for 20,000 s, and resampling it to 16 kHz would need gigabytes), and audio
longer than ``max_duration`` seconds (default :data:`DEFAULT_MAX_DURATION`) is refused
from its header when the header says so, and while decoding otherwise, so a lying
header can never make the decoder grow past the cap.

Decoding uses libsndfile (through ``soundfile``) and ``scipy`` for what libsndfile
reads (WAV, FLAC, OGG, AIFF, MP3), and PyAV (FFmpeg, installed with ``faster-whisper``)
for the rest (M4A/AAC, MP4, WebM, bare Opus) and for long files, which it resamples in
a stream. All of them belong to the ``[local]`` extra and are imported only when
:func:`decode_to_pcm16k` runs, so that ``import phaseo_notebook`` works without them.
``numpy`` is imported lazily too: the fake engine imports this module and must stay
cheap to import.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

# The header-only duration is audio measurement, shared with the quality flags; the
# engines re-export it from here so their imports stay as they are.
from phaseo_notebook._audio import wav_duration, wav_sample_rate

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_DURATION",
    "LOCAL_EXTRA_INSTALL",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "TARGET_SAMPLE_RATE",
    "AudioDecodeError",
    "AudioTooLongError",
    "EngineResult",
    "Segment",
    "TimestampGranularity",
    "TranscribeOptions",
    "UnsupportedLanguageError",
    "Word",
    "check_sample_rate",
    "decode_to_pcm16k",
    "wav_duration",
    "wav_sample_rate",
    "whole_clip_segments",
]

#: The sample rate every recogniser here expects (PocketSphinx's en-us model and Whisper).
TARGET_SAMPLE_RATE: Final = 16_000
#: Lowest sample rate accepted: below it no speech survives, and it is how a tiny file
#: claims hours of audio.
MIN_SAMPLE_RATE: Final = 4_000
#: Highest sample rate accepted (the highest any common recorder writes).
MAX_SAMPLE_RATE: Final = 384_000
#: Longest audio decoded by default, in seconds (2 hours: about 230 MB of 16 kHz PCM).
DEFAULT_MAX_DURATION: Final = 7200.0

#: The exact line an ``ImportError`` names when the ``[local]`` extra is missing.
LOCAL_EXTRA_INSTALL = "pip install 'phaseo-notebook[local]'"

# Files whose header says they are longer than this are decoded by the streaming
# decoder, so memory grows with the 16 kHz output rather than the source's rate and
# channels.
_ONE_SHOT_SECONDS = 900.0
_READ_BLOCK_FRAMES = 1 << 18

TimestampGranularity = Literal["segment", "word"]


@dataclass(frozen=True, slots=True)
class TranscribeOptions:
    """What a request asks of an engine beyond the audio and its language.

    Parameters
    ----------
    prompt : str or None
        Text that precedes the audio (names, spelling, style); Whisper's initial prompt.
    temperature : float or None
        Sampling temperature, 0-1; ``None`` is the engine's default (0: deterministic).
    timestamps : {"segment", "word"} or None
        Which timestamps to return: ``"segment"`` gives :attr:`EngineResult.segments`,
        ``"word"`` gives both segments and :attr:`EngineResult.words`.

    Examples
    --------
    >>> TranscribeOptions(timestamps="word").timestamps
    'word'
    """

    prompt: str | None = None
    temperature: float | None = None
    timestamps: TimestampGranularity | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the transcript, with its times in seconds from the start of the audio.

    Examples
    --------
    >>> Segment(0.0, 1.5, "one two").to_dict()
    {'start': 0.0, 'end': 1.5, 'text': 'one two'}
    """

    start: float
    end: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        """``{"start", "end", "text"}``, as the gateway answers it."""
        return {"start": self.start, "end": self.end, "text": self.text}


@dataclass(frozen=True, slots=True)
class Word:
    """One word, with its times in seconds from the start of the audio.

    Examples
    --------
    >>> Word(0.5, 0.9, "two").to_dict()
    {'start': 0.5, 'end': 0.9, 'word': 'two'}
    """

    start: float
    end: float
    word: str

    def to_dict(self) -> dict[str, Any]:
        """``{"start", "end", "word"}``, as the gateway answers it."""
        return {"start": self.start, "end": self.end, "word": self.word}


@dataclass(frozen=True, slots=True)
class EngineResult:
    """What an engine returns for one audio input.

    Parameters
    ----------
    text : str
        The transcript, stripped; ``""`` when nothing was recognised. PocketSphinx
        gives lowercase words; Whisper gives cased, punctuated text.
    duration : float or None
        Seconds of audio, when known.
    language : str or None
        The language actually used to transcribe (e.g. ``"en"``), which may differ
        from the one asked for.
    segments : tuple of Segment or None
        Segment timestamps, when asked for.
    words : tuple of Word or None
        Word timestamps, when asked for and the engine has them.

    Examples
    --------
    >>> EngineResult("one two three", duration=1.5, language="en").text
    'one two three'
    """

    text: str
    duration: float | None = None
    language: str | None = None
    segments: tuple[Segment, ...] | None = None
    words: tuple[Word, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what a worker process sends back).

        Examples
        --------
        >>> EngineResult.from_dict(EngineResult("hi", 1.0, "en").to_dict()).text
        'hi'
        """
        return {
            "text": self.text,
            "duration": self.duration,
            "language": self.language,
            "segments": None if self.segments is None else [s.to_dict() for s in self.segments],
            "words": None if self.words is None else [w.to_dict() for w in self.words],
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> EngineResult:
        """The inverse of :meth:`to_dict`."""
        segments = body.get("segments")
        words = body.get("words")
        return cls(
            body["text"],
            duration=body.get("duration"),
            language=body.get("language"),
            segments=None
            if segments is None
            else tuple(Segment(s["start"], s["end"], s["text"]) for s in segments),
            words=None
            if words is None
            else tuple(Word(w["start"], w["end"], w["word"]) for w in words),
        )


def whole_clip_segments(
    result_text: str, duration: float | None, options: TranscribeOptions | None
) -> tuple[Segment, ...] | None:
    """One segment over the whole clip, for engines with no finer timing.

    Examples
    --------
    >>> whole_clip_segments("hi", 2.0, TranscribeOptions(timestamps="segment"))
    (Segment(start=0.0, end=2.0, text='hi'),)
    >>> whole_clip_segments("hi", 2.0, None) is None
    True
    """
    if options is None or options.timestamps is None:
        return None
    if not result_text:
        return ()
    return (Segment(0.0, duration or 0.0, result_text),)


class AudioDecodeError(ValueError):
    """Audio bytes that cannot be decoded, or that the decoder refuses; the message says why.

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


class AudioTooLongError(AudioDecodeError):
    """Audio longer than the decoder's ``max_duration``; the gateway answers 413.

    Parameters
    ----------
    message : str
        What was refused.
    max_duration : float
        The limit, in seconds.

    Examples
    --------
    >>> AudioTooLongError("too long", 60.0).max_duration
    60.0
    """

    def __init__(self, message: str, max_duration: float) -> None:
        super().__init__(message)
        self.max_duration = max_duration

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.max_duration))


class UnsupportedLanguageError(ValueError):
    """A language the engine's model cannot transcribe; the gateway answers 400.

    Examples
    --------
    >>> str(UnsupportedLanguageError("model 'm' transcribes English only"))
    "model 'm' transcribes English only"
    """


def check_sample_rate(rate: int) -> None:
    """Refuse a sample rate outside :data:`MIN_SAMPLE_RATE`-:data:`MAX_SAMPLE_RATE`.

    Raises
    ------
    AudioDecodeError
        For a rate out of bounds.

    Examples
    --------
    >>> check_sample_rate(44_100)
    >>> check_sample_rate(1)
    Traceback (most recent call last):
    ...
    phaseo_notebook._engines._decode.AudioDecodeError: sample rate 1 Hz is outside the accepted 4000-384000 Hz
    """
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"sample rate {rate} Hz is outside the accepted {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )


def _too_long(seconds: float | None, max_duration: float) -> AudioTooLongError:
    what = f"{seconds:.0f} s long" if seconds is not None else "longer than that"
    return AudioTooLongError(
        f"audio is {what}, over the limit of {max_duration:g} s per file: split it "
        "into shorter files",
        max_duration,
    )


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


def _cannot_decode(data: bytes, reason: object) -> AudioDecodeError:
    return AudioDecodeError(
        f"cannot decode audio ({len(data)} bytes, starting {data[:8]!r}): {reason}"
    )


def decode_to_pcm16k(
    data: bytes, *, max_duration: float = DEFAULT_MAX_DURATION
) -> tuple[npt.NDArray[np.int16], float]:
    """Decode audio bytes to 16 kHz mono int16 PCM, within safe bounds.

    What libsndfile reads (WAV, FLAC, OGG Vorbis/Opus, AIFF, MP3) is decoded with it:
    channels are averaged to mono, the signal is resampled with a polyphase filter at
    the exact rational ratio ``16000 / rate``, then clipped and scaled to int16. Other
    containers (M4A/AAC, MP4, WebM, bare Opus), and files longer than 15 minutes, are
    decoded and resampled by FFmpeg (PyAV) in a stream.

    Parameters
    ----------
    data : bytes
        The encoded audio file.
    max_duration : float
        Longest audio accepted, in seconds (default :data:`DEFAULT_MAX_DURATION`).

    Returns
    -------
    tuple of (numpy.ndarray, float)
        The int16 samples at 16 kHz and the duration of the *original* audio in seconds.

    Raises
    ------
    AudioTooLongError
        If the audio is longer than ``max_duration``.
    AudioDecodeError
        If the bytes are empty, not a format either decoder reads, contain no samples,
        or declare a sample rate outside 4-384 kHz.
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
    if not max_duration > 0:
        raise ValueError(f"max_duration must be positive, got {max_duration!r}")
    # The cheapest refusal first: a WAV header is read without any library.
    rate = wav_sample_rate(data)
    if rate is not None:
        check_sample_rate(rate)
    soundfile, signal = _import_decoders()
    try:
        sound = soundfile.SoundFile(io.BytesIO(data))
    except soundfile.LibsndfileError as err:
        # error_string omits the "Error opening <BytesIO at 0x...>" prefix of str(err).
        reason = getattr(err, "error_string", None) or str(err)
        return _decode_with_av(data, max_duration, _cannot_decode(data, reason))
    except (RuntimeError, TypeError, ValueError, EOFError) as err:
        # soundfile reports some malformed headers through plain Python errors.
        return _decode_with_av(data, max_duration, _cannot_decode(data, err))
    with sound:
        rate = int(sound.samplerate)
        check_sample_rate(rate)
        declared = sound.frames / rate
        if declared > max_duration:
            raise _too_long(declared, max_duration)
        if declared > _ONE_SHOT_SECONDS:
            return _decode_with_av(data, max_duration, None)
        try:
            mono = _read_mono(sound, int(max_duration * rate) + 1)
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as err:
            raise _cannot_decode(data, getattr(err, "error_string", None) or err) from err
    frames = mono.shape[0]
    if frames == 0:
        raise AudioDecodeError("audio contains no samples")
    duration = frames / rate
    if duration > max_duration:
        raise _too_long(None, max_duration)
    return _resample_to_pcm16k(mono, rate, signal), duration


def _read_mono(sound: Any, max_frames: int) -> npt.NDArray[np.float32]:
    """Read and down-mix block by block, so a multi-channel file never sits whole in memory."""
    import numpy as np

    blocks: list[npt.NDArray[np.float32]] = []
    total = 0
    while total <= max_frames:
        # float32 keeps the resampler's arithmetic cheap and the down-mix free of overflow.
        block = sound.read(_READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            break
        blocks.append(block.mean(axis=1, dtype=np.float32))
        total += block.shape[0]
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _resample_to_pcm16k(
    mono: npt.NDArray[np.float32], rate: int, signal: Any
) -> npt.NDArray[np.int16]:
    import numpy as np

    if rate != TARGET_SAMPLE_RATE:
        common = math.gcd(TARGET_SAMPLE_RATE, rate)
        mono = signal.resample_poly(mono, TARGET_SAMPLE_RATE // common, rate // common)
    # 32768 is the scale libsndfile divided by, so 16 kHz int16 input comes back
    # bit-exact. Truncation (astype) rather than rounding is deliberate: PocketSphinx
    # flips words on 1-LSB differences, and truncation is the conversion its reference
    # results on ../shared/audio were measured with.
    result: npt.NDArray[np.int16] = np.clip(mono * 32768.0, -32768.0, 32767.0).astype(np.int16)
    return result


def _decode_with_av(
    data: bytes, max_duration: float, fallback: AudioDecodeError | None
) -> tuple[npt.NDArray[np.int16], float]:
    """Decode with FFmpeg, resampling to 16 kHz mono int16 as the frames arrive.

    ``fallback`` is the error to raise when PyAV is not installed (or cannot read the
    bytes either): the reason libsndfile gave.
    """
    try:
        import av
    except ImportError as err:
        if fallback is not None:
            raise fallback from err
        raise ImportError(
            f"decoding long or compressed audio needs PyAV: {LOCAL_EXTRA_INSTALL}"
        ) from err
    import numpy as np

    cap = int(max_duration * TARGET_SAMPLE_RATE)
    chunks: list[npt.NDArray[np.int16]] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            streams = container.streams.audio
            if not streams:
                raise AudioDecodeError("the file has no audio stream")
            stream = streams[0]
            check_sample_rate(int(stream.codec_context.sample_rate or stream.rate or 0))
            if stream.duration is not None and stream.time_base is not None:
                declared = float(stream.duration * stream.time_base)
                if declared > max_duration:
                    raise _too_long(declared, max_duration)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=TARGET_SAMPLE_RATE)
            for frame in container.decode(stream):
                # A stream may change its rate midway; each frame is checked.
                check_sample_rate(int(frame.sample_rate))
                for out in resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1)
                    total += pcm.shape[0]
                    if total > cap:
                        raise _too_long(None, max_duration)
                    chunks.append(pcm.astype(np.int16, copy=False))
            for out in resampler.resample(None):
                pcm = out.to_ndarray().reshape(-1)
                total += pcm.shape[0]
                chunks.append(pcm.astype(np.int16, copy=False))
    except AudioDecodeError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError) as err:
        if fallback is not None:
            raise fallback from err
        raise _cannot_decode(data, err) from err
    if total == 0:
        raise fallback if fallback is not None else AudioDecodeError("audio contains no samples")
    if total > cap:
        raise _too_long(None, max_duration)
    return np.concatenate(chunks), total / TARGET_SAMPLE_RATE
