"""The benchmark command, small: it must keep running and keep printing its whole table."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import phaseo_notebook as pn
from benchmarks.scenarios import sparse_wav
from phaseo_notebook._batch import transcribe_many_sync

from .conftest import REPO_ROOT

pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
def test_quick_benchmark_prints_the_table_and_stt_beats_the_httpx_baseline(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(report_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    header = "| contender | N | in flight | requests/s | % of ideal | x vs httpx.AsyncClient"
    assert header in table
    for label in (
        "serial `df[col].apply` + `httpx.Client`",
        "`ThreadPoolExecutor(64)` + `httpx.Client`",
        "`asyncio.gather` + `Semaphore(64)` + `httpx.AsyncClient`",
        "plain `aiohttp` + `Semaphore(64)`, for reference",
        "`df.stt.transcribe(concurrency=64)`",
    ):
        assert f"| {label} |" in table, label
    for label in (
        "`asyncio.gather` + `Semaphore(64)` + httpx API on `httpx-aiohttp`",
        "plain `aiohttp` + `Semaphore(64)`",
        "`df.stt.transcribe(concurrency=64, cache=False)`",
    ):
        assert f"| {label} |" in table, label
    for scenario in (
        "- Files: df.stt.transcribe took",
        "- Cached rerun:",
        "- Cached rerun of files:",
        "- Engine bookkeeping:",
        "- Memory:",
    ):
        assert scenario in table, scenario

    report = json.loads(report_path.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    # Every contender sent every request and got the engine's expected text back.
    assert all(row["wrong"] == 0 for row in rows.values())
    assert all(row["gateway_requests"] == row["n"] + row["warmup"] for row in rows.values())
    # A generous bound: shared CI machines are noisy, the full run shows about 7-10x.
    assert rows["stt"]["rps"] >= 2 * rows["gather"]["rps"]

    # Files on disk: every contender read every file, sent it once and got its text back.
    for row in report["files"]["rows"]:
        assert row["wrong"] == 0 and row["gateway_requests"] == row["n"], row["name"]
    for cached in (report["cached"], report["cached_files"]):
        assert cached["gateway_requests"] == 0 and cached["cached_rows"] == cached["rows"]
        assert cached["wrong"] == 0
        assert min(cached["plan"], cached["lookup"], cached["join"]) >= 0
    book = report["bookkeeping"]
    assert book["cache_rows_written"] == book["rows"] and book["wrong"] == 0
    assert book["bare_cpu"] > 0 and book["engine_cpu_ms"] < 1.0
    memory = report["memory"]
    assert memory["errors"] == 0 and memory["peak_rss_mb"] < 400


def test_audio_is_released_as_soon_as_its_answer_is_in(tmp_path: Path) -> None:
    """What keeps peak memory at about ``concurrency`` files in flight, whatever the rows.

    With the cyclic garbage collector off, whatever still holds a file's bytes once its
    answer is in shows up as memory still allocated after the run.
    """
    paths = []
    for i in range(8):
        path = tmp_path / f"big-{i}.wav"
        sparse_wav(path, i, 4 * 2**20)
        paths.append(str(path))
    with pn.LocalGateway(process=True) as gw, pn.Client(**gw.client_kwargs()) as client:
        transcribe_many_sync(paths[:1], model="local/fake", cache=False, client=client)
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            result = transcribe_many_sync(
                paths, model="local/fake", cache=False, concurrency=2, client=client
            )
            still_allocated, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            gc.enable()
    assert result.errors == 0 and result.requests == 8
    # Each request carries about 11 MB (the file, its base64 text, the encoded form).
    assert peak > 10 * 2**20
    assert still_allocated < 4 * 2**20, f"{still_allocated / 2**20:.0f} MB still held"
