"""Benchmarks of ``df.stt.transcribe`` against hand-written baselines, measured side by side.

Run from the repository root::

    python -m benchmarks.run            # the full run (about 2-3 minutes on 2 cores)
    python -m benchmarks.run --quick    # a small version, for the test suite

It starts a local gateway in its own process (fake engine, fixed latency), runs every
contender in a fresh process of its own (see :mod:`benchmarks.scenarios`) and prints one
markdown table, then the extra scenarios: a fully cached rerun, the engine's own CPU per
request, and peak memory over many large files. ``--json PATH`` also writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as `python benchmarks/run.py`: make `benchmarks` and the checkout importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import phaseo_notebook as pn
from benchmarks.scenarios import MODEL, write_clips

__all__ = ["Settings", "main", "run"]

REPO_ROOT = Path(__file__).resolve().parents[1]
_SCENARIO_TIMEOUT = 600.0

#: Contenders of the table, in the order printed, with their labels.
CONTENDERS: dict[str, str] = {
    "serial": "serial `df[col].apply` + `httpx.Client`",
    "threads": "`ThreadPoolExecutor({c})` + `httpx.Client`",
    "gather": "`asyncio.gather` + `Semaphore({c})` + `httpx.AsyncClient`",
    "aiohttp": "plain `aiohttp` + `Semaphore({c})`, for reference",
    "stt": "`df.stt.transcribe(concurrency={c})`",
}
BASELINE = "gather"

#: Contenders of the files-on-disk table (first call in a fresh process), in order.
FILES_CONTENDERS: dict[str, str] = {
    "files_httpx_aiohttp": "`asyncio.gather` + `Semaphore({c})` + httpx API on `httpx-aiohttp`",
    "files_aiohttp": "plain `aiohttp` + `Semaphore({c})`",
    "files_stt": "`df.stt.transcribe(concurrency={c}, cache=False)`",
}
FILES_BASELINE = "files_httpx_aiohttp"

# Targets of the full run (N=2,000, 100 ms, 64 in flight, on 2 cores).
TARGET_PCT_OF_IDEAL = 90.0
TARGET_X_BASELINE = 5.0
TARGET_CACHED_SECONDS = 1.0
TARGET_CACHED_FILES_SECONDS = 2.0
#: df.stt.transcribe's time on files over the hand-written httpx-aiohttp loop's, at most.
TARGET_FILES_TIME_RATIO = 1.05
#: df.stt.transcribe's CPU per request on files over plain aiohttp's, at most, in ms.
TARGET_FILES_CPU_MARGIN_MS = 0.2
TARGET_BOOKKEEPING_MS = 1.0
TARGET_PEAK_MB = 400.0


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run.

    Examples
    --------
    >>> Settings.quick().n < Settings().n
    True
    """

    n: int = 2000
    latency: float = 0.1
    concurrency: int = 64
    serial_n: int = 100
    cached_rows: int = 100_000
    bookkeeping_rows: int = 10_000
    memory_files: int = 2000
    memory_mb: float = 2.0
    memory_concurrency: int = 16
    files_n: int = 2000
    files_kb: int = 8
    files_rounds: int = 2
    cached_file_rows: int = 100_000

    @classmethod
    def quick(cls) -> Settings:
        """A version that runs in well under a minute, for the test suite."""
        return cls(
            n=300,
            latency=0.05,
            concurrency=64,
            serial_n=20,
            cached_rows=5000,
            bookkeeping_rows=600,
            memory_files=40,
            memory_mb=2.0,
            memory_concurrency=16,
            files_n=300,
            files_kb=8,
            files_rounds=1,
            cached_file_rows=2000,
        )


def _spawn(
    name: str, config: dict[str, Any], env: dict[str, str], module: str = "benchmarks.scenarios"
) -> dict[str, Any]:
    """Run one scenario in a fresh interpreter and return the JSON it printed."""
    cmd = [sys.executable, "-m", module, name, json.dumps(config)]
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=_SCENARIO_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark scenario {name!r} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _child_env(gw: pn.LocalGateway, cache_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PHASEO_API_KEY=gw.api_key or "",
        PHASEO_BASE_URL=gw.url,
        PHASEO_CACHE_DIR=cache_dir,
        PHASEO_NO_PROGRESS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
    )
    return env


def _check_gateway(
    gw: pn.LocalGateway, name: str, expected: int, *, switching: bool = False
) -> dict[str, Any]:
    """What the gateway saw; a contender that did not send every request is an error.

    With ``switching``, 400 answers are allowed too: the requests in flight before the
    client learnt that the gateway wants file parts, each sent again as one.
    """
    stats = gw.stats()
    ok = stats.by_status.get(200, 0)
    others = {k: v for k, v in stats.by_status.items() if k != 200 and not (switching and k == 400)}
    if ok != expected or others:
        raise RuntimeError(
            f"{name}: the gateway expected {expected} successful requests and saw"
            f" {stats.requests} ({dict(stats.by_status)})"
        )
    return {"gateway_requests": stats.requests, "gateway_max_in_flight": stats.max_in_flight}


def run(settings: Settings, *, log: Any = None) -> dict[str, Any]:
    """Run every contender and scenario; return all the numbers.

    Parameters
    ----------
    settings
        Sizes of the run.
    log
        Where progress lines go (a text stream); None for none.

    Examples
    --------
    >>> report = run(Settings.quick())  # doctest: +SKIP
    >>> sorted(report)  # doctest: +SKIP
    ['bookkeeping', 'cached', 'memory', 'rows', 'settings', 'system']
    """

    def say(text: str) -> None:
        if log is not None:
            print(text, file=log, flush=True)

    s = settings
    started = time.monotonic()
    report: dict[str, Any] = {
        "settings": asdict(s),
        "system": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "phaseo_notebook": pn.__version__,
        },
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="phaseo-bench-") as default_cache:
        # The table: one gateway with a fixed latency, each contender in its own process.
        with pn.LocalGateway(
            process=True, engine="fake", models={MODEL: "fake"}, faults=pn.Faults(latency=s.latency)
        ) as gw:
            env = _child_env(gw, default_cache)
            for name in CONTENDERS:
                n = s.serial_n if name == "serial" else s.n
                concurrency = 1 if name == "serial" else s.concurrency
                say(f"running {name}: {n} requests at {concurrency} in flight...")
                gw.reset_stats()
                row = _spawn(name, {"n": n, "concurrency": concurrency}, env)
                row.update(_check_gateway(gw, name, n + row["warmup"]))
                row["name"] = name
                row["label"] = CONTENDERS[name].format(c=s.concurrency)
                report["rows"].append(row)

            report["files"] = _run_files(s, gw, env, say)

            say(f"running the cached rerun of {s.cached_rows} rows...")
            gw.set_faults(pn.Faults(latency=0.0))
            gw.reset_stats()
            report["cached"] = _spawn("cached", {"rows": s.cached_rows}, env)
            report["cached"]["gateway_requests"] = gw.stats().requests

            say(f"running the cached rerun of {s.cached_file_rows} files...")
            with tempfile.TemporaryDirectory(prefix="phaseo-bench-files-") as tmp:
                cfg = {"rows": s.cached_file_rows, "dir": f"{tmp}/audio", "cache": f"{tmp}/cache"}
                gw.reset_stats()
                first = _spawn("cached_files", {**cfg, "phase": "prepare"}, env)
                report["cached_files"] = _spawn("cached_files", {**cfg, "phase": "measure"}, env)
                report["cached_files"]["first_elapsed"] = first["elapsed"]
                report["cached_files"]["wrong"] += first["wrong"]
                report["cached_files"]["gateway_requests"] = gw.stats().requests

        # In-process: its client answers every request itself (see scenarios.run_bookkeeping).
        say(f"running the bookkeeping measure over {s.bookkeeping_rows} rows...")
        report["bookkeeping"] = _spawn(
            "bookkeeping", {"rows": s.bookkeeping_rows, "concurrency": s.concurrency}, env
        )

        # Large files go to a gateway that takes them as multipart file parts, as the live
        # gateway does; the client learns that from the first answers and switches.
        say(f"running the memory measure over {s.memory_files} files of {s.memory_mb:g} MB...")
        with pn.LocalGateway(
            process=True, engine="fake", mode="live", models={MODEL: "fake"}
        ) as gw:
            report["memory"] = _spawn(
                "memory",
                {"files": s.memory_files, "mb": s.memory_mb, "concurrency": s.memory_concurrency},
                _child_env(gw, default_cache),
            )
            report["memory"].update(
                _check_gateway(gw, "memory", s.memory_files + 1, switching=True)
            )
    _derive(report)
    report["elapsed"] = time.monotonic() - started
    return report


def _run_files(s: Settings, gw: pn.LocalGateway, env: dict[str, str], say: Any) -> dict[str, Any]:
    """The files-on-disk table: each contender's first call, in fresh processes, alternating.

    Every round runs each contender once, in turn; each contender's fastest round is kept
    (all rounds are in ``runs``), so one burst of load on a shared machine does not decide
    the comparison.
    """
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in FILES_CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="phaseo-bench-clips-") as clips:
        write_clips(Path(clips), s.files_n, s.files_kb * 1024)
        for round_ in range(s.files_rounds):
            for name in FILES_CONTENDERS:
                say(
                    f"running {name} (round {round_ + 1} of {s.files_rounds}): {s.files_n}"
                    f" files of {s.files_kb} KB at {s.concurrency} in flight..."
                )
                gw.reset_stats()
                cfg = {"dir": clips, "concurrency": s.concurrency}
                row = _spawn(name, cfg, env, module="benchmarks.files")
                row.update(_check_gateway(gw, name, s.files_n))
                runs[name].append(row)
    rows = []
    for name, label in FILES_CONTENDERS.items():
        best = dict(min(runs[name], key=lambda r: r["elapsed"]))
        best.update(name=name, label=label.format(c=s.concurrency), runs=runs[name])
        rows.append(best)
    return {"rows": rows}


def _derive(report: dict[str, Any]) -> None:
    """Rates, ratios and the targets, from the raw measurements."""
    s = Settings(**report["settings"])
    rows = report["rows"]
    for row in rows:
        row["rps"] = row["n"] / row["elapsed"]
        ideal_seconds = row["n"] * s.latency / row["concurrency"]
        row["pct_of_ideal"] = 100.0 * ideal_seconds / row["elapsed"]
        row["cpu_ms_per_request"] = 1000.0 * row["cpu"] / row["n"]
    baseline = next(r for r in rows if r["name"] == BASELINE)
    for row in rows:
        row["x_baseline"] = row["rps"] / baseline["rps"]
    stt = next(r for r in rows if r["name"] == "stt")
    book = report["bookkeeping"]
    book["stt_cpu_ms"] = 1000.0 * book["stt_cpu"] / book["rows"]
    book["bare_cpu_ms"] = 1000.0 * book["bare_cpu"] / book["rows"]
    book["engine_cpu_ms"] = book["stt_cpu_ms"] - book["bare_cpu_ms"]
    cached, memory = report["cached"], report["memory"]
    files = report["files"]["rows"]
    for row in files:
        row["rps"] = row["n"] / row["elapsed"]
        row["pct_of_ideal"] = 100.0 * (row["n"] * s.latency / row["concurrency"]) / row["elapsed"]
        row["cpu_ms_per_request"] = 1000.0 * row["cpu"] / row["n"]
    by_name = {row["name"]: row for row in files}
    loop = by_name[FILES_BASELINE]
    for row in files:
        row["time_ratio"] = row["elapsed"] / loop["elapsed"]
        row["time_ratio_with_imports"] = (row["elapsed"] + row["imports"]) / (
            loop["elapsed"] + loop["imports"]
        )
    files_stt, files_aiohttp = by_name["files_stt"], by_name["files_aiohttp"]
    cached_files = report["cached_files"]
    report["targets"] = {
        "files_time_ratio": files_stt["time_ratio"] <= TARGET_FILES_TIME_RATIO,
        "files_cpu_ms": files_stt["cpu_ms_per_request"]
        <= files_aiohttp["cpu_ms_per_request"] + TARGET_FILES_CPU_MARGIN_MS,
        "cached_files_seconds": cached_files["elapsed"] < TARGET_CACHED_FILES_SECONDS,
        "cached_files_zero_requests": cached_files["gateway_requests"] == 0
        and cached_files["cached_rows"] == cached_files["rows"],
        "stt_pct_of_ideal": stt["pct_of_ideal"] >= TARGET_PCT_OF_IDEAL,
        "stt_x_baseline": stt["x_baseline"] >= TARGET_X_BASELINE,
        "cached_seconds": cached["elapsed"] < TARGET_CACHED_SECONDS,
        "cached_zero_requests": cached["gateway_requests"] == 0
        and cached["cached_rows"] == cached["rows"],
        "bookkeeping_ms": book["engine_cpu_ms"] < TARGET_BOOKKEEPING_MS,
        "memory_peak_mb": memory["peak_rss_mb"] < TARGET_PEAK_MB and memory["errors"] == 0,
        "all_correct": all(r["wrong"] == 0 for r in (*rows, *files, cached, cached_files, book)),
    }


def _phases(run: dict[str, Any]) -> str:
    return (
        f"plan {run['plan']:.2f} s, lookup {run['lookup']:.2f} s, join {run['join']:.2f} s,"
        f" other {run['other']:.2f} s"
    )


def _mark(met: bool) -> str:
    return "met" if met else "MISSED"


def format_report(report: dict[str, Any]) -> str:
    """The markdown table and the scenario lines.

    Examples
    --------
    >>> print(format_report(report))  # doctest: +SKIP
    """
    s = Settings(**report["settings"])
    system = report["system"]
    lines = [
        f"phaseo-notebook {system['phaseo_notebook']}, Python {system['python']},"
        f" {system['cpus']} CPUs, load average at start {system['load_average_at_start']}",
        f"Local gateway in its own process: fake engine, {s.latency * 1000:g} ms latency."
        f" Ideal = N x latency / in flight.",
        "",
        "| contender | N | in flight | requests/s | % of ideal | x vs httpx.AsyncClient"
        " | client CPU ms/request | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['label']} | {r['n']:,} | {r['concurrency']} | {r['rps']:,.0f}"
            f" | {r['pct_of_ideal']:.0f}% | {r['x_baseline']:.1f}x"
            f" | {r['cpu_ms_per_request']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    serial = next(r for r in report["rows"] if r["name"] == "serial")
    cached, book, memory = report["cached"], report["bookkeeping"], report["memory"]
    cached_files = report["cached_files"]
    t = report["targets"]
    files = report["files"]["rows"]
    stt_files = next(r for r in files if r["name"] == "files_stt")
    lines += [
        "",
        f"The serial row sends {serial['n']:,} requests instead of {s.n:,} (at one in flight"
        f" {s.n:,} would take {s.n * s.latency:,.0f} s); its rate is comparable.",
        "",
        f"Files on disk, first call in a fresh process: {s.files_n:,} WAV files of"
        f" {s.files_kb} KB, read by each contender, {s.concurrency} in flight, no warm-up; each"
        f" contender's best of {s.files_rounds} alternating rounds. Imports at the top of each"
        " script are timed apart; what the call loads on first use is in its time.",
        "",
        "| contender | N | in flight | seconds | requests/s | % of ideal | time vs the loop"
        " | imports s | client CPU ms/request | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in files:
        lines.append(
            f"| {r['label']} | {r['n']:,} | {r['concurrency']} | {r['elapsed']:.2f}"
            f" | {r['rps']:,.0f} | {r['pct_of_ideal']:.0f}% | {r['time_ratio']:.2f}x"
            f" | {r['imports']:.2f} | {r['cpu_ms_per_request']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"- Files: df.stt.transcribe took {stt_files['time_ratio']:.2f}x the hand-written"
        f" loop's time ({stt_files['time_ratio_with_imports']:.2f}x counting imports)"
        f" [target <= {TARGET_FILES_TIME_RATIO:g}x: {_mark(t['files_time_ratio'])}], at"
        f" {stt_files['cpu_ms_per_request']:.2f} ms CPU per request [target <= plain aiohttp's"
        f" + {TARGET_FILES_CPU_MARGIN_MS:g} ms: {_mark(t['files_cpu_ms'])}]",
    ]
    lines += [
        "",
        f"- Cached rerun: {cached['rows']:,} URL rows in {cached['elapsed']:.2f} s"
        f" ({cached['cpu']:.2f} s CPU; {_phases(cached)}), {cached['gateway_requests']} requests,"
        f" {cached['cached_rows']:,} rows from the cache"
        f" [target < {TARGET_CACHED_SECONDS:g} s and 0 requests: {_mark(t['cached_seconds'])},"
        f" {_mark(t['cached_zero_requests'])}]",
        f"- Cached rerun of files: {cached_files['rows']:,} distinct file paths, unchanged since"
        f" the previous run, in {cached_files['elapsed']:.2f} s ({cached_files['cpu']:.2f} s"
        f" CPU; {_phases(cached_files)}), {cached_files['gateway_requests']} requests,"
        f" {cached_files['cached_rows']:,} rows from the cache; the previous run, which read"
        f" and hashed every file, took {cached_files['first_elapsed']:.2f} s"
        f" [target < {TARGET_CACHED_FILES_SECONDS:g} s and 0 requests:"
        f" {_mark(t['cached_files_seconds'])}, {_mark(t['cached_files_zero_requests'])}]",
        f"- Engine bookkeeping: {book['rows']:,} distinct rows, no cache hits, through a"
        f" transport that answers at once in-process: {book['stt_cpu_ms']:.3f} ms CPU/request"
        f" in df.stt.transcribe, {book['bare_cpu_ms']:.3f} ms in bare AsyncClient sends"
        f" -> {book['engine_cpu_ms']:.3f} ms/request of engine bookkeeping"
        f" [target < {TARGET_BOOKKEEPING_MS:g} ms: {_mark(t['bookkeeping_ms'])}]",
        f"- Memory: {memory['files']:,} files of {memory['mb']:g} MB at concurrency"
        f" {memory['concurrency']}: peak RSS {memory['peak_rss_mb']:.0f} MB"
        f" ({memory['rss_before_mb']:.0f} MB before the run), {memory['elapsed']:.1f} s,"
        f" {memory['errors']} errors [target < {TARGET_PEAK_MB:g} MB:"
        f" {_mark(t['memory_peak_mb'])}]",
    ]
    stt = next(r for r in report["rows"] if r["name"] == "stt")
    if s != Settings():
        lines.append(
            "- The targets are set for the full run (N=2,000, 100 ms, 64 in flight, 100,000"
            " cached rows, 2,000 files of 2 MB); this run is smaller."
        )
    lines += [
        f"- df.stt.transcribe: {stt['pct_of_ideal']:.0f}% of ideal"
        f" [target >= {TARGET_PCT_OF_IDEAL:g}%: {_mark(t['stt_pct_of_ideal'])}],"
        f" {stt['x_baseline']:.1f}x the httpx.AsyncClient baseline"
        f" [target >= {TARGET_X_BASELINE:g}x: {_mark(t['stt_x_baseline'])}]",
        f"- Every transcript checked against the engine's expected text: {_mark(t['all_correct'])}",
        f"- Whole benchmark: {report['elapsed']:.0f} s",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.run``.

    Examples
    --------
    >>> build_parser().parse_args(["--quick", "--n", "500"]).n
    500
    """
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark df.stt.transcribe against hand-written httpx baselines.",
    )
    parser.add_argument("--quick", action="store_true", help="a small, fast version")
    parser.add_argument("--n", type=int, help=f"requests per contender ({defaults.n})")
    parser.add_argument("--latency", type=float, help=f"gateway latency, s ({defaults.latency})")
    parser.add_argument(
        "--concurrency", type=int, help=f"requests in flight ({defaults.concurrency})"
    )
    parser.add_argument("--serial-n", type=int, help=f"requests, serial ({defaults.serial_n})")
    parser.add_argument(
        "--cached-rows", type=int, help=f"rows of the cached rerun ({defaults.cached_rows})"
    )
    parser.add_argument(
        "--bookkeeping-rows",
        type=int,
        help=f"rows of the bookkeeping measure ({defaults.bookkeeping_rows})",
    )
    parser.add_argument(
        "--memory-files", type=int, help=f"files of the memory run ({defaults.memory_files})"
    )
    parser.add_argument("--memory-mb", type=float, help=f"MB per file ({defaults.memory_mb})")
    parser.add_argument(
        "--memory-concurrency",
        type=int,
        help=f"in flight, memory run ({defaults.memory_concurrency})",
    )
    parser.add_argument(
        "--files-n", type=int, help=f"files of the files table ({defaults.files_n})"
    )
    parser.add_argument("--files-kb", type=int, help=f"KB per file ({defaults.files_kb})")
    parser.add_argument(
        "--files-rounds", type=int, help=f"rounds of the files table ({defaults.files_rounds})"
    )
    parser.add_argument(
        "--cached-file-rows",
        type=int,
        help=f"files of the cached rerun of files ({defaults.cached_file_rows})",
    )
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target is missed"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run, print the table; returns the exit status.

    Examples
    --------
    >>> main(["--quick"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    base = Settings.quick() if args.quick else Settings()
    overrides = {
        name: getattr(args, name)
        for name in Settings.__dataclass_fields__
        if getattr(args, name, None) is not None
    }
    settings = Settings(**{**asdict(base), **overrides})
    for name, value in asdict(settings).items():
        if value <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, not {value}")
    report = run(settings, log=sys.stderr)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    if args.check and not all(report["targets"].values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
