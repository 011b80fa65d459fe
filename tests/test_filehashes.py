"""Remembered file hashes: unchanged files are not read again, changed ones always are."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from phaseo_notebook import _audio
from phaseo_notebook._audio import AudioSource, normalize_audio
from phaseo_notebook._batch import transcribe_many_sync
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._filehashes import FILE_NAME, FileHashes

from .conftest import make_wav

LONG_AGO_NS = 1_600_000_000 * 10**9  # September 2020


def write_old(path: Path, data: bytes, mtime_ns: int = LONG_AGO_NS) -> None:
    """Write ``data`` and date the file in the past, as files on disk usually are."""
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def run(paths: list[Path], cache: Path) -> list[str | None]:
    result = transcribe_many_sync(
        [str(p) for p in paths], model="local/fake", cache=str(cache), progress=False
    )
    assert result.errors == 0, result.error
    return result.text


def forbid_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged file was read again")

    monkeypatch.setattr(AudioSource, "identity", refuse)
    monkeypatch.setattr(_audio, "_from_path", refuse)


def test_unchanged_files_are_neither_opened_nor_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / f"clip-{i}.wav" for i in range(5)]
    for i, path in enumerate(paths):
        write_old(path, make_wav(i))
    first = run(paths, tmp_path / "cache")
    assert len(pd.read_parquet(tmp_path / "cache" / FILE_NAME)) == 5
    # The hidden table is not part of the cache's own rows.
    assert len(pd.read_parquet(tmp_path / "cache")) == 5

    forbid_reading(monkeypatch)
    assert run(paths, tmp_path / "cache") == first


@pytest.mark.parametrize("change", ["same size, new time", "new size"])
def test_a_changed_file_is_hashed_again(tmp_path: Path, change: str) -> None:
    clip = tmp_path / "clip.wav"
    write_old(clip, make_wav(1))
    assert run([clip], tmp_path / "cache") == [fake_transcript(make_wav(1))]

    if change == "new size":
        new = make_wav(2, seconds=0.2)
        write_old(clip, new)  # even with the very same modification time
    else:
        new = make_wav(2)
        assert len(new) == len(make_wav(1))
        write_old(clip, new, mtime_ns=LONG_AGO_NS + 1)
    assert run([clip], tmp_path / "cache") == [fake_transcript(new)]
    table = pd.read_parquet(tmp_path / "cache" / FILE_NAME)
    assert table["size"].tolist() == [len(new)]


def test_a_file_modified_moments_ago_is_not_remembered(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(make_wav(1))  # its modification time is now
    run([clip], tmp_path / "cache")
    assert not (tmp_path / "cache" / FILE_NAME).exists()
    assert FileHashes(tmp_path / "cache").source(str(clip)) is None


def test_a_cache_directory_that_cannot_be_made_only_loses_the_shortcut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The run goes on uncached when the cache directory cannot be written; the file-hash
    # table beside it must not fail the run either (a file stands where the directory goes).
    clip = tmp_path / "clip.wav"
    write_old(clip, make_wav(4))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    assert run([clip], blocker / "cache") == [fake_transcript(make_wav(4))]
    assert "this run continues uncached" in caplog.text


def test_a_damaged_table_is_ignored_and_rewritten(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    write_old(clip, make_wav(3))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / FILE_NAME).write_bytes(b"not parquet")
    assert run([clip], tmp_path / "cache") == [fake_transcript(make_wav(3))]
    assert FileHashes(tmp_path / "cache").source(str(clip)) is not None


def test_only_plain_paths_are_looked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = FileHashes(tmp_path)
    monkeypatch.chdir(tmp_path)
    write_old(tmp_path / "http:x.wav", make_wav(1))
    for text in ("https://example.com/a.wav", "http:x.wav", "data:audio/wav;base64,AA", " ", ""):
        assert hashes.source(text) is None, text
    assert hashes.source(str(tmp_path / "missing.wav")) is None


def test_lookup_finds_an_unchanged_file_however_its_path_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = tmp_path / "d" / "clip.wav"
    clip.parent.mkdir()
    write_old(clip, make_wav(4))
    run([clip], tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    texts = [str(clip), "d/clip.wav", "d/../d/clip.wav", "~/d/clip.wav", str(clip.parent)]
    found = FileHashes(tmp_path / "cache").lookup([*texts, "d/missing.wav", "https://x/a.wav"])
    digest = hashlib.sha256(make_wav(4)).hexdigest()
    assert [f and f.sha256 for f in found] == [digest] * 4 + [None] * 3
    # What a request needs, without opening the file: as normalize_audio describes it.
    for text, remembered in zip(texts, found, strict=False):
        if remembered is not None:
            source, checked = remembered.source(text), normalize_audio(text)
            assert (source.path, source.format, source.size, source.label) == (
                checked.path,
                checked.format,
                checked.size,
                checked.label,
            )


@pytest.mark.parametrize("change", ["size", "mtime"])
def test_lookup_misses_a_file_changed_since_it_was_hashed(tmp_path: Path, change: str) -> None:
    clip = tmp_path / "clip.wav"
    write_old(clip, make_wav(5))
    run([clip], tmp_path / "cache")
    assert FileHashes(tmp_path / "cache").lookup([str(clip)])[0] is not None
    if change == "size":
        write_old(clip, make_wav(5, seconds=0.2))
    else:
        write_old(clip, make_wav(6), mtime_ns=LONG_AGO_NS + 1)
    assert FileHashes(tmp_path / "cache").lookup([str(clip)]) == [None]


def test_a_file_name_that_is_not_utf8_is_transcribed_and_never_remembered(
    tmp_path: Path,
) -> None:
    name = os.fsdecode(os.fsencode(tmp_path) + b"/clip-\xff.wav")
    write_old(Path(name), make_wav(7))
    assert run([Path(name)], tmp_path / "cache") == [fake_transcript(make_wav(7))]
    assert run([Path(name)], tmp_path / "cache") == [fake_transcript(make_wav(7))]
    assert FileHashes(tmp_path / "cache").lookup([name]) == [None]
