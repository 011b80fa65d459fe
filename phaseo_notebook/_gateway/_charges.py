"""What the local gateway charges: a configured price per minute of audio, per model.

The live gateway reports each answer's cost (``cost_nanos`` and ``currency``); the local one
does the same from a price it is given, so costs, estimates and budgets can be tested
offline. With no price a model is free (``cost_nanos: 0``), as the offline engines are.

A price setting is either one number (USD per minute, for every model served) or a
mapping of model name to price, where the key ``"*"`` is the price of models not named.

Examples
--------
>>> prices = build_prices({"*": 0.006, "local/pocketsphinx": 0}, ["local/fake", "local/pocketsphinx"])
>>> prices
{'local/fake': 0.006, 'local/pocketsphinx': 0.0}
>>> cost_nanos(0.006, 2.0)
200000
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = ["ANY_MODEL", "PriceSetting", "build_prices", "cost_nanos", "parse_price_specs"]

#: The key of a price mapping that applies to every model not named in it.
ANY_MODEL: Final = "*"

PriceSetting = float | Mapping[str, float] | None


def _check(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of USD per minute, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a finite, non-negative number, got {value!r}")
    return number


def build_prices(setting: PriceSetting, models: Iterable[str]) -> dict[str, float]:
    """The price per minute of each served model under ``setting``.

    Raises
    ------
    ValueError
        If a price is negative or not a number, or the mapping names a model not served.
    """
    names = list(models)
    if setting is None:
        return dict.fromkeys(names, 0.0)
    if not isinstance(setting, Mapping):
        price = _check(setting, "price_per_minute")
        return dict.fromkeys(names, price)
    unknown = sorted(set(setting) - set(names) - {ANY_MODEL})
    if unknown:
        raise ValueError(f"price_per_minute names models this gateway does not serve: {unknown}")
    default = _check(setting.get(ANY_MODEL, 0.0), "price_per_minute")
    return {
        name: _check(setting[name], f"price_per_minute[{name!r}]") if name in setting else default
        for name in names
    }


def parse_price_specs(specs: Sequence[str]) -> dict[str, float] | None:
    """Parse ``serve --price-per-minute`` values: ``USD`` (every model) or ``NAME=USD``.

    Examples
    --------
    >>> parse_price_specs(["0.006", "openai/whisper-1=0.004"])
    {'*': 0.006, 'openai/whisper-1': 0.004}
    >>> parse_price_specs([]) is None
    True
    """
    if not specs:
        return None
    out: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        key = name.strip() if sep else ANY_MODEL
        if sep and not key:
            raise ValueError(f"--price-per-minute {spec!r}: the model name is empty")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(
                f"--price-per-minute {spec!r}: expected USD or NAME=USD, e.g. 0.006"
            ) from None
        out[key] = _check(number, f"--price-per-minute {spec!r}")
    return out


def cost_nanos(price_per_minute: float, seconds: float) -> int:
    """The cost of ``seconds`` of audio in nano-USD, rounded to the nearest nano."""
    return round(price_per_minute * seconds / 60 * 1_000_000_000)
