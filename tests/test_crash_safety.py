"""Crash safety of the cache: killed runs leave a readable cache, damaged files are skipped.

A run is killed with SIGKILL (no cleanup of any kind) at random moments, several times
over the same cache directory, with a short flush interval so that kills land in the
middle of part-file writes too. After every kill the cache must read, hold each key once
with the right text, and a final run must complete exactly what is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import phaseo_notebook as pn
from phaseo_notebook._base_client import call_origin
from phaseo_notebook._batch import transcribe_many_sync
from phaseo_notebook._cache import cache_key
from phaseo_notebook._engines import fake_transcript

from .conftest import REPO_ROOT, make_wav

MODEL = "local/fake"

RUNNER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import phaseo_notebook as pn
    from phaseo_notebook._batch import transcribe_many_sync
    from tests.conftest import make_wav
    n, url, key, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    inputs = [make_wav(i, seconds=0.02) for i in range(n)]
    print("start", flush=True)
    transcribe_many_sync(inputs, model={model!r}, concurrency=8, cache=cache,
                         client=pn.Client(api_key=key, base_url=url), progress=False,
                         flush_interval=0.05)
    print("done", flush=True)
    """
)


def clips(n: int) -> list[bytes]:
    return [make_wav(i, seconds=0.02) for i in range(n)]


def expected_texts(audio: list[bytes], gateway_url: str) -> dict[str, str]:
    """Cache key -> the text the fake engine gives, for every input sent to that gateway."""
    origin = call_origin(gateway_url)
    return {
        cache_key(hashlib.sha256(a).hexdigest(), MODEL, None, None, origin=origin): (
            fake_transcript(a)
        )
        for a in audio
    }


def check_cache(cache: Path, expected: dict[str, str]) -> int:
    """The cache reads both ways, holds each key once, every text right; returns its rows."""
    table = pd.read_parquet(cache)
    info = pn.Cache(cache).info()
    assert info["damaged"] == {}
    assert info["rows"] == len(table) == info["keys"]
    assert table["key"].is_unique
    for key, text in zip(table["key"], table["text"], strict=True):
        assert expected[key] == text
    return len(table)


def _tmp_files(cache: Path) -> list[str]:
    """Hidden temporary files: a part that was being written when the process died."""
    return [e.name for e in os.scandir(cache) if e.name.startswith(".part-")]


def _kill_during_a_flush(proc: subprocess.Popen[str], cache: Path) -> None:
    """SIGKILL the moment a new file shows up in the cache: a part is being written.

    A write takes about a millisecond; polling the directory catches most of them while
    the file is still incomplete.
    """
    before = set(os.listdir(cache))
    end = time.monotonic() + 10
    while time.monotonic() < end and proc.poll() is None:
        if set(os.listdir(cache)) - before:
            break
    proc.kill()


#: When each trial kills its run: at a random moment, or in the middle of a part-file write.
TRIALS = ("random", "flush", "random", "flush", "flush")


def test_repeated_sigkill_never_leaves_an_unreadable_cache(tmp_path: Path) -> None:
    n, cache = 3000, tmp_path / "cache"
    audio = clips(n)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(root=str(REPO_ROOT), model=MODEL))
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    rows_seen = [0]
    mid_write = 0
    with pn.LocalGateway(faults=pn.Faults(latency=0.02)) as gw:
        expected = expected_texts(audio, gw.url)
        for trial, when in enumerate(TRIALS):
            proc = subprocess.Popen(
                [sys.executable, str(script), str(n), gw.url, gw.api_key or "", str(cache)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "start", proc.stderr
                # Let this run add some rows of its own before it dies.
                target = gw.stats().by_status.get(200, 0) + 40
                end = time.monotonic() + 60
                while gw.stats().by_status.get(200, 0) < target or not list(
                    cache.glob("part-*.parquet")
                ):
                    assert time.monotonic() < end and proc.poll() is None, "no progress"
                    time.sleep(0.01)
                if when == "flush":
                    _kill_during_a_flush(proc, cache)
                else:
                    time.sleep(rng.uniform(0.0, 0.4))
            finally:
                proc.kill()
                proc.communicate(timeout=30)
            assert proc.returncode == -9, f"trial {trial}: the run ended before the kill"
            mid_write += bool(_tmp_files(cache))
            rows = check_cache(cache, expected)
            assert rows >= rows_seen[-1], f"trial {trial}: rows went missing"
            rows_seen.append(rows)

        # The rest, in this process: exactly the rows not in the cache are sent.
        gw.reset_stats()
        res = transcribe_many_sync(
            audio,
            model=MODEL,
            cache=cache,
            client=pn.Client(**gw.client_kwargs()),
            progress=False,
        )
        resent = gw.stats().requests
    # At least one kill really landed inside a write (its temporary file is left behind).
    assert mid_write >= 1
    assert rows_seen[-1] > rows_seen[1] > 0, rows_seen
    assert resent == n - rows_seen[-1]
    assert res.errors == 0 and res.text == [fake_transcript(a) for a in audio]
    assert check_cache(cache, expected) == n


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_part_files_are_skipped_reported_and_redone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    first, second = clips(40)[:20], clips(40)[20:]
    with pn.LocalGateway() as gw:
        client = pn.Client(**gw.client_kwargs())
        transcribe_many_sync(first, model=MODEL, cache=cache, client=client, progress=False)
        (good,) = cache.glob("part-*.parquet")
        transcribe_many_sync(second, model=MODEL, cache=cache, client=client, progress=False)
        (cut,) = set(cache.glob("part-*.parquet")) - {good}
        # Four kinds of damage: a part cut short, garbage, an empty file, a foreign table.
        _truncate(cut)
        (cache / "part-0-garbage.parquet").write_bytes(os.urandom(4096))
        (cache / "part-1-empty.parquet").write_bytes(b"")
        pq.write_table(pa.table({"other": [1, 2]}), cache / "part-2-foreign.parquet")
        damaged = {
            cut.name,
            "part-0-garbage.parquet",
            "part-1-empty.parquet",
            "part-2-foreign.parquet",
        }

        with caplog.at_level(logging.WARNING, logger="phaseo_notebook"):
            info = pn.Cache(cache).info()
        assert set(info["damaged"]) == damaged
        assert all(info["damaged"].values())  # each with its reason
        assert info["rows"] == 20
        warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        for name in damaged:
            assert name in warned
        assert len(pn.Cache(cache).to_pandas()) == 20

        # A rerun over everything sends only the rows whose part was lost, and finishes.
        gw.reset_stats()
        res = transcribe_many_sync(
            first + second, model=MODEL, cache=cache, client=client, progress=False
        )
        assert gw.stats().requests == len(second)
    assert res.errors == 0
    assert res.text == [fake_transcript(a) for a in first + second]
    assert res.cached == [True] * 20 + [False] * 20
    after = pn.Cache(cache).info()
    assert after["rows"] == after["keys"] == 40
    # The damaged files are left for inspection, still reported, never read as rows.
    assert set(after["damaged"]) == damaged


def test_a_cache_whose_every_part_is_damaged_still_loads_empty(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "part-9-garbage.parquet").write_bytes(b"PAR1" + os.urandom(100) + b"PAR1")
    store = pn.Cache(cache)
    assert store.get("0" * 64) is None
    assert store.info()["rows"] == 0 and list(store.info()["damaged"]) == ["part-9-garbage.parquet"]
    res = transcribe_many_sync([make_wav(1)], model=MODEL, cache=store, progress=False)
    assert res.text == [fake_transcript(make_wav(1))]
