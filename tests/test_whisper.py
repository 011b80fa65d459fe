"""The Whisper engine (the default offline engine) and the safe decoder, end to end.

Whisper loads in about a second per worker and takes about a second per clip on one core,
so the tests share one gateway and keep to a few short real recordings.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

import phaseo_notebook as pn
from phaseo_notebook._constants import LOCAL_DEFAULT_MODEL
from phaseo_notebook._engines import (
    AudioDecodeError,
    AudioTooLongError,
    EngineTimeoutError,
    decode_to_pcm16k,
    get_engine,
)
from phaseo_notebook._gateway._app import GatewayCore
from phaseo_notebook._scoring import normalize_text
from tests.conftest import REPO_ROOT, SHARED_AUDIO

pytest.importorskip("faster_whisper")

MODEL = "local/whisper-tiny.en"
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def _wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1] / len(ref)


def _wav_header(rate: int, data_bytes: int, *, channels: int = 1) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body


def _tiled(path: Path, times: int) -> bytes:
    """``path`` repeated ``times`` times, as a 16 kHz mono WAV."""
    pcm, _ = decode_to_pcm16k(path.read_bytes())
    buf = io.BytesIO()
    sf.write(buf, np.tile(pcm, times), 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def gateway() -> Iterator[pn.LocalGateway]:
    with pn.LocalGateway(engine="whisper", mode="lenient", api_key=None, workers=2) as gw:
        yield gw


def _post(gw: pn.LocalGateway, audio: bytes, timeout: float = 60, **fields: Any) -> httpx.Response:
    data = {"model": MODEL, **fields}
    return httpx.post(
        gw.url + "/audio/transcriptions",
        data=data,
        files={"file": ("clip.wav", audio, "audio/wav")},
        timeout=timeout,
    )


def test_the_default_model_is_whisper_and_served_by_the_embedded_route() -> None:
    assert LOCAL_DEFAULT_MODEL == MODEL
    with pn.Client() as client:
        result = client.transcribe(SHARED_AUDIO / "english.wav")
    assert normalize_text(result.text) == "one two three"


def test_jfk_within_ten_percent_wer_with_word_timestamps(gateway: pn.LocalGateway) -> None:
    response = _post(
        gateway,
        (SHARED_AUDIO / "jfk.flac").read_bytes(),
        response_format="verbose_json",
        timestamp_granularities='["segment","word"]',
        language="en",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert _wer(JFK_REFERENCE, body["text"]) <= 0.10, body["text"]
    assert body["language"] == "en"
    assert body["duration"] == pytest.approx(11.0, abs=0.01)
    segments, words = body["segments"], body["words"]
    assert segments and all(set(s) == {"start", "end", "text"} for s in segments)
    assert words and all(set(w) == {"start", "end", "word"} for w in words)
    assert " ".join(s["text"] for s in segments) == body["text"]
    assert normalize_text(" ".join(w["word"] for w in words)) == normalize_text(body["text"])
    for items in (segments, words):
        starts = [item["start"] for item in items]
        assert starts == sorted(starts)
        assert all(0 <= item["start"] <= item["end"] <= 11.0 for item in items)
    # "segment" alone: segments, no words; plain json: neither.
    english = (SHARED_AUDIO / "english.wav").read_bytes()
    only_segments = _post(
        gateway, english, response_format="verbose_json", timestamp_granularities="segment"
    ).json()
    assert normalize_text(only_segments["text"]) == "one two three"
    assert only_segments["segments"][0]["end"] <= 2.75
    assert "words" not in only_segments
    plain = _post(gateway, english).json()
    assert "segments" not in plain and "words" not in plain
    # With no language given, the one the engine used is reported.
    assert plain["language"] == "en"


def test_prompt_and_temperature_reach_the_engine(gateway: pn.LocalGateway) -> None:
    english = (SHARED_AUDIO / "english.wav").read_bytes()
    plain = _post(gateway, english).json()["text"]
    prompted = _post(gateway, english, prompt="1, 2, 3, 4, 5.", temperature="0").json()["text"]
    # The prompt's style (digits) carries into the transcript: the engine saw it.
    assert plain == "One, two, three."
    assert prompted != plain
    assert normalize_text(prompted) == "1 2 3"
    bad = _post(gateway, english, temperature="3")
    assert bad.status_code == 400
    assert _post(gateway, english, timestamp_granularities="word").status_code == 400


def test_another_language_on_an_english_only_model_is_a_typed_400(
    gateway: pn.LocalGateway,
) -> None:
    with (
        pn.Client(**gateway.client_kwargs(), max_retries=0) as client,
        pytest.raises(pn.BadRequestError, match="English only") as excinfo,
    ):
        client.transcribe(SHARED_AUDIO / "french.aiff", model=MODEL, language="fr")
    assert excinfo.value.status_code == 400
    body = _post(gateway, (SHARED_AUDIO / "english.wav").read_bytes(), language="fr").json()
    assert body["details"][0]["field"] == "language"
    assert "text" not in body


def test_a_decode_bomb_is_refused_while_a_normal_request_is_answered(
    gateway: pn.LocalGateway,
) -> None:
    # 40 KB of samples that a header says are 1 Hz: 20,000 s of audio.
    bomb = _wav_header(1, 40_000) + bytes(40_000)
    english = (SHARED_AUDIO / "english.wav").read_bytes()
    _post(gateway, english)  # workers warm
    answers: dict[str, httpx.Response] = {}

    def send(name: str, audio: bytes) -> None:
        answers[name] = _post(gateway, audio)

    start = time.perf_counter()
    threads = [
        threading.Thread(target=send, args=(name, audio))
        for name, audio in (("bomb", bomb), ("normal", english))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - start
    assert answers["bomb"].status_code == 400
    assert "sample rate 1 Hz" in answers["bomb"].json()["description"]
    assert answers["normal"].status_code == 200
    assert normalize_text(answers["normal"].json()["text"]) == "one two three"
    assert elapsed < 10


@pytest.mark.parametrize(
    ("rate", "accepted"), [(3_999, False), (4_000, True), (384_000, True), (384_001, False)]
)
def test_sample_rate_bounds(rate: int, accepted: bool) -> None:
    frames = rate // 10  # 0.1 s of silence
    wav = _wav_header(rate, frames * 2) + bytes(frames * 2)
    if accepted:
        pcm, seconds = decode_to_pcm16k(wav)
        assert seconds == pytest.approx(0.1, abs=1e-3)
        assert pcm.shape[0] == 1600
    else:
        with pytest.raises(AudioDecodeError, match="outside the accepted 4000-384000 Hz"):
            decode_to_pcm16k(wav)
        # Every engine refuses it, the fake one included.
        with pytest.raises(AudioDecodeError):
            get_engine("fake").transcribe(wav)


def test_duration_cap_is_a_413() -> None:
    jfk = (SHARED_AUDIO / "jfk.flac").read_bytes()
    with pytest.raises(AudioTooLongError, match="over the limit of 5 s"):
        decode_to_pcm16k(jfk, max_duration=5)
    # Past 15 minutes a file is decoded in a stream; the cap holds there too.
    long_clip = _tiled(SHARED_AUDIO / "jfk.flac", 100)
    with pytest.raises(AudioTooLongError, match="over the limit of 1000 s"):
        decode_to_pcm16k(long_clip, max_duration=1000)
    pcm, seconds = decode_to_pcm16k(long_clip)
    assert seconds == pytest.approx(1100.0) and pcm.shape[0] == 1100 * 16_000
    reply = GatewayCore().failure_reply(AudioTooLongError("audio is too long", 5.0), "req_1")
    body = json.loads(reply.body)
    assert (reply.status, body["error"], body["max_seconds"]) == (413, "payload_too_large", 5.0)


def test_compressed_formats_decode_through_pyav() -> None:
    av = pytest.importorskip("av")
    pcm, _ = decode_to_pcm16k((SHARED_AUDIO / "english.wav").read_bytes())
    for container, codec in (("ipod", "aac"), ("webm", "libopus")):
        buf = io.BytesIO()
        with av.open(buf, mode="w", format=container) as out:
            stream = out.add_stream(codec, rate=48_000)
            frame = av.AudioFrame.from_ndarray(
                np.repeat(pcm, 3).reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = 48_000
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
        decoded, seconds = decode_to_pcm16k(buf.getvalue())
        assert seconds == pytest.approx(pcm.shape[0] / 16_000, abs=0.1), container
        assert decoded.dtype == np.int16


def test_a_job_past_its_time_limit_is_stopped() -> None:
    # Long enough for a short clip on a busy machine, far too short for 7 minutes of speech
    # (about 20 s of CPU even on an idle core).
    engine = get_engine("whisper", workers=1, job_timeout=10.0)
    try:
        english = (SHARED_AUDIO / "english.wav").read_bytes()
        long_clip = _tiled(SHARED_AUDIO / "jfk.flac", 40)
        asyncio.run(engine.atranscribe(english))
        (first,) = engine.worker_pids()
        start = time.perf_counter()
        with pytest.raises(EngineTimeoutError, match="longer than 10 s"):
            asyncio.run(engine.atranscribe(long_clip))
        assert time.perf_counter() - start < 16
        assert not _alive(first)
        # The next job gets a new worker.
        result = asyncio.run(engine.atranscribe(english))
        assert normalize_text(result.text) == "one two three"
    finally:
        engine.close()
    assert engine.worker_pids() == []


def test_a_client_that_disconnects_frees_its_worker() -> None:
    with pn.LocalGateway(engine="whisper", mode="lenient", api_key=None, workers=1) as gw:
        english = (SHARED_AUDIO / "english.wav").read_bytes()
        assert _post(gw, english).status_code == 200
        engine = gw._server.engines.get("whisper")  # type: ignore[union-attr]
        (worker,) = engine.worker_pids()  # type: ignore[attr-defined]
        with pytest.raises(httpx.ReadTimeout):
            _post(gw, _tiled(SHARED_AUDIO / "jfk.flac", 16), timeout=1.0)
        deadline = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Stopped long before its 3 minutes of audio could have been transcribed.
        assert not _alive(worker)
        assert gw.stats().in_flight == 0
        start = time.perf_counter()
        assert _post(gw, english).status_code == 200
        assert time.perf_counter() - start < 15


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] not in "ZX"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process tables from /proc")
def test_sigterm_stops_the_server_and_its_workers_with_no_orphan() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "phaseo_notebook", "serve", "--engine", "whisper"),
            *("--port", "0", "--no-auth", "--mode", "lenient", "--workers", "2"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line[line.index("http://") :].split()[0]
        english = (SHARED_AUDIO / "english.wav").read_bytes()
        for _ in range(2):
            response = httpx.post(
                url + "/audio/transcriptions",
                data={"model": MODEL},
                files={"file": ("a.wav", english)},
                timeout=60,
            )
            assert response.status_code == 200
        workers = _children(proc.pid)
        assert workers, "the whisper engine runs in worker processes"
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.perf_counter() - start < 5
        deadline = time.monotonic() + 3
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_corrupt_model_is_a_typed_error(tmp_path: Path) -> None:
    from phaseo_notebook._engines._whisper import bundled_model_dir, verify_model

    fake = tmp_path / "model"
    fake.mkdir()
    (fake / "model.bin").write_bytes(b"not the model")
    with pytest.raises(pn.EngineModelError, match="sha256"):
        verify_model(fake)
    verify_model(bundled_model_dir())
    assert json.loads((bundled_model_dir() / "config.json").read_text())
