"""Audio length from headers, for estimates: every container the gateway takes, no network."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

import phaseo_notebook as pn
from phaseo_notebook._audio import normalize_audio
from phaseo_notebook._duration import audio_seconds
from tests.conftest import make_wav


def test_wav_bytes_path_and_source(tmp_path: Path) -> None:
    data = make_wav(3, seconds=2.0, rate=8000)
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    assert audio_seconds(data) == 2.0
    assert audio_seconds(path) == 2.0
    assert audio_seconds(str(path)) == 2.0
    assert audio_seconds(normalize_audio(str(path))) == 2.0


def test_shared_recordings(shared_audio: Path) -> None:
    assert audio_seconds(shared_audio / "jfk.flac") == pytest.approx(11.0)
    assert audio_seconds(shared_audio / "english.wav") == pytest.approx(2.745, abs=1e-3)
    assert audio_seconds(shared_audio / "french.aiff") == pytest.approx(2.533, abs=1e-3)
    assert audio_seconds(shared_audio / "chinese.flac") == pytest.approx(0.956, abs=1e-3)


def test_urls_are_not_fetched() -> None:
    # No gateway and no server at this address: any attempt to fetch would fail loudly.
    assert audio_seconds("https://example.invalid/talk.mp3") is None
    assert audio_seconds("http://127.0.0.1:9/clip.wav") is None


def test_invalid_input_is_the_same_error_as_when_sent(tmp_path: Path) -> None:
    with pytest.raises(pn.AudioInputError, match="does not exist"):
        audio_seconds(tmp_path / "missing.wav")


def test_unreadable_audio_has_no_length() -> None:
    # A valid RIFF/WAVE start that no reader can make sense of.
    assert audio_seconds(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(64)) is None


def test_a_malformed_wav_header_has_no_length() -> None:
    # RIFF/WAVE, then a chunk header that makes the standard library's reader raise
    # RuntimeError (the other readers refuse it): no length, never an exception. Every run
    # reads lengths while planning long files, so this must not fail a run.
    bad = make_wav(1)[:12] + b"\x00" * 7 + b"\x01"
    assert audio_seconds(bad) is None


def test_wav_without_any_optional_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "soundfile", None)
    monkeypatch.setitem(sys.modules, "av", None)
    assert audio_seconds(make_wav(4, seconds=1.5, rate=8000)) == 1.5


def test_a_large_file_is_not_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.wav"
    path.write_bytes(make_wav(5, seconds=60.0, rate=8000))  # ~1 MB
    opened: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        fh = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        if self == path:
            real_read = fh.read

            def read(n: int = -1) -> bytes:
                chunk: bytes = real_read(n)
                opened.append(len(chunk))
                return chunk

            fh.read = read
        return fh

    monkeypatch.setattr(Path, "open", counting_open)
    assert audio_seconds(path) == 60.0
    assert opened and sum(opened) < 64 * 1024


av = pytest.importorskip("av")
np = pytest.importorskip("numpy")


def _encode(fmt: str, codec: str, seconds: float = 1.5, rate: int = 48000) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        n = int(rate * seconds)
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        for start in range(0, n, 1024):
            chunk = wave[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "codec"),
    [("mp4", "aac"), ("webm", "libopus"), ("ogg", "libopus"), ("mp3", "libmp3lame")],
)
def test_compressed_containers(fmt: str, codec: str, tmp_path: Path) -> None:
    try:
        data = _encode(fmt, codec)
    except Exception as err:  # an av build without this encoder
        pytest.skip(f"cannot encode {fmt}/{codec} here: {err}")
    path = tmp_path / f"clip.{'m4a' if fmt == 'mp4' else fmt}"
    path.write_bytes(data)
    assert audio_seconds(path) == pytest.approx(1.5, abs=0.05)
    assert audio_seconds(data) == pytest.approx(1.5, abs=0.05)
