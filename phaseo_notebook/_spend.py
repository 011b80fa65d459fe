"""What a run spends: the budget gate between the batch engine's workers and the client.

The batch engine owns one :class:`RunSpend` per run and sends every request through
:meth:`RunSpend.send`. Without a budget that only counts what the answers report (cost,
audio seconds) for the run summary and the progress bar. With ``budget=`` it follows the
protocol of :mod:`._budget`: a request waits until the :class:`~._budget.BudgetGate`
admits it (spent + reserved + its estimate within the budget, and at most
``gate.admission_limit(...)`` in flight), is settled with the cost its answer reports, and
released when it fails. A refusal with nothing in flight is final: that request and every
later one raise :class:`~phaseo_notebook.BudgetExceededError` without being sent, so their
rows get ``text_error`` beginning ``BudgetExceededError:``.

Where a run's price comes from (:func:`run_price`): ``prices=`` when it names the model;
else, for a model answered by a gateway, that gateway's catalog (``GET /models``, fetched
once, only then); else the built-in table of :mod:`._pricing`. A run with no known price
learns the cost from its answers.

The run summary (:func:`run_summary`) is what ``df.stt.transcribe`` puts in the returned
frame's ``attrs["stt"]``.

Examples
--------
>>> spend = RunSpend(budget=None, price_per_minute=None, limit=16)
>>> spend.gate is None, spend.spent
(True, 0.0)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._audio import AudioSource
from ._budget import BudgetGate, Reservation
from ._duration import audio_seconds
from ._exceptions import AudioInputError, BudgetExceededError
from ._pricing import CURRENCY, lookup_price, parse_catalog

if TYPE_CHECKING:
    from ._base_client import PreparedCall
    from ._client import AsyncClient, Client
    from ._types import TranscriptionResult

__all__ = ["RunSpend", "measure_seconds", "run_price", "run_summary"]

Send = Callable[
    [AudioSource, "PreparedCall", Callable[[Any], None]], Awaitable["TranscriptionResult"]
]


class RunSpend:
    """One run's account: an optional :class:`~._budget.BudgetGate` plus what answers cost.

    Parameters
    ----------
    budget : float or None
        The run's budget in USD; ``None``: no gate, only counting.
    price_per_minute : float or None
        The model's price (:func:`run_price`), for the gate's estimates.
    limit : int
        The engine's concurrency, which ``gate.admission_limit`` caps.
    on_cost : callable or None
        Called with each reported cost (the progress bar's spend).

    Examples
    --------
    >>> spend = RunSpend(budget=0.5, price_per_minute=0.006, limit=4)
    >>> spend.gate.admission_limit(4), spend.budget
    (4, 0.5)
    """

    def __init__(
        self,
        *,
        budget: float | None,
        price_per_minute: float | None,
        limit: int,
        on_cost: Callable[[float], None] | None = None,
    ) -> None:
        self.gate = (
            BudgetGate(budget, price_per_minute=price_per_minute) if budget is not None else None
        )
        self.budget = budget
        self.price_per_minute = price_per_minute
        self.limit = limit
        self._on_cost = on_cost
        self.reported = 0.0
        """Sum of the costs the answers reported."""
        self.answers = 0
        self.unpriced = 0
        """Answers that reported no cost."""
        self.audio_seconds = 0.0
        """Audio of the answered requests (their reported duration, else the measured one)."""
        self.refused = 0
        """Requests not sent because of the budget."""
        self.exhausted: str | None = None
        """The gate's final refusal, once the budget stopped the run."""
        self._changed: asyncio.Event | None = None

    @property
    def spent(self) -> float:
        """What the run spent: the gate's account with a budget, else the reported costs."""
        return self.gate.spent if self.gate is not None else self.reported

    async def send(
        self,
        send: Send,
        source: AudioSource,
        call: PreparedCall,
        on_retry: Callable[[Any], None],
        seconds: float | None,
    ) -> TranscriptionResult:
        """``send(source, call, on_retry)`` once the budget admits it; count its answer.

        Raises
        ------
        BudgetExceededError
            The budget refused the request for good; nothing was sent.
        """
        gate = self.gate
        if gate is None:
            answer = await send(source, call, on_retry)
            self._count(answer, seconds)
            return answer
        ticket = await self._admit(gate, seconds)
        if ticket is None:
            self.refused += 1
            err = gate.error()
            raise BudgetExceededError(
                self.exhausted or str(err), budget=err.budget, spent=err.spent
            )
        try:
            answer = await send(source, call, on_retry)
        except BaseException:
            gate.release(ticket)
            self._wake()
            raise
        gate.settle(ticket, answer.cost, seconds=answer.duration or seconds)
        self._count(answer, seconds)
        self._wake()
        return answer

    async def _admit(self, gate: BudgetGate, seconds: float | None) -> Reservation | None:
        while self.exhausted is None:
            if gate.in_flight < gate.admission_limit(self.limit):
                ticket = gate.try_reserve(gate.estimate(seconds))
                if ticket is not None:
                    return ticket
                if gate.in_flight == 0:
                    # Nothing in flight can free room: the refusal is final.
                    self.exhausted = gate.refusal
                    self._wake()
                    break
            # Something is in flight: its answer settles below its estimate or teaches the
            # cost, so ask again when it comes.
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
        return None

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _count(self, answer: TranscriptionResult, seconds: float | None) -> None:
        self.answers += 1
        length = answer.duration if answer.duration is not None else seconds
        if length is not None and math.isfinite(length) and length > 0:
            self.audio_seconds += length
        if answer.cost is None:
            self.unpriced += 1
            return
        self.reported += answer.cost
        if self._on_cost is not None:
            self._on_cost(answer.cost)


def measure_seconds(sources: Iterable[AudioSource]) -> list[float | None]:
    """The audio length of each source from its header (:func:`audio_seconds`), or None.

    Each distinct source object is read once; URLs and unreadable audio give None.

    Examples
    --------
    >>> from phaseo_notebook._audio import normalize_audio
    >>> measure_seconds([normalize_audio("https://x/a.wav")])
    [None]
    """
    seen: dict[int, float | None] = {}
    out: list[float | None] = []
    for src in sources:
        key = id(src)
        if key not in seen:
            try:
                seen[key] = audio_seconds(src)
            except (AudioInputError, OSError):  # vanished since planning: its send will say
                seen[key] = None
        out.append(seen[key])
    return out


def run_price(
    model: str,
    *,
    embedded: bool,
    prices: Mapping[str, float] | None,
    client: Client | AsyncClient | None,
) -> float | None:
    """The price per minute a run of ``model`` uses, or None when no source names it.

    The gateway's catalog is fetched (blocking, a few seconds at most) only for a model a
    gateway answers whose price ``prices`` does not give; in-process models never ask.

    Examples
    --------
    >>> run_price("openai/whisper-1", embedded=False, prices={"openai/whisper-1": 0.01},
    ...           client=None)
    0.01
    >>> run_price("local/fake", embedded=True, prices=None, client=None)
    0.0
    """
    if (prices is not None and model in prices) or embedded:
        return lookup_price(model, prices=prices)
    from ._client import fetch_catalog

    catalog = parse_catalog({"data": fetch_catalog(client)})
    return lookup_price(model, prices=prices, catalog=catalog)


def run_summary(
    *,
    model: str | None,
    rows: int,
    requests: int,
    cache_hits: int,
    errors: int,
    elapsed: float,
    spend: RunSpend | None,
) -> dict[str, Any]:
    """The run summary a frame carries in ``attrs["stt"]``.

    Keys: ``model``; ``rows``; ``requests`` (sent in this run, resends included);
    ``cache_hits`` (distinct inputs the cache answered: free); ``audio_minutes`` (audio of
    the requests answered in this run); ``spent`` (what this run cost: the reported costs,
    one per request however many rows share it, or with a budget the gate's account, which
    counts an answer without a cost at its estimate; ``None`` when answers reported no
    cost); ``currency``; ``budget`` (or ``None``); ``not_sent_budget`` (requests not sent
    because the budget ran out); ``errors`` (rows that failed); ``elapsed_s``.

    Examples
    --------
    >>> run_summary(model="m", rows=2, requests=1, cache_hits=1, errors=0, elapsed=0.5,
    ...             spend=None)["spent"] is None
    True
    """
    spent: float | None = None
    audio = 0.0
    budget = None
    refused = 0
    if spend is not None:
        audio = spend.audio_seconds
        budget = spend.budget
        refused = spend.refused
        if spend.gate is not None or spend.answers > spend.unpriced or spend.answers == 0:
            spent = round(spend.spent, 9)
    return {
        "model": model,
        "rows": rows,
        "requests": requests,
        "cache_hits": cache_hits,
        "audio_minutes": audio / 60.0,
        "spent": spent,
        "currency": CURRENCY,
        "budget": budget,
        "not_sent_budget": refused,
        "errors": errors,
        "elapsed_s": elapsed,
    }
