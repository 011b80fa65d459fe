"""A directory of Parquet part files: the storage under the result cache and the review log.

Each write adds one whole part file. On a local (or mounted) directory the part is written
under a hidden temporary name, fsynced and renamed into place, so a reader (or a second
process sharing the directory) sees either the whole part or nothing, and a killed process
loses only the part being written. On an fsspec store (``s3://``, ``gs://``, ...), which has
no rename, each part is one upload (``pipe_file``), which publishes the whole object or
nothing. ``pd.read_parquet(directory)`` reads every part as one table: Parquet dataset
readers skip hidden names.

What a part holds, how parts are named beyond :data:`PART_PREFIX` / :data:`PART_SUFFIX`,
and how rows of several parts are merged belong to the owner (:mod:`._cache`,
:mod:`.widgets._store`).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from ._extras import require

__all__ = [
    "PART_PREFIX",
    "PART_SUFFIX",
    "FsspecParts",
    "LocalParts",
    "PartStore",
    "is_part_name",
    "is_temporary_name",
    "open_parts",
]

PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"


def is_part_name(name: str) -> bool:
    """Whether a file name is a finished part.

    Examples
    --------
    >>> is_part_name("part-1.parquet"), is_part_name(".part-1.parquet.ab12.tmp")
    (True, False)
    """
    return name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)


def is_temporary_name(name: str) -> bool:
    """Whether a file name is a part being written (or left behind by a killed writer).

    Examples
    --------
    >>> is_temporary_name(".part-1.parquet.ab12.tmp")
    True
    """
    return name.startswith(f".{PART_PREFIX}") and name.endswith(".tmp")


class LocalParts:
    """Part files in a local (or mounted) directory: temp file, fsync, atomic rename.

    Parameters
    ----------
    path
        The directory; created on the first write.
    compression
        Parquet compression codec of the parts written.

    Examples
    --------
    >>> import tempfile, pyarrow as pa
    >>> parts = LocalParts(Path(tempfile.mkdtemp()))
    >>> parts.write(pa.table({"a": [1]}), "part-0.parquet")
    >>> parts.parts(), parts.read_table("part-0.parquet").num_rows
    (['part-0.parquet'], 1)
    >>> parts.read_columns("part-0.parquet", ["a"]).column("a").to_pylist()
    [1]
    """

    def __init__(self, path: Path, *, compression: str = "snappy") -> None:
        self.path = path
        self.compression = compression

    @property
    def location(self) -> str:
        return str(self.path)

    def names(self) -> list[str]:
        """Every file name in the directory (none when it does not exist yet)."""
        try:
            return [e.name for e in os.scandir(self.path)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def parts(self) -> list[str]:
        """Names of the finished parts, sorted."""
        return sorted(n for n in self.names() if is_part_name(n))

    def read_table(self, name: str, **kwargs: Any) -> pa.Table:
        return pq.read_table(self.path / name, **kwargs)

    def read_columns(self, name: str, columns: list[str]) -> pa.Table:
        """Some columns of one part, by the file reader alone.

        ``pq.read_table`` goes through ``pyarrow.dataset``, whose first use in a process
        (importing it) costs more than reading a cache of 100,000 rows.
        """
        return pq.ParquetFile(self.path / name).read(columns=columns)

    def column_names(self, name: str) -> list[str]:
        names: list[str] = pq.read_schema(self.path / name).names
        return names

    def metadata(self, name: str) -> pq.FileMetaData:
        """The part's Parquet footer (row counts, schema, sizes) without reading its data."""
        return pq.read_metadata(self.path / name)

    def write(self, table: pa.Table, name: str) -> None:
        """Publish ``table`` as part ``name``: whole or not at all."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.{uuid.uuid4().hex[:6]}.tmp"
        try:
            pq.write_table(table, tmp, compression=self.compression)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / name)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def size(self, name: str) -> int:
        return (self.path / name).stat().st_size


class FsspecParts:
    """Part files at an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...).

    Object stores have no rename: each part is written in one upload (``pipe_file``), which
    publishes the whole object or nothing, so readers never see half a part.
    """

    def __init__(self, url: str, *, compression: str = "snappy") -> None:
        fsspec = require("fsspec", "dask", purpose=f"part files at {url!r}")
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.url = url
        self.compression = compression

    @property
    def location(self) -> str:
        return self.url

    def _full(self, name: str) -> str:
        return f"{self.root}/{name}"

    def is_file(self) -> bool:
        """Whether the URL names a file rather than a directory."""
        return bool(self.fs.isfile(self.root))

    def names(self) -> list[str]:
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return [posixpath.basename(str(e).rstrip("/")) for e in entries]

    def parts(self) -> list[str]:
        return sorted(n for n in self.names() if is_part_name(n))

    def read_table(self, name: str, **kwargs: Any) -> pa.Table:
        return pq.read_table(self._full(name), filesystem=self.fs, **kwargs)

    def read_columns(self, name: str, columns: list[str]) -> pa.Table:
        """Some columns of one part."""
        return self.read_table(name, columns=columns)

    def column_names(self, name: str) -> list[str]:
        with self.fs.open(self._full(name), "rb") as fh:
            names: list[str] = pq.read_schema(fh).names
        return names

    def metadata(self, name: str) -> pq.FileMetaData:
        """The part's Parquet footer (row counts, schema, sizes) without reading its data."""
        with self.fs.open(self._full(name), "rb") as fh:
            return pq.read_metadata(fh)

    def write(self, table: pa.Table, name: str) -> None:
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression=self.compression)
        self.fs.makedirs(self.root, exist_ok=True)
        self.fs.pipe_file(self._full(name), buffer.getvalue().to_pybytes())

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._full(name))

    def size(self, name: str) -> int:
        return int(self.fs.size(self._full(name)))


PartStore = LocalParts | FsspecParts


def open_parts(location: str | os.PathLike[str], *, compression: str = "snappy") -> PartStore:
    """The part store at a directory path, a ``file://`` URL or another fsspec URL.

    Examples
    --------
    >>> open_parts("/tmp/x").location, type(open_parts("file:///tmp/x")).__name__
    ('/tmp/x', 'LocalParts')
    """
    text = os.fspath(location)
    text = text if isinstance(text, str) else os.fsdecode(text)
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            return LocalParts(Path(parts.path), compression=compression)
        return FsspecParts(text, compression=compression)
    return LocalParts(Path(text).expanduser(), compression=compression)
