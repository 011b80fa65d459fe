"""Paid results survive, keys never leak, the cache is checked: each promise pinned here.

Every test runs against the project's own local gateway on 127.0.0.1, or a small hostile
server on 127.0.0.1 where the local gateway is too well-behaved to show the fault.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import phaseo_notebook as pn
from phaseo_notebook._batch import transcribe_many_sync
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._parts import LocalParts

from .conftest import REPO_ROOT, make_wav

# --------------------------------------------------------------------------- 1. cache writes


class _FullDisk(LocalParts):
    """A part store on a full disk: every write fails as the OS says it then."""

    def write(self, table: pa.Table, name: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cannot write to cache" in r.getMessage()]


def test_full_disk_warns_once_and_returns_every_paid_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = pn.Cache(tmp_path / "cache")
    cache._store = _FullDisk(tmp_path / "cache")
    clips = [make_wav(i) for i in range(30)]
    with pn.LocalGateway(engine="fake") as gw, caplog.at_level(logging.WARNING):
        # A short flush interval: periodic flushes fail during the run, not only the last.
        res = transcribe_many_sync(
            clips,
            model="local/fake",
            cache=cache,
            client=pn.Client(**gw.client_kwargs()),
            progress=False,
            flush_interval=0.01,
        )
        sent = gw.stats().requests
    assert res.text == [fake_transcript(c) for c in clips]
    assert res.requests == sent == 30
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1
    assert str(tmp_path / "cache") in warnings[0] and "No space left on device" in warnings[0]
    assert cache.write_error is not None and cache.pending == 0


def test_cache_dir_under_a_file_is_found_before_sending_and_the_run_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache's parent should be")
    where = blocker / "cache"
    clips = [make_wav(100 + i) for i in range(5)]
    with pn.LocalGateway(engine="fake") as gw, caplog.at_level(logging.WARNING):
        res = transcribe_many_sync(
            clips,
            model="local/fake",
            cache=where,
            client=pn.Client(**gw.client_kwargs()),
            progress=False,
        )
    assert res.text == [fake_transcript(c) for c in clips]
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and str(where) in warnings[0] and "Not a directory" in warnings[0]
    # The warning came before the first request: it is the first record of the run.
    assert caplog.records[0].getMessage() == warnings[0]


def test_cli_writes_its_output_when_the_cache_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    clips = []
    for i in range(3):
        path = tmp_path / f"c{i}.wav"
        path.write_bytes(make_wav(200 + i))
        clips.append(path)
    table = tmp_path / "in.csv"
    pd.DataFrame({"audio": [str(p) for p in clips]}).to_csv(table, index=False)
    out = tmp_path / "out.csv"
    with pn.LocalGateway(engine="fake", models={"a/model": "fake"}) as gw:
        assert gw.api_key is not None
        env = {**os.environ, "PHASEO_API_KEY": gw.api_key, "PHASEO_BASE_URL": gw.url}
        env["PYTHONPATH"] = str(REPO_ROOT)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "phaseo_notebook", "transcribe", str(table)),
                *("--model", "a/model", "--out", str(out), "--cache-dir", str(blocker / "c")),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(out)["text"].tolist() == [fake_transcript(p.read_bytes()) for p in clips]
    assert result.stderr.count("cannot write to cache directory") == 1
    assert "Not a directory" in result.stderr


def test_a_cache_that_cannot_be_read_is_reported_before_anything_is_sent(tmp_path: Path) -> None:
    where = tmp_path / "cache"
    where.write_text("a file, not a cache directory")
    with pn.LocalGateway(engine="fake") as gw:
        with pytest.raises(pn.CacheError, match="not a directory"):
            transcribe_many_sync(
                [make_wav(1)],
                model="local/fake",
                cache=where,
                client=pn.Client(**gw.client_kwargs()),
                progress=False,
            )
        assert gw.stats().requests == 0
