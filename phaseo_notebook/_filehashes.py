"""Remembered content hashes of local files, kept beside the cache.

A file's cache key starts from the sha256 of its bytes, so a rerun over thousands of files
would read and hash every one of them again before it could look a single one up. Here the
hash (and the sniffed audio format) of each file is remembered by ``(absolute path, size,
mtime_ns)``: while a file keeps its size and modification time it is neither opened nor
read again; any change to either and it is read, checked and hashed as new.

A file modified in the last :data:`RACY_SECONDS` is not remembered: a second write within
the same clock tick could leave both its size and its modification time as they were.

The table is one small Parquet file in the cache directory (:data:`FILE_NAME`, hidden, so
``pd.read_parquet(cache_dir)`` skips it), replaced atomically (written under a temporary
name, then renamed) and merged with what other processes wrote meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._audio import _SCHEME_RE, AudioSource, describe_input

__all__ = ["FILE_NAME", "RACY_SECONDS", "FileHashes", "Remembered"]

log = logging.getLogger("phaseo_notebook")

FILE_NAME = ".file-hashes.parquet"
RACY_SECONDS = 2.0
_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("sha256", pa.string()),
        ("format", pa.string()),
    ]
)

#: absolute path -> (size, mtime_ns, sha256, format)
_Entries = dict[str, tuple[int, int, str, str]]


class Remembered(NamedTuple):
    """What is remembered of an unchanged file: enough to look it up and to send it."""

    sha256: str
    format: str
    size: int

    def source(self, text: str) -> AudioSource:
        """The checked source of the path ``text`` this was found for (the file unread).

        Examples
        --------
        >>> Remembered("ab" * 32, "wav", 44).source("clips/a.wav").format
        'wav'
        """
        return AudioSource(
            kind="path",
            label=describe_input(text),
            path=Path(text).expanduser(),
            format=self.format,
            size=self.size,
        )


def _positions(names: list[str], paths: pa.ChunkedArray) -> np.ndarray:
    """Row of each name in ``paths`` (-1 where absent), by one hash join."""
    try:
        needles = pa.array(names, type=pa.string())
    except (UnicodeError, pa.ArrowException):
        # A name with a lone surrogate: never remembered (no Parquet string holds one).
        ok = [j for j, name in enumerate(names) if _encodable(name)]
        where = np.full(len(names), -1, dtype=np.int64)
        if ok:
            where[ok] = _positions([names[j] for j in ok], paths)
        return where
    found = pc.index_in(needles, value_set=paths)
    rows: np.ndarray = found.fill_null(-1).to_numpy().astype(np.int64)
    return rows


def _encodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeError:
        return False
    return True


class FileHashes:
    """The remembered hashes of one cache directory.

    Parameters
    ----------
    directory
        The cache directory; nothing is written until :meth:`save` has something new.

    Examples
    --------
    >>> import tempfile
    >>> from phaseo_notebook._audio import normalize_audio
    >>> d = Path(tempfile.mkdtemp())
    >>> clip = d / "a.wav"
    >>> _ = clip.write_bytes(b"RIFF\\x24\\x00\\x00\\x00WAVEfmt " + bytes(40))
    >>> hashes = FileHashes(d)
    >>> hashes.source(str(clip)) is None  # never seen
    True
    >>> src = normalize_audio(str(clip))
    >>> hashes.remember(src, src.identity(), now_ns=time.time_ns() + 10**10)
    True
    >>> hashes.save()
    1
    >>> found = FileHashes(d).source(str(clip))
    >>> found[1] == src.identity(), found[0].format
    (True, 'wav')
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._table: pa.Table | None = None
        self._new: _Entries = {}

    @property
    def file(self) -> Path:
        """Where the table is kept."""
        return self.directory / FILE_NAME

    def _read_table(self) -> pa.Table:
        try:
            # The file reader alone: pq.read_table would import pyarrow.dataset first.
            return pq.ParquetFile(self.file).read(columns=_SCHEMA.names).cast(_SCHEMA)
        except FileNotFoundError:
            return _SCHEMA.empty_table()
        except Exception as err:  # damaged: start afresh, it is only a shortcut
            log.debug("ignoring unreadable file hashes %s: %s", self.file, err)
            return _SCHEMA.empty_table()

    def _read(self) -> _Entries:
        table = self._read_table()
        columns = [table.column(name).to_pylist() for name in _SCHEMA.names]
        return {p: (s, m, h, f) for p, s, m, h, f in zip(*columns, strict=True)}

    def load(self) -> pa.Table:
        """Read the table now (once), as Arrow columns; :meth:`lookup` reads it if needed.

        A rerun over 100,000 files matches them in one join instead of building a dict of
        100,000 tuples first. Safe to call from another thread while a run plans.
        """
        with self._lock:
            if self._table is None:
                self._table = self._read_table()
            return self._table

    def lookup(self, texts: Sequence[str]) -> list[Remembered | None]:
        """For each path string, what was remembered of its file if it is unchanged, else None.

        Each file is statted once (neither opened nor read); its absolute path, size and
        modification time are then matched against the table in one join. None when the
        file was never hashed here, or changed (size or modification time), or is not a
        regular file now, or ``text`` is not a plain path: the caller then checks and
        hashes it as new.

        Examples
        --------
        >>> import tempfile
        >>> FileHashes(tempfile.mkdtemp()).lookup(["https://example.com/a.wav", "/no/such.wav"])
        [None, None]
        """
        out: list[Remembered | None] = [None] * len(texts)
        rows: list[int] = []
        names: list[str] = []
        sizes: list[int] = []
        mtimes: list[int] = []
        match_scheme = _SCHEME_RE.match
        for i, text in enumerate(texts):
            stripped = text.strip()
            # Only what normalize_audio takes for a path without a second look (no "scheme:").
            if not stripped or "\x00" in text or (":" in stripped and match_scheme(stripped)):
                continue
            # Strings until the file is known: a Path per row costs more than the stat.
            name = text
            if text.startswith("~"):
                try:
                    Path(text).expanduser()  # the source built later must not fail
                except RuntimeError:  # "~user" of no such user
                    continue
                name = os.path.expanduser(text)
            try:
                st = os.stat(name)
            except (OSError, ValueError):
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rows.append(i)
            names.append(name)
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
        table = self.load()
        if not rows or not table.num_rows:
            return out
        where = _positions(names, table.column("path"))
        unmatched = np.flatnonzero(where < 0)
        if len(unmatched):
            # A name equal to a remembered path is already absolute and normal; only the
            # others need os.path.abspath (which costs as much as the join).
            absolute = [os.path.abspath(names[j]) for j in unmatched.tolist()]
            where[unmatched] = _positions(absolute, table.column("path"))
        found = np.flatnonzero(where >= 0)
        at = where[found]
        unchanged = found[
            (table.column("size").to_numpy()[at] == np.asarray(sizes, dtype=np.int64)[found])
            & (table.column("mtime_ns").to_numpy()[at] == np.asarray(mtimes, dtype=np.int64)[found])
        ]
        at = pa.array(where[unchanged])
        hashes = table.column("sha256").take(at).to_pylist()
        formats = table.column("format").take(at).to_pylist()
        for j, sha256, fmt in zip(unchanged.tolist(), hashes, formats, strict=True):
            out[rows[j]] = Remembered(sha256, fmt, sizes[j])
        return out

    def source(self, text: str) -> tuple[AudioSource, str] | None:
        """The checked source of path ``text`` and its sha256, if its file is unchanged.

        None when the file was never hashed here, or changed (size or modification time),
        or is not a regular file now: the caller then checks and hashes it as new.
        """
        found = self.lookup([text])[0]
        return None if found is None else (found.source(text), found.sha256)

    def remember(self, source: AudioSource, sha256: str, *, now_ns: int | None = None) -> bool:
        """Note the hash of a file source just hashed; False when it is not remembered.

        Call it with the stat taken before hashing unchanged after: the file is statted
        again here and forgotten if it moved on, or if it was modified too recently. A
        path that is not valid UTF-8 (a name with undecodable bytes) is never remembered:
        no Parquet string can hold it.
        """
        if source.path is None or source.format is None:
            return False
        path = os.path.abspath(source.path)
        if not _encodable(path):
            return False
        try:
            st = os.stat(source.path)
        except OSError:
            return False
        now = time.time_ns() if now_ns is None else now_ns
        if not stat.S_ISREG(st.st_mode) or now - st.st_mtime_ns < RACY_SECONDS * 1e9:
            return False
        if source.size is not None and st.st_size != source.size:
            return False
        self._new[path] = (
            st.st_size,
            st.st_mtime_ns,
            sha256,
            source.format,
        )
        return True

    def save(self) -> int:
        """Write what was remembered since the last save; returns how many entries.

        Errors are logged and swallowed: a cache directory that cannot take this file
        only loses the shortcut.
        """
        if not self._new:
            return 0
        new, self._new = self._new, {}
        merged = self._read()  # what other processes saved meanwhile
        merged.update(new)
        paths = list(merged)
        values = list(merged.values())
        table = pa.table(
            {
                "path": paths,
                "size": [v[0] for v in values],
                "mtime_ns": [v[1] for v in values],
                "sha256": [v[2] for v in values],
                "format": [v[3] for v in values],
            },
            schema=_SCHEMA,
        )
        tmp = self.directory / f".{FILE_NAME}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp)
            os.replace(tmp, self.file)
        except OSError as err:
            log.debug("cannot save file hashes in %s: %s", self.directory, err)
            # Not missing_ok alone: under a path that is not a directory, unlink fails too.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return 0
        self._table = table
        return len(new)
