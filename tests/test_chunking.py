"""Long audio split under a model's limits: at quiet points, contiguous, streaming, any format."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from phaseo_notebook._chunking import (
    CHUNK_SAMPLE_RATE,
    SECONDS_MARGIN,
    Chunk,
    aplan_chunks,
    encode_flac,
    iter_pcm,
    needs_chunking,
    plan_chunks,
    probe,
)
from phaseo_notebook._exceptions import AudioInputError
from phaseo_notebook._limits import DEFAULT_LIMITS, ModelLimits

from ._long_audio import write_long_recording

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAME = int(0.03 * CHUNK_SAMPLE_RATE)
#: A cut must fall where the audio is this many times quieter (RMS) than the speech.
QUIET_FACTOR = 8.0

#: Bytes bind first (about 80 s a chunk), then seconds: both limits are exercised.
SMALL_LIMITS = ModelLimits(max_bytes=2_000_000, max_seconds=300)
SECONDS_LIMITS = ModelLimits(max_bytes=25_000_000, max_seconds=120)


@pytest.fixture(scope="session")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 minutes of real speech (shared recordings, espeak-ng sentences) with pauses."""
    path = tmp_path_factory.mktemp("long-audio") / "meeting.flac"
    return write_long_recording(path, 30 * 60, seed=1)


@pytest.fixture(scope="session")
def long_pcm(long_recording: Path) -> np.ndarray:
    """The recording as the chunker sees it: 16 kHz mono int16."""
    return np.concatenate(list(iter_pcm(long_recording)))


@pytest.fixture(scope="session")
def speech_rms(long_pcm: np.ndarray) -> float:
    """RMS of the frames that hold speech (well above the noise floor of the pauses)."""
    frames = long_pcm[: len(long_pcm) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return float(np.sqrt(np.mean(rms[rms > 500] ** 2)))


@pytest.fixture(scope="session")
def small_chunks(long_recording: Path) -> list[Chunk]:
    return list(plan_chunks(long_recording, SMALL_LIMITS))


@pytest.fixture(scope="session")
def seconds_chunks(long_recording: Path) -> list[Chunk]:
    return list(plan_chunks(long_recording, SECONDS_LIMITS))


def _rms(samples: np.ndarray) -> float:
    x = samples.astype(np.float64)
    return float(np.sqrt(np.mean(x * x)))


def _decode_flac(data: bytes) -> np.ndarray:
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == CHUNK_SAMPLE_RATE
    return np.asarray(samples)


@pytest.mark.parametrize("which", ["small_chunks", "seconds_chunks"])
def test_every_chunk_is_a_flac_under_both_limits(
    which: str, request: pytest.FixtureRequest
) -> None:
    chunks: list[Chunk] = request.getfixturevalue(which)
    limits = SMALL_LIMITS if which == "small_chunks" else SECONDS_LIMITS
    assert len(chunks) > 5
    assert limits.max_bytes is not None and limits.max_seconds is not None
    for chunk in chunks:
        assert chunk.data[:4] == b"fLaC"
        assert len(chunk.data) <= limits.max_bytes
        assert chunk.duration <= limits.max_seconds
        info = sf.info(io.BytesIO(chunk.data))
        assert (info.samplerate, info.channels) == (CHUNK_SAMPLE_RATE, 1)
        assert info.frames == round(chunk.duration * CHUNK_SAMPLE_RATE)


def test_chunks_are_long_where_limits_allow(seconds_chunks: list[Chunk]) -> None:
    # Under a 120 s limit, chunks fill it (the quiet point sits in the last 20 s), so a
    # 30-minute file is not cut into needlessly many pieces.
    assert all(c.duration >= 120 * SECONDS_MARGIN - 20 for c in seconds_chunks[:-1])
    assert len(seconds_chunks) <= 18


def test_spans_are_contiguous_and_cover_the_file(
    small_chunks: list[Chunk], long_pcm: np.ndarray, long_recording: Path
) -> None:
    assert [c.index for c in small_chunks] == list(range(len(small_chunks)))
    assert small_chunks[0].start == 0.0
    for before, after in itertools.pairwise(small_chunks):
        assert before.end == after.start
    assert small_chunks[-1].end == pytest.approx(len(long_pcm) / CHUNK_SAMPLE_RATE, abs=1e-9)
    header_seconds = probe(long_recording).seconds
    assert sum(c.duration for c in small_chunks) == pytest.approx(header_seconds, abs=0.01)


def test_chunks_hold_exactly_the_files_audio(
    small_chunks: list[Chunk], long_pcm: np.ndarray
) -> None:
    for chunk in small_chunks:
        lo = round(chunk.start * CHUNK_SAMPLE_RATE)
        hi = round(chunk.end * CHUNK_SAMPLE_RATE)
        np.testing.assert_array_equal(_decode_flac(chunk.data), long_pcm[lo:hi])


@pytest.mark.parametrize("which", ["small_chunks", "seconds_chunks"])
def test_cuts_fall_where_the_audio_is_quiet(
    which: str, request: pytest.FixtureRequest, long_pcm: np.ndarray, speech_rms: float
) -> None:
    chunks: list[Chunk] = request.getfixturevalue(which)
    around = int(0.06 * CHUNK_SAMPLE_RATE)
    for chunk in chunks[:-1]:
        cut = round(chunk.end * CHUNK_SAMPLE_RATE)
        quiet = _rms(long_pcm[cut - around : cut + around])
        assert quiet * QUIET_FACTOR < speech_rms, (chunk, quiet, speech_rms)


def test_the_quiet_check_would_catch_a_cut_inside_speech(
    small_chunks: list[Chunk], long_pcm: np.ndarray, speech_rms: float
) -> None:
    # The same measure at the middle of each chunk finds speech most of the time: the
    # check above is not satisfied by any point of this recording.
    around = int(0.06 * CHUNK_SAMPLE_RATE)
    loud = 0
    for chunk in small_chunks:
        mid = round((chunk.start + chunk.end) / 2 * CHUNK_SAMPLE_RATE)
        loud += _rms(long_pcm[mid - around : mid + around]) * QUIET_FACTOR >= speech_rms
    assert loud >= len(small_chunks) // 2


def test_bytes_and_path_give_the_same_chunks(long_recording: Path) -> None:
    head = io.BytesIO()
    data, rate = sf.read(long_recording, frames=90 * 22050, dtype="int16")
    sf.write(head, data, rate, format="WAV")
    limits = ModelLimits(max_seconds=30)
    path = long_recording.parent / "head.wav"
    path.write_bytes(head.getvalue())
    from_path = list(plan_chunks(path, limits))
    from_bytes = list(plan_chunks(head.getvalue(), limits))
    assert from_path == from_bytes
    assert len(from_path) == 4


def test_needs_chunking_reads_size_and_header(long_recording: Path, shared_audio: Path) -> None:
    small = probe(shared_audio / "jfk.flac")
    assert small.seconds == pytest.approx(11.0)
    assert not needs_chunking(small.size_bytes, small.seconds, DEFAULT_LIMITS)
    assert not needs_chunking(small.size_bytes, small.seconds, ModelLimits(max_seconds=1400))
    long = probe(long_recording)
    assert long.seconds == pytest.approx(1800.0)
    assert needs_chunking(long.size_bytes, long.seconds, ModelLimits(max_seconds=1400))
    assert needs_chunking(long.size_bytes, long.seconds, DEFAULT_LIMITS)  # 45 MB of FLAC
    assert not needs_chunking(long.size_bytes, None, ModelLimits(max_seconds=1400))


def _encode_with_pyav(path: Path, source: Path, codec: str, rate: int, container: str) -> None:
    import av

    data, source_rate = sf.read(source, dtype="float32", always_2d=True)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=rate)

        def frames() -> Iterator[object]:
            for i in range(0, len(data), 4096):
                block = np.ascontiguousarray(data[i : i + 4096].T)
                if block.shape[0] == 1:
                    block = np.vstack([block, block])
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                frame.sample_rate = source_rate
                yield from resampler.resample(frame)
            yield from resampler.resample(None)

        for frame in frames():
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize(
    ("suffix", "codec", "rate", "container"),
    [(".m4a", "aac", 44100, "mp4"), (".webm", "libopus", 48000, "webm")],
)
def test_m4a_and_webm_are_decoded_with_pyav(
    tmp_path: Path, shared_audio: Path, suffix: str, codec: str, rate: int, container: str
) -> None:
    path = tmp_path / ("jfk" + suffix)
    _encode_with_pyav(path, shared_audio / "jfk.flac", codec, rate, container)
    info = probe(path)
    assert info.decoder == "av"
    assert info.seconds == pytest.approx(11.0, abs=0.1)

    chunks = list(plan_chunks(path, ModelLimits(max_seconds=4)))
    assert len(chunks) == 4
    assert chunks[-1].end == pytest.approx(11.0, abs=0.1)
    assert all(c.duration <= 4 for c in chunks)
    assert list(plan_chunks(path.read_bytes(), ModelLimits(max_seconds=4))) == chunks

    # The decoded audio is the speech, not noise: its loudness follows the original's.
    decoded = np.concatenate([_decode_flac(c.data) for c in chunks]).astype(np.float64)
    original = np.concatenate(list(iter_pcm(shared_audio / "jfk.flac"))).astype(np.float64)
    n = min(len(decoded), len(original)) // 1600 * 1600
    env_a = np.sqrt(np.mean(decoded[:n].reshape(-1, 1600) ** 2, axis=1))
    env_b = np.sqrt(np.mean(original[:n].reshape(-1, 1600) ** 2, axis=1))
    assert np.corrcoef(env_a, env_b)[0, 1] > 0.9


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate"),
    [("MP3", "MPEG_LAYER_III", 44100), ("OGG", "OPUS", 48000), ("OGG", "VORBIS", 22050)],
)
def test_mp3_and_ogg_are_decoded_with_soundfile(
    shared_audio: Path, fmt: str, subtype: str, rate: int
) -> None:
    original = np.concatenate(list(iter_pcm(shared_audio / "jfk.flac")))
    from scipy.signal import resample_poly

    data = original.astype(np.float32) / 32768

    out = io.BytesIO()
    sf.write(out, resample_poly(data, rate, CHUNK_SAMPLE_RATE), rate, format=fmt, subtype=subtype)
    info = probe(out.getvalue())
    assert info.decoder == "soundfile"
    chunks = list(plan_chunks(out.getvalue(), ModelLimits(max_seconds=6)))
    assert len(chunks) >= 2
    assert all(c.duration <= 6 for c in chunks)
    assert chunks[-1].end == pytest.approx(11.0, abs=0.1)
    decoded = np.concatenate([_decode_flac(c.data) for c in chunks]).astype(np.float64)
    n = min(len(decoded), len(original)) // 1600 * 1600
    env_a = np.sqrt(np.mean(decoded[:n].reshape(-1, 1600) ** 2, axis=1))
    env_b = np.sqrt(np.mean(original[:n].astype(np.float64).reshape(-1, 1600) ** 2, axis=1))
    assert np.corrcoef(env_a, env_b)[0, 1] > 0.9


def test_aiff_is_decoded(shared_audio: Path) -> None:
    (chunk,) = plan_chunks(shared_audio / "french.aiff", DEFAULT_LIMITS)
    assert chunk.end == pytest.approx(probe(shared_audio / "french.aiff").seconds, abs=0.01)


def test_stereo_44k_wav_is_downmixed_and_resampled(tmp_path: Path) -> None:
    t = np.arange(44100 * 3) / 44100
    tone = np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([0.5 * tone, 0.25 * tone], axis=1).astype(np.float32)
    path = tmp_path / "tone.wav"
    sf.write(path, stereo, 44100)
    (chunk,) = plan_chunks(path, DEFAULT_LIMITS)
    samples = _decode_flac(chunk.data).astype(np.float64)
    assert len(samples) == pytest.approx(3 * CHUNK_SAMPLE_RATE, abs=2)
    spectrum = np.abs(np.fft.rfft(samples[1000:-1000]))
    peak_hz = np.argmax(spectrum) * CHUNK_SAMPLE_RATE / len(samples[1000:-1000])
    assert peak_hz == pytest.approx(440, abs=2)
    assert _rms(samples) == pytest.approx(0.375 / np.sqrt(2) * 32767, rel=0.05)  # the mean


def test_undecodable_input_is_an_audio_input_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.m4a"
    path.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioInputError):
        probe(path)
    with pytest.raises(AudioInputError):
        list(plan_chunks(path, DEFAULT_LIMITS))
    with pytest.raises(AudioInputError):
        list(plan_chunks(b"", DEFAULT_LIMITS))


def test_damaged_data_past_a_valid_header_is_an_audio_input_error(shared_audio: Path) -> None:
    data = (shared_audio / "jfk.flac").read_bytes()
    with pytest.raises(AudioInputError, match="cannot be decoded"):
        list(plan_chunks(data[: len(data) // 2], DEFAULT_LIMITS))


def test_limits_too_small_for_a_second_of_audio_are_refused(shared_audio: Path) -> None:
    with pytest.raises(ValueError, match="less than"):
        next(plan_chunks(shared_audio / "jfk.flac", ModelLimits(max_bytes=20_000)))


def test_a_chunk_over_the_byte_limit_is_cut_again(tmp_path: Path) -> None:
    # Quiet then loud white noise: the compression measured on the quiet part would
    # plan a loud chunk far over the byte limit; the post-encoding check cuts it shorter.
    rng = np.random.default_rng(3)
    quiet = rng.normal(0, 3, 16000 * 60)
    loud = rng.normal(0, 8000, 16000 * 60)
    path = tmp_path / "noise.flac"
    sf.write(path, np.clip(np.concatenate([quiet, loud]), -32768, 32767).astype(np.int16), 16000)
    limits = ModelLimits(max_bytes=600_000)
    chunks = list(plan_chunks(path, limits))
    assert all(len(c.data) <= 600_000 for c in chunks)
    assert chunks[-1].end == pytest.approx(120.0)
    assert any(c.start >= 60 for c in chunks)


async def test_aplan_chunks_leaves_the_event_loop_free(
    small_chunks: list[Chunk], long_recording: Path
) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    chunks = [c async for c in aplan_chunks(long_recording, SMALL_LIMITS)]
    stop.set()
    await task
    assert chunks == small_chunks
    assert ticks > 20


async def test_aplan_chunks_cancelled_while_a_chunk_is_made_ends_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A run cancelled mid-file: the worker thread is still inside the generator. Closing
    # it there raised "generator already executing", which replaced the cancellation
    # and became the file's error.
    making, release, closed = threading.Event(), threading.Event(), threading.Event()

    def slow_plan(source: object, limits: ModelLimits) -> Iterator[Chunk]:
        try:
            making.set()
            release.wait(10)
            yield Chunk(0, 0.0, 1.0, b"fLaC")
        finally:
            closed.set()

    monkeypatch.setattr("phaseo_notebook._chunking.plan_chunks", slow_plan)

    async def consume() -> None:
        async for _chunk in aplan_chunks(b"", SMALL_LIMITS):
            pass

    task = asyncio.create_task(consume())
    assert await asyncio.to_thread(making.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not closed.is_set()  # not waited for: the chunk is still being made
    release.set()
    assert await asyncio.to_thread(closed.wait, 10)  # closed once it was made


def test_encode_flac_of_pieces_equals_whole() -> None:
    x = (np.arange(48000) % 200 - 100).astype(np.int16)
    assert encode_flac([x[:1000], x[1000:]]) == encode_flac(x)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from phaseo_notebook._chunking import plan_chunks
    from phaseo_notebook._limits import ModelLimits
    import av, numpy, soundfile  # imported before the baseline: their code is not the file

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) / 1024

    # getrusage's ru_maxrss survives exec, so it would report the parent's peak: the
    # kernel's VmHWM is this process's own, and writing 5 to clear_refs resets it.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    t0 = time.perf_counter()
    sizes, spans = [], []
    for chunk in plan_chunks(sys.argv[1], ModelLimits(25_000_000, 1400)):
        sizes.append(len(chunk.data))
        spans.append([chunk.start, chunk.end])
    seconds = time.perf_counter() - t0
    peak = status("VmHWM")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"growth_mb": peak - base, "peak_mb": peak, "base_mb": base,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime,
                      "seconds": seconds, "sizes": sizes, "spans": spans}))
    """
)


@pytest.mark.slow
def test_two_hour_file_is_chunked_in_bounded_memory(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tmp_path_factory.mktemp("two-hours") / "two-hours.flac"
    write_long_recording(path, 2 * 3600, seed=2)
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
        check=True,
    )
    result = json.loads(done.stdout)
    print(
        f"2-hour file: {len(result['sizes'])} chunks in {result['seconds']:.1f} s, "
        f"({result['cpu_seconds']:.1f} s CPU), peak RSS {result['peak_mb']:.0f} MB "
        f"(+{result['growth_mb']:.0f} MB over {result['base_mb']:.0f} MB after imports), "
        f"chunk sizes {result['sizes']}, spans {result['spans']}"
    )
    # Decoded whole, the file would be 230 MB as int16 and 460 MB as float32.
    assert result["growth_mb"] < 200
    assert all(size <= 25_000_000 for size in result["sizes"])
    assert all(end - start <= 1400 for start, end in result["spans"])
    assert result["spans"][-1][1] == pytest.approx(7200.0, abs=0.01)


def test_chunk_identity_names_file_span_and_encoding(
    small_chunks: list[Chunk], long_recording: Path
) -> None:
    ids = [c.identity("sha256:abc") for c in small_chunks]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("sha256:abc#chunk=flac16k-") for i in ids)
    assert small_chunks[0].identity("sha256:abc") != small_chunks[0].identity("sha256:abd")
    # Planned again, the file gives the same chunks: a rerun finds its cache entries.
    again = plan_chunks(long_recording, SMALL_LIMITS)
    assert [c.identity("f") for c in again] == [c.identity("f") for c in small_chunks]
