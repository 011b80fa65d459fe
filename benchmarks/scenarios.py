"""What one benchmark process runs: one contender of the table, or one extra scenario.

``python -m benchmarks.scenarios NAME CONFIG_JSON`` runs one of :data:`SCENARIOS` against the
gateway named by ``PHASEO_BASE_URL`` / ``PHASEO_API_KEY`` and prints one JSON line with its
measurements. Each runs in its own process so that ``resource.getrusage(RUSAGE_SELF)`` (client
CPU) and ``ru_maxrss`` (peak memory) belong to that contender alone; the gateway runs in
another process, so its CPU is not counted either.

CPU and wall time are measured around the transcription only: imports, building the input
frame and a short warm-up (first-use imports of each HTTP stack) are left out, equally for
every contender. Connection pools are created inside the measured part, as a user's call would.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import resource
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd

import phaseo_notebook as pn
from phaseo_notebook._audio import AudioSource, normalize_audio
from phaseo_notebook._batch import run_request_sync
from phaseo_notebook._cache import CacheRecord, cache_key
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._frames import frame_request, with_outputs

__all__ = ["MODEL", "SCENARIOS", "clip", "main", "sparse_wav", "write_clips"]

#: A remote model name the benchmark gateway maps to its fake engine.
MODEL = "openai/whisper-1"
#: Requests sent before measuring, so first-use imports are not counted.
WARMUP = 8
_HTTP_TIMEOUT = 120.0
# Rows per part file when the cache is prefilled: several parts, as after several runs.
_PREFILL_PART_ROWS = 10_000

T = TypeVar("T")
Config = dict[str, Any]


# --------------------------------------------------------------------------- inputs


def _wav_header(data_bytes: int, rate: int = 8000) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def clip(i: int) -> bytes:
    """A tiny WAV (40 ms of 8 kHz mono) whose samples encode ``i``: distinct per ``i``.

    Examples
    --------
    >>> clip(1) != clip(2), clip(1)[:4], len(clip(1))
    (True, b'RIFF', 684)
    """
    return _wav_header(640) + struct.pack("<Q", i) * 80


def write_clips(directory: Path, n: int, size: int) -> list[Path]:
    """Write ``n`` distinct WAV files of ``size`` bytes each into ``directory``.

    Examples
    --------
    >>> import tempfile
    >>> [p.stat().st_size for p in write_clips(Path(tempfile.mkdtemp()), 2, 8192)]
    [8192, 8192]
    """
    paths = []
    for i in range(n):
        body = (struct.pack("<Q", i) * (size // 8 + 1))[: size - 44]
        path = directory / f"clip-{i:05d}.wav"
        path.write_bytes(_wav_header(size - 44) + body)
        paths.append(path)
    return paths


def sparse_wav(path: Path, i: int, size: int) -> None:
    """Write a WAV of ``size`` bytes at ``path``: a header, 16 bytes encoding ``i``, then a hole.

    The hole is never written, so 2,000 files of 2 MB take almost no disk, yet each one sniffs
    as WAV, has distinct content and reads back as ``size`` bytes.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.wav"
    >>> sparse_wav(p, 7, 4096)
    >>> p.stat().st_size, p.read_bytes()[:4]
    (4096, b'RIFF')
    """
    with path.open("wb") as fh:
        fh.write(_wav_header(size - 44) + struct.pack("<QQ", i, size))
        fh.truncate(size)


# --------------------------------------------------------------------------- measuring


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (``ru_maxrss`` is KiB on Linux).

    Examples
    --------
    >>> peak_rss_mb() > 0
    True
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process's resident memory now, in MB (Linux: from ``/proc/self/statm``).

    Examples
    --------
    >>> current_rss_mb() > 0
    True
    """
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(fn: Callable[[], T]) -> tuple[T, float, float]:
    """Run ``fn``; return its result, the wall seconds and the CPU seconds of this process.

    CPU is user plus system time of every thread of the process.

    Examples
    --------
    >>> out, wall, cpu = measure(lambda: sum(range(1000)))
    >>> out, wall >= 0, cpu >= 0
    (499500, True, True)
    """
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, _cpu_seconds() - cpu0


# --------------------------------------------------------------------------- the gateway


def _endpoint() -> tuple[str, dict[str, str]]:
    url = os.environ["PHASEO_BASE_URL"].rstrip("/") + "/audio/transcriptions"
    return url, {"Authorization": f"Bearer {os.environ['PHASEO_API_KEY']}"}


def _form(audio: bytes) -> dict[str, tuple[None, str]]:
    # The same multipart fields the package sends in the API contract's mode.
    return {"model": (None, MODEL), "audio_b64": (None, base64.b64encode(audio).decode("ascii"))}


def _text(response: httpx.Response) -> str:
    response.raise_for_status()
    text: str = response.json()["text"]
    return text


# --------------------------------------------------------------------------- contenders


def _serial(df: pd.DataFrame, concurrency: int) -> list[str]:
    url, headers = _endpoint()
    with httpx.Client(timeout=_HTTP_TIMEOUT) as http:
        texts = df["audio"].apply(lambda a: _text(http.post(url, files=_form(a), headers=headers)))
    return list(texts)


def _threads(df: pd.DataFrame, concurrency: int) -> list[str]:
    url, headers = _endpoint()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with (
        httpx.Client(timeout=_HTTP_TIMEOUT, limits=limits) as http,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        return list(
            pool.map(lambda a: _text(http.post(url, files=_form(a), headers=headers)), df["audio"])
        )


def _gather(df: pd.DataFrame, concurrency: int) -> list[str]:
    url, headers = _endpoint()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def run() -> list[str]:
        semaphore = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT, limits=limits) as http:

            async def one(audio: bytes) -> str:
                async with semaphore:
                    return _text(await http.post(url, files=_form(audio), headers=headers))

            return await asyncio.gather(*(one(a) for a in df["audio"]))

    return asyncio.run(run())


def _aiohttp(df: pd.DataFrame, concurrency: int) -> list[str]:
    import aiohttp

    url, headers = _endpoint()

    async def run() -> list[str]:
        semaphore = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=_HTTP_TIMEOUT),
        ) as session:

            async def one(audio: bytes) -> str:
                form = aiohttp.FormData(default_to_multipart=True)
                form.add_field("model", MODEL)
                form.add_field("audio_b64", base64.b64encode(audio).decode("ascii"))
                async with semaphore, session.post(url, data=form, headers=headers) as resp:
                    resp.raise_for_status()
                    text: str = (await resp.json())["text"]
                    return text

            return await asyncio.gather(*(one(a) for a in df["audio"]))

    return asyncio.run(run())


def _stt(df: pd.DataFrame, concurrency: int) -> list[str]:
    out = df.stt.transcribe(
        col="audio", model=MODEL, concurrency=concurrency, cache=False, progress=False
    )
    return list(out["text"])


CONTENDERS: dict[str, Callable[[pd.DataFrame, int], list[str]]] = {
    "serial": _serial,
    "threads": _threads,
    "gather": _gather,
    "aiohttp": _aiohttp,
    "stt": _stt,
}


def run_contender(name: str, cfg: Config) -> dict[str, Any]:
    """One row of the table: ``cfg["n"]`` distinct clips at ``cfg["concurrency"]`` in flight.

    Examples
    --------
    >>> run_contender("stt", {"n": 100, "concurrency": 16})  # doctest: +SKIP
    {'n': 100, 'concurrency': 16, 'warmup': 8, 'elapsed': 0.72, 'cpu': 0.09, ...}
    """
    fn = CONTENDERS[name]
    n, concurrency = int(cfg["n"]), int(cfg["concurrency"])
    df = pd.DataFrame({"audio": [clip(i) for i in range(n)]})
    fn(pd.DataFrame({"audio": [clip(n + i) for i in range(WARMUP)]}), concurrency)
    texts, elapsed, cpu = measure(lambda: fn(df, concurrency))
    wrong = sum(t != fake_transcript(a) for t, a in zip(texts, df["audio"], strict=True))
    return {
        "n": n,
        "concurrency": concurrency,
        "warmup": WARMUP,
        "elapsed": elapsed,
        "cpu": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "wrong": wrong,
    }


# --------------------------------------------------------------------------- scenarios


def _gateway_origin() -> str:
    """The gateway origin the engine puts in its cache keys (from the environment's client)."""
    with pn.Client() as client:
        return client.prepare(MODEL).origin


def run_cached(cfg: Config) -> dict[str, Any]:
    """A rerun of ``cfg["rows"]`` URL rows whose results are all in the cache.

    The cache is prefilled through :meth:`Cache.add` with the keys the engine computes
    (``cache_key`` of the audio identity, model, language, provider and gateway origin): sending the rows
    once would take longer than the whole benchmark. The rerun sending zero requests shows
    that every prefilled key is the one the engine looks for.

    Examples
    --------
    >>> run_cached({"rows": 1000})["cached_rows"]  # doctest: +SKIP
    1000
    """
    rows = int(cfg["rows"])
    urls = [f"https://example.invalid/clip-{i}.wav" for i in range(rows)]
    origin = _gateway_origin()
    with tempfile.TemporaryDirectory(prefix="phaseo-bench-cache-") as tmp:
        prefill = pn.Cache(tmp)
        for start in range(0, rows, _PREFILL_PART_ROWS):
            prefill.add(
                CacheRecord(
                    key=cache_key(
                        normalize_audio(url).identity(), MODEL, None, None, origin=origin
                    ),
                    identity="url:" + url,
                    model=MODEL,
                    language=None,
                    provider=None,
                    text=f"cached transcript {i}",
                    raw={"text": f"cached transcript {i}", "provider": "fake", "duration": 1.0},
                )
                for i, url in enumerate(urls[start : start + _PREFILL_PART_ROWS], start)
            )
            prefill.flush()
        df = pd.DataFrame({"url": urls})
        # A fresh Cache object, as in a new session: reading the part files is measured too.
        (out, phases), elapsed, cpu = measure(lambda: _transcribe_in_phases(df, "url", tmp))
    wrong = sum(t != f"cached transcript {i}" for i, t in enumerate(out["text"]))
    return {
        "rows": rows,
        "elapsed": elapsed,
        "cpu": cpu,
        **phases,
        "cached_rows": int(out["text_cached"].sum()),
        "wrong": wrong,
        "peak_rss_mb": peak_rss_mb(),
    }


def _transcribe_in_phases(
    df: pd.DataFrame, col: str, cache: str
) -> tuple[pd.DataFrame, dict[str, float]]:
    """``df.stt.transcribe`` as its three steps, each timed: request, run, output columns.

    The run reports its own planning (inputs checked, identities and keys) and cache
    lookup (keys found, answers decoded, rows filled) times; the part files are read in a
    worker thread during planning. ``join`` is building the output frame from the per-row
    outcomes.
    """
    started = time.perf_counter()
    request = frame_request(
        df, col, model=MODEL, cache=cache, concurrency=64, progress=False, metadata=True
    )
    result = run_request_sync(request)
    ran = time.perf_counter()
    out = with_outputs(df, request, result)
    done = time.perf_counter()
    plan = float(result.extra["seconds_plan"])
    lookup = float(result.extra["seconds_lookup"])
    return out, {
        "plan": plan,
        "lookup": lookup,
        "join": done - ran,
        "other": (ran - started) - plan - lookup,
    }


def run_cached_files(cfg: Config) -> dict[str, Any]:
    """A rerun over ``cfg["rows"]`` distinct files whose results are all in the cache.

    With ``cfg["phase"] == "prepare"``: write the files (tiny distinct WAVs), prefill the
    cache with their keys, wait until their modification times are in the past, then run
    once (every row a hit; the files are read and hashed, and their hashes remembered).
    With ``"measure"``: the rerun, in a fresh process, timed. Nothing must reach the gateway.

    Examples
    --------
    >>> run_cached_files({"rows": 100, "dir": "d", "cache": "c", "phase": "prepare"})  # doctest: +SKIP
    """
    rows, audio_dir, cache_dir = int(cfg["rows"]), Path(cfg["dir"]), str(cfg["cache"])
    paths = [str(audio_dir / f"clip-{i:06d}.wav") for i in range(rows)]
    if cfg["phase"] == "prepare":
        audio_dir.mkdir(parents=True, exist_ok=True)
        prefill = pn.Cache(cache_dir)
        origin = _gateway_origin()
        for start in range(0, rows, _PREFILL_PART_ROWS):
            records = []
            for i in range(start, min(rows, start + _PREFILL_PART_ROWS)):
                audio = clip(i)
                Path(paths[i]).write_bytes(audio)
                identity = normalize_audio(audio).identity()
                records.append(
                    CacheRecord(
                        key=cache_key(identity, MODEL, None, None, origin=origin),
                        identity=identity,
                        model=MODEL,
                        language=None,
                        provider=None,
                        text=f"cached transcript {i}",
                        raw={"text": f"cached transcript {i}", "provider": "fake"},
                    )
                )
            prefill.add(records)
            prefill.flush()
        # Hashes are remembered only for files not modified in the last moments (a write
        # in the same clock tick would not change the modification time).
        time.sleep(2.5)
    df = pd.DataFrame({"path": paths})
    (out, phases), elapsed, cpu = measure(lambda: _transcribe_in_phases(df, "path", cache_dir))
    wrong = sum(t != f"cached transcript {i}" for i, t in enumerate(out["text"]))
    return {
        "rows": rows,
        "phase": cfg["phase"],
        "elapsed": elapsed,
        "cpu": cpu,
        **phases,
        "cached_rows": int(out["text_cached"].sum()),
        "wrong": wrong,
    }


def _instant_transport() -> httpx.MockTransport:
    """A transport that answers every request at once, in this process, with one success."""
    body = json.dumps({"text": "ok", "model": MODEL, "provider": "fake", "duration": 0.04})
    headers = {"content-type": "application/json", "x-request-id": "req_bench"}
    return httpx.MockTransport(
        lambda request: httpx.Response(200, content=body.encode(), headers=headers)
    )


async def _bare_sends(
    client: pn.AsyncClient, sources: Sequence[AudioSource], concurrency: int
) -> list[str]:
    """The client alone: ``AsyncClient.send`` for each source, ``concurrency`` at a time."""
    texts: list[str] = [""] * len(sources)
    todo: Iterator[int] = iter(range(len(sources)))
    call = client.prepare(MODEL)

    async def worker() -> None:
        for i in todo:
            texts[i] = (await client.send(sources[i], call)).text

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return texts


def run_bookkeeping(cfg: Config) -> dict[str, Any]:
    """CPU of ``df.stt.transcribe`` minus that of the bare client sends it makes.

    Both send the same ``cfg["rows"]`` distinct clips, at the same concurrency, through one
    client whose transport answers at once in this process: no network and no server to
    pace either run differently, so the difference is the engine's own work (normalising
    and hashing inputs, cache keys and lookups, scheduling, writing the cache, filling the
    result, building the output frame). Each is run twice, alternating; the least is kept.

    Examples
    --------
    >>> r = run_bookkeeping({"rows": 1000, "concurrency": 64})
    >>> r["cache_rows_written"], r["wrong"]
    (1000, 0)
    """
    rows, concurrency = int(cfg["rows"]), int(cfg["concurrency"])
    audio = [clip(i) for i in range(rows)]
    df = pd.DataFrame({"audio": audio})
    sources = [normalize_audio(a) for a in audio]
    client = pn.AsyncClient(
        api_key="pk-bench", base_url="https://gateway.invalid/v1", transport=_instant_transport()
    )
    bare_cpu: list[float] = []
    stt_cpu: list[float] = []
    written: list[int] = []
    for _ in range(2):
        bare, _, cpu = measure(lambda: asyncio.run(_bare_sends(client, sources, concurrency)))
        bare_cpu.append(cpu)
        with tempfile.TemporaryDirectory(prefix="phaseo-bench-cache-") as tmp:
            # An empty cache directory: every row is a miss that is sent and then written.
            out, _, cpu = measure(
                functools.partial(
                    df.stt.transcribe,
                    col="audio",
                    model=MODEL,
                    cache=tmp,
                    concurrency=concurrency,
                    progress=False,
                    client=client,
                )
            )
            stt_cpu.append(cpu)
            written.append(len(pd.read_parquet(tmp)))
    return {
        "rows": rows,
        "concurrency": concurrency,
        "stt_cpu": min(stt_cpu),
        "bare_cpu": min(bare_cpu),
        "stt_cpu_runs": stt_cpu,
        "bare_cpu_runs": bare_cpu,
        "cache_rows_written": min(written),
        "wrong": sum(t != "ok" for t in out["text"]) + sum(t != "ok" for t in bare),
    }


def run_memory(cfg: Config) -> dict[str, Any]:
    """``cfg["files"]`` files of ``cfg["mb"]`` MB each through ``df.stt.transcribe``.

    Audio is read only when its request is about to be sent and released after, so the peak
    stays near the baseline plus ``concurrency`` files in flight, whatever the row count.

    Examples
    --------
    >>> run_memory({"files": 20, "mb": 2, "concurrency": 16})["errors"]  # doctest: +SKIP
    0
    """
    files, size = int(cfg["files"]), int(float(cfg["mb"]) * 2**20)
    concurrency = int(cfg["concurrency"])
    with (
        tempfile.TemporaryDirectory(prefix="phaseo-bench-audio-") as audio_dir,
        tempfile.TemporaryDirectory(prefix="phaseo-bench-cache-") as cache_dir,
    ):
        paths = [Path(audio_dir) / f"clip-{i:05d}.wav" for i in range(files)]
        for i, path in enumerate(paths):
            sparse_wav(path, i, size)
        df = pd.DataFrame({"path": [str(p) for p in paths]})
        warm = Path(audio_dir) / "warm.wav"
        sparse_wav(warm, files, size)
        pd.DataFrame({"path": [str(warm)]}).stt.transcribe(
            col="path", model=MODEL, cache=False, progress=False
        )
        before = current_rss_mb()
        out, elapsed, cpu = measure(
            lambda: df.stt.transcribe(
                col="path", model=MODEL, cache=cache_dir, concurrency=concurrency, progress=False
            )
        )
    return {
        "files": files,
        "mb": float(cfg["mb"]),
        "concurrency": concurrency,
        "elapsed": elapsed,
        "cpu": cpu,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "errors": int(out["text_error"].notna().sum()),
    }


SCENARIOS: dict[str, Callable[[Config], dict[str, Any]]] = {
    **{name: functools.partial(run_contender, name) for name in CONTENDERS},
    "cached": run_cached,
    "cached_files": run_cached_files,
    "bookkeeping": run_bookkeeping,
    "memory": run_memory,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario named in ``argv[0]`` with the JSON config ``argv[1]``; print JSON.

    Examples
    --------
    >>> main(["no-such-scenario", "{}"])  # doctest: +SKIP
    2
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in SCENARIOS:
        print(f"usage: python -m benchmarks.scenarios {{{','.join(SCENARIOS)}}} CONFIG_JSON")
        return 2
    result = SCENARIOS[args[0]](json.loads(args[1]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
