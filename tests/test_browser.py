"""End to end in a real browser: JupyterLab 4 on 127.0.0.1, driven in headless Chromium.

The upload cell transcribes a real recording with the embedded PocketSphinx engine (no key,
no gateway), and the review cell saves a corrected transcript through its keyboard shortcut.
A screenshot of each cell goes to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from .conftest import REPO_ROOT, SHARED_AUDIO

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UPLOAD_CELL = """\
import phaseo_notebook as pn
up = pn.widgets.upload(model="local/pocketsphinx", cache="cache")
up"""
REVIEW_CELL = """\
rv = pn.widgets.review(up.df, audio_col="audio", save_to="reviews.parquet")
rv"""
#: Typed key by key: plain a, r, s, p and n must type text, not trigger the shortcuts.
CORRECTED = "one two three four, as spoken"


def _require_tools() -> None:
    missing = [
        name
        for name, ok in (
            (str(CHROMIUM), CHROMIUM.exists()),
            ("the playwright package", importlib.util.find_spec("playwright") is not None),
            ("the jupyterlab package", importlib.util.find_spec("jupyterlab") is not None),
            ("the anywidget package", importlib.util.find_spec("anywidget") is not None),
        )
        if not ok
    ]
    if missing:
        reason = "browser test needs " + ", ".join(missing) + " (see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _write_notebook(path: Path) -> None:
    def cell(source: str) -> dict[str, Any]:
        lines = source.splitlines(keepends=True)
        return {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": lines,
        }

    kernel = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    notebook = {
        "cells": [cell(UPLOAD_CELL), cell(REVIEW_CELL)],
        "metadata": {"kernelspec": kernel},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    path.write_text(json.dumps(notebook, indent=1))


@contextlib.contextmanager
def _jupyter_lab(root: Path, home: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on 127.0.0.1 with a token; killed (whole process group) on exit."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    # Settings, workspaces and runtime files of this run only: nothing from the machine's user.
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ):
        env[var] = str(home / sub)
    log = (home / "jupyter.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--allow-root",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited with {proc.returncode}; see {home / 'jupyter.log'}"
                )
            try:
                if (
                    httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("jupyter lab did not answer within 30 s")
            time.sleep(0.25)
        yield base, token
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _wait_idle(page: Any, timeout_ms: int = 30_000) -> None:
    # The notebook shows before its kernel is connected; keys sent earlier are lost.
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=timeout_ms)


def _run_cell(page: Any, index: int) -> None:
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def _wait_for_decision(path: Path, timeout: float = 15.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_dir() and any(path.glob("part-*.parquet")):
            return pd.read_parquet(path)
        time.sleep(0.2)
    pytest.fail(f"no decision was saved to {path} within {timeout} s")


@pytest.mark.timeout(150)
def test_upload_and_review_cells_in_jupyterlab(tmp_path: Path, shared_audio: Path) -> None:
    _require_tools()
    from playwright.sync_api import sync_playwright

    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    _write_notebook(root / "cells.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    english = SHARED_AUDIO / "english.wav"

    with _jupyter_lab(root, home) as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/cells.ipynb?token={token}")
            _wait_idle(page)

            # Upload cell: choose the real recording, transcribe, see the transcript.
            _run_cell(page, 0)
            upload_cell = page.locator(".jp-Notebook .jp-Cell").nth(0)
            upload_button = upload_cell.locator(".widget-upload")
            upload_button.wait_for(timeout=30_000)
            with page.expect_file_chooser() as chooser:
                upload_button.click()
            chooser.value.set_files(str(english))
            upload_cell.get_by_text("Audio files (1)").wait_for(timeout=10_000)
            upload_cell.get_by_role("button", name="Transcribe").click()
            transcript = upload_cell.locator(".phaseo-transcript")
            transcript.wait_for(timeout=45_000)
            assert transcript.inner_text().strip() == "one two three"
            assert upload_cell.locator("audio").count() == 1
            upload_cell.screenshot(path=str(ARTIFACTS / "upload-cell.png"))

            # Review cell: correct the transcript, accept with Alt+A from inside the text box.
            _wait_idle(page)
            _run_cell(page, 1)
            review_cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
            box = review_cell.locator(".phaseo-review textarea")
            box.wait_for(timeout=30_000)
            assert box.input_value() == "one two three"
            box.fill("")
            box.press_sequentially(CORRECTED)
            box.press("Alt+KeyA")
            saved = _wait_for_decision(root / "reviews.parquet")
            review_cell.get_by_text("1 reviewed").first.wait_for(timeout=10_000)
            review_cell.screenshot(path=str(ARTIFACTS / "review-cell.png"))
        finally:
            browser.close()

    assert saved[["review_status", "text", "original"]].to_dict("records") == [
        {"review_status": "corrected", "text": CORRECTED, "original": "one two three"}
    ]
    # Typing the text key by key must not have triggered any decision.
    assert len(saved) == 1
