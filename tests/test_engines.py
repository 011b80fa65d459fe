"""Tests of the local gateway's speech engines and of the bundled sample clips."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from phaseo_notebook._engines import (
    ENGINE_NAMES,
    AudioDecodeError,
    Engine,
    EngineResult,
    FakeEngine,
    decode_to_pcm16k,
    fake_transcript,
    get_engine,
    shared_engine,
    wav_duration,
)
from phaseo_notebook._samples import load_samples, sample_paths, sample_references

# Real recordings shared by the project, never copied into it (see its README.md).
AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"

# Aggregate word error rate of PocketSphinx on the bundled clips: measured 1/42 = 0.024
# (only "report" -> "reports"), asserted with margin for other platforms' float maths.
MAX_SAMPLES_WER = 0.10
MAX_CLIP_WER = 0.34


def _wav(pcm: bytes, *, rate: int = 16_000, channels: int = 1, extra: bytes = b"") -> bytes:
    """A 16-bit PCM WAV; ``extra`` chunks go between ``fmt `` and ``data``."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """Word edit distance and reference length."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1], len(ref)


# -- fake engine ---------------------------------------------------------------------


def test_fake_transcript_is_deterministic_and_content_dependent() -> None:
    assert fake_transcript(b"audio one") == fake_transcript(b"audio one")
    texts = {fake_transcript(i.to_bytes(4, "little")) for i in range(2000)}
    assert len(texts) == 2000
    for text in list(texts)[:200]:
        words = text.split(" ")
        assert 4 <= len(words) <= 8
        assert text == text.lower().strip()
        assert all(word.isalpha() for word in words)
    # All lengths from 4 to 8 occur: the count comes from the hash too.
    assert {len(t.split()) for t in texts} == {4, 5, 6, 7, 8}


def test_fake_engine_result_and_wav_duration() -> None:
    data = (AUDIO / "english.wav").read_bytes()
    info = sf.info(io.BytesIO(data))
    engine = get_engine("fake")
    assert isinstance(engine, FakeEngine)
    assert isinstance(engine, Engine)
    result = engine.transcribe(data)
    assert result == EngineResult(fake_transcript(data), info.frames / info.samplerate, "en")
    assert engine.transcribe(data, language="de").language == "de"
    assert asyncio.run(engine.atranscribe(data, language="fr")) == EngineResult(
        result.text, result.duration, "fr"
    )
    # Not a WAV: the fake engine never decodes, so the duration is unknown.
    assert engine.transcribe((AUDIO / "jfk.flac").read_bytes()).duration is None
    engine.close()


def test_wav_duration_reads_the_header_only() -> None:
    one_second = bytes(32_000)
    assert wav_duration(_wav(one_second)) == 1.0
    assert wav_duration(_wav(bytes(4 * 44_100), rate=44_100, channels=2)) == 1.0
    # An odd-sized chunk before "data" is padded to an even offset.
    assert wav_duration(_wav(one_second, extra=b"LIST" + struct.pack("<I", 3) + b"abc\0")) == 1.0
    # A streamed WAV declares 0xFFFFFFFF bytes of data: count what is there.
    streamed = bytearray(_wav(one_second))
    streamed[-32_004:-32_000] = b"\xff\xff\xff\xff"
    assert wav_duration(bytes(streamed)) == 1.0
    assert wav_duration(_wav(one_second)[:-16_000]) == 0.5
    for not_wav in (b"", b"RIFF", b"RIFF\0\0\0\0WAVE", (AUDIO / "french.aiff").read_bytes()):
        assert wav_duration(not_wav) is None


def test_get_engine_rejects_unknown_names() -> None:
    assert ENGINE_NAMES == ("fake", "pocketsphinx", "whisper")
    with pytest.raises(ValueError, match="'nope'") as excinfo:
        get_engine("nope")
    assert "'fake'" in str(excinfo.value) and "'whisper'" in str(excinfo.value)
    with pytest.raises(ValueError, match="'fake', 'pocketsphinx', 'whisper'"):
        shared_engine("nope")


def test_shared_engine_is_one_object_per_name_across_threads() -> None:
    seen: list[Engine] = []
    threads = [
        threading.Thread(target=lambda: seen.append(shared_engine("fake"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and all(engine is seen[0] for engine in seen)
    assert shared_engine("fake") is seen[0]


# -- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["english.wav", "jfk.flac", "french.aiff", "chinese.flac"])
def test_decode_gives_16k_mono_int16_and_the_duration(name: str) -> None:
    data = (AUDIO / name).read_bytes()
    info = sf.info(io.BytesIO(data))
    pcm, duration = decode_to_pcm16k(data)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert duration == pytest.approx(info.frames / info.samplerate)
    assert len(pcm) == pytest.approx(duration * 16_000, abs=1)
    assert np.abs(pcm).max() > 1000  # the speech survived the down-mix and resampling


def test_decode_keeps_16k_int16_audio_bit_exact() -> None:
    path = sample_paths()[0]
    original, rate = sf.read(path, dtype="int16")
    assert rate == 16_000
    pcm, _ = decode_to_pcm16k(path.read_bytes())
    np.testing.assert_array_equal(pcm, original)


def test_decode_downmixes_stereo() -> None:
    left = np.full(16_000, 0.5, dtype=np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([left, -left], axis=1), 16_000, format="WAV", subtype="FLOAT")
    pcm, duration = decode_to_pcm16k(buffer.getvalue())
    assert duration == 1.0
    assert not pcm.any()  # opposite channels cancel: they were averaged, not concatenated


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not audio",
        _wav(b""),
        b"RIFF\x00\x00\x00\x00WAVEjunk",
        (AUDIO / "jfk.flac").read_bytes()[:2000],
    ],
    ids=["empty", "text", "no-samples", "bad-wav", "truncated-flac"],
)
def test_undecodable_bytes_raise_audio_decode_error(data: bytes) -> None:
    with pytest.raises(AudioDecodeError) as excinfo:
        decode_to_pcm16k(data)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value)


def test_decode_names_the_extra_when_soundfile_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(ImportError, match=r"pip install 'phaseo-notebook\[local\]'"):
        decode_to_pcm16k(b"RIFF....WAVE")


# -- PocketSphinx --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pocketsphinx_engine() -> Iterator[Engine]:
    pytest.importorskip("pocketsphinx")
    engine = get_engine("pocketsphinx", workers=2)
    yield engine
    engine.close()


def test_pocketsphinx_transcribes_english_wav(pocketsphinx_engine: Engine) -> None:
    data = (AUDIO / "english.wav").read_bytes()
    result = pocketsphinx_engine.transcribe(data)
    assert result.text == "one two three"
    assert result.duration == pytest.approx(2.745, abs=0.001)
    assert result.language == "en"
    # The model is English whatever is asked; the result says what was used.
    assert pocketsphinx_engine.transcribe(data, language="fr").language == "en"


def test_pocketsphinx_atranscribe_runs_in_the_pool_without_blocking_the_loop(
    pocketsphinx_engine: Engine,
) -> None:
    english = (AUDIO / "english.wav").read_bytes()
    jfk = (AUDIO / "jfk.flac").read_bytes()

    async def main() -> tuple[tuple[EngineResult, EngineResult], float]:
        longest_gap = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal longest_gap
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                longest_gap, last = max(longest_gap, now - last), now

        tick = asyncio.create_task(ticker())
        results = await asyncio.gather(
            pocketsphinx_engine.atranscribe(english), pocketsphinx_engine.atranscribe(jfk)
        )
        done.set()
        await tick
        return results, longest_gap

    (short, long), longest_gap = asyncio.run(main())
    assert short.text == "one two three"
    assert long.duration == 11.0
    # A rough transcript, but these words of "...ask not what your country can do for you".
    assert {"fellow", "what", "your", "you", "can", "do"} <= set(long.text.split())
    # Decoding jfk.flac takes seconds of CPU: had it run on the loop, a tick would wait that long.
    assert longest_gap < 1.0


def test_pocketsphinx_output_does_not_depend_on_earlier_inputs() -> None:
    pytest.importorskip("pocketsphinx")
    engine = get_engine("pocketsphinx")
    clip = (AUDIO / "chinese.flac").read_bytes()
    first = engine.transcribe(clip).text
    for other in ("french.aiff", "english.wav"):
        engine.transcribe((AUDIO / other).read_bytes())
    assert engine.transcribe(clip).text == first
    engine.close()


def test_pocketsphinx_rejects_undecodable_audio_through_the_pool(
    pocketsphinx_engine: Engine,
) -> None:
    with pytest.raises(AudioDecodeError, match="cannot decode"):
        asyncio.run(pocketsphinx_engine.atranscribe(b"not audio at all"))
    with pytest.raises(AudioDecodeError):
        pocketsphinx_engine.transcribe(b"")


def test_pocketsphinx_transcribes_the_bundled_samples(pocketsphinx_engine: Engine) -> None:
    errors = words = 0
    for name, reference in sample_references().items():
        text = pocketsphinx_engine.transcribe((sample_paths()[0].parent / name).read_bytes()).text
        clip_errors, clip_words = _wer(reference, text)
        assert clip_errors / clip_words <= MAX_CLIP_WER, (name, reference, text)
        errors, words = errors + clip_errors, words + clip_words
    assert errors / words <= MAX_SAMPLES_WER


def test_pocketsphinx_rejects_zero_workers() -> None:
    with pytest.raises(ValueError, match="workers"):
        get_engine("pocketsphinx", workers=0)


# -- bundled samples -----------------------------------------------------------------


def test_samples_are_listed_short_16k_mono_and_small() -> None:
    paths = sample_paths()
    references = sample_references()
    assert 5 <= len(paths) <= 10
    assert [path.name for path in paths] == list(references)
    assert sum(path.stat().st_size for path in paths) < 1_000_000
    for path in paths:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        assert 1.0 <= info.duration <= 5.0
    for reference in references.values():
        assert reference == " ".join(reference.lower().split())


def test_load_samples_frame() -> None:
    frame = load_samples()
    assert list(frame.columns) == ["audio", "reference", "file"]
    assert list(frame["file"]) == [path.name for path in sample_paths()]
    assert list(frame["audio"]) == [str(path) for path in sample_paths()]
    assert dict(zip(frame["file"], frame["reference"], strict=True)) == sample_references()
    assert all(Path(audio).is_file() for audio in frame["audio"])


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    """Workers are fresh interpreters: they never re-run the user's script."""
    pytest.importorskip("pocketsphinx")
    script = tmp_path / "plain_script.py"
    script.write_text(
        "import pandas as pd, phaseo_notebook as pn\n"
        "print('script body ran', flush=True)\n"
        f"df = pd.DataFrame({{'audio': [{str(AUDIO / 'english.wav')!r}]}})\n"
        "out = df.stt.transcribe(col='audio', cache=False, progress=False)\n"
        "print('text:', out['text'].iloc[0], flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("script body ran") == 1
    # The default engine is Whisper tiny.en: cased and punctuated, and the same every run.
    assert "text: One, two, three." in done.stdout


def test_a_dead_worker_is_a_typed_error_and_is_replaced() -> None:
    pytest.importorskip("pocketsphinx")
    from phaseo_notebook._engines._workers import EngineCrashedError, WorkerPool, WorkerSpec

    pool = WorkerPool(1, WorkerSpec("phaseo_notebook._engines._pocketsphinx"))
    try:
        english = (AUDIO / "english.wav").read_bytes()
        assert pool.submit(english).result(timeout=60).text == "one two three"
        (proc,) = pool._procs
        proc.kill()
        with pytest.raises(EngineCrashedError, match="died"):
            pool.submit(english).result(timeout=60)
        assert pool.submit(english).result(timeout=60).text == "one two three"
    finally:
        pool.shutdown()
    assert pool._procs == set()
