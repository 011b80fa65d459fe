"""Fault injection: what goes wrong, and the pure decision of what goes wrong *this* time.

:class:`Faults` is the configuration (frozen, validated, JSON round-trippable so the
admin route of a gateway in another process can take it). :func:`decide` is a pure
function of the faults, a seeded :class:`random.Random` and the request's index, so a
test with a ``seed`` sees the same sequence of faults on every run.
:class:`FaultInjector` holds the mutable part (the generator and the counter) behind a
lock, so faults can be swapped from another thread while the server runs.
"""

from __future__ import annotations

import enum
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["FaultDecision", "FaultInjector", "FaultKind", "Faults", "decide"]

_RATE_FIELDS = ("drop_rate", "error_rate", "non_json_rate", "truncated_rate", "slow_rate")


@dataclass(frozen=True, slots=True)
class Faults:
    """What the local gateway should do wrong, for transcription requests only.

    Rates are fractions of requests in ``[0, 1]``; one random draw per request picks at
    most one of drop / error / non-JSON / truncated / slow, so the rates add up (their
    sum must not exceed 1) and never stack on the same request. ``latency`` applies to
    every answer, faulty or not.

    Parameters
    ----------
    latency : float
        Seconds added before every transcription answer (an ``asyncio.sleep``).
    error_rate : float
        Fraction answered with an error status drawn from ``error_statuses``.
    error_statuses : tuple of int
        Statuses for ``error_rate``; each gets the live gateway's body for it (429
        ``key_limit_exceeded`` with ``reset_at``, 500 ``gateway_error``, 502
        ``upstream_error`` with ``failed_statuses``, 503 ``service_unavailable``, ...).
    retry_after : float or None
        When set, 429 and 503 answers carry ``Retry-After`` (seconds, may be
        fractional) and ``retry-after-ms``. The live gateway sends neither.
    drop_rate : float
        Fraction whose connection is closed without any answer.
    slow_rate : float
        Fraction answered only after ``slow_seconds`` more (to trip client timeouts).
    slow_seconds : float
        The extra delay of a slow answer.
    truncated_rate : float
        Fraction answered 200 with the JSON body cut in half.
    non_json_rate : float
        Fraction answered 502 with an HTML page, as a proxy in front would.
    fail_status : int or None
        Status of the first ``fail_first`` answers (deterministic tests).
    fail_first : int
        How many transcription requests, counted from when these faults were set,
        answer ``fail_status`` before anything else applies.
    seed : int or None
        Seed of the random draws; ``None`` draws from system entropy.

    Raises
    ------
    ValueError
        If a rate is outside ``[0, 1]``, the rates sum above 1, a delay is negative, a
        status is not 4xx/5xx, or ``fail_first`` is set without ``fail_status``.

    Examples
    --------
    >>> Faults(latency=0.1, error_rate=0.2, error_statuses=(503,), seed=7).error_rate
    0.2
    >>> Faults(fail_status=429, fail_first=2).to_dict()["fail_first"]
    2
    """

    latency: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (429, 500, 502, 503)
    retry_after: float | None = None
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 30.0
    truncated_rate: float = 0.0
    non_json_rate: float = 0.0
    fail_status: int | None = None
    fail_first: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        # JSON gives lists; a tuple keeps the dataclass hashable and immutable.
        object.__setattr__(self, "error_statuses", tuple(self.error_statuses))
        for name in ("latency", "slow_seconds"):
            _check_seconds(name, getattr(self, name))
        if self.retry_after is not None:
            _check_seconds("retry_after", self.retry_after)
        total = 0.0
        for name in _RATE_FIELDS:
            rate = getattr(self, name)
            if not _is_number(rate) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"Faults.{name} must be a number in [0, 1], got {rate!r}")
            total += rate
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"Faults rates ({', '.join(_RATE_FIELDS)}) must sum to at most 1, got {total:g}"
            )
        if self.error_rate > 0 and not self.error_statuses:
            raise ValueError("Faults.error_statuses must not be empty when error_rate > 0")
        for status in self.error_statuses:
            _check_status("error_statuses", status)
        if self.fail_status is not None:
            _check_status("fail_status", self.fail_status)
        if isinstance(self.fail_first, bool) or not isinstance(self.fail_first, int):
            raise ValueError(f"Faults.fail_first must be an int, got {self.fail_first!r}")
        if self.fail_first < 0:
            raise ValueError(f"Faults.fail_first must be >= 0, got {self.fail_first}")
        if self.fail_first > 0 and self.fail_status is None:
            raise ValueError("Faults.fail_first needs fail_status")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"Faults.seed must be an int or None, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``error_statuses`` as a list).

        Examples
        --------
        >>> Faults().to_dict()["error_statuses"]
        [429, 500, 502, 503]
        """
        out = asdict(self)
        out["error_statuses"] = list(self.error_statuses)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build faults from a mapping of field names, e.g. a JSON admin request.

        Fields not given take their defaults, so this *replaces* the faults.

        Raises
        ------
        ValueError
            On an unknown field name or an invalid value.

        Examples
        --------
        >>> Faults.from_dict({"error_rate": 1, "error_statuses": [503]}).error_statuses
        (503,)
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Faults field(s): {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as err:
            # e.g. error_statuses given as a number: tuple() of it fails.
            raise ValueError(f"invalid Faults: {err}") from err


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_seconds(name: str, value: object) -> None:
    if not _is_number(value) or value < 0:  # type: ignore[operator]
        raise ValueError(f"Faults.{name} must be a number of seconds >= 0, got {value!r}")


def _check_status(name: str, status: object) -> None:
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"Faults.{name} must hold HTTP error statuses (400-599), got {status!r}")


_NO_FAULTS = Faults()


class FaultKind(enum.Enum):
    """What happens to one request."""

    NONE = "none"
    ERROR = "error"
    DROP = "drop"
    SLOW = "slow"
    TRUNCATED = "truncated"
    NON_JSON = "non_json"


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """The fate of one request.

    Parameters
    ----------
    kind : FaultKind
        Which fault, if any.
    delay : float
        Seconds to wait before answering (latency, plus ``slow_seconds`` if slow).
    status : int or None
        The error status, for ``ERROR``.
    retry_after : float or None
        The ``Retry-After`` to send with that status, if any.
    """

    kind: FaultKind
    delay: float = 0.0
    status: int | None = None
    retry_after: float | None = None


def decide(faults: Faults, rng: random.Random, index: int) -> FaultDecision:
    """Decide the fault for the ``index``-th (0-based) request under ``faults``.

    Pure apart from advancing ``rng``: ``fail_first`` is checked first, then one draw
    from ``rng`` falls into at most one rate's slice of ``[0, 1)``, then (for errors)
    a second draw picks the status.

    Parameters
    ----------
    faults : Faults
        The configuration.
    rng : random.Random
        The generator; seeded for reproducible sequences.
    index : int
        How many transcription requests came before this one under these faults.

    Returns
    -------
    FaultDecision

    Examples
    --------
    >>> decide(Faults(fail_status=503, fail_first=1), random.Random(0), 0).status
    503
    >>> decide(Faults(fail_status=503, fail_first=1), random.Random(0), 1).kind
    <FaultKind.NONE: 'none'>
    """
    latency = faults.latency
    if index < faults.fail_first and faults.fail_status is not None:
        return _error(faults, faults.fail_status, latency)
    draw = rng.random()
    for name, kind in _DRAW_ORDER:
        rate: float = getattr(faults, name)
        if draw < rate:
            if kind is FaultKind.ERROR:
                return _error(faults, rng.choice(faults.error_statuses), latency)
            if kind is FaultKind.SLOW:
                return FaultDecision(kind, delay=latency + faults.slow_seconds)
            return FaultDecision(kind, delay=latency)
        draw -= rate
    return FaultDecision(FaultKind.NONE, delay=latency)


_DRAW_ORDER = (
    ("drop_rate", FaultKind.DROP),
    ("error_rate", FaultKind.ERROR),
    ("non_json_rate", FaultKind.NON_JSON),
    ("truncated_rate", FaultKind.TRUNCATED),
    ("slow_rate", FaultKind.SLOW),
)


def _error(faults: Faults, status: int, latency: float) -> FaultDecision:
    retry_after = faults.retry_after if status in (429, 503) else None
    return FaultDecision(FaultKind.ERROR, delay=latency, status=status, retry_after=retry_after)


class FaultInjector:
    """The current faults with their generator and request counter; thread-safe.

    Parameters
    ----------
    faults : Faults or None
        The initial faults (none by default).

    Examples
    --------
    >>> injector = FaultInjector(Faults(fail_status=500, fail_first=1))
    >>> injector.next().status, injector.next().kind
    (500, <FaultKind.NONE: 'none'>)
    """

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = _NO_FAULTS
        self._rng = random.Random()
        self._index = 0
        self._active = False
        self.set(faults or _NO_FAULTS)

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults

    def set(self, faults: Faults) -> None:
        """Replace the faults; restarts the ``fail_first`` count and the random sequence."""
        with self._lock:
            self._faults = faults
            self._rng = random.Random(faults.seed)
            self._index = 0
            # Decided once here so the common no-fault path costs one attribute read.
            self._active = faults != _NO_FAULTS

    def next(self) -> FaultDecision:
        """Decide the fault for the next transcription request."""
        with self._lock:
            if not self._active:
                return _NO_DECISION
            decision = decide(self._faults, self._rng, self._index)
            self._index += 1
            return decision


_NO_DECISION = FaultDecision(FaultKind.NONE)
