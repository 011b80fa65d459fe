"""The README's first command on a fresh clone: install, then ``phaseo-notebook demo``, offline.

The repository is cloned (its committed state) into a temporary directory, a virtual
environment is made with ``--system-site-packages`` (so the dependencies this machine
already has count as installed), and the README's first command runs in it as written, with
pip kept off the network: either ``--no-index --no-build-isolation`` (when this Python's
setuptools can build the package itself), or pip's own configured ``file://`` indexes only.
pip therefore fails if ``[local]`` names something neither installed nor in a local index.
Then the console script runs the demo from a neutral directory, offline.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

FIRST_COMMAND = "python3 -m pip install -e '.[local]' && phaseo-notebook demo"


def readme_first_command() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(?P<body>.*?)\n```", text, re.S)
    assert block is not None, "the README has no bash block"
    return block["body"].strip()


def can_build_without_isolation() -> bool:
    """This Python's setuptools can build an editable wheel (>= 68 with bdist_wheel)."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    has_bdist_wheel = (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None
    return major >= 68 and has_bdist_wheel


def local_indexes() -> list[str]:
    """The ``file://`` package indexes in pip's configuration (never a network one)."""
    urls: list[str] = []
    for key in ("global.index-url", "global.extra-index-url"):
        got = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key],
            capture_output=True,
            text=True,
            check=False,
        )
        if got.returncode == 0:
            urls.extend(u for u in got.stdout.split() if u.startswith("file://"))
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        urls.extend(u for u in os.environ.get(name, "").split() if u.startswith("file://"))
    return list(dict.fromkeys(urls))


def offline_pip_options() -> list[str]:
    if can_build_without_isolation():
        return ["--no-index", "--no-build-isolation"]
    indexes = local_indexes()
    if not indexes:
        pytest.skip(
            "cannot install offline: setuptools here cannot build the package and pip has "
            "no file:// index for the build requirements"
        )
    options = ["--index-url", indexes[0]]
    for url in indexes[1:]:
        options += ["--extra-index-url", url]
    return options


def test_the_readme_starts_with_the_first_command() -> None:
    assert readme_first_command() == FIRST_COMMAND


@pytest.mark.slow
def test_first_command_on_a_fresh_clone(tmp_path: Path) -> None:
    if not (REPO_ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    venv = tmp_path / "venv"
    # Without pip in the venv: the outer pip runs in it, and no old bundled setuptools
    # shadows this machine's.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    bin_dir = venv / "bin"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PHASEO_API_KEY", "PHASEO_BASE_URL", "VIRTUAL_ENV")
    }
    env.update(
        PATH=os.pathsep.join([str(bin_dir), env.get("PATH", "")]),
        VIRTUAL_ENV=str(venv),
        PHASEO_CACHE_DIR=str(tmp_path / "cache"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    install, demo = FIRST_COMMAND.split(" && ")
    # The README's install, as written, plus only the options that keep pip offline.
    pip = subprocess.run(
        f"{install} {' '.join(offline_pip_options())}",
        shell=True,
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-4000:]
    where = subprocess.run(
        ["python3", "-c", "import phaseo_notebook; print(phaseo_notebook.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(clone)
    script = bin_dir / "phaseo-notebook"
    assert script.is_file()
    run = subprocess.run(
        demo,
        shell=True,
        cwd=tmp_path,
        env={**env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "word error rate" in run.stdout and "over 7 clips" in run.stdout
    assert "in this process (offline)" in run.stderr
