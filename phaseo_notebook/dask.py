"""Dask support: ``ddf.stt.transcribe(...)`` on a :class:`dask.dataframe.DataFrame`.

Importing this module registers the ``.stt`` accessor on Dask DataFrames (it needs the
``[dask]`` extra: ``pip install 'phaseo-notebook[dask]'``)::

    import dask.dataframe as dd
    import phaseo_notebook.dask  # registers ddf.stt

    ddf = dd.read_parquet("clips.parquet")          # a column of URLs or paths
    out = ddf.stt.transcribe(col="audio_url", model="openai/whisper-1",
                             cache="/mnt/shared/phaseo-cache", concurrency=16)
    out.to_parquet("transcripts.parquet")

The arguments and the result are those of the pandas call ``df.stt.transcribe``: the
input's columns, index and order, plus ``out_col`` and ``f"{out_col}_error"`` (and the
metadata and timestamp columns), row for row the same values and dtypes. The options
(``timestamps``, ``prompt``, ``temperature``, ...) are part of the cache key exactly as
there, so a row one front cached is a cache hit for the other.

How it runs
-----------
1. Every row gets the key the cache gives its request: the audio's identity (the URL, or
   the sha256 of the bytes, files included), the model, the language and the options. Each
   partition keeps its distinct keys.
2. The distinct requests are shuffled by key, so that each lands in exactly one partition,
   and each of those partitions goes through the batch engine on a worker: cache lookup,
   ``concurrency`` requests in flight, cache writes. An input repeated anywhere in the
   frame is sent once, whichever workers hold its rows.
3. The outcomes (one row per distinct request) are collected into one table, sent to every
   partition and joined back onto its rows in order.

With ``budget=``, step 2 splits the budget (see "Budget" below).

So rows are deduplicated by content across the whole frame (the same bytes behind two
paths are sent once), as within a pandas run. Rows with no usable value (None, an
unsupported type, a missing file, a language that is not a string) are checked on their
partition and get the same error text as with pandas; nothing is sent for them.

Dask turns object columns into pyarrow strings when it builds a frame (its
``dataframe.convert-string`` setting). That fails on a column of audio bytes and turns a
missing value into ``<NA>``; build such frames with the setting off::

    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.from_pandas(df, npartitions=8)

Budget
------
The pandas call holds its budget with one gate that every request passes. Partitions run
on different workers, which share no gate, so the budget is split before anything is sent:

- The price is resolved where ``transcribe`` is called (``prices=``, the gateway's catalog,
  the built-in table: the pandas call's order), so every partition estimates alike.
- Each partition of distinct requests looks up the cache (one more read of its index) and
  the audio length of the requests it would send (file headers; a URL counts at the mean
  known length). It gets
  ``budget x its audio / all the audio to send``, rounded down to the nano-dollar, and runs
  its engine with that as its budget. The shares sum to at most the budget, and each
  partition's gate never admits a request past its share, so the run as a whole spends no
  more than the budget whenever answers cost what was estimated: the pandas guarantee.
  (A request in flight when the share ran out may cost more than its estimate, as in
  pandas; the overspend is at most what was in flight.) When every length is known, a
  budget that covers the run's estimate (``df.stt.estimate``) covers every share, give or
  take a nano-dollar a request.
- With no price anywhere, the cost can only be learnt from answers, and each partition
  would send one request before knowing it. So the distinct requests then go through a
  single task, whose one gate learns the cost from its first answer, as pandas does.

A share can run out while another partition still has room (a URL much longer than the
mean, an estimate below the cost): the run then stops a few requests before the pandas
call would, never after. Rows not sent get ``BudgetExceededError: ...`` naming their
partition's share; with ``errors="raise"``, :class:`~phaseo_notebook.BudgetExceededError`
is raised (its ``budget`` and ``spent`` are the partition's) after the finished rows are
cached, so a rerun with a larger budget sends only the rest.

Using an existing cluster
-------------------------
Connect a ``dask.distributed`` client first; ``compute()`` then runs on that cluster::

    from dask.distributed import Client
    Client("tcp://scheduler:8786")          # or a LocalCluster, a Kubernetes cluster, ...
    out = ddf.stt.transcribe(col="audio_url", model="openai/whisper-1",
                             cache="/mnt/nfs/phaseo-cache", api_key=key)
    out.compute()

Each worker needs phaseo-notebook installed, access to the gateway, and, for ``cache``, the
same directory under the same path (local disk on a one-machine cluster, NFS or another
shared mount across machines), or an fsspec URL they can all reach (``s3://bucket/cache``,
``gs://...``, with the store's fsspec package installed on every worker). The gateway settings (``api_key``, ``base_url``, or
``client_kwargs``, or the settings of a ``pn.Client`` given as ``client``) are read where
``transcribe`` is called, environment fallbacks included, and travel to the workers inside
the task graph: use a key meant for the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from ._audio import is_missing, normalize_audio
from ._base_client import ClientSettings, PreparedCall, Timestamps
from ._batch import BatchResult, request_cache_key, run_request_sync
from ._budget import share_of_budget
from ._cache import Cache, default_cache_dir, resolve_cache
from ._client import AsyncClient, Client
from ._exceptions import AudioInputError, BudgetExceededError
from ._extras import require
from ._frames import OutputColumns, check_language_choice, require_column
from ._pricing import CURRENCY
from ._request import CacheArg, ErrorsMode, TranscribeRequest
from ._spend import measure_seconds, run_price
from ._types import ProviderOptions

_dd = require("dask.dataframe", "dask", purpose="ddf.stt (phaseo_notebook.dask)")

__all__ = ["SttDaskAccessor", "request_key"]

# Column names of the intermediate frames; unlikely to clash with anything of the user's.
_KEY = "__phaseo_key"
_AUDIO = "__phaseo_audio"
_LANGUAGE = "__phaseo_language"
_CACHED = "__phaseo_cached"
_SECONDS = "__phaseo_seconds"
#: The per-row lists of a BatchResult, carried from the distinct requests back to the rows.
_ROW_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(BatchResult)
    if isinstance(getattr(BatchResult.empty(0), f.name), list)
)


def request_key(value: object, language: object) -> str | None:
    """A key of the value and language as written: same value and language, same key.

    Cheap (no file is read): a partition works out the cache key of each distinct
    ``request_key`` once, however many of its rows repeat it. Returns None for rows the
    engine must check on their own (a missing or unsupported value, a language that is not
    a non-empty string): they are never sent.

    Examples
    --------
    >>> request_key("https://x/a.wav", None) == request_key("https://x/a.wav", float("nan"))
    True
    >>> request_key("https://x/a.wav", "en") == request_key("https://x/a.wav", None)
    False
    >>> request_key(None, None) is None
    True
    """
    if isinstance(value, str):
        kind, material = b"s", value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bytes | bytearray | memoryview):
        kind, material = b"b", hashlib.sha256(value).digest()
    elif isinstance(value, os.PathLike):
        kind, material = b"p", os.fsencode(value)
    else:
        return None
    if is_missing(language):
        lang = b""
    elif isinstance(language, str) and language.strip():
        lang = language.strip().encode("utf-8", "surrogatepass")
    else:
        return None
    digest = hashlib.blake2b(kind, digest_size=16)
    # Length-prefixed, so no value/language pair can spell another one.
    digest.update(len(material).to_bytes(8, "big"))
    digest.update(material)
    digest.update(lang)
    return digest.hexdigest()


def _cache_dir(cache: object) -> str | None:
    """Where every worker finds the cache: an absolute path or an fsspec URL; None for none."""
    if cache is None or cache is False:
        return None
    if cache is True:
        path = default_cache_dir()
    elif isinstance(cache, Cache):
        if isinstance(cache.path, str):
            return cache.path  # an fsspec URL: workers open it themselves
        path = cache.path
    elif isinstance(cache, str | os.PathLike):
        text = os.fspath(cache)
        text = text if isinstance(text, str) else os.fsdecode(text)
        if "://" in text:
            parts = urlsplit(text)
            if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
                if parts.scheme == "memory":
                    raise ValueError(
                        f"cache {text!r} lives in this process's memory, which the workers"
                        " cannot see; use a shared directory or an object store URL"
                    )
                return text
            text = parts.path
        path = Path(text).expanduser()
    else:
        raise TypeError(
            f"cache must be True, False, a directory path or a Cache, not {type(cache).__name__}"
        )
    # Workers may run with another working directory: give them an absolute path.
    return str(path.absolute())


def _client_settings(
    client: object,
    client_kwargs: Mapping[str, Any] | None,
    api_key: str | None,
    base_url: str | None,
) -> ClientSettings:
    """The settings that rebuild the caller's client on a worker.

    Resolved here, so that bad settings fail before anything is scheduled and the environment
    variables read are those of this process, not of the workers.
    """
    if client is not None:
        if client_kwargs is not None or api_key is not None or base_url is not None:
            raise ValueError("give either client= or client_kwargs=/api_key=/base_url=, not both")
        if not isinstance(client, Client | AsyncClient):
            raise TypeError(
                "client must be a phaseo_notebook Client or AsyncClient,"
                f" not {type(client).__name__}"
            )
        if client.has_custom_transport:
            raise TypeError(
                "a client with a custom transport cannot be sent to Dask workers;"
                " pass its settings as client_kwargs= instead"
            )
        return client.settings
    kwargs = dict(client_kwargs or {})
    if "transport" in kwargs:
        raise TypeError("client_kwargs cannot hold a transport: it cannot be sent to Dask workers")
    for name, value in (("api_key", api_key), ("base_url", base_url)):
        if value is not None:
            if name in kwargs:
                raise ValueError(f"{name} is given both directly and in client_kwargs")
            kwargs[name] = value
    with Client(**kwargs) as probe:
        return probe.settings


def _output_dtypes(columns: OutputColumns) -> dict[str, Any]:
    # A column pandas infers (the timestamp lists) is object, whatever the rows hold.
    return {name: object if dtype is None else dtype for name, dtype in columns.dtypes().items()}


@dataclasses.dataclass(frozen=True, slots=True)
class _Need:
    """What a set of distinct requests will send, for splitting a budget by audio length.

    ``known_ms`` is the audio of the requests whose length is known, in milliseconds
    (integers, so that the weights below are exact and the shares sum to the budget);
    ``known`` and ``unknown`` count the requests of known and unknown length. Cached
    requests cost nothing and are not counted.
    """

    known_ms: int = 0
    known: int = 0
    unknown: int = 0

    def weight(self, whole: _Need) -> tuple[int, int]:
        """``(this weight, the whole's)``: audio to send, a request of unknown length at
        the whole's mean known length; by request count when no length is known.

        Examples
        --------
        >>> whole = _Need(known_ms=6000, known=3, unknown=1)  # mean 2 s, 8 s in all
        >>> _Need(known_ms=2000, known=1, unknown=1).weight(whole)  # 4 s of 8
        (12000, 24000)
        >>> _Need(unknown=1).weight(_Need(unknown=4))
        (1, 4)
        """
        # Scaled by the whole's count of known lengths, so the mean needs no division.
        total = whole.known_ms * (whole.known + whole.unknown)
        if total > 0:
            return self.known_ms * whole.known + self.unknown * whole.known_ms, total
        return self.known + self.unknown, whole.known + whole.unknown


# --------------------------------------------------------------------------- on the workers


def _keyed(
    part: pd.DataFrame, col: str, language_col: str | None, call: PreparedCall
) -> pd.DataFrame:
    """The partition's audio, languages and cache keys (None where the engine refuses a row)."""
    values = part[col].tolist()
    if language_col is not None:
        languages = part[language_col].tolist()
    else:
        languages = [call.language] * len(part)
    # Rows repeating a value (and language) share one normalisation and one hash.
    memo: dict[str, str | None] = {}
    keys: list[str | None] = []
    for value, lang in zip(values, languages, strict=True):
        cheap = request_key(value, lang)
        if cheap is None:
            keys.append(None)
            continue
        if cheap not in memo:
            memo[cheap] = request_cache_key(value, lang, call, by_row=language_col is not None)
        keys.append(memo[cheap])
    return pd.DataFrame(
        {_KEY: keys, _AUDIO: values, _LANGUAGE: languages}, index=part.index, dtype=object
    )


def _distinct_requests(keyed: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct request key of a partition (rows with no key are left out)."""
    return keyed[keyed[_KEY].notna()].drop_duplicates(_KEY)


def _drop_duplicate_keys(part: pd.DataFrame) -> pd.DataFrame:
    return part.drop_duplicates(_KEY)


def _outcome_frame(keys: Sequence[Any], result: BatchResult) -> pd.DataFrame:
    columns = {_KEY: list(keys)}
    columns.update({name: getattr(result, name) for name in _ROW_FIELDS})
    # Object columns keep every value as the engine made it (None stays None).
    return pd.DataFrame(columns, dtype=object)


def _run_engine(
    request: TranscribeRequest, inputs: list[Any], languages: list[Any] | None
) -> BatchResult:
    return run_request_sync(request.with_inputs(inputs, languages))


def _audio_seconds(value: object) -> float | None:
    try:
        return measure_seconds([normalize_audio(value)])[0]
    except AudioInputError:  # gone since it was keyed: the engine will say so, unpaid
        return None


def _weigh(part: pd.DataFrame, cache: str | None) -> pd.DataFrame:
    """A partition of distinct requests, with which are cached and the others' lengths."""
    keys = part[_KEY].tolist()
    store = resolve_cache(cache) if cache and keys else None
    cached = [False] * len(keys) if store is None else (store.lookup(keys) >= 0).tolist()
    seconds = [
        None if hit else _audio_seconds(value)
        for value, hit in zip(part[_AUDIO].tolist(), cached, strict=True)
    ]
    return part.assign(
        **{_CACHED: pd.Series(cached, index=part.index, dtype=bool)},
        **{_SECONDS: pd.Series(seconds, index=part.index, dtype="float64")},
    )


def _need(part: pd.DataFrame) -> _Need:
    sent = part.loc[~part[_CACHED], _SECONDS]
    known = sent.dropna()
    return _Need(
        known_ms=sum(round(s * 1000) for s in known.tolist()),
        known=len(known),
        unknown=len(sent) - len(known),
    )


_NEED_FIELDS = tuple(f.name for f in dataclasses.fields(_Need))


def _need_frame(part: pd.DataFrame) -> pd.DataFrame:
    need = _need(part)
    return pd.DataFrame({name: [getattr(need, name)] for name in _NEED_FIELDS}, dtype=object)


def _with_share_note(text: str | None, note: str) -> str | None:
    prefix = f"{BudgetExceededError.__name__}:"
    return f"{text}{note}" if text is not None and text.startswith(prefix) else text


def _transcribe_distinct(
    part: pd.DataFrame,
    request: TranscribeRequest,
    by_row_language: bool,
    needs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Send a partition of distinct requests through the batch engine, with the cache.

    With ``needs`` (one row per partition: :func:`_need_frame`), ``request.budget`` is the
    whole run's and this partition runs on its share of it.
    """
    if part.empty:
        return _outcome_frame([], BatchResult.empty(0))
    note = ""
    if needs is not None and request.budget is not None:
        whole = _Need(**{name: int(needs[name].sum()) for name in _NEED_FIELDS})
        mine, total = _need(part).weight(whole)
        share = share_of_budget(request.budget, mine, total)
        note = (
            f" (this Dask partition's share of budget={request.budget:.6g} {CURRENCY},"
            " split by the audio each partition sends)"
        )
        request = replace(request, budget=share)
    languages = part[_LANGUAGE].tolist() if by_row_language else None
    try:
        result = _run_engine(request, part[_AUDIO].tolist(), languages)
    except BudgetExceededError as err:
        if not note:
            raise
        raise BudgetExceededError(
            f"{err}{note}", budget=err.budget, spent=err.spent, currency=err.currency
        ) from err
    if note:
        result.error = [_with_share_note(text, note) for text in result.error]
    return _outcome_frame(part[_KEY].tolist(), result)


def _attach(
    part: pd.DataFrame,
    keyed: pd.DataFrame,
    outcomes: pd.DataFrame,
    by_row_language: bool,
    columns: OutputColumns,
    request: TranscribeRequest,
    dtypes: Mapping[str, Any],
) -> pd.DataFrame:
    """Give every row of a partition the outcome of its request, as the pandas call would."""
    n = len(part)
    values = keyed[_AUDIO].tolist()
    languages = keyed[_LANGUAGE].tolist()
    keys = keyed[_KEY].tolist()
    positions = pd.Index(outcomes[_KEY]).get_indexer(pd.Index(keys, dtype=object)).tolist()
    lost = [r for r, (k, p) in enumerate(zip(keys, positions, strict=True)) if k and p < 0]
    if lost:
        raise RuntimeError(f"no outcome was computed for rows {lost[:5]} of a partition")
    result = BatchResult.empty(n)
    defaults = BatchResult.empty(1)
    for name in _ROW_FIELDS:
        column, default = outcomes[name].tolist(), getattr(defaults, name)[0]
        setattr(result, name, [column[p] if p >= 0 else default for p in positions])
    unkeyed = [r for r, k in enumerate(keys) if k is None]
    if unkeyed:
        # None, an unsupported type, a missing file or a bad language: the engine names the
        # problem, as with pandas, and sends nothing. With a budget, the least a gate holds:
        # a file that appeared since it was keyed is refused (once a price is known), not
        # paid for beside the partitions' shares.
        budget = None if request.budget is None else share_of_budget(request.budget, 0, 1)
        own = _run_engine(
            replace(request, cache=False, budget=budget),
            [values[r] for r in unkeyed],
            [languages[r] for r in unkeyed] if by_row_language else None,
        )
        for i, row in enumerate(unkeyed):
            for name in _ROW_FIELDS:
                getattr(result, name)[row] = getattr(own, name)[i]
    return columns.assign(part, result).astype(dict(dtypes))


# --------------------------------------------------------------------------- the accessor


@_dd.extensions.register_dataframe_accessor("stt")
class SttDaskAccessor:
    """``ddf.stt``: speech-to-text on a Dask DataFrame column (see the module docstring).

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd
    >>> import phaseo_notebook.dask
    >>> ddf = dd.from_pandas(pd.DataFrame({"audio": ["https://x/a.wav"]}), npartitions=1)
    >>> out = ddf.stt.transcribe(col="audio", model="local/fake", cache=False)
    >>> list(out.columns)
    ['audio', 'text', 'text_error']
    """

    def __init__(self, dask_obj: Any) -> None:
        self._obj = dask_obj

    def transcribe(
        self,
        col: str = "audio_url",
        *,
        model: str | None = None,
        language: str | None = None,
        language_col: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
        out_col: str = "text",
        concurrency: int = 16,
        cache: CacheArg = True,
        errors: ErrorsMode = "store",
        progress: bool = False,
        client: Client | AsyncClient | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        deadline: float | None = None,
        metadata: bool = False,
        timestamps: Timestamps | None = None,
        prompt: str | None = None,
        temperature: float | None = None,
        chain_prompt: bool = False,
        budget: float | None = None,
        prices: Mapping[str, float] | None = None,
    ) -> Any:
        """Transcribe the audio in ``col``; a lazy Dask DataFrame with the pandas call's columns.

        Parameters
        ----------
        col, model, language, language_col, provider, out_col, errors, metadata
            As for ``df.stt.transcribe``.
        timestamps, prompt, temperature, chain_prompt
            As for ``df.stt.transcribe``: ``timestamps`` adds ``f"{out_col}_segments"``
            (and ``f"{out_col}_words"``); all three request options are part of the cache
            key, the same key the pandas call gives the row.
        concurrency
            Requests in flight per partition being transcribed (a worker running T tasks at
            once has up to T x ``concurrency``).
        cache
            A directory every worker can open under the same path (``True``: the default
            cache directory of this machine, ``PHASEO_CACHE_DIR`` included; a
            :class:`Cache`: its directory), or ``False``. Relative paths are made absolute
            here. Each partition reads the cache's index once: compact a large cache
            (``pn.Cache(path).compact()``) to keep that quick.
        progress
            Ignored on workers, which never draw bars; Dask's own progress bar or dashboard
            shows the tasks.
        client
            A :class:`Client` or :class:`AsyncClient` whose settings the workers use (it
            cannot be sent itself); or give ``client_kwargs`` or ``api_key``/``base_url``.
        deadline
            Seconds for each partition's run.
        budget
            The most the whole run may spend, in USD. Split between the partitions that
            send, by the audio each will send (cached requests cost nothing), so the shares
            sum to the budget; each partition stops at its share, as the pandas call stops
            at its budget. With no known price, the sending runs in one task (``concurrency``
            requests in flight) so that one gate learns the cost (see "Budget" in the module
            docstring). Rows not sent get
            an error beginning ``BudgetExceededError:``; with ``errors="raise"`` it is raised
            once the finished rows are cached.
        prices
            As for ``df.stt.transcribe``; the price is resolved here, once (the gateway's
            catalog is read only when ``budget`` is given and ``prices`` does not name the
            model), and the workers use it.

        Returns
        -------
        dask.dataframe.DataFrame
            Lazy; ``compute()`` (or ``to_parquet``, ...) runs it.

        Raises
        ------
        KeyError
            ``col`` or ``language_col`` is not a column.
        ValueError, TypeError
            A bad argument, found before anything is scheduled.
        BudgetExceededError
            From ``compute()``, with ``errors="raise"``: a partition's share of ``budget``
            was used up.
        ConfigurationError
            Gateway settings that cannot work (no model while a gateway is configured, ...).

        Examples
        --------
        >>> out = ddf.stt.transcribe(col="audio", model="openai/whisper-1",
        ...                          cache="/mnt/shared/cache", api_key=key)  # doctest: +SKIP
        >>> out.compute()  # doctest: +SKIP
        """
        ddf = self._obj
        require_column(ddf._meta, col, "audio column")
        check_language_choice(language, language_col)
        if language_col is not None:
            require_column(ddf._meta, language_col, "language column")
        settings = _client_settings(client, client_kwargs, api_key, base_url)
        cache_dir = _cache_dir(cache)
        # Checked here, so bad arguments fail before anything is scheduled; the workers get
        # the settings (not the client) and the model chosen here.
        request = TranscribeRequest(
            [],
            model=model,
            language=language,
            provider=provider,
            out_col=out_col,
            concurrency=concurrency,
            cache=cache_dir or False,
            errors=errors,
            progress=False,
            client=settings,
            deadline=deadline,
            metadata=metadata,
            timestamps=timestamps,
            prompt=prompt,
            temperature=temperature,
            chain_prompt=chain_prompt,
            budget=budget,
            prices=prices,
        )
        price: float | None = None
        with Client.from_settings(settings) as probe:
            call = probe.prepare(
                request.model, request.language, request.provider, **request.call_options()
            )
            if request.budget is not None:
                price = run_price(
                    call.model, embedded=call.embedded, prices=request.prices, client=probe
                )
        request = replace(request, model=call.model, provider=call.provider)
        if price is not None:
            # Every partition estimates with the price found here; none asks the catalog.
            request = replace(request, prices={**(request.prices or {}), call.model: price})
        by_row_language = language_col is not None

        text_meta = pd.Series([], dtype=object)
        key_meta = pd.DataFrame({_KEY: text_meta, _AUDIO: text_meta, _LANGUAGE: text_meta})
        keyed = ddf.map_partitions(_keyed, col, language_col, call, meta=key_meta)
        distinct = keyed.map_partitions(_distinct_requests, meta=key_meta)
        # Hash-partitioned by key: each distinct request lands in exactly one partition.
        distinct = distinct.shuffle(
            _KEY, npartitions=ddf.npartitions, ignore_index=True, shuffle_method="tasks"
        ).map_partitions(_drop_duplicate_keys, meta=key_meta)
        outcome_meta = _outcome_frame([], BatchResult.empty(0))
        if request.budget is not None and price is None:
            # No price: one gate must learn the cost from an answer before sending more.
            outcomes = distinct.repartition(npartitions=1).map_partitions(
                _transcribe_distinct, request, by_row_language, meta=outcome_meta
            )
        elif request.budget is not None:
            weighed = distinct.map_partitions(
                _weigh,
                cache_dir,
                meta=key_meta.assign(
                    **{_CACHED: pd.Series([], dtype=bool), _SECONDS: pd.Series([], dtype=float)}
                ),
            )
            needs = weighed.map_partitions(
                _need_frame, meta=pd.DataFrame({n: text_meta for n in _NEED_FIELDS})
            )
            outcomes = weighed.map_partitions(
                _transcribe_distinct,
                request,
                by_row_language,
                # One partition: every partition sees what all of them will send.
                needs.repartition(npartitions=1),
                meta=outcome_meta,
                align_dataframes=False,
            )
        else:
            outcomes = distinct.map_partitions(
                _transcribe_distinct, request, by_row_language, meta=outcome_meta
            )
        columns = OutputColumns(out_col, metadata, timestamps)
        dtypes = _output_dtypes(columns)
        meta = columns.assign(ddf._meta, BatchResult.empty(0))
        return ddf.map_partitions(
            _attach,
            keyed,
            # One partition: Dask hands the whole table to every partition of the input.
            outcomes.repartition(npartitions=1),
            by_row_language,
            columns,
            request,
            dtypes,
            meta=meta.astype(dtypes),
            align_dataframes=False,
        )
