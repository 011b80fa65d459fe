"""Value types of the public API: provider routing options and transcription results."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from math import isfinite
from typing import Any

from ._exceptions import ConfigurationError

__all__ = [
    "BODY_NUMBERS",
    "BODY_STRINGS",
    "ProviderOptions",
    "ResultColumns",
    "TranscriptionResult",
    "coerce_provider",
    "parse_timed",
]

_LIST_KEYS = ("order", "only", "ignore")


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Provider routing preferences, sent as the JSON string field ``provider``.

    Parameters
    ----------
    order
        Providers to try, in this order.
    only
        Use only these providers.
    ignore
        Never use these providers.
    include_alpha
        Include alpha providers in routing (off by default at the gateway).

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> pn.ProviderOptions(only=["openai"]).to_json()
    '{"only":["openai"]}'
    """

    order: Sequence[str] | None = None
    only: Sequence[str] | None = None
    ignore: Sequence[str] | None = None
    include_alpha: bool | None = None

    def __post_init__(self) -> None:
        for key in _LIST_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigurationError(f"provider option {key!r} must be a list of strings")
            object.__setattr__(self, key, tuple(value))
        if self.include_alpha is not None and not isinstance(self.include_alpha, bool):
            raise ConfigurationError("provider option 'include_alpha' must be True or False")

    def to_dict(self) -> dict[str, Any]:
        """The options that are set, as a JSON-ready dict."""
        out: dict[str, Any] = {}
        for key in _LIST_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value)
        if self.include_alpha is not None:
            out["include_alpha"] = self.include_alpha
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the wire form and part of cache keys."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def coerce_provider(provider: ProviderOptions | Mapping[str, Any] | None) -> ProviderOptions | None:
    """Accept a :class:`ProviderOptions`, a plain dict, or None.

    Raises
    ------
    ConfigurationError
        For an unknown key or a value of the wrong type.

    Examples
    --------
    >>> coerce_provider({"order": ["a", "b"]}).to_json()
    '{"order":["a","b"]}'
    """
    if provider is None or isinstance(provider, ProviderOptions):
        return provider
    if not isinstance(provider, Mapping):
        raise ConfigurationError(
            f"provider must be a dict or ProviderOptions, not {type(provider).__name__}"
        )
    unknown = set(provider) - {*_LIST_KEYS, "include_alpha"}
    if unknown:
        raise ConfigurationError(
            f"unknown provider option(s) {sorted(map(str, unknown))}; "
            "expected order, only, ignore, include_alpha"
        )
    return ProviderOptions(**dict(provider))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def parse_timed(items: Any, label: str) -> list[dict[str, Any]] | None:
    """``segments`` or ``words`` of an answer as ``{"start", "end", label}`` dicts, or None.

    Only the three fields are kept (seconds as floats, the text as a string): an item
    without finite times or without a string ``label`` is dropped, so a hostile or sloppy
    answer cannot put odd values into a column. ``None`` when the answer has no list.

    Examples
    --------
    >>> parse_timed([{"start": 0, "end": 1.5, "text": " hi", "id": 0}, {"start": "x"}], "text")
    [{'start': 0.0, 'end': 1.5, 'text': ' hi'}]
    >>> parse_timed(None, "word") is None
    True
    """
    if not isinstance(items, list):
        return None
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        start, end, text = _finite(item.get("start")), _finite(item.get("end")), item.get(label)
        if start is None or end is None or not isinstance(text, str):
            continue
        out.append({"start": start, "end": end, label: text})
    return out


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def finite_float(value: Any, *, strings: bool = False) -> float | None:
    """A number from a gateway's JSON as a finite float, or None.

    Booleans, other types, NaN, infinities and integers too large for a float (hundreds of
    digits, from a hostile body) are None; with ``strings``, numeric text is read too.

    Examples
    --------
    >>> finite_float(3), finite_float(True), finite_float("2.5"), finite_float("2.5", strings=True)
    (3.0, None, None, 2.5)
    >>> finite_float(10**400) is None, finite_float(float("nan")) is None
    (True, True)
    """
    kinds = (int, float, str) if strings else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _opt_float(body: Mapping[str, Any], key: str) -> float | None:
    return finite_float(body.get(key))


@dataclass(frozen=True, slots=True)
class TranscriptionResult:
    """One transcription, as the gateway returned it.

    Attributes
    ----------
    text
        The transcript.
    raw
        The whole response body.
    model, provider, language
        What the gateway reports it used, when it says.
    duration
        Seconds of audio, when reported.
    request_id
        The gateway's request id (body ``requestId`` or header ``x-request-id``).
    cost
        Cost in ``currency`` units, from ``cost_nanos`` or ``cost_cents`` when reported.
    currency
        Currency of ``cost`` (e.g. ``"USD"``).
    segments, words
        Timed segments (``{"start", "end", "text"}``) and words (``{"start", "end",
        "word"}``), seconds from the start of the audio, when the answer has them
        (``response_format=verbose_json``); read from ``raw``, so a cached answer has
        them too.

    Examples
    --------
    >>> r = TranscriptionResult.from_body({"text": "hi", "cost_nanos": 1500000})
    >>> r.text, r.cost
    ('hi', 0.0015)
    """

    text: str
    raw: dict[str, Any] = field(repr=False)
    model: str | None = None
    provider: str | None = None
    language: str | None = None
    duration: float | None = None
    request_id: str | None = None
    cost: float | None = None
    currency: str | None = None
    segments: list[dict[str, Any]] | None = field(default=None, repr=False)
    words: list[dict[str, Any]] | None = field(default=None, repr=False)

    @classmethod
    def from_body(
        cls, body: dict[str, Any], *, request_id: str | None = None
    ) -> TranscriptionResult:
        """Build a result from a decoded success body that has a string ``text``."""
        cost: float | None = None
        nanos = _opt_float(body, "cost_nanos")
        cents = _opt_float(body, "cost_cents")
        if nanos is not None:
            cost = nanos / 1e9
        elif cents is not None:
            cost = cents / 100
        return cls(
            text=body["text"],
            raw=body,
            model=_opt_str(body, "model"),
            provider=_opt_str(body, "provider"),
            language=_opt_str(body, "language"),
            duration=_opt_float(body, "duration"),
            request_id=_opt_str(body, "requestId") or _opt_str(body, "id") or request_id,
            cost=cost,
            currency=_opt_str(body, "currency"),
            segments=parse_timed(body.get("segments"), "text"),
            words=parse_timed(body.get("words"), "word"),
        )


#: The fields of a success body that a result reads as strings, and as numbers.
BODY_STRINGS: tuple[str, ...] = ("model", "provider", "language", "requestId", "id", "currency")
BODY_NUMBERS: tuple[str, ...] = ("duration", "cost_nanos", "cost_cents")


def _str_column(bodies: Sequence[Mapping[str, Any]], key: str) -> list[str | None]:
    """``_opt_str(body, key)`` of every body."""
    return [v if isinstance(v := b.get(key), str) else None for b in bodies]


def _float_column(bodies: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    """``_opt_float(body, key)`` of every body; the usual finite float skips the call."""
    return [
        v if (v := b.get(key)) is None or (type(v) is float and isfinite(v)) else _opt_float(b, key)
        for b in bodies
    ]


def _timed_column(
    bodies: Mapping[int, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
    n: int,
    key: str,
    label: str,
) -> list[list[dict[str, Any]] | None]:
    """``parse_timed(body.get(key), label)`` of every body (most have none: no call)."""
    if isinstance(bodies, Mapping):
        out: list[list[dict[str, Any]] | None] = [None] * n
        for i, body in bodies.items():
            out[i] = parse_timed(body.get(key), label)
        return out
    return [None if (v := b.get(key)) is None else parse_timed(v, label) for b in bodies]


@dataclass(frozen=True, slots=True)
class ResultColumns:
    """Many transcriptions column by column: what :meth:`TranscriptionResult.from_body`
    reads from each body, with no object per answer.

    A rerun served from the cache fills every row from here; building one
    :class:`TranscriptionResult` per cached row cost more than reading the cache.

    Examples
    --------
    >>> cols = ResultColumns.from_bodies([{"provider": "p", "cost_cents": 2}], ["hi"])
    >>> cols.text, cols.provider, cols.cost, len(cols)
    (['hi'], ['p'], [0.02], 1)
    """

    text: list[str]
    model: list[str | None]
    provider: list[str | None]
    language: list[str | None]
    duration: list[float | None]
    request_id: list[str | None]
    cost: list[float | None]
    currency: list[str | None]
    segments: list[list[dict[str, Any]] | None]
    words: list[list[dict[str, Any]] | None]

    def __len__(self) -> int:
        return len(self.text)

    @classmethod
    def from_bodies(
        cls, bodies: Sequence[Mapping[str, Any]], texts: Sequence[str]
    ) -> ResultColumns:
        """The columns of decoded success bodies, each with its own ``text``.

        The same rules as :meth:`TranscriptionResult.from_body`, field by field; ``texts``
        stands for each body's ``text`` (the cache stores it apart from the body).
        """
        return cls.from_fields(
            {key: _str_column(bodies, key) for key in BODY_STRINGS},
            {key: _float_column(bodies, key) for key in BODY_NUMBERS},
            texts,
            bodies,
        )

    @classmethod
    def from_fields(
        cls,
        strings: Mapping[str, list[str | None]],
        numbers: Mapping[str, list[float | None]],
        texts: Sequence[str],
        timed: Mapping[int, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
    ) -> ResultColumns:
        """The columns of bodies already split into fields.

        Parameters
        ----------
        strings, numbers
            Each field of :data:`BODY_STRINGS` and :data:`BODY_NUMBERS` as a column: the
            field where it is a string (a finite number), else None, as ``_opt_str``
            (``_opt_float``) reads it.
        texts
            The text of each answer.
        timed
            The bodies (all, or by index those that may hold ``segments`` or ``words``).

        Examples
        --------
        >>> cols = ResultColumns.from_fields(
        ...     {"requestId": [""], "id": ["r1"]}, {"cost_nanos": [2e6]}, ["hi"], {})
        >>> cols.request_id, cols.cost, cols.segments
        (['r1'], [0.002], [None])
        """
        n = len(texts)
        none: list[Any] = [None] * n

        def text_of(key: str) -> list[str | None]:
            return strings.get(key) or list(none)

        def number_of(key: str) -> list[float | None]:
            return numbers.get(key) or list(none)

        return cls(
            text=list(texts),
            model=text_of("model"),
            provider=text_of("provider"),
            language=text_of("language"),
            duration=number_of("duration"),
            request_id=[
                a or b or None for a, b in zip(text_of("requestId"), text_of("id"), strict=True)
            ],
            cost=[
                c / 1e9 if c is not None else (d / 100 if d is not None else None)
                for c, d in zip(number_of("cost_nanos"), number_of("cost_cents"), strict=True)
            ],
            currency=text_of("currency"),
            segments=_timed_column(timed, n, "segments", "text"),
            words=_timed_column(timed, n, "words", "word"),
        )
