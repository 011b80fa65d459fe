"""What a run would send and cost, computed before sending anything.

The batch engine's planning turns a column into jobs (one per row, or one per chunk of a
long file), each with its cache key and audio length, and checks the cache. The pure
function :func:`estimate_model` turns those ``(key, seconds)`` pairs, the set of keys
already cached and the model's price into a :class:`ModelEstimate`; an :class:`Estimate`
gathers one per model (a comparison of several models is one estimate with several rows).

Counting rules:

- ``requests`` are the distinct keys not in the cache: what would be sent. Chunks of a long
  file are jobs with keys of their own, so they count one request each.
- ``cached`` are the distinct keys the cache already answers: free.
- ``audio_seconds`` is the audio of the ``requests``, from the lengths that could be read
  (``unknown_durations`` counts the requests whose length could not, e.g. URLs).
- ``cost`` is ``price x audio minutes``, with each request of unknown length counted at the
  mean known length; ``None`` when the model has no known price, or no length is known.

Examples
--------
>>> part = estimate_model([("a", 60.0), ("a", 60.0), ("b", 30.0)], model="openai/whisper-1",
...                       cached_keys={"b"}, price_per_minute=0.006)
>>> part.requests, part.cached, part.audio_seconds, part.cost
(1, 1, 60.0, 0.006)
>>> Estimate((part,))
Estimate: 1 request, 1 cached, 1.00 audio minutes, cost 0.006 USD
  model             requests  cached  audio min  USD/min  cost
  openai/whisper-1         1       1       1.00    0.006  0.006
"""

from __future__ import annotations

import html
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ._pricing import CURRENCY

__all__ = ["Estimate", "ModelEstimate", "estimate_model"]


@dataclass(frozen=True, slots=True)
class ModelEstimate:
    """The estimate of one model's share of a run.

    Attributes
    ----------
    model
        The model id.
    jobs
        Jobs planned, duplicates included (rows, or chunks of rows).
    requests
        Distinct jobs not in the cache: what would be sent.
    cached
        Distinct jobs the cache answers.
    audio_seconds
        Audio of the ``requests`` whose length is known.
    unknown_durations
        ``requests`` whose length could not be read.
    price_per_minute
        The price used, or ``None`` when unknown.
    cost
        Estimated cost of the ``requests`` in ``currency``, or ``None``.
    currency
        The currency of ``cost`` and ``price_per_minute``.
    """

    model: str
    jobs: int
    requests: int
    cached: int
    audio_seconds: float
    unknown_durations: int
    price_per_minute: float | None
    cost: float | None
    currency: str = CURRENCY


def estimate_model(
    jobs: Iterable[tuple[str, float | None]],
    *,
    model: str,
    cached_keys: Collection[str] = frozenset(),
    price_per_minute: float | None,
    currency: str = CURRENCY,
) -> ModelEstimate:
    """Estimate one model's requests, audio and cost from its planned jobs.

    Parameters
    ----------
    jobs : iterable of (str, float or None)
        ``(cache key, audio seconds)`` per job; seconds ``None`` when unknown. Jobs with
        the same key are one request (the length of the first that has one is used).
    model : str
        The model id.
    cached_keys : collection of str
        Keys the cache already holds.
    price_per_minute : float or None
        The model's price (:func:`phaseo_notebook._pricing.lookup_price`).
    currency : str
        The price's currency.

    Returns
    -------
    ModelEstimate

    Examples
    --------
    >>> estimate_model([("u", None), ("v", 120.0)], model="m", price_per_minute=0.01).cost
    0.04
    >>> estimate_model([("u", 1.0)], model="m", price_per_minute=None).cost is None
    True
    """
    seconds_by_key: dict[str, float | None] = {}
    count = 0
    for key, seconds in jobs:
        count += 1
        if seconds is not None and (seconds != seconds or seconds < 0):  # NaN or negative
            seconds = None
        if seconds_by_key.get(key) is None:
            seconds_by_key[key] = seconds
    cached = sum(1 for key in seconds_by_key if key in cached_keys)
    to_send = [s for key, s in seconds_by_key.items() if key not in cached_keys]
    known = [s for s in to_send if s is not None]
    unknown = len(to_send) - len(known)
    audio = float(sum(known))
    cost: float | None = None
    if price_per_minute is not None and (known or not to_send):
        billed = audio + (unknown * audio / len(known) if unknown else 0.0)
        cost = price_per_minute * billed / 60.0
    return ModelEstimate(
        model=model,
        jobs=count,
        requests=len(to_send),
        cached=cached,
        audio_seconds=audio,
        unknown_durations=unknown,
        price_per_minute=price_per_minute,
        cost=cost,
        currency=currency,
    )


def _num(value: float | None, fmt: str) -> str:
    return "unknown" if value is None else format(value, fmt)


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a run would send and cost: one :class:`ModelEstimate` per model, and totals.

    Attributes
    ----------
    models
        One row per model.

    Examples
    --------
    >>> e = Estimate((estimate_model([("a", 90.0)], model="m", price_per_minute=None),))
    >>> e.requests, e.audio_minutes, e.cost is None
    (1, 1.5, True)
    """

    models: tuple[ModelEstimate, ...]

    @property
    def requests(self) -> int:
        """Requests that would be sent, all models."""
        return sum(m.requests for m in self.models)

    @property
    def cached(self) -> int:
        """Jobs the cache answers, all models."""
        return sum(m.cached for m in self.models)

    @property
    def audio_seconds(self) -> float:
        """Audio to send whose length is known, all models."""
        return sum(m.audio_seconds for m in self.models)

    @property
    def audio_minutes(self) -> float:
        """:attr:`audio_seconds` in minutes."""
        return self.audio_seconds / 60.0

    @property
    def unknown_durations(self) -> int:
        """Requests whose length could not be read, all models."""
        return sum(m.unknown_durations for m in self.models)

    @property
    def cost(self) -> float | None:
        """Estimated cost of the run, or ``None`` when any model's cost is unknown."""
        costs = [m.cost for m in self.models]
        if any(c is None for c in costs):
            return None
        return sum(c for c in costs if c is not None)

    @property
    def currency(self) -> str:
        """The currency of :attr:`cost`."""
        return self.models[0].currency if self.models else CURRENCY

    def _summary(self) -> str:
        n = self.requests
        parts = [f"{n} request{'s' if n != 1 else ''}", f"{self.cached} cached"]
        parts.append(f"{self.audio_minutes:.2f} audio minutes")
        if self.unknown_durations:
            parts.append(f"{self.unknown_durations} of unknown length")
        cost = self.cost
        parts.append(
            f"cost {cost:.6g} {self.currency}" if cost is not None else "cost unknown (no price)"
        )
        return "Estimate: " + ", ".join(parts)

    def _rows(self) -> list[list[str]]:
        return [
            [
                m.model,
                str(m.requests),
                str(m.cached),
                f"{m.audio_seconds / 60:.2f}",
                _num(m.price_per_minute, ".6g"),
                _num(m.cost, ".6g"),
            ]
            for m in self.models
        ]

    _HEADER = ("model", "requests", "cached", "audio min", "USD/min", "cost")

    def __repr__(self) -> str:
        rows = [list(self._HEADER), *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        lines = [self._summary()]
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)]
            cells.append(row[-1].ljust(widths[-1]))
            lines.append("  " + "  ".join(cells).rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self._HEADER)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in self._rows()
        )
        return (
            f"<div><p>{html.escape(self._summary())}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )
