"""The run request: everything one batch run needs, checked once.

Every front (``df.stt.transcribe`` and ``atranscribe``, ``series.stt.transcribe``, Dask,
``df.stt.compare``, the CLI, the upload cell) builds a :class:`TranscribeRequest`; the batch
engine (:func:`._batch.run_request`) takes it. Construction validates every field, so a run
that starts has arguments that make sense, and the engine's hot path checks nothing again.

A new option is a new field with a neutral default; the engine passes it on to the client
(and so to the wire) only when it is set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ._base_client import ClientSettings, Timestamps, check_call_options
from ._cache import Cache
from ._client import AsyncClient, Client
from ._pricing import resolve_prices
from ._types import ProviderOptions

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_ROW_RETRIES",
    "CacheArg",
    "ErrorsMode",
    "TranscribeRequest",
    "check_concurrency",
]

ErrorsMode = Literal["store", "raise"]
CacheArg = bool | str | os.PathLike[str] | Cache | None

DEFAULT_FLUSH_INTERVAL = 2.0
#: Extra passes over rows whose request still failed transiently after the client's retries.
DEFAULT_ROW_RETRIES = 3


def check_concurrency(concurrency: object) -> int:
    """The one check of a ``concurrency`` argument.

    Raises
    ------
    ValueError
        Unless it is an integer >= 1.

    Examples
    --------
    >>> check_concurrency(4)
    4
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, not {concurrency!r}")
    return concurrency


def _check_budget(budget: object) -> None:
    if budget is not None and (
        isinstance(budget, bool)
        or not isinstance(budget, int | float)
        or not math.isfinite(budget)
        or budget <= 0
    ):
        raise ValueError(f"budget must be a positive, finite amount (USD) or None, not {budget!r}")


def _check_prices(prices: object) -> None:
    if prices is None:
        return
    if not isinstance(prices, Mapping) or not all(isinstance(k, str) and k for k in prices):
        raise TypeError(f"prices must be a mapping of model name to USD per minute, not {prices!r}")
    resolve_prices(prices)  # raises ValueError naming a bad price


def _check_deadline(deadline: object) -> None:
    if deadline is not None and (
        isinstance(deadline, bool)
        or not isinstance(deadline, int | float)
        or not math.isfinite(deadline)
        or deadline <= 0
    ):
        raise ValueError(
            f"deadline must be a positive, finite number of seconds or None, not {deadline!r}"
        )


@dataclass(frozen=True, slots=True)
class TranscribeRequest:
    """One batch run, described and checked in one place.

    Parameters
    ----------
    inputs
        Audio inputs (URLs, paths, bytes, data URIs), mixed freely.
    model, language, provider
        As for ``Client.transcribe``; ``language`` applies to every row.
    languages
        Per-row languages instead of ``language`` (None/NaN for "not given"); as many as
        ``inputs``.
    concurrency
        The most requests in flight at once.
    cache
        ``True`` (default directory), a directory or fsspec URL, a ``Cache``, or ``False``.
    errors
        ``"store"`` or ``"raise"``.
    progress
        Show a progress bar.
    client
        A ``Client`` or ``AsyncClient``, the ``ClientSettings`` to build one from (what
        travels to Dask workers), or None for one from the environment.
    deadline
        Seconds for the whole run, or None.
    metadata, out_col
        What the DataFrame fronts add: ``out_col`` names the text column and prefixes the
        others (see :mod:`._frames`); ``metadata`` adds the metadata columns.
    timestamps, prompt, temperature
        Optional request fields, sent only when set.
    row_retries, flush_interval, on_progress
        Engine tuning: times a row that kept failing transiently is put back in the queue;
        seconds between cache flushes (a killed process loses at most this much paid work);
        ``on_progress`` is called with ``(units done, units in all)`` on the engine's thread as
        work finishes (it must be quick; it drives a widget's progress bar). A unit is a row
        (cached, sent or failed), except that a long file sent as chunks counts one unit per
        chunk: the units in all start as the rows and grow when a file turns out to need
        chunks (see :class:`._progress.ProgressBar`).
    chain_prompt
        For a long file sent as chunks: each chunk's ``prompt`` ends with the previous
        chunk's text (consistent names across cuts; a file's chunks then go one at a time).
    budget
        The most the run may spend, in USD (the prices' and the gateway's currency), or
        None. Requests are admitted while spent + in flight + their estimate fit (see
        :mod:`._budget`); rows not sent get ``BudgetExceededError: ...`` as their error.
    prices
        ``{model: USD per minute}`` over the gateway's catalog and the built-in table
        (:mod:`._pricing`), for the budget's estimates.

    Raises
    ------
    ValueError, TypeError
        At construction, naming the argument (``concurrency``, ``errors``, ``deadline``,
        ``languages``, ``out_col``, ``timestamps``, ``prompt``, ``temperature``, ``client``,
        ``budget``, ``prices``).

    Examples
    --------
    >>> TranscribeRequest(["https://x/a.wav"], model="local/fake").concurrency
    16
    >>> TranscribeRequest([], concurrency=0)
    Traceback (most recent call last):
    ...
    ValueError: concurrency must be an integer >= 1, not 0
    """

    inputs: Sequence[object]
    model: str | None = None
    language: str | None = None
    languages: Sequence[object] | None = None
    provider: ProviderOptions | dict[str, Any] | None = None
    concurrency: int = 16
    cache: CacheArg = True
    errors: ErrorsMode = "store"
    progress: bool = True
    client: Client | AsyncClient | ClientSettings | None = None
    deadline: float | None = None
    metadata: bool = False
    out_col: str = "text"
    timestamps: Timestamps | None = None
    prompt: str | None = None
    temperature: float | None = None
    row_retries: int = DEFAULT_ROW_RETRIES
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    on_progress: Callable[[int, int], None] | None = None
    budget: float | None = None
    chain_prompt: bool = False
    prices: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        check_concurrency(self.concurrency)
        if self.errors not in ("store", "raise"):
            raise ValueError(f"errors must be 'store' or 'raise', not {self.errors!r}")
        if self.languages is not None and len(self.languages) != len(self.inputs):
            raise ValueError(
                f"languages has {len(self.languages)} values for {len(self.inputs)} inputs;"
                " they must match"
            )
        _check_deadline(self.deadline)
        if not isinstance(self.out_col, str) or not self.out_col:
            raise ValueError(f"out_col must be a non-empty string, not {self.out_col!r}")
        if self.client is not None and not isinstance(
            self.client, Client | AsyncClient | ClientSettings
        ):
            raise TypeError(
                "client must be a phaseo_notebook Client or AsyncClient,"
                f" not {type(self.client).__name__}"
            )
        check_call_options(self.timestamps, self.prompt, self.temperature)
        if not isinstance(self.chain_prompt, bool):
            raise TypeError(f"chain_prompt must be True or False, not {self.chain_prompt!r}")
        _check_budget(self.budget)
        _check_prices(self.prices)

    def with_inputs(
        self, inputs: Sequence[object], languages: Sequence[object] | None = None
    ) -> TranscribeRequest:
        """The same run over other inputs (a Dask partition, a subset of rows)."""
        return replace(self, inputs=inputs, languages=languages)

    def call_options(self) -> dict[str, Any]:
        """The optional request fields that are set, as ``prepare`` keyword arguments."""
        chosen = {
            "timestamps": self.timestamps,
            "prompt": self.prompt,
            "temperature": self.temperature,
        }
        return {k: v for k, v in chosen.items() if v is not None}
