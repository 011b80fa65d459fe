"""Long audio: decode as a stream, cut at quiet points under a model's limits, encode as FLAC.

A recording over a model's limits (:class:`~phaseo_notebook._limits.ModelLimits`) is sent
as chunks. :func:`plan_chunks` reads the input block by block, downmixes it to mono,
resamples it to 16 kHz and yields :class:`Chunk` objects lazily, each a 16 kHz mono FLAC
file whose span is given in seconds from the start of the original. Memory holds at most
one chunk's samples (int16: 32 KB per second of audio, about 45 MB for a 1400 s chunk) plus
one decoded block, whatever the length of the file: a 2-hour file is never decoded whole.
A file under both limits is not touched: :func:`needs_chunking` says so from its size and
its header's duration (:func:`probe`), and the caller sends it as it is.

Decoding
--------
WAV, FLAC, OGG/Vorbis/Opus, MP3 and AIFF go through soundfile (libsndfile); anything
else the gateway accepts (m4a, mp4, webm, aac, opus in WebM) through PyAV (FFmpeg).
Both feed PyAV's audio resampler, which keeps its filter state across blocks, so block
edges leave no clicks or gaps.

Where to cut
------------
Each cut falls at the quietest moment in a search window (:data:`SEARCH_SECONDS`) that
ends at the longest allowed chunk: the frame (30 ms) whose RMS energy, averaged over
about 210 ms around it, is lowest. Averaging makes the cut land in a pause between
words or sentences rather than in the short closure of a plosive inside a word.

Energy, not a voice activity detector (faster-whisper ships Silero VAD as ONNX): the
question here is only "where is it quietest within these 20 seconds", which energy
answers exactly, with no model to load, no onnxruntime dependency, no per-process
start-up cost, and per block, in a few milliseconds of numpy. A VAD pays off when one
must tell speech from loud noise (music, traffic); a cut inside loud non-speech is
harmless for transcription, and a cut inside speech is what the window's minimum avoids.

Chunk size
----------
The seconds limit is applied with a margin (:data:`SECONDS_MARGIN`). The bytes limit is
turned into seconds with the compression measured on the chunks encoded so far (the
first chunk assumes FLAC's worst case, raw 16-bit PCM): speech compresses to roughly
half, so later chunks are longer. Every chunk is checked after encoding; one over the
byte limit is cut again shorter, so no chunk ever exceeds ``max_bytes``.

Threads
-------
Decoding, resampling and encoding are CPU work that blocks. Advance the generator from a
worker thread (``await asyncio.to_thread(next, chunks, None)``), or use
:func:`aplan_chunks`, which does exactly that, so an event loop is never blocked. A
generator must be advanced by one thread at a time.

Examples
--------
>>> from phaseo_notebook._limits import ModelLimits
>>> for chunk in plan_chunks("meeting.m4a", ModelLimits(25_000_000, 1400)):  # doctest: +SKIP
...     print(chunk.index, chunk.start, chunk.end, len(chunk.data))
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from phaseo_notebook._duration import read_header
from phaseo_notebook._exceptions import AudioInputError
from phaseo_notebook._extras import require
from phaseo_notebook._limits import ModelLimits

if TYPE_CHECKING:
    import numpy.typing as npt

    Int16Array = npt.NDArray[np.int16]
else:
    Int16Array = np.ndarray

__all__ = [
    "CHUNK_FORMAT",
    "CHUNK_SAMPLE_RATE",
    "MAX_CHUNK_SECONDS",
    "SEARCH_SECONDS",
    "SECONDS_MARGIN",
    "AudioInfo",
    "Chunk",
    "aplan_chunks",
    "chunk_requests",
    "encode_flac",
    "iter_pcm",
    "needs_chunking",
    "plan_chunks",
    "probe",
]

AudioInput = str | os.PathLike[str] | bytes

#: How chunks are encoded; part of a chunk's identity (bump it when the encoding changes).
CHUNK_FORMAT: Final = "flac16k-1"
#: Chunks are 16 kHz mono: what speech models resample to anyway, and half the bytes of 32 kHz.
CHUNK_SAMPLE_RATE: Final = 16_000
#: Fraction of a seconds limit a chunk may fill (a decoder may count a few ms more).
SECONDS_MARGIN: Final = 0.97
#: Fraction of a bytes limit a chunk's planned size may fill.
BYTES_MARGIN: Final = 0.95
#: The longest chunk whatever the limits: bounds memory when a model names no limit.
MAX_CHUNK_SECONDS: Final = 1800.0
#: How far back from the longest allowed chunk the cut may move to find a quiet point.
SEARCH_SECONDS: Final = 20.0
#: Energy frame length, and how many frames the energy is averaged over around a cut.
FRAME_SECONDS: Final = 0.03
SMOOTH_FRAMES: Final = 7
#: How much longer than raw PCM a chunk of speech in FLAC may be, for the same bytes.
_SPEECH_FLAC_RATIO: Final = 2.0
#: FLAC's worst case: a verbatim subframe is raw 16-bit PCM, plus frame headers.
_WORST_BYTES_PER_SECOND: Final = CHUNK_SAMPLE_RATE * 2 * 1.01
_FLAC_HEADER_BYTES: Final = 8192
#: Decoded block length: large enough for numpy to be efficient, small against a chunk.
_BLOCK_FRAMES: Final = 1 << 16
#: A chunk never gets shorter than this while searching for a quiet point or fitting bytes.
_MIN_CHUNK_SECONDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a long recording, ready to send.

    Parameters
    ----------
    index : int
        Position in the file, from 0.
    start, end : float
        Span in seconds from the start of the original file.
    data : bytes
        The span as a 16 kHz mono 16-bit FLAC file.

    Examples
    --------
    >>> c = Chunk(0, 0.0, 12.5, b"fLaC")
    >>> c.duration, c.span_ms
    (12.5, (0, 12500))
    """

    index: int
    start: float
    end: float
    data: bytes

    @property
    def duration(self) -> float:
        """``end - start`` in seconds."""
        return self.end - self.start

    @property
    def span_ms(self) -> tuple[int, int]:
        """The span in whole milliseconds: the chunk's part of a cache key."""
        return round(self.start * 1000), round(self.end * 1000)

    def identity(self, file_identity: str) -> str:
        """The identity of this chunk's audio, from the file's (``AudioSource`` identity).

        It names the encoding too (:data:`CHUNK_FORMAT`), so a change to how chunks are
        made can never answer from another encoding's cache entry.

        Examples
        --------
        >>> Chunk(2, 1358.2, 2716.4, b"").identity("sha256:ab12")
        'sha256:ab12#chunk=flac16k-1:1358200-2716400'
        """
        lo, hi = self.span_ms
        return f"{file_identity}#chunk={CHUNK_FORMAT}:{lo}-{hi}"

    def __repr__(self) -> str:
        return f"Chunk({self.index}, {self.start:.3f}-{self.end:.3f} s, {len(self.data)} bytes)"


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What a header says about an input.

    Parameters
    ----------
    seconds : float or None
        Duration, when the header gives one.
    size_bytes : int
        Size of the encoded input.
    decoder : {"soundfile", "av"}
        Which library reads it.
    """

    seconds: float | None
    size_bytes: int
    decoder: str


def needs_chunking(size_bytes: int, seconds: float | None, limits: ModelLimits) -> bool:
    """Whether an input must be split to fit ``limits`` (cheap: size and header duration).

    An unknown duration (``None``) is judged by size alone; if the model then refuses it as
    too long, the refusal teaches the limit and the row is planned again.

    Examples
    --------
    >>> needs_chunking(1_000, 30.0, ModelLimits(25_000_000, 1400))
    False
    >>> needs_chunking(1_000, 1500.0, ModelLimits(25_000_000, 1400))
    True
    >>> needs_chunking(30_000_000, None, ModelLimits(25_000_000))
    True
    """
    return not limits.admits(size_bytes, seconds)


def chunk_requests(seconds: float | None, size_bytes: int | None, limits: ModelLimits) -> int:
    """How many requests one file takes under ``limits``: 1, or its number of chunks.

    Counted from the file's length as :func:`plan_chunks` sizes the chunks, before any is
    cut (what a run's estimate and its progress total start from); cuts fall in pauses, so
    the real count can differ by one.

    Examples
    --------
    >>> chunk_requests(3000.0, 1_000_000, ModelLimits(25_000_000, 1400))
    3
    >>> chunk_requests(60.0, 1_000_000, ModelLimits(25_000_000, 1400))
    1
    """
    if seconds is None or size_bytes is None or not needs_chunking(size_bytes, seconds, limits):
        return 1
    first = later = MAX_CHUNK_SECONDS
    if limits.max_seconds is not None:
        first = later = min(first, limits.max_seconds * SECONDS_MARGIN)
    if limits.max_bytes is not None:
        raw = limits.max_bytes * BYTES_MARGIN / (2 * CHUNK_SAMPLE_RATE)
        first, later = min(first, raw), min(later, raw * _SPEECH_FLAC_RATIO)
    if seconds <= first:
        return 1
    return 1 + math.ceil((seconds - first) / later)


def _describe(source: AudioInput) -> str:
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return repr(os.fspath(source))


def _open_input(source: AudioInput) -> Any:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    return os.fspath(source)


def _size(source: AudioInput) -> int:
    if isinstance(source, bytes):
        return len(source)
    try:
        return Path(os.fspath(source)).stat().st_size
    except OSError as err:
        raise AudioInputError(f"cannot read file: {err}", audio=_describe(source)) from err


def _soundfile() -> Any:
    return require("soundfile", "long", purpose="Splitting long audio")


def _av() -> Any:
    return require("av", "long", purpose="Splitting long audio in m4a/mp4/webm/aac")


def probe(source: AudioInput) -> AudioInfo:
    """Size and duration of an input from its header, without decoding its audio.

    The header is read by :func:`._duration.read_header`, the package's one header reader.

    Raises
    ------
    MissingExtraError
        Without soundfile (needed to cut any long file), or without PyAV for a format only
        PyAV reads.
    AudioInputError
        When no installed library can read it.

    Examples
    --------
    >>> probe("../shared/audio/jfk.flac").seconds  # doctest: +SKIP
    11.0
    """
    size = _size(source)
    _soundfile()
    header = read_header(source if isinstance(source, bytes) else Path(os.fspath(source)))
    if header is None or header.reader == "wave":
        # Only PyAV is left to try: say so if it is missing, else the input is not audio.
        _av()
        raise AudioInputError("not a readable audio file", audio=_describe(source))
    return AudioInfo(header.seconds, size, header.reader)


def iter_pcm(source: AudioInput) -> Iterator[Int16Array]:
    """The input's audio as 16 kHz mono int16 blocks, decoded and resampled as a stream.

    Raises
    ------
    AudioInputError
        When the input cannot be decoded.

    Examples
    --------
    >>> total = sum(len(b) for b in iter_pcm("../shared/audio/jfk.flac"))  # doctest: +SKIP
    >>> total / 16000  # doctest: +SKIP
    11.0
    """
    sf = _soundfile()
    av = _av()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=CHUNK_SAMPLE_RATE)

    def drain(frames: list[Any]) -> Iterator[Int16Array]:
        for frame in frames:
            block = frame.to_ndarray().reshape(-1)
            if block.size:
                yield block.astype(np.int16, copy=False)

    try:
        handle = sf.SoundFile(_open_input(source))
    except (RuntimeError, TypeError, ValueError):
        handle = None
    if handle is not None:
        try:
            with handle:
                rate = handle.samplerate
                for block in handle.blocks(
                    blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True
                ):
                    mono = np.ascontiguousarray(block.mean(axis=1, dtype=np.float32)[None, :])
                    frame = av.AudioFrame.from_ndarray(mono, format="flt", layout="mono")
                    frame.sample_rate = rate
                    yield from drain(resampler.resample(frame))
        except RuntimeError as err:  # libsndfile: damaged data past a valid header
            raise AudioInputError(f"cannot be decoded: {err}", audio=_describe(source)) from err
        yield from drain(resampler.resample(None))
        return
    try:
        with av.open(_open_input(source), "r") as container:
            if not container.streams.audio:
                raise AudioInputError("no audio stream", audio=_describe(source))
            for frame in container.decode(container.streams.audio[0]):
                frame.pts = None  # the resampler needs no timestamps; bad ones upset it
                yield from drain(resampler.resample(frame))
        yield from drain(resampler.resample(None))
    except av.FFmpegError as err:
        raise AudioInputError(
            f"not a decodable audio file: {err}", audio=_describe(source)
        ) from err


def encode_flac(samples: Int16Array | list[Int16Array]) -> bytes:
    """16 kHz mono int16 samples (one array or consecutive pieces) as FLAC file bytes.

    Examples
    --------
    >>> data = encode_flac(np.zeros(16000, dtype=np.int16))
    >>> data[:4]
    b'fLaC'
    """
    sf = _soundfile()
    pieces = [samples] if isinstance(samples, np.ndarray) else samples
    buffer = io.BytesIO()
    with sf.SoundFile(
        buffer, "w", samplerate=CHUNK_SAMPLE_RATE, channels=1, format="FLAC", subtype="PCM_16"
    ) as out:
        for piece in pieces:
            out.write(piece)
    return buffer.getvalue()


class _SampleQueue:
    """Consecutive int16 blocks with cheap append, range copy and pop from the front."""

    def __init__(self) -> None:
        self._blocks: deque[Int16Array] = deque()
        self.size = 0

    def append(self, block: Int16Array) -> None:
        self._blocks.append(block)
        self.size += len(block)

    def pieces(self, stop: int) -> list[Int16Array]:
        """Views of the first ``stop`` samples (no copy)."""
        out: list[Int16Array] = []
        need = stop
        for block in self._blocks:
            if need <= 0:
                break
            out.append(block[:need])
            need -= len(out[-1])
        return out

    def copy(self, start: int, stop: int) -> Int16Array:
        """A copy of samples ``[start, stop)``."""
        out = np.empty(max(0, stop - start), dtype=np.int16)
        offset = 0
        filled = 0
        for block in self._blocks:
            end = offset + len(block)
            if end > start and offset < stop:
                lo = max(start, offset) - offset
                hi = min(stop, end) - offset
                out[filled : filled + hi - lo] = block[lo:hi]
                filled += hi - lo
            if end >= stop:
                break
            offset = end
        return out[:filled]

    def drop(self, count: int) -> None:
        """Forget the first ``count`` samples."""
        self.size -= count
        while count > 0:
            block = self._blocks[0]
            if len(block) <= count:
                self._blocks.popleft()
                count -= len(block)
            else:
                # A copy, so the dropped head's memory is freed with the rest of the block.
                self._blocks[0] = block[count:].copy()
                count = 0


def _quiet_point(window: Int16Array, frame: int) -> int:
    """Offset in ``window`` of the middle of its quietest stretch (latest among equals)."""
    frames = len(window) // frame
    if frames < 1:
        return len(window)
    x = window[: frames * frame].astype(np.float32).reshape(frames, frame)
    energy = np.mean(x * x, axis=1)
    shift = 0
    if frames >= SMOOTH_FRAMES:
        # "valid", not "same": zero padding would make the window's edges look quiet.
        kernel = np.ones(SMOOTH_FRAMES, dtype=np.float32) / SMOOTH_FRAMES
        energy = np.convolve(energy, kernel, mode="valid")
        shift = SMOOTH_FRAMES // 2
    # Later is better among equals: fewer, longer chunks.
    best = len(energy) - 1 - int(np.argmin(energy[::-1])) + shift
    return best * frame + frame // 2


class _Planner:
    """How long the next chunk may be, learning the FLAC compression as chunks are encoded."""

    def __init__(self, limits: ModelLimits) -> None:
        self.limits = limits
        self.bytes_per_second = _WORST_BYTES_PER_SECOND

    def max_samples(self) -> int:
        seconds = MAX_CHUNK_SECONDS
        if self.limits.max_seconds is not None:
            seconds = min(seconds, self.limits.max_seconds * SECONDS_MARGIN)
        if self.limits.max_bytes is not None:
            budget = self.limits.max_bytes * BYTES_MARGIN - _FLAC_HEADER_BYTES
            seconds = min(seconds, budget / self.bytes_per_second)
        if seconds < _MIN_CHUNK_SECONDS:
            raise ValueError(f"limits {self.limits} leave less than {_MIN_CHUNK_SECONDS} s a chunk")
        return int(seconds * CHUNK_SAMPLE_RATE)

    def observe(self, samples: int, size: int) -> None:
        if samples >= 10 * CHUNK_SAMPLE_RATE:
            # A short chunk's rate says little; a long one's holds for the next, give or
            # take a change of content, which BYTES_MARGIN and the post-check absorb.
            measured = max(0, size - _FLAC_HEADER_BYTES) / (samples / CHUNK_SAMPLE_RATE)
            self.bytes_per_second = min(_WORST_BYTES_PER_SECOND, measured * 1.1)


def plan_chunks(source: AudioInput, limits: ModelLimits) -> Generator[Chunk, None, None]:
    """Split ``source`` into FLAC chunks under ``limits``, cut at quiet points, lazily.

    Parameters
    ----------
    source : path or bytes
        Any input the gateway accepts (see the module docstring).
    limits : ModelLimits
        The model's limits; every chunk's ``data`` fits ``max_bytes`` and its duration
        fits ``max_seconds``.

    Yields
    ------
    Chunk
        In order; spans are contiguous, from 0 to the file's duration.

    Raises
    ------
    AudioInputError
        When the input cannot be decoded, or holds no audio.

    Examples
    --------
    >>> from phaseo_notebook._limits import ModelLimits
    >>> chunks = list(plan_chunks("../shared/audio/jfk.flac", ModelLimits(None, 5)))  # doctest: +SKIP
    >>> [round(c.end, 2) for c in chunks]  # doctest: +SKIP
    [4.54, 8.63, 11.0]
    """
    planner = _Planner(limits)
    planner.max_samples()  # fail on impossible limits before decoding anything
    frame = int(FRAME_SECONDS * CHUNK_SAMPLE_RATE)
    queue = _SampleQueue()
    offset = 0  # samples of the file already yielded
    index = 0
    blocks = iter_pcm(source)
    exhausted = False
    while True:
        target = planner.max_samples()
        while not exhausted and queue.size < target:
            block = next(blocks, None)
            if block is None:
                exhausted = True
            else:
                queue.append(block)
        if queue.size == 0:
            break
        if queue.size <= target and exhausted:
            cut = queue.size
        else:
            search = min(int(SEARCH_SECONDS * CHUNK_SAMPLE_RATE), target // 4)
            cut = target - search + _quiet_point(queue.copy(target - search, target), frame)
        while True:
            data = encode_flac(queue.pieces(cut))
            if limits.max_bytes is None or len(data) <= limits.max_bytes:
                break
            # Denser audio than the chunks before: cut again, shorter, at a quiet point.
            shorter = int(cut * limits.max_bytes * BYTES_MARGIN / len(data))
            search = min(int(SEARCH_SECONDS * CHUNK_SAMPLE_RATE), shorter // 4)
            if shorter - search < _MIN_CHUNK_SECONDS * CHUNK_SAMPLE_RATE:
                raise ValueError(f"limits {limits} leave less than {_MIN_CHUNK_SECONDS} s a chunk")
            cut = shorter - search + _quiet_point(queue.copy(shorter - search, shorter), frame)
        planner.observe(cut, len(data))
        yield Chunk(
            index,
            offset / CHUNK_SAMPLE_RATE,
            (offset + cut) / CHUNK_SAMPLE_RATE,
            data,
        )
        queue.drop(cut)
        offset += cut
        index += 1
    if index == 0:
        raise AudioInputError("holds no audio samples", audio=_describe(source))


async def aplan_chunks(source: AudioInput, limits: ModelLimits) -> AsyncIterator[Chunk]:
    """:func:`plan_chunks` for an event loop: each chunk is made in a worker thread.

    Examples
    --------
    >>> async def count(path, limits):  # doctest: +SKIP
    ...     return len([c async for c in aplan_chunks(path, limits)])
    """
    chunks = plan_chunks(source, limits)
    # Held while a worker runs the generator: a generator cannot be closed while it runs.
    busy = threading.Lock()

    def advance() -> Chunk | None:
        with busy:
            return next(chunks, None)

    def close() -> None:
        with busy:
            chunks.close()

    try:
        while True:
            chunk = await asyncio.to_thread(advance)
            if chunk is None:
                return
            yield chunk
    finally:
        if busy.locked():
            # Cancelled while a worker makes a chunk, which it finishes anyway: waiting
            # for it would hold up the cancel by a chunk's decoding and encoding, so a
            # thread of its own closes the generator once the chunk is made.
            threading.Thread(target=close, name="phaseo-notebook-chunks", daemon=True).start()
        else:
            # Closing runs the generator's cleanup (closing the file) off the loop as well.
            await asyncio.to_thread(close)
