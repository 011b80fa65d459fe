"""Per-model upload limits: a known table, what refusals teach, and how many refusals a run pays.

Limits are data. Planning asks :meth:`LimitBook.limits_for` how large a request for a model
may be; the worker that saw a refusal hands the answer to :meth:`LimitBook.record_refusal`,
which reads the limit out of it (:func:`learn_from_refusal`), tightens the book, and says
whether the row should be re-chunked and sent again (:class:`RefusalVerdict`).

Known limits and their sources
------------------------------
``max_bytes = 25,000,000`` for every model (:data:`DEFAULT_LIMITS`)
    The live gateway documents "Per-file limit 25 MB for most models"
    (``spec/live-gateway.md``); OpenAI's own endpoint answers 413 only above
    26,214,400 bytes (25 MiB; speakr #42). The two readings differ by 1.2 MB: the table
    takes the smaller, 25 MB in SI bytes (the package's ``MAX_AUDIO_BYTES``), because a
    chunk planned under it passes either reading, while one planned under 25 MiB could
    be refused by a gateway that means SI megabytes.
``max_seconds = 1400`` for ``openai/gpt-4o-transcribe`` and ``openai/gpt-4o-mini-transcribe``
    These models refuse audio longer than 1400 s even when it is under 25 MB
    (Scriberr #477, speakr #168): "audio duration 1500 seconds is longer than 1400
    seconds which is the maximum for this model".

The refusal budget
------------------
A refusal costs a round trip with a whole chunk's upload, so a run must not pay for many:
each refusal that teaches a tighter limit lets the row be planned again under it; a
model's third refusal (``max_refusals=2`` by default), or a refusal that teaches nothing,
is an error for the row instead. A 413 without ``max_bytes`` still teaches that the bytes
sent were too many.

Examples
--------
>>> book = LimitBook()
>>> book.limits_for("openai/gpt-4o-transcribe")
ModelLimits(max_bytes=25000000, max_seconds=1400.0)
>>> verdict = book.record_refusal("acme/asr", 413, {"max_bytes": 10_000_000})
>>> verdict.rechunk, book.limits_for("acme/asr").max_bytes
(True, 10000000)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from phaseo_notebook._constants import MAX_AUDIO_BYTES
from phaseo_notebook._types import finite_float

__all__ = [
    "DEFAULT_LIMITS",
    "KNOWN_LIMITS",
    "LIMITS_FILE_NAME",
    "LimitBook",
    "ModelLimits",
    "RefusalVerdict",
    "learn_from_refusal",
]

logger = logging.getLogger("phaseo_notebook.limits")

#: The name of the file under the cache directory where learned limits persist.
LIMITS_FILE_NAME: Final = "limits.json"
_FILE_VERSION: Final = 1
#: Learned limits older than this are forgotten: providers raise their limits.
_MAX_AGE_SECONDS: Final = 30 * 24 * 3600.0
_Num = TypeVar("_Num", int, float)


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """How large one upload to a model may be; ``None`` means no known limit.

    Parameters
    ----------
    max_bytes : int or None
        Largest accepted upload, in bytes.
    max_seconds : float or None
        Longest accepted audio, in seconds.

    Examples
    --------
    >>> ModelLimits(25_000_000).tighten(ModelLimits(None, 1400))
    ModelLimits(max_bytes=25000000, max_seconds=1400.0)
    """

    max_bytes: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is not None:
            if isinstance(self.max_bytes, bool) or int(self.max_bytes) <= 0:
                raise ValueError(f"max_bytes must be a positive integer, not {self.max_bytes!r}")
            object.__setattr__(self, "max_bytes", int(self.max_bytes))
        if self.max_seconds is not None:
            seconds = float(self.max_seconds)
            if not math.isfinite(seconds) or seconds <= 0:
                raise ValueError(f"max_seconds must be positive, not {self.max_seconds!r}")
            object.__setattr__(self, "max_seconds", seconds)

    def tighten(self, other: ModelLimits) -> ModelLimits:
        """The smaller of each limit of ``self`` and ``other``."""
        return ModelLimits(
            _smaller(self.max_bytes, other.max_bytes), _smaller(self.max_seconds, other.max_seconds)
        )

    def admits(self, size_bytes: int, seconds: float | None) -> bool:
        """Whether an upload of ``size_bytes`` lasting ``seconds`` (``None``: unknown) fits.

        Examples
        --------
        >>> ModelLimits(100, 10.0).admits(100, 10.0), ModelLimits(100, 10.0).admits(101, 1.0)
        (True, False)
        """
        if self.max_bytes is not None and size_bytes > self.max_bytes:
            return False
        return not (
            self.max_seconds is not None and seconds is not None and seconds > self.max_seconds
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"max_bytes": ..., "max_seconds": ...}`` (the persisted form)."""
        return {"max_bytes": self.max_bytes, "max_seconds": self.max_seconds}


def _smaller(a: _Num | None, b: _Num | None) -> _Num | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


#: The limit every model is assumed to have (see the module docstring for the choice).
DEFAULT_LIMITS: Final = ModelLimits(max_bytes=MAX_AUDIO_BYTES)

#: Known limits beyond the default, per model, each with its source.
KNOWN_LIMITS: Final[Mapping[str, tuple[ModelLimits, str]]] = {
    "openai/gpt-4o-transcribe": (
        ModelLimits(max_seconds=1400.0),
        "refuses audio longer than 1400 s under 25 MB (Scriberr #477, speakr #168)",
    ),
    "openai/gpt-4o-mini-transcribe": (
        ModelLimits(max_seconds=1400.0),
        "refuses audio longer than 1400 s under 25 MB (Scriberr #477, speakr #168)",
    ),
}

_NUMBER: Final = r"(\d+(?:\.\d+)?)"
_UNIT: Final = r"\s*(seconds?|secs?|s|minutes?|mins?)\b"
# Each phrasing names the *limit*; the audio's own duration ("audio duration 1500 s")
# must never be read as one, which is why no pattern takes a bare "<number> seconds".
_SECONDS_PATTERNS: Final = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"longer than\s+(?:the\s+)?(?:maximum\s+(?:of\s+)?|limit\s+(?:of\s+)?)?" + _NUMBER + _UNIT,
        r"(?:exceeds?|over|above)\s+(?:the\s+)?(?:maximum|max|limit)\s*(?:of|is|:)?\s*"
        + _NUMBER
        + _UNIT,
        r"(?:maximum|max)\s+(?:audio\s+|allowed\s+|supported\s+)?(?:length|duration)"
        r"\s*(?:of\s+audio\s+)?(?:is|of|:|=)?\s*" + _NUMBER + _UNIT,
        r"(?:at most|up to|no longer than)\s+" + _NUMBER + _UNIT,
        r"limit\s+(?:of|is)\s+" + _NUMBER + _UNIT,
        r"\b(?:maximum|max)\b\s*(?:is|of|:|=)?\s*" + _NUMBER + _UNIT,
    )
)
_BYTES_PATTERN: Final = re.compile(
    r"(?:limit|maximum|max)\s*(?:of|is|:)?\s*(\d+)\s*bytes", re.IGNORECASE
)
_DURATION_STATUSES: Final = frozenset({400, 413, 422})


def _texts(body: Mapping[str, Any] | str | bytes | None) -> list[str]:
    """The human-readable strings of an error body, where a limit may be written."""
    if body is None:
        return []
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        return [body]
    out: list[str] = []
    for key in ("description", "message", "error", "upstream_error", "detail", "details"):
        value = body.get(key)
        if isinstance(value, str):
            out.append(value)
        elif value is not None:
            out.append(json.dumps(value, default=str))
    return out


def _seconds_from_text(text: str) -> float | None:
    for pattern in _SECONDS_PATTERNS:
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            if match.group(2).lower().startswith("min"):
                value *= 60.0
            return value if value > 0 else None
    return None


def _positive_number(value: Any) -> float | None:
    number = finite_float(value, strings=True)
    return number if number is not None and number > 0 else None


def learn_from_refusal(
    status: int, body: Mapping[str, Any] | str | bytes | None
) -> ModelLimits | None:
    """The limit a refusal states, or ``None`` when it states none.

    Reads a 413 body's ``max_bytes`` (or "limit of N bytes" in its description), and a
    400/413/422 whose text says the audio is longer than N seconds, in the phrasings
    gateways and providers use.

    Parameters
    ----------
    status : int
        The HTTP status of the refusal.
    body : Mapping, str, bytes or None
        The parsed JSON error body, or its raw text.

    Returns
    -------
    ModelLimits or None
        Only the limits the refusal names; others ``None``.

    Examples
    --------
    >>> learn_from_refusal(413, {"error": "payload_too_large", "max_bytes": 25000000})
    ModelLimits(max_bytes=25000000, max_seconds=None)
    >>> learn_from_refusal(400, {"description": "audio duration 1500 s exceeds the maximum of 1400 s"})
    ModelLimits(max_bytes=None, max_seconds=1400.0)
    >>> learn_from_refusal(400, {"description": "model is required"}) is None
    True
    """
    max_bytes: int | None = None
    max_seconds: float | None = None
    texts = _texts(body)
    if status == 413:
        raw = body.get("max_bytes") if isinstance(body, Mapping) else None
        number = _positive_number(raw)
        if number is not None:
            max_bytes = int(number)
        else:
            for text in texts:
                match = _BYTES_PATTERN.search(text)
                if match:
                    max_bytes = int(match.group(1)) or None
                    break
    if status in _DURATION_STATUSES:
        if isinstance(body, Mapping):
            for key in ("max_seconds", "max_duration", "max_audio_seconds"):
                max_seconds = _positive_number(body.get(key))
                if max_seconds is not None:
                    break
        if max_seconds is None:
            for text in texts:
                max_seconds = _seconds_from_text(text)
                if max_seconds is not None:
                    break
    if max_bytes is None and max_seconds is None:
        return None
    return ModelLimits(max_bytes, max_seconds)


@dataclass(frozen=True, slots=True)
class RefusalVerdict:
    """What the batch engine does after a refusal.

    Parameters
    ----------
    learned : ModelLimits or None
        The limit the refusal taught (``None``: it taught nothing).
    limits : ModelLimits
        The model's limits now, to plan the row again under.
    refusals : int
        The model's refusals in this run, this one included.
    rechunk : bool
        Plan the row again under ``limits`` and send it; ``False`` makes the refusal the
        row's error (nothing new was learned, or the model's refusal budget is spent).
    """

    learned: ModelLimits | None
    limits: ModelLimits
    refusals: int
    rechunk: bool


class LimitBook:
    """Known and learned limits for one run, with an optional JSON file for later runs.

    Thread-safe: chunk planning may run in worker threads while the event loop records
    refusals.

    Parameters
    ----------
    path : path or None
        A JSON file to load learned limits from and save them to (usually
        ``<cache dir>/limits.json``); ``None`` keeps them for this run only.
    scope : str
        Which gateway the limits belong to (its base URL): one file serves several
        gateways without mixing their limits.
    known : Mapping
        The known table (default :data:`KNOWN_LIMITS`).
    default : ModelLimits
        The limits of a model the table does not name (default :data:`DEFAULT_LIMITS`).
    max_refusals : int
        Refusals per model that may lead to a re-chunk; later ones are row errors.

    Examples
    --------
    >>> book = LimitBook()
    >>> book.record_refusal("m", 400, {"description": "longer than 600 seconds"}).rechunk
    True
    >>> book.limits_for("m").max_seconds
    600.0
    >>> book.record_refusal("m", 400, {"description": "longer than 600 seconds"}).rechunk
    False
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        scope: str = "",
        known: Mapping[str, tuple[ModelLimits, str]] = KNOWN_LIMITS,
        default: ModelLimits = DEFAULT_LIMITS,
        max_refusals: int = 2,
    ) -> None:
        if max_refusals < 0:
            raise ValueError("max_refusals must be >= 0")
        self.path = Path(path) if path is not None else None
        self.scope = scope
        self.max_refusals = max_refusals
        self._known = {model: limits for model, (limits, _source) in known.items()}
        self._default = default
        self._learned: dict[str, ModelLimits] = {}
        self._learned_at: dict[str, float] = {}
        self._refusals: dict[str, int] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            self._load(self.path)

    def __repr__(self) -> str:
        return (
            f"LimitBook(learned={sorted(self._learned)}, refusals={self._refusals}, "
            f"path={str(self.path) if self.path else None!r})"
        )

    def limits_for(self, model: str) -> ModelLimits:
        """The default, known and learned limits of ``model``, the tightest of each."""
        limits = self._default.tighten(self._known.get(model, ModelLimits()))
        with self._lock:
            learned = self._learned.get(model)
        return limits.tighten(learned) if learned is not None else limits

    def learned(self) -> dict[str, ModelLimits]:
        """The limits learned so far (this run's and loaded ones), by model."""
        with self._lock:
            return dict(self._learned)

    def refusals(self, model: str) -> int:
        """How many refusals ``model`` has cost this run."""
        with self._lock:
            return self._refusals.get(model, 0)

    def may_rechunk(self, model: str) -> bool:
        """Whether one more refusal of ``model`` could still lead to a re-chunk."""
        return self.refusals(model) < self.max_refusals

    def learn(self, model: str, limits: ModelLimits) -> bool:
        """Tighten ``model``'s learned limits; ``True`` when that changed them (then saved)."""
        with self._lock:
            current = self._learned.get(model)
            merged = current.tighten(limits) if current is not None else limits
            if merged == current:
                return False
            self._learned[model] = merged
            self._learned_at[model] = time.time()
        if self.path is not None:
            self._save(self.path)
        return True

    def record_refusal(
        self,
        model: str,
        status: int,
        body: Mapping[str, Any] | str | bytes | None,
        *,
        sent_bytes: int | None = None,
    ) -> RefusalVerdict:
        """Count a refusal of ``model``, learn what it says, and decide on a re-chunk.

        Only refusals of the audio's size or length count: a 413, or an answer that
        names a limit. Any other error is returned with ``rechunk=False``, uncounted.

        Parameters
        ----------
        model : str
            The model that refused.
        status : int
            The refusal's HTTP status.
        body : Mapping, str, bytes or None
            Its error body.
        sent_bytes : int or None
            Size of the refused upload: a 413 naming no limit then teaches
            ``sent_bytes - 1``.
        """
        learned = learn_from_refusal(status, body)
        if learned is None and status == 413 and sent_bytes is not None and sent_bytes > 1:
            learned = ModelLimits(max_bytes=sent_bytes - 1)
        before = self.limits_for(model)
        if learned is None and status != 413:
            # Not a refusal of the audio's size or length (a bad file, a missing field):
            # the row's own error, and no part of the model's refusal budget.
            return RefusalVerdict(None, before, self.refusals(model), False)
        with self._lock:
            count = self._refusals.get(model, 0) + 1
            self._refusals[model] = count
        changed = learned is not None and self.learn(model, learned)
        after = self.limits_for(model)
        rechunk = changed and after != before and count <= self.max_refusals
        if learned is not None:
            logger.info(
                "limits: %s refused with %s; learned %s (refusal %d of at most %d)",
                model,
                status,
                learned,
                count,
                self.max_refusals,
            )
        return RefusalVerdict(learned, after, count, rechunk)

    # -- persistence ----------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            logger.warning("limits: ignoring unreadable %s: %s", path, err)
            return
        if not isinstance(data, dict) or data.get("version") != _FILE_VERSION:
            return
        models = data.get("scopes", {}).get(self.scope, {})
        if not isinstance(models, dict):
            return
        now = time.time()
        for model, entry in models.items():
            try:
                learned_at = float(entry["learned_at"])
                limits = ModelLimits(entry.get("max_bytes"), entry.get("max_seconds"))
            except (KeyError, TypeError, ValueError):
                continue
            if now - learned_at <= _MAX_AGE_SECONDS:
                self._learned[model] = limits
                self._learned_at[model] = learned_at

    def _save(self, path: Path) -> None:
        # Re-read and merge, so two runs (or two gateways' scopes) sharing the file keep
        # each other's entries; the rename makes the write atomic.
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != _FILE_VERSION:
                data = {}
        except (OSError, ValueError):
            data = {}
        scopes = data.get("scopes") if isinstance(data.get("scopes"), dict) else {}
        assert isinstance(scopes, dict)
        with self._lock:
            mine = dict(scopes.get(self.scope) or {})
            for model, limits in self._learned.items():
                mine[model] = {**limits.to_dict(), "learned_at": self._learned_at[model]}
        scopes[self.scope] = mine
        payload = json.dumps({"version": _FILE_VERSION, "scopes": scopes}, indent=1, sort_keys=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".limits-", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(payload)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as err:
            # Persisting is a convenience for later runs: this run keeps its limits anyway.
            logger.warning("limits: could not save %s: %s", path, err)
