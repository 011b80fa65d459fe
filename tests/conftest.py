"""Shared fixtures: isolated environment, tiny audio made on the fly, the real recordings.

The suite runs in parallel worker processes (``pytest -n 4 --dist loadgroup``, see
``.ci/run``): every test gets its own temporary paths and binds port 0, and the tests that
share an expensive module or session fixture are kept on one worker (see
:data:`SHARED_FIXTURE_GROUPS`), so that fixture is built once rather than once per worker.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real human recordings with reference transcripts, beside the project (never copied into it).
SHARED_AUDIO = REPO_ROOT.parent / "shared" / "audio"


#: Fixtures that take seconds to build and are shared by several tests -> the worker group
#: that keeps those tests together under ``--dist loadgroup`` (a dask cluster of two
#: processes, a PocketSphinx pool, 30 minutes of synthesised speech).
SHARED_FIXTURE_GROUPS = {
    "dask_client": "dask-cluster",
    "pocketsphinx_engine": "pocketsphinx",
    "mixed_gateway": "pocketsphinx",
    "long_recording": "long-recording",
}
#: Real speech recognition is CPU-bound: these tests share one worker (and its warm
#: PocketSphinx engine) instead of taking every core at once from the tests that mostly wait.
POCKETSPHINX_GROUP = "pocketsphinx"
POCKETSPHINX_TESTS = {"test_demo_transcribes_and_scores_the_bundled_clips"}


def _group_of(item: pytest.Item) -> str | None:
    names = getattr(item, "fixturenames", ())
    for fixture, group in SHARED_FIXTURE_GROUPS.items():
        if fixture in names:
            return group
    name = getattr(item, "originalname", item.name)
    if "pocketsphinx" in name or name in POCKETSPHINX_TESTS:
        return POCKETSPHINX_GROUP
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests of each expensive shared fixture (before xdist reads the groups),
    and hand out the longest work first, so that no worker is left with a long test at
    the end while the others idle."""
    rank: dict[str, int] = {}
    for item in items:
        group = _group_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        if group == POCKETSPHINX_GROUP:
            rank[item.nodeid] = 0
        elif group is not None or item.get_closest_marker("slow") is not None:
            rank[item.nodeid] = 1
        else:
            rank[item.nodeid] = 2
    items.sort(key=lambda item: rank[item.nodeid])


def make_wav(seed: int = 0, seconds: float = 0.1, rate: int = 16000) -> bytes:
    """A small valid mono 16-bit WAV whose content depends on ``seed``."""
    frames = int(seconds * rate)
    freq = 220 + 17 * (seed % 50)
    samples = (int(8000 * math.sin(2 * math.pi * freq * t / rate + seed)) for t in range(frames))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees the developer's key, gateway or cache; bars are off."""
    for name in ("PHASEO_API_KEY", "PHASEO_BASE_URL", "PHASEO_LOCAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PHASEO_CACHE_DIR", str(tmp_path_factory.mktemp("default-cache")))
    monkeypatch.setenv("PHASEO_NO_PROGRESS", "1")


@pytest.fixture
def wav_bytes() -> bytes:
    return make_wav(1)


@pytest.fixture
def wav_file(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    path.write_bytes(make_wav(2))
    return path


@pytest.fixture
def shared_audio() -> Path:
    if not (SHARED_AUDIO / "english.wav").exists():
        pytest.fail(f"the shared recordings are expected at {SHARED_AUDIO}")
    return SHARED_AUDIO


@pytest.fixture
def fake_gateway() -> Iterator[object]:
    """A local gateway with the fake engine, strict contract mode, on 127.0.0.1."""
    import phaseo_notebook as pn

    with pn.LocalGateway(engine="fake", mode="strict") as gw:
        yield gw
