"""Offline engines side by side: the local gateway's Whisper and PocketSphinx, and bare faster-whisper.

Run from the repository root::

    python -m benchmarks.engines            # 40 short clips and one 10-minute clip
    python -m benchmarks.engines --quick    # 6 clips and one 1-minute clip

The speech is made at run time with ``espeak-ng`` (40 sentences of the public-domain
Harvard lists, US English voice), so nothing is downloaded or shipped. The long clip is
all 40 sentences, repeated with short pauses until it lasts ``--long-seconds``.

Rows, in one run on the same inputs:

- **whisper (local gateway)**: ``pn.LocalGateway(engine="whisper")`` over 127.0.0.1, multipart
  uploads, ``2 x in flight`` requests so its workers never wait (one worker process per
  core, ``cpu_threads=1``, int8, beam 5).
- **pocketsphinx (local gateway)**: the same gateway route with the PocketSphinx engine.
- **bare faster-whisper**: ``WhisperModel`` on the same model directory with the same
  settings, in ``os.cpu_count()`` spawned processes fed by ``multiprocessing.Pool``; no
  HTTP, no decoding of our own. The throughput target is at least 0.9x of this row.

Each row is timed after a warm-up (models loaded in every worker). Peak memory is the
largest ``VmHWM`` (peak resident set) of any engine process: for the gateway rows its
worker processes, for the bare row the pool processes. Word error rates use the
package's own scoring normalisation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np

import phaseo_notebook as pn
from phaseo_notebook._scoring import normalize_text

__all__ = ["ROW_NAMES", "SENTENCES", "main", "make_clips", "run"]

#: Harvard sentences (IEEE 1969 lists 1-4), public domain.
SENTENCES: tuple[str, ...] = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
)
MODEL = "local/whisper-tiny.en"
_RATE = 16_000
_PAUSE_SECONDS = 0.4


def _espeak(text: str, path: Path) -> None:
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text],
        check=True,
        capture_output=True,
    )


def make_clips(directory: Path, count: int, long_seconds: float) -> tuple[list[Path], Path]:
    """Synthesise ``count`` sentence clips and one long clip into ``directory``.

    Returns
    -------
    tuple of (list of Path, Path)
        The short clips (as espeak-ng writes them, 22.05 kHz WAV) and the long one
        (16 kHz mono WAV, exactly ``long_seconds`` long).
    """
    import soundfile as sf

    from phaseo_notebook._engines import decode_to_pcm16k

    if shutil.which("espeak-ng") is None:
        raise SystemExit("benchmarks.engines needs espeak-ng (apt-get install espeak-ng)")
    clips = []
    for i, sentence in enumerate(SENTENCES[:count]):
        path = directory / f"h{i:02d}.wav"
        _espeak(sentence, path)
        clips.append(path)
    all_speech: list[np.ndarray[Any, Any]] = []
    pause = np.zeros(int(_PAUSE_SECONDS * _RATE), dtype=np.int16)
    for i, sentence in enumerate(SENTENCES):
        path = directory / f"all{i:02d}.wav"
        _espeak(sentence, path)
        pcm, _ = decode_to_pcm16k(path.read_bytes())
        all_speech += [pcm, pause]
    one_pass = np.concatenate(all_speech)
    repeats = int(np.ceil(long_seconds * _RATE / one_pass.shape[0]))
    long_pcm = np.tile(one_pass, repeats)[: int(long_seconds * _RATE)]
    long_path = directory / "long.wav"
    sf.write(long_path, long_pcm, _RATE, subtype="PCM_16")
    return clips, long_path


def _wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    import jiwer

    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _engine_children(marker: bytes = b"_worker_main") -> list[int]:
    """Child processes of this process whose command line has ``marker`` (the engines)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and marker in cmdline:
            found.append(int(entry.name))
    return found


# -- through the local gateway -----------------------------------------------------------


async def _send_all(url: str, model: str, files: Sequence[bytes], in_flight: int) -> list[str]:
    limit = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(timeout=3600) as client:

        async def one(audio: bytes) -> str:
            async with limit:
                response = await client.post(
                    url + "/audio/transcriptions",
                    data={"model": model},
                    files={"file": ("clip.wav", audio, "audio/wav")},
                )
                response.raise_for_status()
                return str(response.json()["text"])

        return list(await asyncio.gather(*(one(a) for a in files)))


def _gateway_row(engine: str, model: str, clips: list[bytes], long: bytes) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    with pn.LocalGateway(engine=engine, mode="lenient", api_key=None, workers=workers) as gw:
        asyncio.run(_send_all(gw.url, model, clips[:workers], workers))  # warm: every worker loaded
        pids = _engine_children()
        cpu, start = _cpu_seconds(pids), time.perf_counter()
        texts = asyncio.run(_send_all(gw.url, model, clips, 2 * workers))
        short_seconds = time.perf_counter() - start
        short_cpu = _cpu_seconds(pids) - cpu
        cpu, start = _cpu_seconds(pids), time.perf_counter()
        (long_text,) = asyncio.run(_send_all(gw.url, model, [long], 1))
        long_seconds = time.perf_counter() - start
        long_cpu = _cpu_seconds(pids) - cpu
        peak = max((_vm_hwm_mb(pid) for pid in pids), default=0.0)
    return {
        "short_seconds": short_seconds,
        "short_cpu": short_cpu,
        "short_texts": texts,
        "long_seconds": long_seconds,
        "long_cpu": long_cpu,
        "long_text": long_text,
        "peak_rss_mb": peak,
    }


# -- bare faster-whisper --------------------------------------------------------------------

_MODEL: Any = None


def _bare_init(model_dir: str) -> None:
    global _MODEL
    from faster_whisper import WhisperModel

    _MODEL = WhisperModel(
        model_dir,
        device="cpu",
        compute_type="int8",
        cpu_threads=1,
        num_workers=1,
        local_files_only=True,
    )


def _bare_transcribe(path: str) -> str:
    segments, _ = _MODEL.transcribe(path, beam_size=5, language="en")
    return " ".join(s.text.strip() for s in segments)


def _bare_peak(_: int) -> tuple[int, float]:
    time.sleep(0.2)  # so each worker gets one of these calls
    return os.getpid(), _vm_hwm_mb(os.getpid())


def _bare_row(model_dir: str, clips: list[Path], long: Path) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_bare_init, initargs=(model_dir,)) as pool:
        pool.map(_bare_transcribe, [str(p) for p in clips[:workers]], chunksize=1)  # warm
        pids = _engine_children(b"multiprocessing")
        cpu, start = _cpu_seconds(pids), time.perf_counter()
        texts = pool.map(_bare_transcribe, [str(p) for p in clips], chunksize=1)
        short_seconds = time.perf_counter() - start
        short_cpu = _cpu_seconds(pids) - cpu
        cpu, start = _cpu_seconds(pids), time.perf_counter()
        long_text = pool.apply(_bare_transcribe, (str(long),))
        long_seconds = time.perf_counter() - start
        long_cpu = _cpu_seconds(pids) - cpu
        peaks = dict(pool.map(_bare_peak, range(workers * 4), chunksize=1))
    return {
        "short_seconds": short_seconds,
        "short_cpu": short_cpu,
        "short_texts": texts,
        "long_seconds": long_seconds,
        "long_cpu": long_cpu,
        "long_text": long_text,
        "peak_rss_mb": max(peaks.values(), default=0.0),
    }


ROW_NAMES: tuple[str, ...] = ("whisper", "bare", "pocketsphinx")


def run(
    count: int = 40,
    long_seconds: float = 600.0,
    *,
    rows: Sequence[str] = ROW_NAMES,
    log: Any = None,
) -> dict[str, Any]:
    """Run every row; return the numbers (see the module docstring)."""
    from phaseo_notebook._engines._whisper import bundled_model_dir

    def say(text: str) -> None:
        if log is not None:
            print(text, file=log, flush=True)

    report: dict[str, Any] = {
        "clips": count,
        "long_clip_seconds": long_seconds,
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="phaseo-engines-") as tmp:
        say(f"synthesising {count} clips and a {long_seconds:g} s clip with espeak-ng...")
        clip_paths, long_path = make_clips(Path(tmp), count, long_seconds)
        clips = [p.read_bytes() for p in clip_paths]
        long = long_path.read_bytes()
        from phaseo_notebook._engines import wav_duration

        short_audio = sum(wav_duration(c) or 0.0 for c in clips)
        report["short_audio_seconds"] = short_audio
        measures = {
            "whisper": (
                "whisper (local gateway)",
                lambda: _gateway_row("whisper", MODEL, clips, long),
            ),
            "bare": (
                "bare faster-whisper",
                lambda: _bare_row(str(bundled_model_dir()), clip_paths, long_path),
            ),
            "pocketsphinx": (
                "pocketsphinx (local gateway)",
                lambda: _gateway_row("pocketsphinx", "local/pocketsphinx", clips, long),
            ),
        }
        references = list(SENTENCES[:count])
        for name in rows:
            label, measure = measures[name]
            say(f"running {label}...")
            row = measure()
            row["label"] = label
            row["clips_per_s"] = count / row["short_seconds"]
            row["short_audio_s_per_s"] = short_audio / row["short_seconds"]
            row["long_audio_s_per_s"] = long_seconds / row["long_seconds"]
            row["short_wer"] = _wer(references, row["short_texts"])
            row["cpu_s_per_clip"] = row["short_cpu"] / count
            row["cpu_s_per_long_audio_s"] = row["long_cpu"] / long_seconds
            report["rows"].append(row)
            # Each row as soon as it is measured: a long run keeps what it has.
            say(
                f"  {label}: {row['clips_per_s']:.2f} clips/s, "
                f"{row['short_audio_s_per_s']:.1f} audio s/s (short), "
                f"{row['long_audio_s_per_s']:.1f} audio s/s (long), "
                f"WER {row['short_wer']:.1%}, peak RSS {row['peak_rss_mb']:.0f} MB, "
                f"engine CPU {row['cpu_s_per_clip']:.2f} s/clip, "
                f"{row['cpu_s_per_long_audio_s']:.3f} s per audio s (long)"
            )
    bare = next((r for r in report["rows"] if r["label"] == "bare faster-whisper"), None)
    for row in report["rows"]:
        row["x_bare_short"] = row["clips_per_s"] / bare["clips_per_s"] if bare else float("nan")
        row["x_bare_long"] = (
            row["long_audio_s_per_s"] / bare["long_audio_s_per_s"] if bare else float("nan")
        )
    return report


def format_report(report: dict[str, Any]) -> str:
    """The markdown table."""
    lines = [
        f"{report['clips']} short clips ({report['short_audio_seconds']:.0f} s of speech) and "
        f"one {report['long_clip_seconds']:g} s clip, on {report['cpus']} cores:",
        "",
        "| engine | clips/s | audio s/s (short) | x bare | engine CPU s/clip | WER (short) "
        "| audio s/s (long) | x bare | engine CPU s per audio s (long) | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['label']} | {row['clips_per_s']:.2f} | {row['short_audio_s_per_s']:.1f} "
            f"| {row['x_bare_short']:.2f}x | {row['cpu_s_per_clip']:.2f} | {row['short_wer']:.1%} "
            f"| {row['long_audio_s_per_s']:.1f} | {row['x_bare_long']:.2f}x "
            f"| {row['cpu_s_per_long_audio_s']:.3f} | {row['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the engine benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="6 clips and a 60 s clip")
    parser.add_argument("--clips", type=int, default=40, help="short clips (at most 40)")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="long clip length")
    parser.add_argument(
        "--rows",
        default=",".join(ROW_NAMES),
        help=f"comma-separated rows to run, in order (default {','.join(ROW_NAMES)})",
    )
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    count, long_seconds = (6, 60.0) if args.quick else (min(args.clips, 40), args.long_seconds)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROW_NAMES))
    if unknown:
        parser.error(f"unknown rows {unknown}; valid: {', '.join(ROW_NAMES)}")
    report = run(count, long_seconds, rows=rows, log=sys.stderr)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
