"""Long recordings through the batch engine, against real gateways on 127.0.0.1.

The recordings are made at test time (:mod:`tests._long_audio`): real speech looped with
pauses. The local gateway enforces byte and duration limits and counts what it receives;
a small verbose gateway answers segments and words, so the stitched offsets can be checked.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._chunking import plan_chunks
from phaseo_notebook._limits import LIMITS_FILE_NAME, ModelLimits

from ._long_audio import write_long_recording
from ._verbose_server import verbose_server

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 180.0


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_long_recording(tmp_path_factory.mktemp("long") / "meeting.wav", SECONDS)


def _run(df: pd.DataFrame, gw: pn.LocalGateway, cache: Path, **options: object) -> pd.DataFrame:
    return df.stt.transcribe(
        col="audio",
        client=pn.Client(**gw.client_kwargs()),
        cache=cache,
        progress=False,
        metadata=True,
        **options,  # type: ignore[arg-type]
    )


def test_a_refused_file_is_learned_chunked_under_the_limits_and_stitched(
    long_wav: Path, tmp_path: Path
) -> None:
    max_bytes = 400_000
    cache = tmp_path / "cache"
    df = pd.DataFrame({"audio": [str(long_wav), "https://example.invalid/a.wav"]})
    with pn.LocalGateway(
        engine="fake", mode="lenient", limits={"local/fake": (max_bytes, None)}
    ) as gw:
        out = _run(df.iloc[:1], gw, cache, model="local/fake", timestamps="segment")
        stats = gw.stats()
        # The whole file went once and was refused; every chunk after it fits.
        assert stats.by_status[413] == 1
        # The gateway records the length of the base64 text: 4 characters per 3 bytes.
        sizes = [r["fields"]["audio_b64"] for r in stats.recent]
        assert sizes[0] == 4 * math.ceil(long_wav.stat().st_size / 3)
        assert all(size <= 4 * math.ceil(max_bytes / 3) for size in sizes[1:])
        assert stats.by_status[200] == len(sizes) - 1 >= 10
        row = out.iloc[0]
        assert pd.isna(row["text_error"]) and row["text_duration"] == pytest.approx(SECONDS)
        # The fake engine answers one segment at the start of each chunk (it measures no
        # FLAC duration): shifted, they start where the chunks start, in order.
        segments = row["text_segments"]
        assert len(segments) == stats.by_status[200]
        starts = [s["start"] for s in segments]
        planned = plan_chunks(str(long_wav), ModelLimits(max_bytes, None))
        assert starts == [round(c.start, 3) for c in planned]
        assert all(b - a > 1.0 for a, b in itertools.pairwise(starts))
        assert row["text"] == " ".join(s["text"] for s in segments)
        learned = json.loads((cache / LIMITS_FILE_NAME).read_text())
        scope = gw.url.removesuffix("/v1")
        assert learned["scopes"][scope]["local/fake"]["max_bytes"] == max_bytes

        # A rerun of the finished file sends nothing, and gives the same row.
        again = _run(df.iloc[:1], gw, cache, model="local/fake", timestamps="segment")
        assert gw.stats().requests == stats.requests
        assert bool(again["text_cached"].iloc[0])
        assert again["text_segments"].iloc[0] == segments and again["text"].iloc[0] == row["text"]


def test_duration_limit_is_learned_once_per_model(long_wav: Path, tmp_path: Path) -> None:
    model = "acme/meeting"
    df = pd.DataFrame({"audio": [str(long_wav), long_wav.read_bytes()[:-2000]]})
    with pn.LocalGateway(
        engine="fake", mode="lenient", models={model: "fake"}, limits={model: (None, 50.0)}
    ) as gw:
        out = _run(df, gw, tmp_path / "cache", model=model, concurrency=1)
        stats = gw.stats()
    assert out["text_error"].isna().all()
    # Two long rows, one refusal: the second row was planned under what the first taught.
    assert stats.by_status.get(400, 0) == 1
    chunks = list(plan_chunks(str(long_wav), ModelLimits(25_000_000, 50.0)))
    assert max(c.duration for c in chunks) <= 50.0
    assert stats.by_status[200] >= 2 * len(chunks) - 1


def test_segments_and_words_are_shifted_by_each_chunks_start(
    long_wav: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with verbose_server() as server:
        scope = server.url.removesuffix("/v1")
        cache.mkdir()
        # A limit learned by an earlier run, for this gateway only.
        (cache / LIMITS_FILE_NAME).write_text(
            json.dumps(
                {
                    "version": 1,
                    "scopes": {
                        scope: {
                            "acme/asr": {
                                "max_bytes": None,
                                "max_seconds": 60.0,
                                "learned_at": time.time(),
                            }
                        }
                    },
                }
            )
        )
        out = pd.DataFrame({"audio": [str(long_wav)]}).stt.transcribe(
            col="audio",
            model="acme/asr",
            client=pn.Client(base_url=server.url, api_key="k"),
            cache=cache,
            progress=False,
            timestamps="word",
        )
        received = list(server.requests)
    chunks = list(plan_chunks(str(long_wav), ModelLimits(25_000_000, 60.0)))
    assert len(received) == len(chunks) >= 3
    assert all(r["audio_seconds"] <= 60.0 for r in received)
    assert sorted(r["audio_seconds"] for r in received) == pytest.approx(
        sorted(c.duration for c in chunks), abs=0.01
    )
    segments = out["text_segments"].iloc[0]
    words = out["text_words"].iloc[0]
    expected = []
    expected_words = []
    for c in chunks:
        s = c.start
        expected += [
            {"start": round(s, 3), "end": round(s + 1.25, 3), "text": " Ask not"},
            {"start": round(s + 1.25, 3), "end": round(s + 2.5, 3), "text": " what your country"},
        ]
        expected_words += [
            {"start": round(s, 3), "end": round(s + 0.5, 3), "word": "Ask"},
            {"start": round(s + 0.5, 3), "end": round(s + 1.25, 3), "word": "not"},
        ]
    assert segments == expected
    assert words == expected_words
    assert out["text"].iloc[0] == " ".join(["Ask not what your country"] * len(chunks))


def test_chain_prompt_sends_the_previous_chunks_text(long_wav: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    with verbose_server() as server:
        scope = server.url.removesuffix("/v1")
        (cache / LIMITS_FILE_NAME).write_text(
            json.dumps(
                {
                    "version": 1,
                    "scopes": {
                        scope: {
                            "acme/asr": {
                                "max_bytes": None,
                                "max_seconds": 60.0,
                                "learned_at": time.time(),
                            }
                        }
                    },
                }
            )
        )
        pd.DataFrame({"audio": [str(long_wav)]}).stt.transcribe(
            col="audio",
            model="acme/asr",
            client=pn.Client(base_url=server.url, api_key="k"),
            cache=cache,
            progress=False,
            prompt="Glossary: Kenobi.",
            chain_prompt=True,
        )
        prompts = [r["prompt"][0] for r in server.requests]
    assert prompts[0] == "Glossary: Kenobi."
    assert len(prompts) >= 3
    assert set(prompts[1:]) == {"Glossary: Kenobi. Ask not what your country"}


KILL_SCRIPT = """
import sys
import phaseo_notebook as pn
from phaseo_notebook._batch import run_request_sync
from phaseo_notebook._request import TranscribeRequest

url, key, cache, audio = sys.argv[1:5]
request = TranscribeRequest(
    [audio], model="acme/meeting", cache=cache, progress=False, concurrency=2,
    flush_interval=0.2, client=pn.Client(base_url=url, api_key=key),
)
run_request_sync(request)
"""


def test_sigkill_mid_file_resends_only_chunks_not_answered(long_wav: Path, tmp_path: Path) -> None:
    model, cache, latency, concurrency, flush = "acme/meeting", tmp_path / "cache", 0.5, 2, 0.2
    with pn.LocalGateway(
        engine="fake",
        mode="lenient",
        models={model: "fake"},
        limits={model: (None, 10.0)},
        faults=pn.Faults(latency=latency),
    ) as gw:
        kwargs = gw.client_kwargs()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                KILL_SCRIPT,
                kwargs["base_url"],
                kwargs["api_key"] or "",
                str(cache),
                str(long_wav),
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 120
            while gw.stats().by_status.get(200, 0) < 12:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        answered = gw.stats().by_status[200]
        before = gw.stats().requests
        out = _run(
            pd.DataFrame({"audio": [str(long_wav)]}),
            gw,
            cache,
            model=model,
            concurrency=concurrency,
        )
        resent = gw.stats().requests - before
    total = len(list(plan_chunks(str(long_wav), ModelLimits(25_000_000, 10.0))))
    assert out["text_error"].isna().all()
    # Lost: what was in flight, plus what was answered since the last flush.
    lost = concurrency + concurrency * math.ceil(flush / latency)
    assert total - answered <= resent <= total - answered + lost
    assert resent < total
    # The row stitched from saved and re-sent chunks is the row of an uninterrupted run.
    with pn.LocalGateway(
        engine="fake", mode="lenient", models={model: "fake"}, limits={model: (None, 10.0)}
    ) as fresh:
        clean = _run(
            pd.DataFrame({"audio": [str(long_wav)]}),
            fresh,
            tmp_path / "other",
            model=model,
            concurrency=4,
        )
    assert out["text"].iloc[0] == clean["text"].iloc[0]
    assert out["text_duration"].iloc[0] == pytest.approx(SECONDS)
