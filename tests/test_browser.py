"""End to end in a real browser: JupyterLab 4 on 127.0.0.1, driven in headless Chromium.

The upload cell transcribes real recordings with the embedded PocketSphinx engine (no key,
no gateway), and the review cell saves decisions through its keyboard shortcuts: typed in
the text box, right after clicking the audio player, and in command mode. Then the files
come back in another order and each decision is still on its own recording; stale grids
are cleared; Cancel stops a run and leaves a row per file; at 1000 px with the file browser
open nothing is cut off. Screenshots go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
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
rv = pn.widgets.review(up.df, audio_col="audio", save_to="reviews")
rv"""
CANCEL_CELL = """\
import phaseo_notebook as pn
slow = pn.widgets.upload(model="local/pocketsphinx", cache=False)
slow"""
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


def _write_notebook(path: Path, *sources: str) -> None:
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
        "cells": [cell(source) for source in sources],
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


def _choose_files(page: Any, cell: Any, paths: list[Path]) -> None:
    button = cell.locator(".widget-upload")
    button.wait_for(timeout=30_000)
    with page.expect_file_chooser() as chooser:
        button.click()
    chooser.value.set_files([str(p) for p in paths])


def _screenshot(locator: Any, name: str) -> None:
    from playwright.sync_api import Error as PlaywrightError

    # JupyterLab's "get notified about news" toast would sit on top of the cell; it may be
    # sliding in or out, so a click that does not land is fine.
    news = locator.page.locator(".Toastify").get_by_role("button", name="No")
    if news.count():
        with contextlib.suppress(PlaywrightError):
            news.first.click(timeout=2000)
    locator.screenshot(path=str(ARTIFACTS / name))


#: Everything in the cells' output that is cut off or sticks out of its box, as text.
_OVERFLOWS = """
(cells) => {
  const problems = [];
  for (const cell of cells) {
    const out = cell.querySelector(".jp-OutputArea-output");
    if (!out) continue;
    const edge = out.getBoundingClientRect().right + 0.5;
    if (out.scrollWidth > out.clientWidth + 1)
      problems.push(`output scrolls sideways (${out.scrollWidth} > ${out.clientWidth})`);
    for (const b of cell.querySelectorAll(".widget-button")) {
      const r = b.getBoundingClientRect();
      if (r.width === 0) continue;
      if (b.scrollWidth > b.clientWidth + 1) problems.push(`button '${b.textContent}' cut`);
      if (r.right > edge) problems.push(`button '${b.textContent}' past the edge`);
    }
    for (const t of cell.querySelectorAll(".phaseo-transcript, .phaseo-original, textarea")) {
      const r = t.getBoundingClientRect();
      const box = t.closest(".phaseo-card, .phaseo-results, .jp-OutputArea-output");
      const limit = box ? box.getBoundingClientRect().right + 0.5 : edge;
      if (t.scrollWidth > t.clientWidth + 1) problems.push(`text '${t.className}' does not wrap`);
      if (r.right > limit) problems.push(`'${t.tagName} ${t.className}' overflows by ${r.right - limit + 0.5}px`);
    }
  }
  return problems;
}
"""


@pytest.mark.timeout(420)
def test_upload_and_review_cells_in_jupyterlab(tmp_path: Path, shared_audio: Path) -> None:
    _require_tools()
    from playwright.sync_api import expect, sync_playwright

    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    _write_notebook(root / "cells.ipynb", UPLOAD_CELL, REVIEW_CELL)
    ARTIFACTS.mkdir(exist_ok=True)
    english, jfk = SHARED_AUDIO / "english.wav", SHARED_AUDIO / "jfk.flac"
    log = root / "reviews"

    with _jupyter_lab(root, home) as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/cells.ipynb?token={token}")
            _wait_idle(page)

            # Upload cell: the chosen files are listed before Transcribe; the run shows time.
            _run_cell(page, 0)
            upload_cell = page.locator(".jp-Notebook .jp-Cell").nth(0)
            upload_cell.get_by_text("drop audio files here").wait_for(timeout=30_000)
            upload_cell.get_by_text("Offline: no API key").wait_for(timeout=10_000)
            _choose_files(page, upload_cell, [english, jfk])
            upload_cell.get_by_text("2 files chosen").wait_for(timeout=10_000)
            assert upload_cell.get_by_text("jfk.flac").count() >= 1
            _screenshot(upload_cell, "upload-chosen.png")
            upload_cell.get_by_role("button", name="Transcribe").click()
            upload_cell.get_by_text("elapsed").wait_for(timeout=10_000)
            _screenshot(upload_cell, "upload-running.png")
            transcripts = upload_cell.locator(".phaseo-transcript")
            transcripts.nth(1).wait_for(timeout=120_000)
            assert transcripts.nth(0).inner_text().strip() == "one two three"
            assert upload_cell.locator("audio").count() == 2
            _screenshot(upload_cell, "upload-cell.png")

            # Review cell: correct the first row, typed key by key, accept with Alt+A.
            _wait_idle(page)
            _run_cell(page, 1)
            review_cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
            box = review_cell.locator(".phaseo-review textarea")
            box.wait_for(timeout=30_000)
            assert box.input_value() == "one two three"
            box.fill("")
            box.press_sequentially(CORRECTED)
            box.press("Alt+KeyA")
            review_cell.get_by_text("1 of 2 decided").wait_for(timeout=10_000)
            saved = _wait_for_decision(log)
            assert saved["text"].tolist() == [CORRECTED]  # typing triggered nothing else

            # Second row (jfk): play, pause, then Alt+S with no click into the text box.
            assert "jfk.flac" in review_cell.locator(".phaseo-head").inner_text()
            player = review_cell.locator("audio")
            player.click()
            page.wait_for_timeout(600)
            player.click()
            page.wait_for_timeout(300)
            page.keyboard.press("Alt+KeyS")
            review_cell.get_by_text("1 skipped").wait_for(timeout=10_000)
            # Command mode: click the cell's prompt (the cell is selected, nothing in it has
            # focus): Alt+P, Alt+N move, Alt+A accepts the jfk row.
            review_cell.locator(".jp-InputPrompt").click()
            page.wait_for_timeout(300)
            page.keyboard.press("Alt+KeyP")
            review_cell.get_by_text("Row 1 of 2").wait_for(timeout=10_000)
            page.keyboard.press("Alt+KeyN")
            review_cell.get_by_text("Row 2 of 2").wait_for(timeout=10_000)
            # As a reader does: accept once the row's transcript is in the box (a key
            # pressed before the box caught up is refused, never applied to the wrong row).
            expect(box).not_to_have_value(CORRECTED, timeout=10_000)
            page.keyboard.press("Alt+KeyA")
            review_cell.get_by_text("All 2 rows decided").wait_for(timeout=10_000)
            _screenshot(review_cell, "review-cell.png")

            # The files again, in the other order: the old grid goes at once.
            _choose_files(page, upload_cell, [jfk, english])
            # The new choice, listed in its order (the cell clears the grid before it lists
            # the new files, so once the list shows, the old grid must be gone).
            upload_cell.get_by_text(re.compile(r"2 files chosen: jfk\.flac")).wait_for(
                timeout=10_000
            )
            assert transcripts.count() == 0
            upload_cell.get_by_role("button", name="Transcribe").click()
            upload_cell.get_by_text("2 from the cache").wait_for(timeout=60_000)
            assert transcripts.nth(0).inner_text().strip() != "one two three"  # jfk first
            _wait_idle(page)
            _run_cell(page, 1)
            review_cell.get_by_text("All 2 rows decided").wait_for(timeout=30_000)
            # Each decision is on its own recording: jfk.flac (now row 1, where the review
            # resumes) has its accepted transcript, english.wav (row 2) the correction.
            head = review_cell.locator(".phaseo-head")
            review_cell.get_by_text("Row 1 of 2").wait_for(timeout=10_000)
            assert "jfk.flac" in head.inner_text() and "accepted" in head.inner_text()
            expect(box).not_to_have_value(CORRECTED, timeout=10_000)
            assert box.input_value() != ""
            review_cell.locator(".jp-InputPrompt").click()
            page.wait_for_timeout(300)
            page.keyboard.press("Alt+KeyN")
            review_cell.get_by_text("Row 2 of 2").wait_for(timeout=10_000)
            expect(box).to_have_value(CORRECTED, timeout=10_000)
            assert "english.wav" in head.inner_text() and "corrected" in head.inner_text()
            # A click on plain text of the card (the file name), then a shortcut.
            review_cell.locator(".phaseo-name").click()
            page.keyboard.press("Alt+KeyP")
            review_cell.get_by_text("Row 1 of 2").wait_for(timeout=10_000)

            # 1000 px wide with the file browser open: nothing cut off or sticking out.
            page.set_viewport_size({"width": 1000, "height": 1000})
            if not page.locator("#filebrowser").is_visible():
                page.locator('.jp-SideBar [data-id="filebrowser"]').click()
            page.locator("#filebrowser").wait_for(state="visible", timeout=10_000)
            page.wait_for_timeout(800)
            cells = page.locator(".jp-Notebook .jp-Cell")
            upload_cell.scroll_into_view_if_needed()
            _screenshot(upload_cell, "upload-cell-1000px.png")
            review_cell.scroll_into_view_if_needed()
            _screenshot(review_cell, "review-cell-1000px.png")
            problems = cells.evaluate_all(_OVERFLOWS)
            assert problems == []
        finally:
            browser.close()

    final = pd.read_parquet(log).sort_values("seq")
    assert final["review_status"].tolist() == ["corrected", "skipped", "accepted"]


@pytest.mark.timeout(240)
def test_cancel_stops_a_run_in_jupyterlab(tmp_path: Path, shared_audio: Path) -> None:
    _require_tools()
    from playwright.sync_api import expect, sync_playwright

    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    _write_notebook(root / "cancel.ipynb", CANCEL_CELL)
    ARTIFACTS.mkdir(exist_ok=True)
    clips = [SHARED_AUDIO / n for n in ("jfk.flac", "english.wav", "french.aiff", "chinese.flac")]

    with _jupyter_lab(root, home) as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/cancel.ipynb?token={token}")
            _wait_idle(page)
            _run_cell(page, 0)
            cell = page.locator(".jp-Notebook .jp-Cell").nth(0)
            _choose_files(page, cell, clips)
            cell.get_by_text("4 files chosen").wait_for(timeout=10_000)
            cell.get_by_role("button", name="Transcribe").click()
            cell.get_by_text("elapsed").wait_for(timeout=10_000)
            # Cancel once a file has finished and others have not (jfk.flac alone takes
            # PocketSphinx about as long as it plays, 11 s).
            cell.get_by_text(re.compile(r"4 files: [123] done")).wait_for(timeout=60_000)
            started = time.monotonic()
            cell.get_by_role("button", name="Cancel").click()
            cell.get_by_text("Cancelled after").wait_for(timeout=30_000)
            stopped_in = time.monotonic() - started
            # Every file has its row: a transcript if it finished, "not transcribed" if not.
            rows = cell.locator(".phaseo-results").locator(".phaseo-transcript, .phaseo-error")
            expect(rows).to_have_count(len(clips), timeout=10_000)
            transcribed = cell.locator(".phaseo-transcript").count()
            not_done = cell.locator(".phaseo-error", has_text="not transcribed").count()
            assert transcribed + not_done == len(clips) and transcribed >= 1 and not_done >= 1
            cell.get_by_text(f"{transcribed} of {len(clips)} transcribed").wait_for(timeout=5_000)
            assert cell.locator("audio").count() == len(clips)
            _screenshot(cell, "upload-cancelled.png")
            assert cell.get_by_role("button", name="Transcribe").is_enabled()
        finally:
            browser.close()
    assert stopped_in < 20
