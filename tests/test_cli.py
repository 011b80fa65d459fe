"""The command line, run as a real subprocess: commands, outputs and exit statuses."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._engines import fake_transcript

from ._sigint import with_default_sigint
from .conftest import REPO_ROOT, make_wav

TIMEOUT = 120


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m phaseo_notebook ARGS``: the same entry point as the console script."""
    return subprocess.run(
        [sys.executable, "-m", "phaseo_notebook", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd or REPO_ROOT,
        env=env,
        check=False,
    )


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = []
    for i in range(3):
        path = folder / f"clip{i}.wav"
        path.write_bytes(make_wav(20 + i))
        paths.append(path)
    return paths


def expected_texts(paths: list[Path]) -> list[str]:
    return [fake_transcript(p.read_bytes()) for p in paths]


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["transcribe"],
        ["cache"],
        ["cache", "info"],
        ["cache", "clear"],
        ["cache", "compact"],
        ["demo"],
    ],
    ids=lambda c: " ".join(c) or "main",
)
def test_help_on_every_command(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    prog = " ".join(["phaseo-notebook", *command])
    assert result.stdout.startswith(f"usage: {prog}"), result.stdout
    assert "options:" in result.stdout


def test_usage_errors_exit_2() -> None:
    result = run("transcribe")  # INPUT missing
    assert result.returncode == 2
    assert "the following arguments are required: INPUT" in result.stderr
    assert run("no-such-command").returncode == 2


# --------------------------------------------------------------------------- transcribe


def test_transcribe_csv_to_parquet(tmp_path: Path, clips: list[Path]) -> None:
    table = tmp_path / "in.csv"
    pd.DataFrame({"sound": [str(p) for p in clips], "speaker": ["a", "b", "c"]}).to_csv(
        table, index=False
    )
    out = tmp_path / "results" / "out.parquet"
    args = ["transcribe", str(table), "--col", "sound", "--model", "local/fake", "--out", str(out)]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["sound", "speaker", "text", "text_error"]
    assert frame["text"].tolist() == expected_texts(clips)
    assert frame["text_error"].isna().all()
    assert "transcribed 3 of 3 rows (0 from the cache, 0 failed)" in result.stderr

    # A rerun is answered by the cache.
    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert "(3 from the cache, 0 failed)" in again.stderr


def test_transcribe_parquet_to_stdout_and_to_csv(tmp_path: Path, clips: list[Path]) -> None:
    table = tmp_path / "in.parquet"
    pd.DataFrame({"audio": [str(p) for p in clips], "lang": ["en", "fr", "en"]}).to_parquet(table)
    result = run("transcribe", str(table), "--model", "local/fake", "--no-cache")
    assert result.returncode == 0, result.stderr
    printed = pd.read_csv(io.StringIO(result.stdout))
    assert printed["text"].tolist() == expected_texts(clips)

    out = tmp_path / "out.csv"
    result = run(
        "transcribe",
        str(table),
        "--model",
        "local/fake",
        "--language-col",
        "lang",
        "--metadata",
        "--text-col",
        "transcript",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(out)
    assert frame["transcript"].tolist() == expected_texts(clips)
    # The gateway echoes the language asked for, row by row.
    assert frame["transcript_language"].tolist() == ["en", "fr", "en"]
    assert "transcript_cached" in frame.columns


def test_transcribe_a_folder(tmp_path: Path, clips: list[Path]) -> None:
    folder = clips[0].parent
    (folder / "notes.txt").write_text("not audio")
    nested = folder / "more"
    nested.mkdir()
    (nested / "deep.wav").write_bytes(make_wav(30))
    out = tmp_path / "folder.jsonl"
    result = run("transcribe", str(folder), "--model", "local/fake", "--out", str(out))
    assert result.returncode == 0, result.stderr
    frame = pd.read_json(out, lines=True)
    assert frame["file"].tolist() == ["clip0.wav", "clip1.wav", "clip2.wav"]
    assert frame["text"].tolist() == expected_texts(clips)

    deep = run("transcribe", str(folder), "--model", "local/fake", "--recursive")
    assert deep.returncode == 0, deep.stderr
    printed = pd.read_csv(io.StringIO(deep.stdout))
    assert printed["file"].tolist() == ["clip0.wav", "clip1.wav", "clip2.wav", "more/deep.wav"]


def test_some_rows_failed_exits_1_and_writes_the_output(tmp_path: Path, clips: list[Path]) -> None:
    table = tmp_path / "in.csv"
    rows = [str(clips[0]), str(tmp_path / "missing.wav"), str(clips[1])]
    pd.DataFrame({"audio": rows}).to_csv(table, index=False)
    out = tmp_path / "out.parquet"
    result = run("transcribe", str(table), "--model", "local/fake", "--out", str(out))
    assert result.returncode == 1, result.stderr
    frame = pd.read_parquet(out)
    assert frame["text"].tolist()[0::2] == expected_texts(clips[:2])
    assert frame["text"].isna().tolist() == [False, True, False]
    assert "does not exist" in str(frame["text_error"].iloc[1])
    assert "transcribed 2 of 3 rows (0 from the cache, 1 failed)" in result.stderr


def test_missing_input_or_bad_column_exit_2(tmp_path: Path, clips: list[Path]) -> None:
    missing = run("transcribe", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2
    assert "input" in missing.stderr and "nope.csv' does not exist" in missing.stderr

    table = tmp_path / "in.csv"
    pd.DataFrame({"audio": [str(clips[0])]}).to_csv(table, index=False)
    out = tmp_path / "out.parquet"
    bad_col = run("transcribe", str(table), "--col", "sound", "--out", str(out))
    assert bad_col.returncode == 2
    assert "column 'sound' is not in" in bad_col.stderr and "'audio'" in bad_col.stderr
    assert not out.exists()

    bad_out = run("transcribe", str(table), "--out", str(tmp_path / "out.xlsx"))
    assert bad_out.returncode == 2
    assert "must end in .parquet, .csv or .jsonl" in bad_out.stderr

    not_a_table = tmp_path / "list.txt"
    not_a_table.write_text("a.wav\n")
    assert run("transcribe", str(not_a_table)).returncode == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    no_audio = run("transcribe", str(empty))
    assert no_audio.returncode == 2
    assert "holds no audio files" in no_audio.stderr


def test_fatal_configuration_error_exits_2(tmp_path: Path, clips: list[Path]) -> None:
    # A remote model with no key and no gateway configured cannot run at all.
    out = tmp_path / "out.parquet"
    result = run(
        "transcribe", str(clips[0].parent), "--model", "openai/whisper-1", "--out", str(out)
    )
    assert result.returncode == 2
    assert "ConfigurationError" in result.stderr
    assert not out.exists()


def test_progress_goes_to_stderr(tmp_path: Path, clips: list[Path]) -> None:
    """With a terminal on stderr the bar is drawn there; stdout holds only the CSV."""
    env = {k: v for k, v in os.environ.items() if k != "PHASEO_NO_PROGRESS"}
    primary, secondary = pty.openpty()
    # A new terminal is 0 columns wide, which leaves a bar no room at all.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    command = ["transcribe", str(clips[0].parent), "--model", "local/fake", "--no-cache"]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "phaseo_notebook", *command],
            stdout=subprocess.PIPE,
            stderr=secondary,
            env=env,
            cwd=REPO_ROOT,
        )
        os.close(secondary)
        stdout, _ = proc.communicate(timeout=TIMEOUT)
        terminal = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert b"3/3" in terminal and b"row" in terminal
    printed = pd.read_csv(io.StringIO(stdout.decode()))
    assert printed["text"].tolist() == expected_texts(clips)


# --------------------------------------------------------------------------- cache


def test_cache_info_compact_clear(tmp_path: Path, clips: list[Path]) -> None:
    cache_dir = tmp_path / "cache"
    folder = clips[0].parent
    for i in range(2):  # two runs with different models: two part files
        result = run(
            "transcribe",
            str(folder),
            "--model",
            "local/fake",
            "--language",
            ["en", "fr"][i],
            "--cache-dir",
            str(cache_dir),
        )
        assert result.returncode == 0, result.stderr

    info = run("cache", "info", "--dir", str(cache_dir), "--json")
    assert info.returncode == 0, info.stderr
    stats = json.loads(info.stdout)
    assert (stats["parts"], stats["rows"], stats["keys"]) == (2, 6, 6)
    assert stats["path"] == str(cache_dir)

    text = run("cache", "info", "--dir", str(cache_dir))
    assert "rows: 6" in text.stdout and "parts: 2" in text.stdout

    compact = run("cache", "compact", "--dir", str(cache_dir))
    assert compact.returncode == 0, compact.stderr
    assert "2 -> 1 part file(s), 6 -> 6 row(s)" in compact.stdout
    assert pn.Cache(cache_dir).info()["parts"] == 1

    clear = run("cache", "clear", "--dir", str(cache_dir))
    assert clear.returncode == 0, clear.stderr
    assert "removed 1 file(s)" in clear.stdout
    assert pn.Cache(cache_dir).info()["rows"] == 0

    # Without --dir: $PHASEO_CACHE_DIR.
    env = {**os.environ, "PHASEO_CACHE_DIR": str(cache_dir)}
    assert json.loads(run("cache", "info", "--json", env=env).stdout)["path"] == str(cache_dir)


def test_cache_on_a_file_exits_2(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run("cache", "info", "--dir", str(not_a_dir))
    assert result.returncode == 2
    assert "is not a directory" in result.stderr


# --------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_demo_transcribes_and_scores_the_bundled_clips(tmp_path: Path) -> None:
    # Wide enough for every row on one line (the table fits narrower terminals by wrapping).
    result = run("demo", cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["file", "reference", "text", "wer"]
    references = pn.sample_references()
    for name, reference in references.items():
        row = next(line for line in lines if line.strip().startswith(name))
        assert reference in row
    # PocketSphinx gets the bundled clips almost right (measured: 1 word wrong in 42).
    summary = next(line for line in lines if "word error rate" in line)
    rate = float(summary.split("word error rate ")[1].split("%")[0])
    assert rate < 10.0
    assert f"over {len(references)} clips" in summary
    assert "numbers.wav" in result.stdout and "0%" in result.stdout


def test_ctrl_c_keeps_finished_rows_and_exits_130(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(8):
        (folder / f"c{i}.wav").write_bytes(make_wav(40 + i))
    cache_dir = tmp_path / "cache"
    faults = pn.Faults(latency=0.4)
    options = ["--model", "a/model", "--concurrency", "1", "--cache-dir", str(cache_dir)]
    with pn.LocalGateway(engine="fake", models={"a/model": "fake"}, faults=faults) as gw:
        assert gw.api_key is not None
        env = {**os.environ, "PHASEO_API_KEY": gw.api_key, "PHASEO_BASE_URL": gw.url}
        proc = subprocess.Popen(
            with_default_sigint(
                [sys.executable, "-m", "phaseo_notebook", "transcribe", str(folder), *options]
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            while gw.stats().by_status.get(200, 0) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted; finished rows are in the cache" in stderr
    assert stdout == ""
    saved = pn.Cache(cache_dir).info()["rows"]
    assert 2 <= saved < 8


def test_cache_commands_take_an_fsspec_url(tmp_path: Path, clips: list[Path]) -> None:
    url = f"local://{tmp_path}/url-cache"  # the fsspec code path, on a store we can inspect
    result = run("transcribe", str(clips[0].parent), "--model", "local/fake", "--cache-dir", url)
    assert result.returncode == 0, result.stderr
    info = run("cache", "info", "--dir", url, "--json")
    assert info.returncode == 0, info.stderr
    stats = json.loads(info.stdout)
    assert stats["path"] == url and stats["rows"] == len(clips)
    assert pn.Cache(url).info()["rows"] == len(clips)
