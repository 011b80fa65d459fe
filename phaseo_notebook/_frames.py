"""DataFrame plumbing shared by every front: column checks in, output columns out.

The pandas accessor, the Dask accessor, the CLI, the review cell and ``df.stt.compare`` all
read their inputs through :func:`require_column` / :func:`frame_inputs` (and build their run
request with :func:`frame_request`) and name what they add through :class:`OutputColumns`
(:func:`with_outputs`), so a message or a column name is written once.

Output columns of a run whose text column is ``out_col`` (default ``"text"``):

========================  ==============================================================
``text``                  the transcript (missing where the row failed)
``text_error``            the error text (missing where the row worked)
``text_cached``, ...      with ``metadata=True``: ``_cached``, ``_provider``,
                          ``_duration``, ``_cost``, ``_latency``, ``_request_id``,
                          ``_language``
``text_segments``,        reserved for timestamps (not produced yet)
``text_words``
========================  ==============================================================

The returned frame also carries the run summary in ``attrs["stt"]`` (a dict: ``model``,
``rows``, ``requests``, ``cache_hits``, ``audio_minutes``, ``spent``, ``currency``,
``budget``, ``not_sent_budget``, ``errors``, ``elapsed_s``; see
:func:`phaseo_notebook._spend.run_summary`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from ._request import TranscribeRequest

if TYPE_CHECKING:
    from ._batch import BatchResult

__all__ = [
    "METADATA_FIELDS",
    "RESERVED_FIELDS",
    "OutputColumns",
    "assign_columns",
    "check_language_choice",
    "frame_inputs",
    "frame_request",
    "require_column",
    "with_outputs",
]

#: Metadata columns (suffixes of ``out_col``), each the :class:`BatchResult` list of that name.
METADATA_FIELDS: tuple[str, ...] = (
    "cached",
    "provider",
    "duration",
    "cost",
    "latency",
    "request_id",
    "language",
)
#: Suffixes kept for timestamps: a run with ``timestamps=`` will add them.
RESERVED_FIELDS: tuple[str, ...] = ("segments", "words")
_DTYPES: dict[str, str] = {
    "cached": "bool",
    "duration": "float64",
    "cost": "float64",
    "latency": "float64",
}


def require_column(df: pd.DataFrame, col: Any, what: str) -> None:
    """Refuse a column name the frame does not have, listing the ones it has.

    Raises
    ------
    KeyError
        ``"<what> <col> is not a column of the DataFrame (columns: ...)"``.

    Examples
    --------
    >>> require_column(pd.DataFrame({"a": [1]}), "b", "audio column")
    Traceback (most recent call last):
    ...
    KeyError: "audio column 'b' is not a column of the DataFrame (columns: 'a')"
    """
    if col not in df.columns:
        shown = ", ".join(map(repr, list(df.columns)[:20]))
        raise KeyError(f"{what} {col!r} is not a column of the DataFrame (columns: {shown})")


def check_language_choice(language: object, language_col: object) -> None:
    """One language for all rows, or a column of them, not both.

    Examples
    --------
    >>> check_language_choice("en", None)
    """
    if language is not None and language_col is not None:
        raise ValueError("give either language= or language_col=, not both")


def frame_inputs(
    df: pd.DataFrame, col: Any, language: str | None, language_col: Any
) -> tuple[list[Any], list[Any] | None]:
    """The audio column and the per-row languages (or None) of a run, checked.

    Raises
    ------
    KeyError
        ``col`` or ``language_col`` is not a column.
    ValueError
        Both ``language`` and ``language_col`` are given.

    Examples
    --------
    >>> frame_inputs(pd.DataFrame({"a": ["x.wav"], "l": ["en"]}), "a", None, "l")
    (['x.wav'], ['en'])
    """
    require_column(df, col, "audio column")
    check_language_choice(language, language_col)
    if language_col is None:
        return df[col].tolist(), None
    require_column(df, language_col, "language column")
    return df[col].tolist(), df[language_col].tolist()


def frame_request(
    df: pd.DataFrame,
    col: Any,
    *,
    language: str | None = None,
    language_col: Any = None,
    **options: Any,
) -> TranscribeRequest:
    """The run request of a DataFrame front: ``df[col]`` (and ``df[language_col]``), checked.

    ``options`` are the other :class:`TranscribeRequest` fields (``model``, ``out_col``, ...).

    Examples
    --------
    >>> df = pd.DataFrame({"audio": ["https://x/a.wav"]})
    >>> frame_request(df, "audio", model="local/fake").inputs
    ['https://x/a.wav']
    """
    inputs, languages = frame_inputs(df, col, language, language_col)
    return TranscribeRequest(inputs, language=language, languages=languages, **options)


def with_outputs(df: pd.DataFrame, request: TranscribeRequest, result: BatchResult) -> pd.DataFrame:
    """``df`` with the columns of a finished run, named after the request's ``out_col``.

    The run summary goes to ``attrs["stt"]``.
    """
    out = OutputColumns(request.out_col, request.metadata).assign(df, result)
    if result.summary:
        out.attrs["stt"] = dict(result.summary)
    return out


@dataclass(frozen=True, slots=True)
class OutputColumns:
    """The names (and dtypes) of the columns a run adds, all prefixed by ``out_col``.

    Examples
    --------
    >>> cols = OutputColumns("text", metadata=True)
    >>> cols.error, cols.of("cached"), cols.of("segments")
    ('text_error', 'text_cached', 'text_segments')
    >>> cols.names()[:3]
    ['text', 'text_error', 'text_cached']
    """

    out_col: str = "text"
    metadata: bool = False

    @property
    def text(self) -> str:
        return self.out_col

    @property
    def error(self) -> str:
        return f"{self.out_col}_error"

    def of(self, field: str) -> str:
        """The column of a metadata or reserved field (``"cached"`` -> ``"text_cached"``)."""
        return f"{self.out_col}_{field}"

    def fields(self) -> list[tuple[str, str]]:
        """``(column name, BatchResult field)`` pairs, in column order."""
        pairs = [(self.text, "text"), (self.error, "error")]
        if self.metadata:
            pairs.extend((self.of(f), f) for f in METADATA_FIELDS)
        return pairs

    def names(self) -> list[str]:
        return [name for name, _ in self.fields()]

    def dtypes(self) -> dict[str, str | None]:
        """Column name -> pandas dtype (None: let pandas infer, text and objects)."""
        return {name: _DTYPES.get(field) for name, field in self.fields()}

    def from_result(self, result: BatchResult) -> dict[str, list[Any]]:
        """Column name -> values, from a run's per-row outcomes."""
        return {name: getattr(result, field) for name, field in self.fields()}

    def assign(self, df: pd.DataFrame, result: BatchResult) -> pd.DataFrame:
        """A copy of ``df`` with this run's columns added (positionally, any index)."""
        return assign_columns(df, self.from_result(result), self.dtypes())


def assign_columns(
    df: pd.DataFrame,
    columns: Mapping[str, list[Any]],
    dtypes: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """A copy of ``df`` with ``columns`` added by position, so any index works.

    Examples
    --------
    >>> assign_columns(pd.DataFrame({"a": [1]}, index=[7]), {"b": [2.0]})["b"].tolist()
    [2.0]
    """
    out = df.copy()
    dtypes = dtypes or {}
    for name, values in columns.items():
        # Positional assignment: correct for any index, duplicated or MultiIndex.
        out[name] = pd.Series(values, index=df.index, dtype=dtypes.get(name))
    return out
