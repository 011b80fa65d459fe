"""One contender of the files-on-disk shape, in a fresh process: the first call is measured.

``python -m benchmarks.files NAME CONFIG_JSON`` transcribes every ``*.wav`` file of
``CONFIG_JSON["dir"]`` against the gateway named by ``PHASEO_BASE_URL`` / ``PHASEO_API_KEY``,
``concurrency`` at a time, and prints one JSON line with its measurements.

This module imports only what every contender shares (the standard library, pandas,
httpx): each contender's own imports (``aiohttp``, ``httpx_aiohttp``, ``phaseo_notebook``)
are timed separately, so a report can show the call alone and the call with its imports.
Nothing is sent before the measured call: no warm-up, the first call of the process is
the one measured, with its connection pool created inside it, as in a user's script.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

__all__ = ["CONTENDERS", "main"]

#: The remote model the benchmark gateway maps to its fake engine.
MODEL = "openai/whisper-1"
_HTTP_TIMEOUT = 120.0

#: (texts, wall seconds and CPU seconds spent importing the contender's own modules)
Outcome = tuple[list[str], float, float]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _endpoint() -> tuple[str, dict[str, str]]:
    url = os.environ["PHASEO_BASE_URL"].rstrip("/") + "/audio/transcriptions"
    return url, {"Authorization": f"Bearer {os.environ['PHASEO_API_KEY']}"}


def _httpx_aiohttp(paths: Sequence[str], concurrency: int) -> Outcome:
    """The hand-written loop: httpx's API on the aiohttp transport, each file read as sent."""
    t0, c0 = time.perf_counter(), _cpu_seconds()
    from httpx_aiohttp import AiohttpTransport

    imports, import_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    url, headers = _endpoint()

    async def run() -> list[str]:
        semaphore = asyncio.Semaphore(concurrency)
        transport = AiohttpTransport(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        )
        async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT, transport=transport) as http:

            async def one(path: str) -> str:
                async with semaphore:
                    audio = Path(path).read_bytes()
                    form = {
                        "model": (None, MODEL),
                        "audio_b64": (None, base64.b64encode(audio).decode("ascii")),
                    }
                    response = await http.post(url, files=form, headers=headers)
                    response.raise_for_status()
                    text: str = response.json()["text"]
                    return text

            return await asyncio.gather(*(one(p) for p in paths))

    return asyncio.run(run()), imports, import_cpu


def _aiohttp(paths: Sequence[str], concurrency: int) -> Outcome:
    """The same loop with aiohttp alone."""
    t0, c0 = time.perf_counter(), _cpu_seconds()
    import aiohttp

    imports, import_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    url, headers = _endpoint()

    async def run() -> list[str]:
        semaphore = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=_HTTP_TIMEOUT),
        ) as session:

            async def one(path: str) -> str:
                async with semaphore:
                    audio = Path(path).read_bytes()
                    form = aiohttp.FormData(default_to_multipart=True)
                    form.add_field("model", MODEL)
                    form.add_field("audio_b64", base64.b64encode(audio).decode("ascii"))
                    async with session.post(url, data=form, headers=headers) as resp:
                        resp.raise_for_status()
                        text: str = (await resp.json())["text"]
                        return text

            return await asyncio.gather(*(one(p) for p in paths))

    return asyncio.run(run()), imports, import_cpu


def _stt(paths: Sequence[str], concurrency: int) -> Outcome:
    """The package: paths in a column, ``cache=False``, client from the environment."""
    t0, c0 = time.perf_counter(), _cpu_seconds()
    import phaseo_notebook  # noqa: F401 - registers df.stt

    imports, import_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    df = pd.DataFrame({"path": list(paths)})
    out = df.stt.transcribe(
        col="path", model=MODEL, concurrency=concurrency, cache=False, progress=False
    )
    return list(out["text"]), imports, import_cpu


CONTENDERS: dict[str, Callable[[Sequence[str], int], Outcome]] = {
    "files_httpx_aiohttp": _httpx_aiohttp,
    "files_aiohttp": _aiohttp,
    "files_stt": _stt,
}


def run(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Measure one contender's first call over the files of ``cfg["dir"]``.

    Examples
    --------
    >>> run("files_stt", {"dir": "clips", "concurrency": 64})  # doctest: +SKIP
    {'n': 2000, 'concurrency': 64, 'elapsed': 3.41, 'imports': 0.21, 'cpu': 1.9, ...}
    """
    concurrency = int(cfg["concurrency"])
    paths = sorted(str(p) for p in Path(cfg["dir"]).glob("*.wav"))
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    texts, imports, import_cpu = CONTENDERS[name](paths, concurrency)
    elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    # Checked after measuring: the fake engine's text is a function of the bytes sent.
    from phaseo_notebook._engines import fake_transcript

    wrong = sum(
        t != fake_transcript(Path(p).read_bytes()) for t, p in zip(texts, paths, strict=True)
    )
    return {
        "n": len(paths),
        "concurrency": concurrency,
        "elapsed": elapsed - imports,
        "imports": imports,
        "import_cpu": import_cpu,
        "cpu": cpu - import_cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wrong": wrong,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the contender named in ``argv[0]`` with the JSON config ``argv[1]``; print JSON.

    Examples
    --------
    >>> main(["no-such-contender", "{}"])  # doctest: +SKIP
    2
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in CONTENDERS:
        print(f"usage: python -m benchmarks.files {{{','.join(CONTENDERS)}}} CONFIG_JSON")
        return 2
    print(json.dumps(run(args[0], json.loads(args[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
