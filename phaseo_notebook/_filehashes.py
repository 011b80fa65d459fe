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
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ._audio import _SCHEME_RE, AudioSource, describe_input

__all__ = ["FILE_NAME", "RACY_SECONDS", "FileHashes"]

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
        self._entries: _Entries | None = None
        self._new: _Entries = {}

    @property
    def file(self) -> Path:
        """Where the table is kept."""
        return self.directory / FILE_NAME

    def _read(self) -> _Entries:
        try:
            table = pq.read_table(self.file, schema=_SCHEMA)
        except FileNotFoundError:
            return {}
        except Exception as err:  # damaged: start afresh, it is only a shortcut
            log.debug("ignoring unreadable file hashes %s: %s", self.file, err)
            return {}
        columns = [table.column(name).to_pylist() for name in _SCHEMA.names]
        return {p: (s, m, h, f) for p, s, m, h, f in zip(*columns, strict=True)}

    def _known(self) -> _Entries:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def source(self, text: str) -> tuple[AudioSource, str] | None:
        """The checked source of path ``text`` and its sha256, if its file is unchanged.

        None when the file was never hashed here, or changed (size or modification time),
        or is not a regular file now: the caller then checks and hashes it as new.
        """
        stripped = text.strip()
        # Only what normalize_audio takes for a path without a second look (no "scheme:").
        if not stripped or "\x00" in text or _SCHEME_RE.match(stripped):
            return None
        # Strings until the file is known: a Path per row costs more than the stat.
        name = os.path.expanduser(text) if text.startswith("~") else text
        try:
            st = os.stat(name)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        entry = self._known().get(os.path.abspath(name))
        if entry is None or entry[0] != st.st_size or entry[1] != st.st_mtime_ns:
            return None
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # "~user" of no such user; the stat found it otherwise
            return None
        source = AudioSource(
            kind="path", label=describe_input(text), path=path, format=entry[3], size=st.st_size
        )
        return source, entry[2]

    def remember(self, source: AudioSource, sha256: str, *, now_ns: int | None = None) -> bool:
        """Note the hash of a file source just hashed; False when it is not remembered.

        Call it with the stat taken before hashing unchanged after: the file is statted
        again here and forgotten if it moved on, or if it was modified too recently.
        """
        if source.path is None or source.format is None:
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
        self._new[os.path.abspath(source.path)] = (
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
        self._entries = merged
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
        return len(new)
