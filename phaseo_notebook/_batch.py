"""The batch engine: many inputs in, one outcome per input out.

Everything the fronts (the pandas accessors, the CLI, the widgets, Dask) need lives here::

    inputs -> normalise + identity -> dedupe -> cache lookup (one pass)
           -> bounded, adaptive concurrent sends -> periodic cache flushes -> per-row outcomes

It is the only place that knows about concurrency, retries across rows, progress and the
cache. The sync entry point runs the async engine on a private event loop in a worker
thread, so it works where a loop is already running (Jupyter, IPython, VS Code) without
``nest_asyncio``, and Ctrl-C cancels in-flight requests after saving finished rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from . import _constants as C
from ._audio import AudioSource, is_missing, normalize_audio, plain_url, url_source
from ._base_client import (
    ClientSettings,
    PreparedCall,
    check_encodable,
    is_retryable,
)
from ._cache import Cache, CacheKeys, CacheRecord, cache_key, resolve_cache
from ._client import AsyncClient, Client, fetch_catalog
from ._exceptions import (
    APIError,
    APIStatusError,
    APITimeoutError,
    AudioInputError,
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    PaymentRequiredError,
    PermissionDeniedError,
    PhaseoError,
    UnknownModelError,
)
from ._filehashes import FileHashes, Remembered
from ._longaudio import LongAudio, is_limit_refusal, limit_book_for
from ._progress import ProgressBar, progress_enabled
from ._request import (
    ErrorsMode,
    TranscribeRequest,
)
from ._spend import RunSpend, measure_seconds, run_price, run_summary
from ._types import ResultColumns, TranscriptionResult

__all__ = [
    "CANCELLED_ERROR",
    "AimdPolicy",
    "BatchResult",
    "ErrorsMode",
    "TranscribeRequest",
    "mark_unfinished",
    "request_cache_key",
    "run_request",
    "run_request_sync",
    "run_sync",
    "transcribe_many",
    "transcribe_many_sync",
]

T = TypeVar("T")

#: Errors that doom every row: stop the run instead of sending thousands of failing requests.
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    AuthenticationError,
    PaymentRequiredError,
    PermissionDeniedError,
    ConfigurationError,
    UnknownModelError,
)
#: The error of a row a cancelled run did not finish (the rows that finished keep theirs).
CANCELLED_ERROR = "CancelledError: the run was cancelled before this row finished"
#: Answers that mean "too much load": they shrink the in-flight limit.
CONGESTION_STATUSES = frozenset({429, 502, 503})
_FLUSH_ROWS = 5000
_HASH_THREADS = 4


# --------------------------------------------------------------------------- decisions


@dataclass
class AimdPolicy:
    """Additive-increase / multiplicative-decrease of the in-flight limit.

    A congestion signal (429/502/503) halves the limit, at most once per ``cooldown`` seconds
    so one burst counts once; each success adds ``1 / limit``, so the limit climbs back by
    about one per round of requests.

    Examples
    --------
    >>> p = AimdPolicy(ceiling=16)
    >>> p.on_congestion(now=10.0), p.capacity
    (True, 8)
    >>> p.on_congestion(now=10.5), p.capacity  # same burst
    (False, 8)
    >>> for _ in range(9): p.on_success()
    >>> p.capacity
    9
    """

    ceiling: int
    floor: int = 1
    decrease: float = 0.5
    cooldown: float = 1.0
    limit: float = 0.0
    _last_decrease: float = -math.inf

    def __post_init__(self) -> None:
        if self.limit <= 0:
            self.limit = float(self.ceiling)

    @property
    def capacity(self) -> int:
        """Requests allowed in flight now."""
        return max(self.floor, int(self.limit))

    def on_success(self) -> None:
        """A request succeeded: grow slowly."""
        if self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)

    def on_congestion(self, now: float) -> bool:
        """The gateway pushed back: shrink, once per burst. Returns True if it shrank."""
        if now - self._last_decrease < self.cooldown:
            return False
        self._last_decrease = now
        self.limit = max(float(self.floor), self.limit * self.decrease)
        return True


def is_congestion(err: BaseException) -> bool:
    """Whether an error says the gateway is overloaded."""
    return isinstance(err, APIStatusError) and err.status_code in CONGESTION_STATUSES


def format_error(err: BaseException) -> str:
    """The text stored in the error column: class name and message.

    Examples
    --------
    >>> format_error(ValueError("bad"))
    'ValueError: bad'
    """
    return f"{type(err).__name__}: {err}"


def mark_unfinished(result: BatchResult, error: str) -> int:
    """Give ``error`` to every row with neither a transcript nor an error; returns how many.

    Examples
    --------
    >>> res = BatchResult.empty(3)
    >>> res.text[0], res.error[1] = "hello", "ValueError: bad"
    >>> mark_unfinished(res, "CancelledError: stopped"), res.error
    (1, [None, 'ValueError: bad', 'CancelledError: stopped'])
    """
    marked = 0
    for r, (text, err) in enumerate(zip(result.text, result.error, strict=True)):
        if text is None and err is None:
            result.error[r] = error
            marked += 1
    return marked


def _clean_language(value: object) -> str | None:
    if is_missing(value):
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"language {value!r} is not a non-empty string")
    check_encodable("language", value)
    return value.strip()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects that form no cycles.

    Planning 100k rows allocates a few hundred thousand objects; each allocation burst
    would start collections that walk the whole (growing) heap for nothing, about a fifth
    of the planning time. Collections resume, as they were, when the block ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --------------------------------------------------------------------------- state


class _Limiter:
    """An asyncio semaphore whose size follows an :class:`AimdPolicy`."""

    def __init__(self, policy: AimdPolicy) -> None:
        self.policy = policy
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> bool:
        while not self.closed and self.in_flight >= self.policy.capacity:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        if self.closed:
            return False
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return True

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake(everyone=True)

    def _wake(self, everyone: bool = False) -> None:
        room = len(self._waiters) if everyone else self.policy.capacity - self.in_flight
        while room > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                room -= 1


@dataclass(slots=True)
class _Job:
    """One distinct request, fanned out to every row that asked for it."""

    key: str
    identity: str
    source: AudioSource
    call: PreparedCall
    rows: list[int]
    attempts: int = 0
    #: For a chunk of a long file: its :class:`._longaudio.ChunkRef` (it fills no row itself).
    part: Any = None
    #: Audio seconds, for the budget's estimate (None: unknown or not needed).
    seconds: float | None = None

    def record(self, text: str, raw: dict[str, Any]) -> CacheRecord:
        """The cache record of this request's answer (``text``, and the body ``raw``)."""
        call = self.call
        return CacheRecord(
            key=self.key,
            identity=self.identity,
            model=call.model,
            language=call.language,
            provider=call.provider_json,
            text=text,
            raw=raw,
        )


@dataclass
class BatchResult:
    """Per-row outcomes of a batch run, aligned with the inputs, plus run counters.

    Attributes
    ----------
    text, error
        The transcript (None where it failed) and the error text (None where it worked).
    cached
        True where the row came from the cache.
    provider, duration, cost, request_id, latency
        Per-row metadata where the gateway reported it (``latency`` in seconds, sent rows only).
    language
        Per-row language the gateway reports it transcribed in, where it says.
    segments, words
        Per-row timed segments and words where the answer had them (``timestamps=``).
    requests
        Requests sent (distinct inputs that were not cached; batch-level resends included).
    cache_hits, distinct
        Distinct requests served by the cache, and distinct valid requests in all.
    max_in_flight
        The most requests this run had in flight at once.
    """

    text: list[str | None]
    error: list[str | None]
    cached: list[bool]
    provider: list[str | None]
    duration: list[float | None]
    cost: list[float | None]
    request_id: list[str | None]
    latency: list[float | None]
    requests: int = 0
    cache_hits: int = 0
    distinct: int = 0
    max_in_flight: int = 0
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    language: list[str | None] = field(default_factory=list)
    #: Per-row timed segments and words (runs with ``timestamps``), times from the file's start.
    segments: list[list[dict[str, Any]] | None] = field(default_factory=list)
    words: list[list[dict[str, Any]] | None] = field(default_factory=list)
    #: The run summary (:func:`._spend.run_summary`): spent, requests, audio minutes, ...
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> BatchResult:
        return cls(
            text=[None] * n,
            error=[None] * n,
            cached=[False] * n,
            provider=[None] * n,
            duration=[None] * n,
            cost=[None] * n,
            request_id=[None] * n,
            latency=[None] * n,
            language=[None] * n,
            segments=[None] * n,
            words=[None] * n,
        )

    @property
    def errors(self) -> int:
        """Rows that failed."""
        return sum(e is not None for e in self.error)


# --------------------------------------------------------------------------- the engine


class _RunClient:
    """The client a run sends through, chosen once from what the request names.

    An :class:`AsyncClient` on the run's own loop in every case but one: a sync
    :class:`Client` with a custom transport (a ``MockTransport``, say) cannot be moved to
    asyncio, so the run sends through it from worker threads. An ``AsyncClient`` is tied to
    the loop it first ran on; the sync entry point runs on a private loop, so there it gets
    a twin with the same settings and the upload mode it has learnt.
    """

    def __init__(
        self,
        client: Client | AsyncClient | ClientSettings | None,
        concurrency: int,
        inside_loop: bool,
    ) -> None:
        connections = max(concurrency, 16)
        self.owned: AsyncClient | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._sync: Client | None = None
        if client is None:
            self.client: Client | AsyncClient = AsyncClient(max_connections=connections)
            self.owned = self.client
        elif isinstance(client, ClientSettings):
            self.client = self.owned = AsyncClient.from_settings(
                client, max_connections=connections
            )
        elif isinstance(client, AsyncClient) and (inside_loop or client.has_custom_transport):
            self.client = client
        elif isinstance(client, Client) and client.has_custom_transport:
            self.client = self._sync = client
            self._threads = ThreadPoolExecutor(max_workers=concurrency)
        else:
            self.client = self.owned = client.to_async(max_connections=connections)

    async def send(
        self, source: AudioSource, call: PreparedCall, on_retry: Callable[[APIError], None]
    ) -> TranscriptionResult:
        if self._sync is not None:
            client = self._sync
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, lambda: client.send(source, call, on_retry)
            )
        assert isinstance(self.client, AsyncClient)
        return await self.client.send(source, call, on_retry)

    async def aclose(self) -> None:
        if self.owned is not None:
            await self.owned.aclose()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)


#: How a planned request's audio is built when it is sent: the source itself (checked
#: while planning), a plain URL, or an unchanged file with what is remembered of it. Rows
#: served from the cache never build one.
_SourceOf = AudioSource | str | tuple[str, Remembered]


def _source_of(entry: _SourceOf) -> AudioSource:
    if isinstance(entry, AudioSource):
        return entry
    if isinstance(entry, str):
        return url_source(entry)
    text, remembered = entry
    return remembered.source(text)


@dataclass(slots=True)
class _Plan:
    """What planning found: the distinct requests, and which one each row asks for.

    Rows become jobs only for the requests that are sent: a rerun served from the cache
    fills its rows through ``row_key``, with no object per row.
    """

    keys: list[str]
    identities: list[str]
    calls: list[PreparedCall]
    sources: list[_SourceOf]
    #: Per row, the index of its request in ``keys``; -1 for a row refused while planning.
    row_key: np.ndarray

    def rows_per_key(self) -> np.ndarray:
        """How many rows ask for each request."""
        return np.bincount(self.row_key[self.row_key >= 0], minlength=len(self.keys))

    def jobs(self, wanted: Sequence[int] | np.ndarray | None = None) -> dict[str, _Job]:
        """A job for each request in ``wanted`` (indices into ``keys``, ascending; all by
        default), each with its rows, in the order of their first rows."""
        chosen = range(len(self.keys)) if wanted is None else [int(k) for k in wanted]
        if not len(chosen):
            return {}
        rows_of: dict[int, list[int]] = {k: [] for k in chosen}
        asked = np.zeros(len(self.keys) + 1, dtype=bool)  # the last stands for refused rows
        asked[list(chosen)] = True
        rows = np.flatnonzero(asked[self.row_key])
        for row, k in zip(rows.tolist(), self.row_key[rows].tolist(), strict=True):
            rows_of[k].append(row)
        keys, identities, calls, sources = self.keys, self.identities, self.calls, self.sources
        return {
            keys[k]: _Job(keys[k], identities[k], _source_of(sources[k]), calls[k], rows)
            for k, rows in rows_of.items()
        }


def _distinct_values(
    inputs: Sequence[object],
    languages: Sequence[object] | None,
    result: BatchResult,
    errors: ErrorsMode,
) -> tuple[list[object], list[int], list[str | None], ValueError | None]:
    """The distinct values of the rows, numbered in the order of their first rows.

    Returns the values, each row's value (-1 for a row whose language is refused: its
    error is in ``result``), each row's checked language (empty without ``languages``),
    and, with ``errors="raise"``, the refused language that ends the rows looked at. A
    value that is not str or bytes is a value of its own.
    """
    seen: dict[str | bytes, int] = {}
    if languages is None and all(type(value) is str for value in inputs):
        # The usual column of URLs or paths: numbered in one pass.
        texts = cast("Sequence[str]", inputs)
        row_value = [seen.setdefault(text, len(seen)) for text in texts]
        return list(seen), row_value, [], None
    values: list[object] = []
    row_value = [-1] * len(inputs)
    row_lang: list[str | None] = []
    for i, value in enumerate(inputs):
        if languages is not None:
            try:
                row_lang.append(_clean_language(languages[i]))
            except ValueError as err:
                row_lang.append(None)
                result.error[i] = format_error(err)
                if errors == "raise":
                    return values, row_value, row_lang, err
                continue
        if isinstance(value, str | bytes):
            v = seen.get(value)
            if v is None:
                v = seen[value] = len(values)
                values.append(value)
        else:
            v = len(values)
            values.append(value)
        row_value[i] = v
    return values, row_value, row_lang, None


def _plan(
    inputs: Sequence[object],
    languages: Sequence[object] | None,
    call: PreparedCall,
    result: BatchResult,
    errors: ErrorsMode,
    hashes: FileHashes | None = None,
) -> _Plan:
    """Check every input, compute identities and keys, and find each row's request.

    The same value (a URL, a path string or a clip repeated across rows) is checked and
    hashed once, whatever the language of each row. A plain URL is known by its shape, and
    with ``hashes`` a file unchanged since it was last hashed by one stat (neither opened
    nor read); files hashed here are remembered in it. Refused rows get their error in
    ``result``; with ``errors="raise"`` the first refusal in row order is raised (a file
    that fails while being hashed only after every other check).
    """
    values, row_value, row_lang, stop = _distinct_values(inputs, languages, result, errors)

    # Values -> what to send and its identity (files: hashed below).
    m = len(values)
    sources: list[_SourceOf | None] = [None] * m
    identities: list[str | None] = [None] * m
    refused: dict[int, AudioInputError] = {}
    files: list[int] = []

    def check(v: int) -> None:
        try:
            src = normalize_audio(values[v])
        except AudioInputError as err:
            refused[v] = err
            return
        sources[v] = src
        if src.kind == "path":
            files.append(v)
        else:
            identities[v] = src.identity()

    maybe_known: list[int] = []
    texts: list[str] = []
    for v, value in enumerate(values):
        if isinstance(value, str):
            url = plain_url(value)
            if url is not None:
                sources[v] = url
                identities[v] = "url:" + url
                continue
            if hashes is not None:
                maybe_known.append(v)
                texts.append(value)
                continue
        check(v)
    if hashes is not None and maybe_known:
        for v, text, known in zip(maybe_known, texts, hashes.lookup(texts), strict=True):
            if known is None:
                check(v)
            else:
                sources[v] = (text, known)
                identities[v] = known.sha256
    _refuse_rows(row_value, refused, result, errors)
    if stop is not None:
        raise stop

    # Files are hashed each once however many rows name it: small ones inline (handing
    # 8 KB to a thread and back costs more CPU than hashing it), large ones in a few
    # threads (hashlib lets go of the GIL on large buffers: two cores hash two files).
    def hash_file(v: int) -> str | AudioInputError:
        src = cast(AudioSource, sources[v])
        try:
            digest = src.identity()
        except AudioInputError as err:  # vanished or became unreadable since it was checked
            return err
        if hashes is not None:
            hashes.remember(src, digest)
        return digest

    large = [v for v in files if (cast(AudioSource, sources[v]).size or 0) > C.INLINE_READ_BYTES]
    in_threads = set(large)
    digests = {v: hash_file(v) for v in files if v not in in_threads}
    if len(large) == 1:
        digests[large[0]] = hash_file(large[0])
    elif large:
        with ThreadPoolExecutor(max_workers=min(_HASH_THREADS, len(large))) as pool:
            digests.update(zip(large, pool.map(hash_file, large), strict=True))
    unreadable: dict[int, AudioInputError] = {}
    for v in files:
        digest = digests[v]
        if isinstance(digest, AudioInputError):
            unreadable[v] = digest
        else:
            identities[v] = digest
    _refuse_rows(row_value, unreadable, result, errors)
    return _group(row_value, row_lang if languages is not None else None, identities, sources, call)


def _refuse_rows(
    row_value: list[int],
    refused: dict[int, AudioInputError],
    result: BatchResult,
    errors: ErrorsMode,
) -> None:
    """Give every row of a refused value its error (raised, in row order, if asked)."""
    if not refused:
        return
    texts = {v: format_error(err) for v, err in refused.items()}
    for i, v in enumerate(row_value):
        text = texts.get(v)
        if text is not None:
            result.error[i] = text
            row_value[i] = -1
            if errors == "raise":
                raise refused[v]


def _group(
    row_value: list[int],
    row_lang: list[str | None] | None,
    identities: list[str | None],
    sources: list[_SourceOf | None],
    call: PreparedCall,
) -> _Plan:
    """One request per distinct identity and language, numbered in the order of first rows."""
    keymaker = CacheKeys(call.model, call.provider_json, call.options_json, origin=call.origin)
    if row_lang is None:
        # One language: a request per identity, found per distinct value, not per row.
        present = [v for v, identity in enumerate(identities) if identity is not None]
        found: list[str] = [identities[v] for v in present]  # type: ignore[misc]
        firsts, key_sources = found, [sources[v] for v in present]
        key_of_present: Sequence[int] = range(len(present))
        if len(set(found)) < len(found):  # values sharing an identity (a file and its bytes)
            index: dict[str, int] = {}
            key_of_present = [index.setdefault(identity, len(index)) for identity in found]
            first_value = dict(zip(reversed(key_of_present), reversed(present), strict=True))
            firsts, key_sources = list(index), [sources[first_value[k]] for k in range(len(index))]
        key_of_value = np.full(len(identities) + 1, -1, dtype=np.int64)  # the last: refused
        key_of_value[present] = key_of_present
        return _Plan(
            keys=keymaker.many(firsts, call.language),
            identities=firsts,
            calls=[call] * len(firsts),
            sources=cast("list[_SourceOf]", key_sources),  # set with each identity
            row_key=key_of_value[np.asarray(row_value, dtype=np.int64)],
        )
    firsts = []
    key_sources = []
    keys: list[str] = []
    calls: list[PreparedCall] = []
    by_language: dict[str | None, PreparedCall] = {call.language: call}
    pairs: dict[tuple[str, str | None], int] = {}
    row_key = [-1] * len(row_value)
    for i, v in enumerate(row_value):
        if v < 0:
            continue
        identity = identities[v]
        if identity is None:
            continue
        lang = row_lang[i]
        k = pairs.get((identity, lang))
        if k is None:
            k = pairs[identity, lang] = len(keys)
            keys.append(keymaker.of(identity, lang))
            firsts.append(identity)
            key_sources.append(sources[v])
            row_call = by_language.get(lang)
            if row_call is None:
                row_call = by_language[lang] = call.with_language(lang)
            calls.append(row_call)
        row_key[i] = k
    # A value with an identity has its source set: None stands only for refused values.
    known = cast("list[_SourceOf]", key_sources)
    return _Plan(keys, firsts, calls, known, np.asarray(row_key, dtype=np.int64))


def request_cache_key(
    value: object, language: object, call: PreparedCall, *, by_row: bool = True
) -> str | None:
    """The cache key a run with ``call`` gives one row, or None when the run refuses the row.

    The same identity :func:`_plan` computes (the URL, or the sha256 of the bytes, a file's
    included), so a front that splits a run (Dask) deduplicates exactly as the engine and
    the cache do. ``language`` is the row's own (checked as the engine checks it) when
    ``by_row``; otherwise the call's language applies.

    Examples
    --------
    >>> from phaseo_notebook._base_client import PreparedCall
    >>> call = PreparedCall(model="m", origin="https://gw:443/v1")
    >>> key = request_cache_key("https://x/a.wav", None, call)
    >>> key == cache_key("url:https://x/a.wav", "m", None, None, origin="https://gw:443/v1")
    True
    >>> request_cache_key(None, None, call) is None
    True
    """
    try:
        lang = _clean_language(language) if by_row else call.language
        identity = normalize_audio(value).identity()
    except ValueError:  # AudioInputError and ConfigurationError included
        return None
    return cache_key(
        identity, call.model, lang, call.provider_json, call.options_json, origin=call.origin
    )


def _serve_from_cache(store: Cache, plan: _Plan, result: BatchResult) -> tuple[int, np.ndarray]:
    """Fill the rows of every request the cache holds, column by column.

    Returns the rows filled and the requests still to send (indices into ``plan.keys``).
    """
    found, answers = store.answers(plan.keys)
    result.cache_hits = len(found)
    answer_of_key = np.full(len(plan.keys) + 1, -1, dtype=np.int64)  # the last: refused rows
    answer_of_key[found] = np.arange(len(found))
    row_answer = answer_of_key[plan.row_key]
    rows = np.flatnonzero(row_answer >= 0)
    _fill_cached(result, rows, row_answer[rows], answers)
    return len(rows), np.flatnonzero(answer_of_key[:-1] < 0)


#: The :class:`BatchResult` lists a cached answer fills (``latency`` stays None).
_CACHED_FIELDS = (
    "text",
    "provider",
    "duration",
    "cost",
    "request_id",
    "language",
    "segments",
    "words",
)


def _fill_cached(
    result: BatchResult, rows: np.ndarray, which: np.ndarray, answers: ResultColumns
) -> None:
    """:func:`_fill` of many rows at once: row ``rows[j]`` gets cached answer ``which[j]``.

    Object arrays gather and scatter each column in one step; rows sharing an answer
    share its values, as :func:`_fill` gives them.
    """
    if not len(rows):
        return
    n = len(result.text)
    for name in (*_CACHED_FIELDS, "cached"):
        given: list[Any] = [True] * len(answers) if name == "cached" else getattr(answers, name)
        column = np.fromiter(given, dtype=object, count=len(given))[which]
        if len(rows) < n:
            whole = np.fromiter(getattr(result, name), dtype=object, count=n)
            whole[rows] = column
            column = whole
        setattr(result, name, column.tolist())


def _fill(
    result: BatchResult, rows: list[int], tr: TranscriptionResult, latency: float | None
) -> None:
    for r in rows:
        result.text[r] = tr.text
        result.provider[r] = tr.provider
        result.duration[r] = tr.duration
        result.cost[r] = tr.cost
        result.request_id[r] = tr.request_id
        result.latency[r] = latency
        result.language[r] = tr.language
        result.segments[r] = tr.segments
        result.words[r] = tr.words


async def transcribe_many(
    inputs: Sequence[object], *, _inside_loop: bool = True, **options: Any
) -> BatchResult:
    """Transcribe many inputs concurrently; one outcome per input, in input order.

    A shorthand for :func:`run_request` on ``TranscribeRequest(inputs, **options)``.

    Parameters
    ----------
    inputs
        Audio inputs (URLs, paths, bytes, data URIs), mixed freely; None/NaN rows become errors.
    **options
        The other fields of :class:`._request.TranscribeRequest` (``model``, ``language``,
        ``languages``, ``concurrency``, ``cache``, ``errors``, ``progress``, ``client``,
        ``deadline``, ``timestamps``, ``row_retries``, ``on_progress``, ``budget``, ...),
        checked by it: an unknown name is a ``TypeError``.

    Returns
    -------
    BatchResult

    Raises
    ------
    AuthenticationError, PaymentRequiredError, PermissionDeniedError
        At once, when the gateway refuses the key or the account (nothing more is sent).

    Examples
    --------
    >>> import asyncio, phaseo_notebook as pn
    >>> from phaseo_notebook._batch import transcribe_many
    >>> clips = [str(p) for p in pn.sample_paths()[:2]]
    >>> res = asyncio.run(transcribe_many(clips, model="local/fake", cache=False, progress=False))
    >>> len(res.text)
    2
    """
    return await run_request(TranscribeRequest(inputs, **options), inside_loop=_inside_loop)


async def run_request(
    request: TranscribeRequest, *, inside_loop: bool = True, result: BatchResult | None = None
) -> BatchResult:
    """Run a checked :class:`TranscribeRequest`; what every front ends up calling.

    ``inside_loop`` is False when called through :func:`run_request_sync`, whose private
    event loop a caller's :class:`AsyncClient` is not bound to.

    ``result``, a ``BatchResult.empty(len(request.inputs))``, is filled in place as rows
    finish and returned. It is for a caller that may cancel the run: a cancelled run
    raises ``asyncio.CancelledError`` and returns nothing, and this object then holds the
    rows that finished (saved to the cache as well), the others with
    :data:`CANCELLED_ERROR`.

    Examples
    --------
    >>> import asyncio, phaseo_notebook as pn
    >>> req = TranscribeRequest([str(pn.sample_paths()[0])], model="local/fake", cache=False,
    ...                         progress=False)
    >>> asyncio.run(run_request(req)).errors
    0
    """
    started = time.monotonic()
    deadline = request.deadline
    errors = request.errors
    # Counted from the call, so reading and hashing the inputs is part of the budget.
    deadline_at = None if deadline is None else asyncio.get_running_loop().time() + deadline
    n = len(request.inputs)
    if result is None:
        result = BatchResult.empty(n)
    elif len(result.text) != n:
        raise ValueError(f"result has {len(result.text)} rows for {n} inputs; they must match")
    spend: RunSpend | None = None
    store = resolve_cache(request.cache)
    if store is not None:  # an unwritable cache is said once, before anything is paid for
        await asyncio.to_thread(store.check_writable)
    sender = _RunClient(request.client, request.concurrency, inside_loop)
    hashes = FileHashes(store.path) if store is not None and isinstance(store.path, Path) else None
    reading = None
    if store is not None:
        # What planning and the lookup read is read in a worker thread while the inputs
        # are checked: Parquet decoding leaves the GIL. A failure is left to where the
        # data is used, which reads again what was not read.
        paths = hashes is not None and any(
            isinstance(value, str) and "://" not in value for value in request.inputs
        )
        # Submitted now: a task would start only once planning, which never yields, ended.
        reading = asyncio.get_running_loop().run_in_executor(
            None, _read_ahead, store, hashes if paths else None
        )
        reading.add_done_callback(_ignore_outcome)
    try:
        call = sender.client.prepare(
            request.model, request.language, request.provider, **request.call_options()
        )
        with _gc_paused():
            plan = _plan(request.inputs, request.languages, call, result, errors, hashes)
        if hashes is not None:
            hashes.save()
        result.distinct = len(plan.keys)
        planned = time.monotonic()

        bar = ProgressBar(
            n, enabled=progress_enabled(request.progress), on_update=request.on_progress
        )
        invalid = result.errors  # rows refused while planning
        bar.update(invalid, errors=invalid)
        if store is not None and plan.keys:
            if reading is not None:
                await asyncio.wait([reading])
            with _gc_paused():
                cached_rows, missing = _serve_from_cache(store, plan, result)
                jobs = plan.jobs(missing)
            bar.update(cached_rows, cached=cached_rows)
        else:
            jobs = plan.jobs()
        todo: deque[_Job] = deque(jobs.values())
        # Where a run's time goes before anything is sent (the benchmark shows it).
        result.extra["seconds_plan"] = planned - started
        result.extra["seconds_lookup"] = time.monotonic() - planned
        long = _long_audio(request, sender, store, result)

        try:
            async with asyncio.timeout_at(deadline_at):
                # Budget: the run's price and each job's length, read before the first send.
                spend = await _run_spend(request, call, sender, todo, bar)
                # Long files leave ``todo`` here: their chunks are queued while sending.
                await long.split(todo)
                await _send_all(todo, sender, request, store, result, bar, spend, long)
        except UnknownModelError as err:
            if not err.available_models:  # name what the gateway serves, when it says
                catalog = await asyncio.to_thread(fetch_catalog, sender.client)
                models = [m["id"] for m in catalog if isinstance(m.get("id"), str)]
                err.with_available_models(models)
            raise
        except TimeoutError:
            if errors == "raise":
                raise APITimeoutError(f"batch deadline of {deadline} s reached") from None
            unfinished = (
                f"APITimeoutError: batch deadline of {deadline} s reached before this row finished"
            )
            for job in jobs.values():
                for r in job.rows:
                    if result.text[r] is None and result.error[r] is None:
                        result.error[r] = unfinished
        finally:
            await long.aclose()
            result.extra["chunks_sent"] = long.chunks_sent
            bar.close()
    except asyncio.CancelledError:
        # Whoever holds ``result`` (see above) reads why a row has no transcript.
        mark_unfinished(result, CANCELLED_ERROR)
        raise
    finally:
        try:
            if reading is not None:  # ends with the run, even one that looked nothing up
                await asyncio.wait([reading])
            if store is not None:
                await asyncio.shield(asyncio.to_thread(store.try_flush))
        finally:
            await sender.aclose()
    result.elapsed = time.monotonic() - started
    result.summary = run_summary(
        model=call.model,
        rows=n,
        requests=result.requests,
        cache_hits=result.cache_hits,
        errors=result.errors,
        elapsed=result.elapsed,
        spend=spend,
    )
    return result


def _read_ahead(store: Cache, hashes: FileHashes | None) -> None:
    """Read the remembered file hashes (planning needs them first), then the cache parts."""
    if hashes is not None:
        hashes.load()
    store.refresh()


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    """Mark a background step's outcome as seen (its failure shows where it is used)."""
    if not future.cancelled():
        future.exception()


def _long_audio(
    request: TranscribeRequest, sender: _RunClient, store: Cache | None, result: BatchResult
) -> LongAudio:
    """The run's long-file planner and stitcher (see :mod:`._longaudio`)."""

    def make_job(
        key: str, identity: str, source: AudioSource, call: PreparedCall, part: Any
    ) -> _Job:
        return _Job(key, identity, source, call, [], part=part, seconds=part.end - part.start)

    return LongAudio(
        limit_book_for(store, sender.client.base_url),
        store,
        result,
        make_job,
        chain_prompt=request.chain_prompt,
        concurrency=request.concurrency,
    )


async def _run_spend(
    request: TranscribeRequest,
    call: PreparedCall,
    sender: _RunClient,
    todo: deque[_Job],
    bar: ProgressBar,
) -> RunSpend:
    """The run's spend account; with a budget, its price and each queued job's length."""
    price = None
    if request.budget is not None and todo:
        price = await asyncio.to_thread(
            run_price,
            call.model,
            embedded=call.embedded,
            prices=request.prices,
            client=sender.client,
        )
        seconds = await asyncio.to_thread(measure_seconds, [job.source for job in todo])
        for job, length in zip(todo, seconds, strict=True):
            if job.seconds is None:
                job.seconds = length
    bar.budget = request.budget
    return RunSpend(
        budget=request.budget,
        price_per_minute=price,
        limit=request.concurrency,
        on_cost=bar.add_cost,
    )


async def _send_all(
    todo: deque[_Job],
    sender: _RunClient,
    request: TranscribeRequest,
    store: Cache | None,
    result: BatchResult,
    bar: ProgressBar,
    spend: RunSpend,
    long: LongAudio | None = None,
) -> None:
    if not todo and (long is None or not long.pending):
        return
    concurrency = request.concurrency
    errors = request.errors
    row_retries = request.row_retries
    flush_interval = request.flush_interval
    limiter = _Limiter(AimdPolicy(ceiling=concurrency))
    queue: asyncio.Queue[_Job | None] = asyncio.Queue()
    for job in todo:
        queue.put_nowait(job)
    # Jobs not finished yet, queued or in flight: a job put back after a transient failure
    # must still find a worker, so workers wait on the queue until this reaches zero.
    remaining = len(todo) + (long.pending if long is not None else 0)
    stop: list[BaseException] = []
    send = sender.send

    def finish_all() -> None:
        limiter.close()
        for _ in range(concurrency):
            queue.put_nowait(None)

    min_limit = limiter.policy.capacity

    def congested() -> None:
        nonlocal min_limit
        limiter.policy.on_congestion(time.monotonic())
        min_limit = min(min_limit, limiter.policy.capacity)

    def on_retry(err: APIError) -> None:
        if is_congestion(err):
            congested()

    # Long files add work while the run sends: chunk jobs, and files refused whole.
    def add_unit() -> None:
        nonlocal remaining
        remaining += 1

    def enqueue(job: _Job) -> None:
        add_unit()
        queue.put_nowait(job)

    def settle() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            finish_all()

    async def worker() -> None:
        nonlocal remaining
        while True:
            job = await queue.get()
            if (
                job is not None
                and long is not None
                and job.part is None
                and not stop
                and await long.reroute(job)  # a limit learned in this run: send it as chunks
            ):
                settle()
                continue
            if job is None or stop or not await limiter.acquire():
                return
            t0 = time.monotonic()
            outcome: TranscriptionResult | BaseException
            try:
                outcome = await spend.send(send, job.source, job.call, on_retry, job.seconds)
            except (PhaseoError, ValueError, OSError) as err:
                outcome = err
            finally:
                limiter.release()
            # A request the budget refused was never sent.
            sent = 0 if isinstance(outcome, BudgetExceededError) else 1
            result.requests += sent
            if isinstance(outcome, TranscriptionResult) and job.part is not None:
                limiter.policy.on_success()
                assert long is not None
                long.on_answer(job, outcome)
                bar.update(0, sent=1)
            elif isinstance(outcome, TranscriptionResult):
                limiter.policy.on_success()
                _fill(result, job.rows, outcome, time.monotonic() - t0)
                if store is not None:
                    store.add([job.record(outcome.text, outcome.raw)])
                bar.update(len(job.rows), sent=1)
            elif isinstance(outcome, FATAL_ERRORS):
                stop.append(outcome)
                finish_all()
                return
            elif (
                isinstance(outcome, APIError)
                and is_retryable(outcome)
                and job.attempts < row_retries
            ):
                job.attempts += 1
                if is_congestion(outcome):
                    congested()
                bar.update(0, sent=1)
                queue.put_nowait(job)
                continue
            elif (
                long is not None
                and isinstance(outcome, APIStatusError)
                and is_limit_refusal(outcome)
                and long.on_refusal(job, outcome)
            ):
                bar.update(0, sent=1)  # the file goes again as chunks under the learned limit
            elif job.part is not None:
                assert long is not None
                long.on_failure(job, format_error(outcome))
                bar.update(0, sent=sent)
                if errors == "raise":
                    stop.append(outcome)
                    finish_all()
                    return
            else:
                text = format_error(outcome)
                for r in job.rows:
                    result.error[r] = text
                bar.update(len(job.rows), errors=len(job.rows), sent=sent)
                if errors == "raise":
                    stop.append(outcome)
                    finish_all()
                    return
            settle()

    async def flusher() -> None:
        assert store is not None
        while True:
            await asyncio.sleep(flush_interval)
            if store.pending >= 1:
                await asyncio.to_thread(store.try_flush)

    if long is not None:
        long.start(enqueue, add_unit, settle, bar)
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    flush_task = asyncio.create_task(flusher()) if store is not None else None
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        if flush_task is not None:
            flush_task.cancel()
            await asyncio.gather(flush_task, return_exceptions=True)
        result.max_in_flight = max(result.max_in_flight, limiter.max_in_flight)
        result.extra["min_limit"] = min_limit
    if stop:
        raise stop[0]


def run_sync(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    The coroutine runs on a fresh event loop in a worker thread while this thread waits in
    short waits, so Ctrl-C (KeyboardInterrupt) reaches us promptly: we cancel the task, wait
    for it to save what finished, and re-raise.

    Examples
    --------
    >>> async def answer():
    ...     return 42
    >>> run_sync(answer)
    42
    """
    box: dict[str, Any] = {}
    ready = threading.Event()
    done = threading.Event()

    def target() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        try:
            task = loop.create_task(make_coro())
            box["task"] = task
            ready.set()
            box["result"] = loop.run_until_complete(task)
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err
        finally:
            ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                done.set()

    thread = threading.Thread(target=target, name="phaseo-notebook-batch", daemon=True)
    try:
        # Started inside the try: a Ctrl-C landing in start() must still cancel the run.
        thread.start()
        # An Event, not thread.join(): on Python 3.11 a KeyboardInterrupt landing inside
        # join() marks the still-running thread as stopped, so the join below would return
        # at once and the process could exit before the final cache flush.
        while not done.wait(0.05):
            pass
    except KeyboardInterrupt:
        if thread.ident is None:  # interrupted before the run began: nothing to save
            raise
        ready.wait()
        loop, task = box.get("loop"), box.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished in the meantime
                loop.call_soon_threadsafe(task.cancel)
        # Cancelled requests return at once; the final cache flush is a small local write.
        done.wait(timeout=60)
        raise
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def transcribe_many_sync(inputs: Sequence[object], **options: Any) -> BatchResult:
    """Blocking :func:`transcribe_many`, safe to call from a notebook cell.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> from phaseo_notebook._batch import transcribe_many_sync
    >>> res = transcribe_many_sync([str(pn.sample_paths()[0])], model="local/fake",
    ...                            cache=False, progress=False)
    >>> res.errors
    0
    """
    return run_request_sync(TranscribeRequest(inputs, **options))


def run_request_sync(request: TranscribeRequest) -> BatchResult:
    """Blocking :func:`run_request`, safe to call from a notebook cell (see :func:`run_sync`).

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> req = TranscribeRequest([str(pn.sample_paths()[0])], model="local/fake", cache=False,
    ...                         progress=False)
    >>> run_request_sync(req).errors
    0
    """
    return run_sync(lambda: run_request(request, inside_loop=False))
