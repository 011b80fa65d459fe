"""The command line as a new user meets it: one file, skipped files, the key, the cache, the demo."""

from __future__ import annotations

import io
import os
import pty
import struct
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._engines import fake_transcript

from .conftest import make_wav
from .test_cli import TIMEOUT, run


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"phaseo-notebook {pn.__version__}"


def test_transcribe_a_single_audio_file(tmp_path: Path) -> None:
    clip = tmp_path / "one.wav"
    clip.write_bytes(make_wav(11))
    result = run("transcribe", str(clip), "--model", "local/fake", "--no-cache")
    assert result.returncode == 0, result.stderr
    printed = pd.read_csv(io.StringIO(result.stdout))
    assert printed["file"].tolist() == ["one.wav"]
    assert printed["text"].tolist() == [fake_transcript(clip.read_bytes())]


def test_a_folder_run_names_the_files_it_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.wav").write_bytes(make_wav(12))
    (folder / "notes.txt").write_text("not audio")
    (folder / "README.md").write_text("# not audio")
    result = run("transcribe", str(folder), "--model", "local/fake", "--no-cache")
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert skipped == [
        "phaseo-notebook transcribe: skipped 2 file(s) that are not audio: README.md, notes.txt"
    ]
    assert pd.read_csv(io.StringIO(result.stdout))["file"].tolist() == ["a.wav"]


def test_the_missing_key_hint_speaks_shell(tmp_path: Path) -> None:
    clip = tmp_path / "one.wav"
    clip.write_bytes(make_wav(13))
    result = run("transcribe", str(clip), "--model", "openai/whisper-1")
    assert result.returncode == 2
    assert "export PHASEO_API_KEY=" in result.stderr
    assert "--env-file" in result.stderr and "--api-key" in result.stderr
    assert "api_key=" not in result.stderr  # no Python syntax on the command line


@pytest.fixture
def keyed_gateway() -> object:
    with pn.LocalGateway(
        engine="fake", api_key="sk-test-cli", models={"openai/whisper-1": "fake"}
    ) as gw:
        yield gw


def test_api_key_flag_reaches_the_gateway_with_a_warning(
    tmp_path: Path, keyed_gateway: pn.LocalGateway
) -> None:
    clip = tmp_path / "one.wav"
    clip.write_bytes(make_wav(14))
    env = {**os.environ, "PHASEO_BASE_URL": keyed_gateway.url}
    args = ("transcribe", str(clip), "--model", "openai/whisper-1", "--no-cache")
    result = run(*args, "--api-key", "sk-test-cli", env=env)
    assert result.returncode == 0, result.stderr
    assert "visible to other users" in result.stderr and "process list" in result.stderr
    assert "sk-test-cli" not in result.stderr + result.stdout
    assert pd.read_csv(io.StringIO(result.stdout))["text"].tolist() == [
        fake_transcript(clip.read_bytes())
    ]
    wrong = run(*args, "--api-key", "sk-wrong", env=env)
    assert wrong.returncode == 2 and "AuthenticationError" in wrong.stderr


def test_env_file_gives_the_key_and_the_environment_wins(
    tmp_path: Path, keyed_gateway: pn.LocalGateway
) -> None:
    clip = tmp_path / "one.wav"
    clip.write_bytes(make_wav(15))
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"# the gateway\nexport PHASEO_API_KEY='sk-test-cli'\nPHASEO_BASE_URL={keyed_gateway.url}\n"
    )
    args = ("transcribe", str(clip), "--model", "openai/whisper-1", "--no-cache")
    result = run(*args, "--env-file", str(env_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "process list" not in result.stderr
    # A key already in the environment is not overridden by the file.
    env = {**os.environ, "PHASEO_API_KEY": "sk-wrong"}
    overridden = run(*args, "--env-file", str(env_file), env=env, cwd=tmp_path)
    assert overridden.returncode == 2 and "AuthenticationError" in overridden.stderr
    missing = run(*args, "--env-file", str(tmp_path / "nope.env"))
    assert missing.returncode == 2 and "cannot read --env-file" in missing.stderr


def test_cache_dir_before_or_after_the_action(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    before = run("cache", "--dir", str(cache_dir), "info")
    after = run("cache", "info", "--dir", str(cache_dir))
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert before.stdout == after.stdout
    assert f"path: {cache_dir}" in before.stdout
    both = run("cache", "--dir", str(cache_dir), "info", "--dir", str(tmp_path))
    assert both.returncode == 2 and "two different --dir values" in both.stderr


@pytest.mark.parametrize("action", ["info", "clear", "compact"])
def test_cache_on_a_missing_directory_exits_2(tmp_path: Path, action: str) -> None:
    missing = tmp_path / "nonexistent"
    result = run("cache", action, "--dir", str(missing))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and result.stdout == ""
    assert not missing.exists()
    env = {**os.environ, "PHASEO_CACHE_DIR": str(missing)}
    from_env = run("cache", action, env=env)
    assert from_env.returncode == 2 and "$PHASEO_CACHE_DIR" in from_env.stderr


def test_demo_table_fits_the_terminal_width(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "80"}
    result = run("demo", "--model", "local/fake", "--no-cache", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split() == ["file", "reference", "text", "wer"]
    for name in pn.sample_references():
        assert any(line.startswith(name) for line in lines), name
    wide = run("demo", "--model", "local/fake", env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path)
    # Wide enough: every clip is one line and the references are whole.
    for name, reference in pn.sample_references().items():
        row = next(line for line in wide.stdout.splitlines() if line.startswith(name))
        assert reference in row


def test_demo_shows_progress_from_the_start(tmp_path: Path) -> None:
    """On a terminal, stderr shows a spinner before any clip is done, then the clip count."""
    import fcntl
    import termios

    env = {k: v for k, v in os.environ.items() if k != "PHASEO_NO_PROGRESS"}
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "phaseo_notebook", "demo", "--model", "local/fake", "--no-cache"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
        cwd=tmp_path,
    )
    os.close(secondary)
    terminal = b""
    first_at: float | None = None
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            if first_at is None:
                first_at = time.monotonic() - started
            terminal += chunk
        stdout, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert first_at is not None
    text = terminal.decode(errors="replace")
    assert "loading the package" in text  # shown before the engine starts
    assert "transcribing with local/fake" in text and "7/7" in text
    assert b"file" in stdout  # the table itself goes to stdout
