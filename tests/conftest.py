"""Shared fixtures: isolated environment, tiny audio made on the fly, the real recordings."""

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
