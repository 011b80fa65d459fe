"""Input checks before anything is sent: each bad input is an AudioInputError naming it."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest

import phaseo_notebook as pn
from phaseo_notebook._audio import (
    AudioFacts,
    local_audio_bytes,
    measure_audio,
    normalize_audio,
    sniff_audio_format,
    wav_duration,
)

from .conftest import make_wav


def test_kinds(wav_file: Path, wav_bytes: bytes) -> None:
    assert normalize_audio("https://example.com/a.wav").kind == "url"
    assert normalize_audio("HTTP://example.com/a.wav").kind == "url"
    assert normalize_audio("http://[::1]:8080/a.wav").kind == "url"
    assert normalize_audio(str(wav_file)).kind == "path"
    assert normalize_audio(wav_file).kind == "path"
    assert normalize_audio(wav_bytes).kind == "bytes"
    assert normalize_audio(memoryview(wav_bytes)).data == wav_bytes
    uri = "data:audio/wav;base64," + base64.b64encode(wav_bytes).decode()
    src = normalize_audio(uri)
    assert src.kind == "data_uri" and src.data == wav_bytes and src.format == "wav"


def test_identity_is_content_for_bytes_and_files_and_url_for_urls(wav_file: Path) -> None:
    same = normalize_audio(wav_file.read_bytes()).identity()
    assert normalize_audio(wav_file).identity() == same
    assert len(same) == 64
    assert normalize_audio("https://e.com/a.wav").identity() == "url:https://e.com/a.wav"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "missing value"),
        (float("nan"), "missing value"),
        (42, "unsupported type int"),
        (3.5, "unsupported type float"),
        ("", "empty string"),
        ("   ", "empty string"),
        ("file:///etc/passwd", "scheme 'file' is not supported"),
        ("javascript:alert(1)", "scheme 'javascript' is not supported"),
        ("ftp://host/a.wav", "scheme 'ftp' is not supported"),
        ("http://", "no host"),
        ("http://host:99999/a.wav", "malformed URL"),
        ("https://user:pw@host/a.wav", "credentials"),
        ("https://host/a b.wav", "whitespace"),
        ("data:audio/wav;base64,@@@", "invalid base64"),
        ("data:text/plain;base64,aGVsbG8=", "not audio/*"),
        ("data:audio/wav,plain", "not base64-encoded"),
        ("data:audio/wav;base64," + base64.b64encode(b"hello there").decode(), "not audio"),
        (b"", "empty"),
        (b"name,value\n1,2\n", "not audio"),
    ],
)
def test_invalid_inputs_are_typed_and_named(value: object, message: str) -> None:
    with pytest.raises(pn.AudioInputError, match=message) as info:
        normalize_audio(value)
    assert str(info.value).startswith("audio input ")


def test_credentials_are_not_echoed_in_the_message() -> None:
    with pytest.raises(pn.AudioInputError) as info:
        normalize_audio("https://bob:hunter2@host/a.wav")
    assert "hunter2" not in str(info.value)


def test_pandas_missing_values() -> None:
    import pandas as pd

    for value in (pd.NA, pd.NaT):
        with pytest.raises(pn.AudioInputError, match="missing value"):
            normalize_audio(value)


def test_file_checks(tmp_path: Path) -> None:
    with pytest.raises(pn.AudioInputError, match="does not exist") as info:
        normalize_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(info.value)
    with pytest.raises(pn.AudioInputError, match="directory"):
        normalize_audio(tmp_path)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(pn.AudioInputError, match="empty"):
        normalize_audio(empty)
    fake = tmp_path / "table.wav"  # right extension, wrong content
    fake.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(pn.AudioInputError, match="not audio"):
        normalize_audio(fake)
    renamed = tmp_path / "clip.dat"  # wrong extension, right content: it is audio
    renamed.write_bytes(make_wav(3))
    assert normalize_audio(renamed).format == "wav"
    assert normalize_audio(renamed).filename == "clip.wav"


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    # Over one upload (25 MB) is fine: the batch engine sends it as chunks. Over the
    # local input cap it is refused from its size alone.
    from phaseo_notebook._audio import MAX_LOCAL_AUDIO_BYTES

    big = tmp_path / "big.wav"
    with big.open("wb") as fh:
        fh.write(make_wav(1)[:44])
        fh.truncate(25_000_001)  # sparse: no 25 MB written
    source = normalize_audio(big)
    assert source.size == 25_000_001
    # Sending it whole is still refused, before the file is read.
    with pytest.raises(pn.AudioInputError, match="over the 25 MB limit"):
        source.read()
    with big.open("r+b") as fh:
        fh.truncate(MAX_LOCAL_AUDIO_BYTES + 1)
    with pytest.raises(pn.AudioInputError, match="MB limit per file"):
        normalize_audio(big)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path: Path) -> None:
    locked = tmp_path / "locked.wav"
    locked.write_bytes(make_wav(1))
    locked.chmod(0)
    with pytest.raises(pn.AudioInputError, match="permission denied"):
        normalize_audio(locked)


def test_unreadable_file_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores file modes, so simulate the kernel's answer at open()."""
    locked = tmp_path / "locked.wav"
    locked.write_bytes(make_wav(1))
    real_open = Path.open

    def deny(self: Path, *args: object, **kwargs: object) -> object:
        if self == locked:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(pn.AudioInputError, match="permission denied"):
        normalize_audio(locked)


@pytest.mark.parametrize(
    ("header", "fmt"),
    [
        (b"RIFF\0\0\0\0WAVEfmt ", "wav"),
        (b"fLaC\0\0\0\x22", "flac"),
        (b"OggS\0\x02", "ogg"),
        (b"ID3\x04\0\0", "mp3"),
        (b"\xff\xfb\x90\x64", "mp3"),
        (b"\xff\xf1\x50\x80", "aac"),
        (b"FORM\0\0\0\0AIFF", "aiff"),
        (b"\0\0\0\x20ftypM4A ", "mp4"),
        (b"\x1a\x45\xdf\xa3", "webm"),
        (b"#!AMR\n", "amr"),
        (b"PK\x03\x04", None),
        (b"%PDF-1.4", None),
        (b"", None),
    ],
)
def test_sniffing(header: bytes, fmt: str | None) -> None:
    assert sniff_audio_format(header) == fmt


def test_shared_recordings_are_recognised(shared_audio: Path) -> None:
    formats = {
        p.name: normalize_audio(p).format
        for p in sorted(shared_audio.iterdir())
        if p.suffix != ".md"
    }
    assert formats == {
        "chinese.flac": "flac",
        "english.wav": "wav",
        "french.aiff": "aiff",
        "jfk.flac": "flac",
    }


def test_measure_audio_duration_and_loudness(shared_audio: Path) -> None:
    tone = make_wav(seed=1, seconds=1.0)
    silence = make_wav(seconds=1.0)[:44] + bytes(32000)  # same header, zero samples
    assert wav_duration(tone) == 1.0
    assert measure_audio(tone, need_energy=False, threshold_db=-40.0) == AudioFacts(1.0, None)
    loud = measure_audio(tone, need_energy=True, threshold_db=-40.0)
    assert loud.duration == 1.0 and loud.loud_seconds == pytest.approx(1.0)
    assert measure_audio(silence, need_energy=True, threshold_db=-40.0).loud_seconds == 0.0
    # A tone at -12 dBFS is quiet for a -6 dB threshold.
    assert measure_audio(tone, need_energy=True, threshold_db=-6.0).loud_seconds == 0.0
    # FLAC has no WAV header: the duration comes from decoding (jfk.flac is 11 s).
    flac = (shared_audio / "jfk.flac").read_bytes()
    assert wav_duration(flac) is None
    facts = measure_audio(flac, need_energy=True, threshold_db=-40.0)
    assert facts.duration == pytest.approx(11.0, abs=0.1)
    assert facts.loud_seconds is not None and 3.0 < facts.loud_seconds <= facts.duration
    assert measure_audio(b"RIFF junk", need_energy=True, threshold_db=-40.0) == AudioFacts(
        None, None
    )


def test_local_audio_bytes_never_downloads(wav_file: Path, wav_bytes: bytes) -> None:
    assert local_audio_bytes(str(wav_file)) == wav_file.read_bytes()
    assert local_audio_bytes(wav_bytes) == wav_bytes
    assert local_audio_bytes("https://example.com/a.wav") is None
    assert local_audio_bytes("missing.wav") is None
