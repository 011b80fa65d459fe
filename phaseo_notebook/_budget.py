"""The budget gate: a request is sent only if what is spent, reserved and its estimate fit.

:class:`BudgetGate` is a pure, synchronous account (no I/O, no asyncio, no clock). The batch
engine owns one per run with ``budget=`` and consults it in the same place as its
concurrency limit, from its event loop:

1. **Before dispatch**: ``reservation = gate.try_reserve(gate.estimate(seconds))``, where
   ``seconds`` is the job's audio length (:func:`phaseo_notebook._duration.audio_seconds`,
   or the chunk's span) or ``None`` when unknown. The number of jobs in flight is capped by
   ``gate.admission_limit(limit)`` as well as by the engine's own limit: with no price and
   no answer yet, that is 1, so the first answer teaches the cost before more are sent.
2. **On an answer**: ``gate.settle(reservation, result.cost, seconds=result.duration or
   seconds)``. The reported cost is what counts as spent; it also teaches the gate the cost
   per audio-second and per request, for the estimates of models with no known price.
3. **On a failure** (an error answer, a request never sent, a cancelled run):
   ``gate.release(reservation)``: nothing was charged.
4. **On a refusal** (``try_reserve`` returned ``None``): if ``gate.in_flight`` is not zero,
   wait for an answer and ask again (answers below their estimate free room). If nothing is
   in flight the refusal is final: stop dispatching; each remaining row gets ``text_error``
   ``"BudgetExceededError: " + gate.refusal`` (``gate.error()`` builds the exception for
   ``errors="raise"``, raised after finished rows are saved to the cache).

Guarantees (pinned by the tests):

- A request is admitted only if ``spent + reserved + estimate <= budget``. So at every
  admission ``spent <= budget``, and the run's final spend is at most the budget plus the
  actual cost of the requests that were in flight after the last admission: the overspend
  is never more than what was in flight when the budget ran out. When answers cost what
  was estimated, the spend never exceeds the budget at all.
- A run uses most of its budget: money is counted in integer nano-units (as the gateway
  reports ``cost_nanos``), so a run of equal requests of cost ``c`` admits exactly
  ``floor(budget / c)`` of them, with no early stop from rounding.
- A request with no estimate (no price, no cost observed yet) is admitted only when nothing
  else is in flight. If its answer reports no cost either, the budget cannot be held and
  every further request is refused, with a message saying to pass ``prices=``.

Accounting choices: an answer that reports no cost for a request that had an estimate is
counted at its estimate (the safe side: a budget may stop early, never late). Estimates
come from the price (USD per minute x audio seconds) when known; else from the cost per
audio-second observed in this run; for a request of unknown length, from the mean observed
cost per request.

Examples
--------
>>> gate = BudgetGate(0.01, price_per_minute=0.006)
>>> r = gate.try_reserve(gate.estimate(60.0))
>>> r is not None, gate.reserved
(True, 0.006)
>>> gate.try_reserve(gate.estimate(60.0)) is None  # 0.006 + 0.006 > 0.01
True
>>> gate.settle(r, 0.006)
0.006
>>> gate.spent, gate.in_flight
(0.006, 0)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from ._exceptions import BudgetExceededError
from ._pricing import CURRENCY

__all__ = ["BudgetGate", "Reservation", "share_of_budget"]

_NANOS_PER_UNIT = 1_000_000_000


def _to_nanos(amount: float, what: str) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise TypeError(f"{what} must be a number, got {type(amount).__name__}")
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{what} must be a finite, non-negative number, got {amount!r}")
    return round(amount * _NANOS_PER_UNIT)


def _to_units(nanos: int) -> float:
    return nanos / _NANOS_PER_UNIT


def _fmt(nanos: int) -> str:
    return f"{_to_units(nanos):.6g}"


def share_of_budget(budget: float, part: int, whole: int) -> float:
    """The part of ``budget`` that ``part`` out of ``whole`` gets, rounded down to the nano.

    For a run split into pieces that each hold their own :class:`BudgetGate` (the Dask
    front's partitions): with integer weights summing to ``whole``, the shares sum to at
    most ``budget``, exactly, since each is rounded down in the gate's nano-units. A share
    is never below one nano-unit, because a gate needs a budget to refuse with: a piece of
    weight 0 (it expects to send nothing, its requests are cached) gets that nano-unit on
    top, which no request it estimates fits in.

    Raises
    ------
    ValueError
        If ``part`` is negative or more than ``whole``.

    Examples
    --------
    >>> share_of_budget(0.03, 1, 4)
    0.0075
    >>> share_of_budget(1.0, 1, 3) + share_of_budget(1.0, 2, 3) <= 1.0
    True
    >>> share_of_budget(0.03, 0, 4)  # a piece that expects to spend nothing
    1e-09
    """
    if not 0 <= part <= whole:
        raise ValueError(f"a share must be 0 to {whole} parts, not {part}")
    nanos = _to_nanos(budget, "budget") * part // whole if whole else 0
    return _to_units(max(nanos, 1))


@dataclass(frozen=True, slots=True)
class Reservation:
    """A request admitted by a :class:`BudgetGate`, holding its estimated cost.

    Attributes
    ----------
    id
        Unique within its gate.
    estimate
        The cost reserved, in the budget's currency; ``None`` for a request admitted with
        no estimate (nothing else in flight, nothing known yet).
    """

    id: int
    estimate: float | None
    _nanos: int = field(repr=False, compare=False)


class BudgetGate:
    """The account of one budgeted run: spent, reserved, and what may be sent next.

    Parameters
    ----------
    budget : float
        The most the run may spend, in ``currency`` (USD: the prices' and the gateway's
        currency).
    price_per_minute : float or None
        The model's price per minute of audio, when known
        (:func:`phaseo_notebook._pricing.lookup_price`); ``None`` to learn the cost from the
        answers.
    currency : str
        The budget's currency, for messages.

    Raises
    ------
    ValueError
        If ``budget`` or ``price_per_minute`` is negative or not finite.

    Examples
    --------
    >>> gate = BudgetGate(1.0)               # no price: learn it from the first answer
    >>> gate.admission_limit(16)
    1
    >>> r = gate.try_reserve(gate.estimate(30.0))
    >>> gate.settle(r, 0.002, seconds=30.0)
    0.002
    >>> gate.admission_limit(16), round(gate.estimate(60.0), 9)
    (16, 0.004)
    """

    def __init__(
        self, budget: float, *, price_per_minute: float | None = None, currency: str = CURRENCY
    ) -> None:
        self._budget = _to_nanos(budget, "budget")
        if price_per_minute is not None:
            _to_nanos(price_per_minute, "price_per_minute")
        self.price_per_minute = price_per_minute
        self.currency = currency
        self._spent = 0
        self._reserved = 0
        self._open: dict[int, Reservation] = {}
        self._ids = itertools.count()
        # What answers taught: cost per audio-second (over answers of known length) and
        # cost per request (over all answers with a cost).
        self._observed_cost = 0
        self._observed_requests = 0
        self._timed_cost = 0
        self._timed_seconds = 0.0
        self.unpriced = 0
        """Answers that reported no cost for a request that had no estimate either."""
        self.settled = 0
        """Requests settled (answered)."""
        self.refusal: str | None = None
        """Why the last :meth:`try_reserve` refused, or ``None`` if it admitted."""

    # -- the account ----------------------------------------------------------------------

    @property
    def budget(self) -> float:
        """The budget, in ``currency``."""
        return _to_units(self._budget)

    @property
    def spent(self) -> float:
        """What the settled requests cost (reported costs, or estimates where none was)."""
        return _to_units(self._spent)

    @property
    def reserved(self) -> float:
        """The estimates of the requests in flight."""
        return _to_units(self._reserved)

    @property
    def remaining(self) -> float:
        """``budget - spent - reserved`` (negative once the in-flight answers overshot)."""
        return _to_units(self._budget - self._spent - self._reserved)

    @property
    def in_flight(self) -> int:
        """Reservations neither settled nor released."""
        return len(self._open)

    @property
    def has_estimates(self) -> bool:
        """Whether any request can be estimated: a price is known or an answer had a cost."""
        return self.price_per_minute is not None or self._observed_requests > 0

    # -- decisions ------------------------------------------------------------------------

    def estimate(self, seconds: float | None) -> float | None:
        """The expected cost of a request of ``seconds`` of audio (``None``: unknown length).

        From the price when known; else from the cost per audio-second observed so far;
        for an unknown length, from the mean observed cost per request. ``None`` when
        nothing is known yet.

        Examples
        --------
        >>> BudgetGate(1.0, price_per_minute=0.006).estimate(120.0)
        0.012
        >>> BudgetGate(1.0).estimate(120.0) is None
        True
        """
        if seconds is not None and (not math.isfinite(seconds) or seconds < 0):
            seconds = None
        if seconds is not None and self.price_per_minute is not None:
            return _to_units(round(self.price_per_minute * seconds / 60 * _NANOS_PER_UNIT))
        if seconds is not None and self._timed_seconds > 0:
            return _to_units(round(self._timed_cost * seconds / self._timed_seconds))
        if self._observed_requests > 0:
            return _to_units(round(self._observed_cost / self._observed_requests))
        return None

    def admission_limit(self, limit: int) -> int:
        """How many requests may be in flight, given the engine's own ``limit``.

        1 until a request can be estimated (no price and no answer with a cost yet), so
        the run starts slow and learns the cost from one answer; then ``limit``.

        Examples
        --------
        >>> BudgetGate(1.0, price_per_minute=0.006).admission_limit(32)
        32
        """
        return limit if self.has_estimates else min(limit, 1)

    def try_reserve(self, estimate: float | None) -> Reservation | None:
        """Admit a request whose cost is ``estimate``, or refuse it (``None``).

        Admitted iff ``spent + reserved + estimate <= budget``. With ``estimate=None``
        (nothing known yet, see :meth:`estimate`) it is admitted only as the single request
        in flight, while the budget is not spent, and never again after an answer reported
        no cost. On a refusal :attr:`refusal` says why.

        Examples
        --------
        >>> gate = BudgetGate(0.5)
        >>> [gate.try_reserve(0.2) is not None for _ in range(3)]
        [True, True, False]
        >>> gate.refusal
        'budget of 0.5 USD would be exceeded: spent 0, in flight 0.4 (2 requests), next request estimated at 0.2'
        """
        if estimate is None:
            nanos = 0
            if self.unpriced:
                return self._refuse(
                    f"the cost of a request is unknown: no price is known for the model and "
                    f"{self.unpriced} answer(s) reported no cost, so a budget of "
                    f"{_fmt(self._budget)} {self.currency} cannot be held; pass prices="
                )
            if self._open:
                return self._refuse(
                    "the cost of a request is not known yet: waiting for the answer in flight"
                )
            if self._spent >= self._budget:
                return self._refuse(self._over_message(None))
        else:
            nanos = _to_nanos(estimate, "estimate")
            if self._spent + self._reserved + nanos > self._budget:
                return self._refuse(self._over_message(nanos))
        reservation = Reservation(next(self._ids), estimate, nanos)
        self._open[reservation.id] = reservation
        self._reserved += nanos
        self.refusal = None
        return reservation

    def settle(
        self, reservation: Reservation, actual_cost: float | None, *, seconds: float | None = None
    ) -> float:
        """Close an answered request: count its cost as spent.

        Parameters
        ----------
        reservation : Reservation
            From :meth:`try_reserve`.
        actual_cost : float or None
            The cost the gateway reported (``TranscriptionResult.cost``); ``None`` counts the
            estimate instead (and, with no estimate, nothing, but the gate then refuses
            requests it cannot estimate).
        seconds : float or None
            The request's audio length (the answer's ``duration``, else what was estimated
            from), so the gate learns the cost per audio-second.

        Returns
        -------
        float
            The amount counted as spent.

        Raises
        ------
        ValueError
            If the reservation is not open in this gate (settled or released already), or
            ``actual_cost`` is negative or not finite.
        """
        self._close(reservation)
        if actual_cost is not None:
            counted = _to_nanos(actual_cost, "actual_cost")
            self._observe_nanos(counted, seconds)
        elif reservation.estimate is not None:
            counted = reservation._nanos
        else:
            counted = 0
            self.unpriced += 1
        self._spent += counted
        self.settled += 1
        return _to_units(counted)

    def release(self, reservation: Reservation) -> None:
        """Close a request that was not charged (failed, never sent, cancelled).

        Raises
        ------
        ValueError
            If the reservation is not open in this gate.
        """
        self._close(reservation)

    def observe(self, cost: float, seconds: float | None) -> None:
        """Learn from a cost seen outside :meth:`settle` (e.g. an earlier run of the model).

        Does not count as spent.

        Examples
        --------
        >>> gate = BudgetGate(1.0)
        >>> gate.observe(0.001, 10.0)
        >>> gate.estimate(20.0)
        0.002
        """
        self._observe_nanos(_to_nanos(cost, "cost"), seconds)

    def error(self) -> BudgetExceededError:
        """The :class:`~phaseo_notebook.BudgetExceededError` for the last refusal."""
        message = self.refusal or self._over_message(None)
        return BudgetExceededError(
            message, budget=self.budget, spent=self.spent, currency=self.currency
        )

    def __repr__(self) -> str:
        return (
            f"BudgetGate(budget={_fmt(self._budget)} {self.currency}, spent={_fmt(self._spent)}, "
            f"reserved={_fmt(self._reserved)}, in_flight={self.in_flight})"
        )

    # -- internals ------------------------------------------------------------------------

    def _close(self, reservation: Reservation) -> None:
        if self._open.get(reservation.id) is not reservation:
            raise ValueError(f"{reservation!r} is not open in this budget gate")
        del self._open[reservation.id]
        self._reserved -= reservation._nanos

    def _observe_nanos(self, nanos: int, seconds: float | None) -> None:
        self._observed_cost += nanos
        self._observed_requests += 1
        if seconds is not None and math.isfinite(seconds) and seconds > 0:
            self._timed_cost += nanos
            self._timed_seconds += seconds

    def _refuse(self, message: str) -> Reservation | None:
        self.refusal = message
        return None

    def _over_message(self, nanos: int | None) -> str:
        flight = f"in flight {_fmt(self._reserved)} ({self.in_flight} requests)"
        head = f"budget of {_fmt(self._budget)} {self.currency} would be exceeded"
        if nanos is None:
            head = f"budget of {_fmt(self._budget)} {self.currency} reached"
        tail = f", next request estimated at {_fmt(nanos)}" if nanos is not None else ""
        return f"{head}: spent {_fmt(self._spent)}, {flight}{tail}"
