"""The Parquet result cache: never pay twice for the same input.

Layout: a directory of Parquet part files with one schema (:data:`CACHE_SCHEMA`). Each flush
writes a new part under a hidden temporary name and renames it into place, so a reader (or a
second process sharing the directory) sees either the whole part or nothing, and a killed
process loses only what it had not flushed. ``pd.read_parquet(cache_dir)`` reads the cache as
one table; hidden names are skipped by Parquet dataset readers.

Keys are content-addressed: sha256 over a format version, the origin that answers (the
gateway's scheme, host, port and path, or ``embedded:``), the audio identity (sha256 of the
bytes, or the URL), the model, the language and the canonical provider options. Only
successes are stored; the API key is never part of a row.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ._constants import ENV_CACHE_DIR
from ._exceptions import CacheError
from ._parts import (
    PART_PREFIX,
    PART_SUFFIX,
    LocalParts,
    PartStore,
    is_part_name,
    is_temporary_name,
    open_parts,
)
from ._types import BODY_NUMBERS, BODY_STRINGS, ResultColumns, TranscriptionResult

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CACHE_SCHEMA",
    "Cache",
    "CacheKeys",
    "CacheRecord",
    "cache_key",
]

log = logging.getLogger("phaseo_notebook")

#: Bump when the meaning of a key or a row changes: old rows then simply stop matching.
#: 2: the key holds the gateway's origin (rows written before it are never served again).
CACHE_FORMAT_VERSION = 2

#: A part must hold at least this many bytes on disk per row. Every real row carries a
#: sha256 key (32 bytes of entropy, so never compressed below that), which puts real parts
#: at 150+ bytes a row; a part claiming more rows than this allows was not written here
#: and is refused from its footer, before its rows are read.
MIN_PART_BYTES_PER_ROW = 16
#: A part whose data expands beyond this many times its size on disk (and beyond
#: :data:`MAX_EXPANDED_FLOOR` bytes) is refused the same way.
MAX_EXPANSION = 200
MAX_EXPANDED_FLOOR = 64 * 1024 * 1024
_READ_COLUMNS = ("key", "text", "raw")

CACHE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("identity", pa.string()),
        ("model", pa.string()),
        ("language", pa.string()),
        ("provider", pa.string()),
        ("text", pa.string()),
        ("raw", pa.string()),
        ("created", pa.timestamp("us", tz="UTC")),
    ]
)


def cache_key(
    identity: str,
    model: str,
    language: str | None,
    provider: str | None,
    options: str | None = None,
    *,
    origin: str = "",
) -> str:
    """The cache key of one request.

    Parameters
    ----------
    identity
        ``sha256`` hex of the audio bytes, or ``"url:" + url``.
    model, language
        As sent.
    provider
        Canonical JSON of the provider options (``ProviderOptions.to_json()``), or None.
    options
        Canonical JSON of the optional request fields that are set (timestamps, prompt,
        temperature), or None; keys of requests without them are as they always were.
    origin
        Who answers: the gateway's ``scheme://host:port/path`` or ``"embedded:"`` for the
        in-process engine (see ``_base_client.call_origin``), so text from one gateway is
        never served as another's answer under the same model name.

    Examples
    --------
    >>> a = cache_key("url:https://x/a.wav", "m", None, None)
    >>> a == cache_key("url:https://x/a.wav", "m", "en", None)
    False
    >>> len(a)
    64
    >>> a == cache_key("url:https://x/a.wav", "m", None, None, origin="https://gw:443/v1")
    False
    """
    return CacheKeys(model, provider, options, origin=origin).of(identity, language)


class CacheKeys:
    """:func:`cache_key` for many identities of one call: the shared fields joined once.

    The key is the sha256 of the fields joined by ``\\x1f``: the format version, the
    origin, the identity, the model, the language, the provider options and, when set,
    the request options.

    Examples
    --------
    >>> keys = CacheKeys("m", None, origin="https://gw:443/v1")
    >>> keys.of("url:https://x/a.wav", "en") == cache_key(
    ...     "url:https://x/a.wav", "m", "en", None, origin="https://gw:443/v1")
    True
    >>> keys.many(["url:https://x/a.wav"]) == [keys.of("url:https://x/a.wav")]
    True
    """

    def __init__(
        self, model: str, provider: str | None, options: str | None = None, *, origin: str = ""
    ) -> None:
        self._head = f"v{CACHE_FORMAT_VERSION}\x1f{origin}\x1f"
        self._model = model
        self._provider = provider or ""
        self._options = options
        self._tails: dict[str | None, str] = {}

    def _tail(self, language: str | None) -> str:
        tail = self._tails.get(language)
        if tail is None:
            tail = f"\x1f{self._model}\x1f{language or ''}\x1f{self._provider}"
            if self._options is not None:
                tail += f"\x1f{self._options}"
            self._tails[language] = tail
        return tail

    def of(self, identity: str, language: str | None = None) -> str:
        """The key of one identity in ``language``."""
        material = self._head + identity + self._tail(language)
        return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()

    def many(self, identities: Iterable[str], language: str | None = None) -> list[str]:
        """The keys of many identities in one ``language``, in order."""
        head, tail, sha256 = self._head, self._tail(language), hashlib.sha256
        return [
            sha256((head + identity + tail).encode("utf-8", "surrogatepass")).hexdigest()
            for identity in identities
        ]


def default_cache_dir() -> Path:
    """``PHASEO_CACHE_DIR`` or ``~/.cache/phaseo-notebook``."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "phaseo-notebook"


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """One successful transcription to store."""

    key: str
    identity: str
    model: str
    language: str | None
    provider: str | None
    text: str
    raw: dict[str, Any]


def _open_store(path: str | os.PathLike[str] | None) -> PartStore:
    store = open_parts(default_cache_dir() if path is None else path, compression="zstd")
    if isinstance(store, LocalParts):
        if store.path.exists() and not store.path.is_dir():
            raise CacheError(f"cache path {str(store.path)!r} exists and is not a directory")
    elif store.is_file():
        raise CacheError(f"cache path {store.url!r} exists and is not a directory")
    return store


#: Up to this many keys a lookup goes through a dict of every key (built on first use);
#: more are found by one Arrow join, with no Python object per cached row.
_FEW_KEYS = 64


class _Columns:
    """The rows a :class:`Cache` has read: keys, texts and bodies, as Arrow arrays.

    A lookup takes only the rows it found, and bodies are decoded only for those. Rows
    are only ever appended, keys last, so a key found always has its row. Later rows of
    a key win: a re-transcription after a model change at the gateway is the truth.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: list[pa.Array] = []
        self._text: list[pa.Array] = []
        self._raw: list[pa.Array] = []
        #: key -> position, for lookups of a few keys; None until one is made.
        self._index: dict[str, int] | None = None
        #: Every key, the last row first (and how many), for joins that keep the last row.
        self._newest_first: tuple[int, pa.Array] | None = None

    @property
    def rows(self) -> int:
        return sum(len(chunk) for chunk in self._key)

    def append(self, table: pa.Table) -> None:
        keys = table.column("key").cast(pa.string())
        with self._lock:
            base = self.rows
            self._text.extend(table.column("text").cast(pa.string()).chunks)
            self._raw.extend(table.column("raw").cast(pa.string()).chunks)
            if self._index is not None:
                self._index.update(
                    zip(keys.to_pylist(), range(base, base + len(keys)), strict=True)
                )
            self._key.extend(keys.chunks)

    def positions(self, keys: Sequence[str]) -> np.ndarray:
        """Row of each key (-1 where absent), the last row of a key held twice."""
        if len(keys) > _FEW_KEYS:
            try:
                needles = pa.array(keys, type=pa.string())
            except (TypeError, UnicodeError, pa.ArrowException):
                needles = None  # not all strings Arrow holds: none of them is a stored key
            if needles is not None:
                count, newest_first = self._newest()
                found = pc.index_in(needles, value_set=newest_first).fill_null(-1).to_numpy()
                return np.where(found >= 0, count - 1 - found, -1).astype(np.int64)
        index = self._dict()
        return np.fromiter(map(index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))

    def _newest(self) -> tuple[int, pa.Array]:
        chunks = list(self._key)
        count = sum(len(chunk) for chunk in chunks)
        memo = self._newest_first
        if memo is None or memo[0] != count:
            keys = pa.chunked_array(chunks, type=pa.string())
            memo = self._newest_first = (count, keys.take(np.arange(count - 1, -1, -1)))
        return memo

    def _dict(self) -> dict[str, int]:
        with self._lock:
            if self._index is None:
                keys = pa.chunked_array(self._key, type=pa.string()).to_pylist()
                self._index = dict(zip(keys, range(len(keys)), strict=True))
            return self._index

    def text(self) -> pa.ChunkedArray:
        return pa.chunked_array(list(self._text), type=pa.string())

    def raw(self) -> pa.ChunkedArray:
        return pa.chunked_array(list(self._raw), type=pa.string())


#: What Arrow's JSON reader is asked for: a type per field, so any other type is refused.
_BODY_SCHEMA = pa.schema(
    [(key, pa.string()) for key in BODY_STRINGS] + [(key, pa.float64()) for key in BODY_NUMBERS]
)
# A body that may hold a timed list (or an escape that could spell its key) is also
# parsed by json, for its segments and words.
_MAYBE_TIMED = r'"segments"|"words"|\\u'


def _columns_of_bodies(raws: pa.StringArray, texts: list[str]) -> ResultColumns | None:
    """The answers of stored bodies, decoded by Arrow's JSON reader; None to use json.

    Every body is one JSON object on one line (the cache writes ``json.dumps`` output).
    Arrow refuses what json would read differently (a field of another type, duplicate
    keys, a number beyond a double, invalid surrogates): any refusal returns None and the
    caller parses them all with json, as before. So does a body that is not one object on
    one line: a line break inside an object leaves pieces Arrow refuses, and one between
    objects (or two objects on a line) gives more records than bodies.
    """
    if not len(raws):
        return ResultColumns.from_bodies([], [])
    # Each body and a line break, back to back in one buffer: NDJSON, with no Python string.
    lines = pc.binary_join_element_wise(raws, "", "\n")
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[[lines.offset, lines.offset + len(lines)]]
    try:
        fields = pa_json.read_json(
            pa.BufferReader(data.slice(int(bounds[0]), int(bounds[1] - bounds[0]))),
            parse_options=pa_json.ParseOptions(
                explicit_schema=_BODY_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    if fields.num_rows != len(raws):
        return None
    timed = np.flatnonzero(pc.match_substring_regex(raws, _MAYBE_TIMED).to_numpy(False))
    bodies: dict[int, dict[str, Any]] = {}
    for i in timed.tolist():
        try:
            bodies[i] = json.loads(raws[i].as_py())
        except (ValueError, RecursionError):
            return None
    return ResultColumns.from_fields(
        {key: fields.column(key).to_pylist() for key in BODY_STRINGS},
        {key: _finite(fields.column(key)) for key in BODY_NUMBERS},
        texts,
        bodies,
    )


def _finite(column: pa.ChunkedArray) -> list[float | None]:
    """A column of doubles as ``_opt_float`` reads them: None where null, NaN or infinite."""
    values = column.to_numpy()  # nulls become NaN
    out = values.astype(object)
    out[~np.isfinite(values)] = None
    floats: list[float | None] = out.tolist()
    return floats


class Cache:
    """A directory of Parquet part files holding finished transcriptions.

    Parameters
    ----------
    path
        The directory; defaults to ``PHASEO_CACHE_DIR`` or ``~/.cache/phaseo-notebook``.
        Created on first write. An fsspec URL (``s3://bucket/stt-cache``, ...) puts the
        cache in that store (needs ``fsspec`` and the store's own package), so workers on
        several machines can share it.

    Examples
    --------
    >>> import tempfile, phaseo_notebook as pn
    >>> cache = pn.Cache(tempfile.mkdtemp())
    >>> cache.info()["rows"]
    0
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._store = _open_store(path)
        #: A ``Path`` for a local directory, the URL for an fsspec store.
        self.path: Path | str = (
            self._store.path if isinstance(self._store, LocalParts) else self._store.url
        )
        self._lock = threading.Lock()
        self._pending: list[CacheRecord] = []
        # What this object has read so far; only new part files are read on the next lookup.
        self._seen: set[str] = set()
        self._columns = _Columns()
        self.damaged: dict[str, str] = {}
        #: Rows skipped as unusable (a null key, text or body, a body that is not a JSON
        #: object), by part file; the rest of the part is used.
        self.damaged_rows: dict[str, int] = {}
        # Where each part's rows start in the loaded columns, to name a row's part.
        self._part_starts: list[int] = []
        self._part_names: list[str] = []
        #: Why this cache stopped writing (directory and OS error), or None while it writes.
        self.write_error: str | None = None

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r})"

    # ---------------------------------------------------------------- reading

    def _part_files(self) -> list[str]:
        try:
            names = self._store.names()
        except OSError as err:
            raise CacheError(f"cannot list cache directory {str(self.path)!r}: {err}") from err
        return sorted(n for n in names if is_part_name(n))

    def _check_footer(self, part: str) -> None:
        """Refuse a part from its footer alone: absurd row counts or sizes, wrong types.

        Raises
        ------
        ValueError
            Naming what is wrong; the caller records the part as damaged.
        """
        meta = self._store.metadata(part)
        size = self._store.size(part)
        rows = meta.num_rows
        if rows * MIN_PART_BYTES_PER_ROW > size:
            raise ValueError(
                f"holds {rows} rows in {size} bytes (under {MIN_PART_BYTES_PER_ROW} bytes a"
                " row): not a part this cache wrote"
            )
        expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if expanded > max(MAX_EXPANDED_FLOOR, MAX_EXPANSION * size):
            raise ValueError(
                f"expands from {size} to {expanded} bytes: not a part this cache wrote"
            )
        schema = meta.schema.to_arrow_schema()
        for name in _READ_COLUMNS:
            if name not in schema.names:
                raise ValueError(f"not a cache part: no {name} column")
            kind = schema.field(name).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise ValueError(f"column {name} holds {kind}, not strings")

    def _read_part(self, part: str) -> pa.Table | None:
        try:
            self._check_footer(part)
            table = self._store.read_columns(part, list(_READ_COLUMNS))
        except FileNotFoundError:
            return None  # removed by a compaction in another process; its rows moved on
        except Exception as err:  # a damaged file must not take the whole cache down
            if part not in self.damaged:
                log.warning("skipping damaged cache part %s: %s", part, err)
            self.damaged[part] = f"{type(err).__name__}: {err}"
            return None
        return self._usable_rows(part, table)

    def _usable_rows(self, part: str, table: pa.Table) -> pa.Table:
        """The rows of a part that can be served: a key, a text and a JSON object body."""
        raw = table.column("raw")
        ok = pc.and_(
            pc.and_(pc.is_valid(table.column("key")), pc.is_valid(table.column("text"))),
            pc.and_(
                pc.fill_null(pc.starts_with(raw, "{"), False),
                pc.fill_null(pc.ends_with(raw, "}"), False),
            ),
        )
        bad = len(table) - pc.sum(ok).as_py() if len(table) else 0
        if not bad:
            return table
        self._damaged_row(part, bad)
        return table.filter(ok)

    def _damaged_row(self, part: str, count: int = 1) -> None:
        if part not in self.damaged_rows:
            log.warning("skipping unusable rows of cache part %s", part)
        self.damaged_rows[part] = self.damaged_rows.get(part, 0) + count

    def _part_of(self, position: int) -> str:
        return self._part_names[bisect.bisect_right(self._part_starts, position) - 1]

    def refresh(self) -> None:
        """Read part files that appeared since the last call (other runs, other processes)."""
        with self._lock:
            for part in self._part_files():
                if part in self._seen:
                    continue
                table = self._read_part(part)
                if table is None:
                    continue
                self._seen.add(part)
                self._part_starts.append(self._columns.rows)
                self._part_names.append(part)
                self._columns.append(table)

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Positions of ``keys`` in the loaded rows, ``-1`` where absent (one vectorised pass).

        Examples
        --------
        >>> import tempfile
        >>> Cache(tempfile.mkdtemp()).lookup(["abc"]).tolist()
        [-1]
        """
        self.refresh()
        return self._columns.positions(keys)

    def text_at(self, position: int) -> str:
        """The cached text at a position returned by :meth:`lookup`."""
        text: str = self._columns.text()[position].as_py()
        return text

    def raw_at(self, position: int) -> dict[str, Any]:
        """The cached response body at a position returned by :meth:`lookup`."""
        value = json.loads(self._columns.raw()[position].as_py())
        return value if isinstance(value, dict) else {}

    def raws_at(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """:meth:`raw_at` for many positions, parsed in one pass (a fresh dict each).

        Examples
        --------
        >>> import tempfile
        >>> Cache(tempfile.mkdtemp()).raws_at([])
        []
        """
        raws = self._columns.raw().take(pa.array(positions, type=pa.int64())).to_pylist()
        try:
            # One parse of a JSON array instead of one call per row: 3-4 times cheaper.
            values = json.loads("[" + ",".join(raws) + "]")
        except ValueError:
            values = None
        if not isinstance(values, list) or len(values) != len(positions):
            return [self.raw_at(p) for p in positions]
        return [v if isinstance(v, dict) else {} for v in values]

    def answers(self, keys: Sequence[str]) -> tuple[np.ndarray, ResultColumns]:
        """The cached answers of ``keys``, column by column: what a rerun fills its rows from.

        Returns
        -------
        (numpy.ndarray, ResultColumns)
            The indices into ``keys`` of the keys served, ascending, and their answers in
            that order (the stored text, and what the stored body says). A key whose stored
            body is not a JSON object is left out (its request is sent again) and its row
            counted in :attr:`damaged_rows`.

        Examples
        --------
        >>> import tempfile
        >>> from phaseo_notebook._cache import CacheRecord
        >>> cache = Cache(tempfile.mkdtemp())
        >>> cache.add([CacheRecord("k", "url:https://x/a.wav", "m", None, None, "hi",
        ...                        {"text": "hi", "provider": "p"})])
        >>> _ = cache.flush()
        >>> found, answers = cache.answers(["absent", "k"])
        >>> found.tolist(), answers.text, answers.provider
        ([1], ['hi'], ['p'])
        """
        positions = self.lookup(keys)
        found = np.flatnonzero(positions >= 0)
        at = pa.array(positions[found], type=pa.int64())
        texts = self._columns.text().take(at).to_pylist()
        raws = self._columns.raw().take(at).combine_chunks()
        columns = _columns_of_bodies(raws, texts)
        if columns is not None:
            return found, columns
        # A body Arrow does not take as the gateway's JSON: parsed here, as it always was.
        bodies = self._bodies(raws.to_pylist(), positions[found].tolist())
        kept = [i for i, body in enumerate(bodies) if body is not None]
        parsed = [body for body in bodies if body is not None]
        return found[kept], ResultColumns.from_bodies(parsed, [texts[i] for i in kept])

    def _bodies(self, raws: list[str], positions: list[int]) -> list[dict[str, Any] | None]:
        """The stored bodies ``raws`` (at ``positions``), parsed; None where one is not a
        JSON object (counted among the damaged rows of its part)."""
        try:
            # One parse of a JSON array instead of one call per row: 3-4 times cheaper.
            values = json.loads("[" + ",".join(raws) + "]")
        except (ValueError, RecursionError):
            values = None
        if (
            isinstance(values, list)
            and len(values) == len(raws)
            and all(type(v) is dict for v in values)
        ):
            return values
        # A body that is not JSON (or not an object) is in there: one by one, skipping it.
        return [self._parsed_raw(raw, p) for raw, p in zip(raws, positions, strict=True)]

    def get_many(self, keys: Iterable[str]) -> dict[str, TranscriptionResult]:
        """The cached answer of every key the cache holds; keys it does not hold are left out.

        Each answer is built the way the gateway's body was first parsed, from the stored
        body with the stored text; all bodies are parsed in one pass.

        Examples
        --------
        >>> import tempfile
        >>> from phaseo_notebook._cache import CacheRecord
        >>> cache = Cache(tempfile.mkdtemp())
        >>> cache.add([CacheRecord("k", "url:https://x/a.wav", "m", None, None, "hi",
        ...                        {"text": "hi", "provider": "p"})])
        >>> _ = cache.flush()
        >>> answers = cache.get_many(["k", "absent"])
        >>> list(answers), answers["k"].text, answers["k"].provider
        (['k'], 'hi', 'p')
        """
        wanted = list(dict.fromkeys(keys))
        positions = self.lookup(wanted)
        found = np.flatnonzero(positions >= 0)
        at = pa.array(positions[found], type=pa.int64())
        texts = self._columns.text().take(at).to_pylist()
        raws = self._columns.raw().take(at).to_pylist()
        bodies = self._bodies(raws, positions[found].tolist())
        answers: dict[str, TranscriptionResult] = {}
        for i, text, body in zip(found.tolist(), texts, bodies, strict=True):
            if body is None:
                continue  # a miss: the request is sent again
            body["text"] = text
            answers[wanted[i]] = TranscriptionResult.from_body(body)
        return answers

    def _parsed_raw(self, raw: str, position: int) -> dict[str, Any] | None:
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            with self._lock:
                self._damaged_row(self._part_of(position))
            return None
        return value

    def get(self, key: str) -> str | None:
        """The cached text for one key, or None.

        Examples
        --------
        >>> import tempfile
        >>> Cache(tempfile.mkdtemp()).get("abc") is None
        True
        """
        pos = int(self.lookup([key])[0])
        return None if pos < 0 else self.text_at(pos)

    # ---------------------------------------------------------------- writing

    def add(self, records: Iterable[CacheRecord]) -> None:
        """Queue successes; they reach disk at the next :meth:`flush`.

        Dropped once writing has failed (:attr:`write_error`): the run goes on uncached.
        """
        if self.write_error is not None:
            return
        with self._lock:
            self._pending.extend(records)

    def check_writable(self) -> bool:
        """Probe, before a run sends anything, that parts can be written here.

        A local directory is created if needed and a hidden probe file is written and
        removed. On failure writing is turned off with one warning (see :meth:`try_flush`)
        and False is returned; a later successful probe turns it back on. Stores at an
        fsspec URL are not probed (a probe would cost an upload): their failures show at
        the first flush.

        Examples
        --------
        >>> import tempfile
        >>> Cache(tempfile.mkdtemp()).check_writable()
        True
        """
        if not isinstance(self._store, LocalParts):
            return self.write_error is None
        probe = self._store.path / f".{PART_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        try:
            self._store.path.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as fh:
                fh.write(b"\0")
            probe.unlink()
        except OSError as err:
            self._stop_writing(err)
            return False
        self.write_error = None
        return True

    def try_flush(self) -> int:
        """:meth:`flush`, but a write failure never raises: paid results stay with the run.

        The first failure logs one warning naming the directory and the OS error, drops
        what was queued, and turns writing off for this object (:attr:`write_error`); the
        run goes on uncached and returns its results.

        Examples
        --------
        >>> import tempfile
        >>> Cache(tempfile.mkdtemp()).try_flush()
        0
        """
        if self.write_error is not None:
            with self._lock:
                self._pending = []
            return 0
        try:
            return self.flush()
        except CacheError as err:
            cause = err.__cause__
            self._stop_writing(cause if isinstance(cause, OSError) else err)
            return 0

    def _stop_writing(self, err: BaseException) -> None:
        with self._lock:
            self._pending = []
            first = self.write_error is None
            self.write_error = f"{type(err).__name__}: {err}"
        if first:
            log.warning(
                "cannot write to cache directory %r (%s): this run continues uncached and"
                " returns its results, but they are not saved for the next run",
                str(self.path),
                self.write_error,
            )

    @property
    def pending(self) -> int:
        """Rows queued but not yet flushed."""
        return len(self._pending)

    def flush(self) -> int:
        """Write queued rows as one new part file (atomic rename); returns rows written."""
        with self._lock:
            records, self._pending = self._pending, []
        if not records:
            return 0
        now = time.time_ns() // 1000
        table = pa.table(
            {
                "key": [r.key for r in records],
                "identity": [r.identity for r in records],
                "model": [r.model for r in records],
                "language": [r.language for r in records],
                "provider": [r.provider for r in records],
                "text": [r.text for r in records],
                "raw": [json.dumps(r.raw, ensure_ascii=False, default=str) for r in records],
                "created": pa.array([now] * len(records), type=pa.int64()).cast(
                    pa.timestamp("us", tz="UTC")
                ),
            },
            schema=CACHE_SCHEMA,
        )
        name = f"{PART_PREFIX}{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
        try:
            self._store.write(table, name)
        except OSError as err:
            with self._lock:  # keep them for the next try rather than lose paid work
                self._pending[:0] = records
            raise CacheError(f"cannot write to cache directory {str(self.path)!r}: {err}") from err
        with self._lock:
            self._seen.add(name)
            self._part_starts.append(self._columns.rows)
            self._part_names.append(name)
            self._columns.append(table)
        return len(records)

    def _read_whole_part(self, part: str) -> pa.Table:
        """Every column of a part file, in the cache schema.

        Raises
        ------
        ValueError
            For a Parquet file that is not a cache part (no ``key`` or ``text`` column): read
            with the cache schema it would otherwise turn into rows of nulls.
        """
        self._check_footer(part)
        return self._store.read_table(part, schema=CACHE_SCHEMA)

    # ------------------------------------------------------------- management

    def to_pandas(self) -> Any:
        """The whole cache as a DataFrame (damaged parts skipped).

        Examples
        --------
        >>> import tempfile
        >>> len(Cache(tempfile.mkdtemp()).to_pandas())
        0
        """
        tables = []
        for part in self._part_files():
            try:
                tables.append(self._read_whole_part(part))
            except FileNotFoundError:
                continue
            except Exception as err:
                self.damaged[part] = f"{type(err).__name__}: {err}"
                log.warning("skipping damaged cache part %s: %s", part, err)
        table = pa.concat_tables(tables) if tables else CACHE_SCHEMA.empty_table()
        return table.to_pandas()

    def info(self) -> dict[str, Any]:
        """Where the cache is and what it holds.

        Returns
        -------
        dict
            ``path``, ``parts`` (files), ``rows`` (usable), ``keys`` (distinct), ``bytes``
            on disk, ``damaged`` (file name -> reason), ``damaged_rows`` (file name ->
            rows skipped as unusable) and ``pending`` (not yet flushed).

        Examples
        --------
        >>> import tempfile
        >>> sorted(Cache(tempfile.mkdtemp()).info())
        ['bytes', 'damaged', 'damaged_rows', 'keys', 'parts', 'path', 'pending', 'rows']
        """
        parts = self._part_files()
        rows = 0
        keys: set[str] = set()
        self.damaged_rows.clear()  # counted afresh: every part is read again here
        for part in parts:
            table = self._read_part(part)
            if table is None:
                continue
            for raw in table.column("raw").to_pylist():  # the bodies a lookup would parse
                try:
                    usable = isinstance(json.loads(raw), dict)
                except (ValueError, RecursionError):
                    usable = False
                if not usable:
                    self._damaged_row(part)
                    rows -= 1
            rows += table.num_rows
            keys.update(table.column("key").to_pylist())
        size = 0
        for part in parts:
            with contextlib.suppress(FileNotFoundError):  # compacted away meanwhile
                size += self._store.size(part)
        return {
            "path": str(self.path),
            "parts": len(parts),
            "rows": rows,
            "keys": len(keys),
            "bytes": size,
            "damaged": dict(self.damaged),
            "damaged_rows": dict(self.damaged_rows),
            "pending": self.pending,
        }

    def clear(self) -> int:
        """Delete every part file (and stale temporary files); returns files removed.

        Examples
        --------
        >>> import tempfile
        >>> Cache(tempfile.mkdtemp()).clear()
        0
        """
        removed = 0
        for name in self._store.names():
            if is_part_name(name) or is_temporary_name(name):
                self._store.remove(name)
                removed += 1
        with self._lock:
            self._seen.clear()
            self._columns = _Columns()
            self.damaged.clear()
            self.damaged_rows.clear()
            self._part_starts, self._part_names = [], []
        return removed

    def compact(self) -> dict[str, int]:
        """Merge all readable part files into one, keeping the newest row per key.

        Safe while other processes append: only the parts read here are removed, after the
        merged part is in place. Damaged parts are left where they are, for inspection.

        Returns
        -------
        dict
            ``parts_before``, ``parts_after``, ``rows_before``, ``rows_after``.

        Examples
        --------
        >>> import tempfile
        >>> Cache(tempfile.mkdtemp()).compact()["parts_after"]
        0
        """
        parts = self._part_files()
        tables: list[pa.Table] = []
        merged_from: list[str] = []
        for part in parts:
            try:
                tables.append(self._read_whole_part(part))
                merged_from.append(part)
            except FileNotFoundError:
                continue
            except Exception as err:
                self.damaged[part] = f"{type(err).__name__}: {err}"
        rows_before = sum(t.num_rows for t in tables)
        if len(merged_from) <= 1:
            return {
                "parts_before": len(parts),
                "parts_after": len(parts),
                "rows_before": rows_before,
                "rows_after": rows_before,
            }
        table = pa.concat_tables(tables)
        frame = table.to_pandas()
        frame = frame.sort_values("created", kind="stable").drop_duplicates("key", keep="last")
        merged = pa.Table.from_pandas(frame, schema=CACHE_SCHEMA, preserve_index=False)
        name = f"{PART_PREFIX}{time.time_ns()}-{os.getpid()}-compact{PART_SUFFIX}"
        self._store.write(merged, name)
        for part in merged_from:
            self._store.remove(part)
        with self._lock:
            self._seen = {name}
            self._columns = _Columns()
            self._part_starts, self._part_names = [0], [name]
            self._columns.append(merged)
        return {
            "parts_before": len(parts),
            "parts_after": len(parts) - len(merged_from) + 1,
            "rows_before": rows_before,
            "rows_after": merged.num_rows,
        }


def resolve_cache(cache: bool | str | os.PathLike[str] | Cache | None) -> Cache | None:
    """``True`` -> the default directory; a path -> that directory; ``False``/None -> no cache."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, Cache):
        return cache
    if cache is True:
        return Cache()
    if isinstance(cache, str | os.PathLike):
        return Cache(cache)
    raise TypeError(f"cache must be True, False, a path or a Cache, not {type(cache).__name__}")
