"""Per-minute prices of the gateway's models, and where a run's prices come from.

Three sources, in this order of precedence (the first that names a model wins):

1. ``prices={"model": usd_per_minute}`` given by the caller;
2. the gateway's own catalog (``GET /models`` with ``pricing``), parsed by
   :func:`parse_catalog`: what the gateway will actually charge;
3. :data:`BUILTIN_PRICES`, the providers' published list prices below.

What the live gateway offers: its catalog lists the model ids (see the project's
``spec/live-gateway.md``) and every answer reports its cost (``cost_nanos`` / ``cost_cents``
with ``currency``), but nothing documents prices in its ``GET /models``. So the parser reads
the shape the local gateway serves (below), skips entries without ``pricing``, and a run
with no price anywhere learns the cost from its first answer instead.

A model none of them names has no known price: :func:`lookup_price` returns ``None``, and
an estimate of it has no cost (a budgeted run then learns the cost from the answers).

The built-in table
------------------
Every figure is a provider's list price per minute of audio in USD, with the date it was
read and where. The gateway may route a model to another provider or add a margin, which
is why its catalog, when it has one, comes first.

=================================  ===========  ==============================================
model                              USD/minute   source (read 2026-12-02)
=================================  ===========  ==============================================
``openai/whisper-1``               0.006        OpenAI API pricing (transcription, per minute)
``openai/gpt-4o-transcribe``       0.006        OpenAI API pricing (estimated cost per minute)
``openai/gpt-4o-mini-transcribe``  0.003        OpenAI API pricing (estimated cost per minute)
``openai/whisper-large-v3``        0.00185      Groq speech-to-text docs: $0.111 per hour
``openai/whisper-large-v3-turbo``  0.000667     Groq speech-to-text docs: $0.04 per hour
``mistral/voxtral-mini``           0.003        Mistral, Voxtral Transcribe 2 (Feb 2026):
                                                ``voxtral-mini-latest`` $0.003 per minute
``microsoft/mai-transcribe-1``     0.006        Microsoft MAI-Transcribe-1 launch (Apr 2026):
                                                $0.36 per hour
``local/fake``, ``local/pocketsphinx``  0       offline engines of the local gateway
=================================  ===========  ==============================================

``spacex-ai/grok-transcribe`` is in the live catalog but has no entry: xAI publishes a price
for a model it calls ``grok-stt``, and nothing here shows the two are the same product.

Examples
--------
>>> lookup_price("openai/whisper-1")
0.006
>>> lookup_price("openai/whisper-1", prices={"openai/whisper-1": 0.004})
0.004
>>> lookup_price("acme/unknown") is None
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "BUILTIN_PRICES",
    "CURRENCY",
    "ModelPrice",
    "cost_for_seconds",
    "lookup_price",
    "parse_catalog",
    "resolve_prices",
]

#: The currency of every price here, of ``prices=`` and of a budget.
CURRENCY: Final = "USD"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One row of the built-in table: a list price and where it comes from.

    Attributes
    ----------
    usd_per_minute
        Price of one minute of audio, in USD.
    source
        Who publishes the figure, and where.
    as_of
        The date the figure was read (ISO 8601).

    Examples
    --------
    >>> BUILTIN_PRICES["openai/whisper-1"].usd_per_minute
    0.006
    """

    usd_per_minute: float
    source: str
    as_of: str


_READ: Final = "2026-12-02"
_OPENAI: Final = "OpenAI API pricing page, audio transcription (per minute of audio)"
_GROQ: Final = "Groq docs, speech-to-text model table (console.groq.com/docs/speech-text)"

#: Providers' published list prices (see the module docstring for the sources).
BUILTIN_PRICES: Final[Mapping[str, ModelPrice]] = {
    "openai/whisper-1": ModelPrice(0.006, _OPENAI, _READ),
    "openai/gpt-4o-transcribe": ModelPrice(0.006, _OPENAI, _READ),
    "openai/gpt-4o-mini-transcribe": ModelPrice(0.003, _OPENAI, _READ),
    # Groq lists these per hour of audio: $0.111 and $0.04.
    "openai/whisper-large-v3": ModelPrice(0.111 / 60, _GROQ, _READ),
    "openai/whisper-large-v3-turbo": ModelPrice(0.04 / 60, _GROQ, _READ),
    "mistral/voxtral-mini": ModelPrice(
        0.003, "Mistral, Voxtral Transcribe 2 announcement (voxtral-mini-latest)", _READ
    ),
    # Microsoft lists $0.36 per hour.
    "microsoft/mai-transcribe-1": ModelPrice(
        0.36 / 60, "Microsoft, MAI-Transcribe-1 launch (Foundry / Azure Speech)", _READ
    ),
    "local/fake": ModelPrice(0.0, "offline engine of the local gateway", _READ),
    "local/pocketsphinx": ModelPrice(0.0, "offline engine of the local gateway", _READ),
}


def _price_value(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_catalog(body: Any, *, currency: str = CURRENCY) -> dict[str, float]:
    """The per-minute prices a gateway's ``GET /models`` answer lists.

    The shape read is the local gateway's (and OpenAI's list shape with a ``pricing``
    object added)::

        {"object": "list",
         "data": [{"id": "openai/whisper-1",
                   "pricing": {"per_minute": 0.006, "currency": "USD"}}, ...]}

    ``per_second`` (times 60) and ``per_hour`` (divided by 60) are read when
    ``per_minute`` is absent; numbers given as strings are accepted. A model with no
    ``pricing``, no usable figure, a negative one, or another currency than ``currency``
    is left out: it is not free, its price is unknown. A body of any other shape gives
    ``{}``; this never raises.

    Parameters
    ----------
    body : Any
        The decoded JSON answer.
    currency : str
        The currency prices must be in (default USD); a missing ``currency`` is taken
        to mean USD, as the gateway's answers do.

    Returns
    -------
    dict of str to float
        Model id -> price per minute.

    Examples
    --------
    >>> parse_catalog({"data": [
    ...     {"id": "a", "pricing": {"per_minute": 0.01, "currency": "USD"}},
    ...     {"id": "b", "pricing": {"per_hour": "0.6"}},
    ...     {"id": "c"},
    ... ]})
    {'a': 0.01, 'b': 0.01}
    """
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        return {}
    prices: dict[str, float] = {}
    for entry in data:
        if not isinstance(entry, Mapping):
            continue
        model, pricing = entry.get("id"), entry.get("pricing")
        if not isinstance(model, str) or not model or not isinstance(pricing, Mapping):
            continue
        if str(pricing.get("currency", CURRENCY)).upper() != currency.upper():
            continue
        per_minute = _price_value(pricing.get("per_minute"))
        per_second = _price_value(pricing.get("per_second"))
        per_hour = _price_value(pricing.get("per_hour"))
        if per_minute is None and per_second is not None:
            per_minute = per_second * 60
        if per_minute is None and per_hour is not None:
            per_minute = per_hour / 60
        if per_minute is not None:
            prices[model] = per_minute
    return prices


def _check_prices(prices: Mapping[str, float]) -> dict[str, float]:
    checked: dict[str, float] = {}
    for model, value in prices.items():
        number = _price_value(value)
        if number is None or isinstance(value, str):
            raise ValueError(
                f"prices[{model!r}] must be a non-negative number of USD per minute, got {value!r}"
            )
        checked[model] = number
    return checked


def resolve_prices(
    prices: Mapping[str, float] | None = None,
    *,
    catalog: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Merge the three price sources: ``prices`` over ``catalog`` over the built-in table.

    Parameters
    ----------
    prices : Mapping of str to float or None
        The caller's ``prices=`` (USD per minute).
    catalog : Mapping of str to float or None
        What :func:`parse_catalog` read from the gateway.

    Returns
    -------
    dict of str to float
        Model -> USD per minute, for every model any source names.

    Raises
    ------
    ValueError
        If a value of ``prices`` is not a finite, non-negative number.

    Examples
    --------
    >>> merged = resolve_prices({"a": 0.5}, catalog={"a": 0.1, "openai/whisper-1": 0.007})
    >>> merged["a"], merged["openai/whisper-1"], merged["openai/gpt-4o-transcribe"]
    (0.5, 0.007, 0.006)
    """
    merged = {model: row.usd_per_minute for model, row in BUILTIN_PRICES.items()}
    if catalog:
        merged.update(catalog)
    if prices:
        merged.update(_check_prices(prices))
    return merged


def lookup_price(
    model: str,
    *,
    prices: Mapping[str, float] | None = None,
    catalog: Mapping[str, float] | None = None,
) -> float | None:
    """The price per minute (USD) of ``model``, or ``None`` when no source names it.

    Parameters
    ----------
    model : str
        The model id, as sent to the gateway.
    prices, catalog
        As for :func:`resolve_prices`.

    Examples
    --------
    >>> lookup_price("local/fake")
    0.0
    >>> lookup_price("acme/x", catalog={"acme/x": 0.002})
    0.002
    """
    if prices is not None and model in prices:
        return _check_prices({model: prices[model]})[model]
    if catalog is not None and model in catalog:
        return catalog[model]
    row = BUILTIN_PRICES.get(model)
    return row.usd_per_minute if row is not None else None


def cost_for_seconds(seconds: float, usd_per_minute: float) -> float:
    """The cost of ``seconds`` of audio at ``usd_per_minute``.

    Examples
    --------
    >>> round(cost_for_seconds(90, 0.006), 6)
    0.009
    """
    return seconds * usd_per_minute / 60.0
