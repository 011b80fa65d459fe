"""Benchmark: one 2-hour recording through ``df.stt.transcribe``, sent as chunks.

Run from the repository root::

    python -m benchmarks.long_audio                 # 2 hours, 25 MB and 1400 s limits
    python -m benchmarks.long_audio --seconds 600   # a shorter file
    python -m benchmarks.long_audio --json out.json

It writes a 2-hour WAV of looped real speech (``tests/_long_audio.py``: about 318 MB at
22.05 kHz, written as a stream), starts a local gateway in its own process (fake engine,
``--max-audio-bytes 25000000 --max-audio-seconds 1400``, in ``live`` mode: audio as a
multipart file part, as the live gateway wants it; the client's first request, in the
contract's base64 form, is answered "file is required" and counted), serving the model
``openai/gpt-4o-transcribe``, whose 1400 s limit is in the package's table), then runs the
transcription in a fresh Python process and measures its wall time, its peak resident
memory (``ru_maxrss``: imports included) and the requests it sent; then the same again,
whose requests must all come from the cache. The gateway counts what it received and
refused: a chunk over either limit would show there as a 413 or a 400.

Targets (issue 12): peak memory under 500 MB; 0 requests on the rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import phaseo_notebook as pn

__all__ = ["main", "run"]

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "openai/gpt-4o-transcribe"
MAX_BYTES = 25_000_000
MAX_SECONDS = 1400.0
TARGET_PEAK_MB = 500.0

_CLIENT = r"""
import json, resource, sys, time
import pandas as pd
import phaseo_notebook as pn

url, key, audio, cache, model = sys.argv[1:6]
started = time.perf_counter()
from phaseo_notebook._batch import run_request_sync
from phaseo_notebook._request import TranscribeRequest

request = TranscribeRequest(
    [audio], model=model, cache=cache, progress=False, timestamps="segment",
    client=pn.Client(base_url=url, api_key=key or None),
)
result = run_request_sync(request)
print(json.dumps({
    "wall_s": time.perf_counter() - started,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "requests": result.requests,
    "chunks_sent": result.extra.get("chunks_sent", 0),
    "errors": result.errors,
    "segments": len(result.segments[0] or []),
    "chars": len(result.text[0] or ""),
}))
"""


def _client_run(url: str, key: str | None, audio: Path, cache: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _CLIENT, url, key or "", str(audio), str(cache), MODEL],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PHASEO_NO_PROGRESS": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the client run failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def run(seconds: float, workdir: Path, audio: Path | None = None) -> dict[str, Any]:
    """Write the recording (unless given), run the transcription twice, return every number."""
    from tests._long_audio import write_long_recording

    t0 = time.perf_counter()
    if audio is None:
        audio = workdir / "recording.wav"
        write_long_recording(audio, seconds)
    else:
        import soundfile as sf

        seconds = sf.info(str(audio)).duration
    written = time.perf_counter() - t0
    cache = workdir / "cache"
    with pn.LocalGateway(
        engine="fake",
        mode="live",
        process=True,
        models={MODEL: "fake"},
        max_audio_bytes=MAX_BYTES,
        max_audio_seconds=MAX_SECONDS,
    ) as gw:
        kwargs = gw.client_kwargs()
        first = _client_run(kwargs["base_url"], kwargs["api_key"], audio, cache)
        after_first = gw.stats()
        rerun = _client_run(kwargs["base_url"], kwargs["api_key"], audio, cache)
        after_rerun = gw.stats()
    return {
        "audio_seconds": seconds,
        "audio_mb": audio.stat().st_size / 1e6,
        "write_s": written,
        "limits": {"max_bytes": MAX_BYTES, "max_seconds": MAX_SECONDS},
        "first": first,
        "rerun": rerun,
        "gateway_by_status": {str(k): v for k, v in after_first.by_status.items()},
        "gateway_requests_first": after_first.requests,
        "gateway_requests_rerun": after_rerun.requests - after_first.requests,
    }


def _table(report: dict[str, Any]) -> str:
    first, rerun = report["first"], report["rerun"]
    rows = [
        ("audio", f"{report['audio_seconds'] / 3600:.2f} h WAV, {report['audio_mb']:.0f} MB"),
        ("limits", f"{MAX_BYTES:,} bytes, {MAX_SECONDS:g} s ({MODEL})"),
        ("wall time, first run", f"{first['wall_s']:.1f} s"),
        (
            "peak memory, first run",
            f"{first['peak_rss_mb']:.0f} MB (target < {TARGET_PEAK_MB:.0f})",
        ),
        ("requests sent, first run", f"{first['requests']} ({first['chunks_sent']} chunks)"),
        ("gateway answers, first run", json.dumps(report["gateway_by_status"])),
        ("segments in the row", str(first["segments"])),
        ("wall time, rerun", f"{rerun['wall_s']:.1f} s"),
        ("peak memory, rerun", f"{rerun['peak_rss_mb']:.0f} MB"),
        ("requests sent, rerun", f"{rerun['requests']} (target 0)"),
    ]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=7200.0, help="recording length")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    parser.add_argument(
        "--audio", type=Path, default=None, help="use this recording instead of writing one"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="phaseo-long-") as tmp:
        report = run(args.seconds, Path(tmp), args.audio)
    print(_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    ok = (
        report["first"]["errors"] == 0
        and report["rerun"]["requests"] == 0
        and report["first"]["peak_rss_mb"] < TARGET_PEAK_MB
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
