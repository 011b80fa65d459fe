"""Model comparison: the same audio through several models, one summary row per model.

Each model is one run of the batch engine over the column, one after the other, all with
the same cache and the same concurrency, so a rerun of the comparison (or adding a model to
it) sends only what no earlier run transcribed. With a reference column, every model is
scored with :mod:`._scoring` (same normalisation for all).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._batch import BatchResult, run_request_sync
from ._cache import resolve_cache
from ._client import AsyncClient, Client
from ._extras import require
from ._frames import frame_request, require_column
from ._render import frame_html as _frame_html
from ._request import CacheArg, ErrorsMode
from ._scoring import score_texts
from ._types import ProviderOptions

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["ModelComparison", "compare_models"]

#: Columns of :attr:`ModelComparison.table`, in order.
TABLE_COLUMNS = (
    "model",
    "rows",
    "done",
    "errors",
    "cached",
    "requests",
    "wer",
    "cer",
    "scored",
    "mean_latency_s",
    "total_cost",
    "elapsed_s",
)


@dataclass(frozen=True)
class ModelComparison:
    """The outcome of ``df.stt.compare(...)``: one summary row per model, and every row.

    Attributes
    ----------
    table
        One row per model, in the order given: ``model``; ``rows``; ``done`` (rows with a
        transcript); ``errors``; ``cached`` (rows answered by the cache); ``requests``
        (sent in this run); ``wer`` and ``cer`` (corpus rates against the reference, NaN
        without one); ``scored`` (rows scored); ``mean_latency_s`` (mean seconds per request
        sent in this run, NaN when everything came from the cache); ``total_cost`` (what the
        gateway reported for the distinct requests behind the rows, including earlier runs
        served from the cache; NaN when it reported no cost); ``elapsed_s`` (wall time of the
        run).
    per_row
        Long format, one row per (model, input row): ``model``, ``row`` (the input's index
        label), ``text``, ``error``, ``cached``, ``latency_s``, ``cost``, and ``wer``/``cer``
        with a reference.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> df = pn.load_samples().head(2)
    >>> cmp = df.stt.compare("audio", models=["local/fake"], reference="reference",
    ...                      cache=False, progress=False)
    >>> cmp.table["model"].tolist()
    ['local/fake']
    """

    table: pd.DataFrame
    per_row: pd.DataFrame

    def wide(self, value: str = "text") -> pd.DataFrame:
        """One column per model, one row per input row, holding ``value`` (e.g. ``"wer"``).

        Examples
        --------
        >>> cmp.wide("text").columns.tolist()  # doctest: +SKIP
        ['local/fake']
        """
        if value not in self.per_row.columns or value in ("model", "row"):
            options = [c for c in self.per_row.columns if c not in ("model", "row")]
            raise KeyError(f"value {value!r} is not a per-row column; choose one of {options}")
        models = list(self.table["model"])
        out = self.per_row.pivot(index="row", columns="model", values=value)
        out = out.reindex(index=list(dict.fromkeys(self.per_row["row"])), columns=models)
        out.columns.name = None
        return out

    def plot(self) -> Figure:
        """Bar charts of WER and of total cost per model, as a matplotlib Figure.

        It renders inline when it is the last expression of a notebook cell. Needs
        matplotlib (``pip install 'phaseo-notebook[quality]'``).

        Examples
        --------
        >>> fig = cmp.plot()  # doctest: +SKIP
        >>> fig.savefig("comparison.png")  # doctest: +SKIP
        """
        require("matplotlib", "quality", purpose="the comparison plot")
        from matplotlib.figure import Figure

        _enable_inline_figures()
        models = [str(m) for m in self.table["model"]]
        positions = list(range(len(models)))
        # The figure is built without pyplot: no global state, nothing shown twice.
        fig = Figure(figsize=(max(6.0, 1.6 * len(models) + 3.0), 3.6), layout="constrained")
        ax_wer, ax_cost = fig.subplots(1, 2)
        panels = (
            (ax_wer, "wer", "Word error rate (%)", 100.0, "no reference given"),
            (ax_cost, "total_cost", "Total cost", 1.0, "no cost reported"),
        )
        for ax, col, title, scale, missing in panels:
            values = [float(v) for v in self.table[col]]
            heights = [0.0 if math.isnan(v) else v * scale for v in values]
            bars = ax.bar(positions, heights, color=[f"C{i % 10}" for i in positions])
            labels = ["n/a" if math.isnan(v) else _bar_label(v * scale) for v in values]
            ax.bar_label(bars, labels=labels, padding=2, fontsize=8)
            ax.set_title(title)
            ax.set_xticks(positions, models, rotation=20, ha="right", fontsize=8)
            # Bars start at zero; an all-zero panel (free offline engines) still gets an axis.
            ax.set_ylim(0, max(heights) * 1.15 if max(heights, default=0.0) > 0 else 1.0)
            if all(math.isnan(v) for v in values):
                ax.text(0.5, 0.5, missing, ha="center", va="center", transform=ax.transAxes)
        return fig

    def __repr__(self) -> str:
        return f"ModelComparison(models={list(self.table['model'])})\n{self.table.to_string()}"

    def _repr_html_(self) -> str:
        return _frame_html(self.table)


def _bar_label(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def _enable_inline_figures() -> None:
    """Let a Figure made without pyplot render inline in a notebook.

    IPython registers its image formatter for matplotlib figures only when pyplot starts
    the inline backend; a figure built directly would then show as ``<Figure ...>``.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return
    try:
        shell = ipython.get_ipython()
    except Exception:
        return
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    for mime in ("image/png", "image/svg+xml", "image/jpeg", "application/pdf"):
        if mime in formatters and Figure in formatters[mime].type_printers:
            return  # the reader already chose a format (e.g. %config InlineBackend)
    from IPython.core import pylabtools

    select: Any = pylabtools.select_figure_formats  # untyped in IPython
    select(shell, {"png"})


def _check_models(models: object) -> list[str]:
    if isinstance(models, str) or not isinstance(models, Sequence):
        raise TypeError(f"models must be a list of model names, not {type(models).__name__}")
    names = list(models)
    if not names:
        raise ValueError("models is empty; give at least one model name")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model names must be non-empty strings, not {name!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"models lists {duplicates} more than once")
    return names


def _total_cost(result: BatchResult) -> float:
    """Cost of the distinct requests behind the rows (duplicates share one request)."""
    seen: set[str] = set()
    total = 0.0
    reported = False
    for cost, request_id in zip(result.cost, result.request_id, strict=True):
        if cost is None:
            continue
        if request_id is not None:
            if request_id in seen:
                continue
            seen.add(request_id)
        total += cost
        reported = True
    return total if reported else math.nan


def compare_models(
    df: pd.DataFrame,
    col: str,
    *,
    models: Sequence[str],
    reference: str | None = None,
    language: str | None = None,
    language_col: str | None = None,
    provider: ProviderOptions | dict[str, Any] | None = None,
    concurrency: int = 16,
    cache: CacheArg = True,
    errors: ErrorsMode = "store",
    progress: bool = True,
    client: Client | AsyncClient | None = None,
    deadline: float | None = None,
    normalize: bool = True,
    budget: float | None = None,
    prices: Mapping[str, float] | None = None,
) -> ModelComparison:
    """Transcribe ``df[col]`` with every model and summarise; behind ``df.stt.compare``.

    Parameters are those of ``df.stt.transcribe`` plus ``models`` (names, in the order of the
    table), ``reference`` (a column of reference transcripts; omit for no WER/CER) and
    ``normalize`` (see :func:`phaseo_notebook._scoring.normalize_for_scoring`). ``deadline`` and
    ``budget`` apply to each model's run.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> cmp = compare_models(pn.load_samples().head(1), "audio", models=["local/fake"],
    ...                      cache=False, progress=False)
    >>> int(cmp.table.loc[0, "done"])
    1
    """
    import pandas as pd

    names = _check_models(models)
    # One Cache object for every run: its index is read from disk once, not once per model.
    store = resolve_cache(cache)
    request = frame_request(
        df,
        col,
        model=names[0],
        language=language,
        language_col=language_col,
        provider=provider,
        concurrency=concurrency,
        cache=store if store is not None else False,
        errors=errors,
        progress=progress,
        client=client,
        deadline=deadline,
        budget=budget,
        prices=prices,
    )
    if reference is not None:
        require_column(df, reference, "reference column")
    inputs = request.inputs
    references = df[reference].tolist() if reference is not None else None
    labels = list(df.index)

    summary: list[dict[str, Any]] = []
    long_parts: list[pd.DataFrame] = []
    for name in names:
        result = run_request_sync(replace(request, model=name))
        latencies = [x for x in result.latency if x is not None]
        row: dict[str, Any] = {
            "model": name,
            "rows": len(inputs),
            "done": sum(t is not None for t in result.text),
            "errors": result.errors,
            "cached": sum(result.cached),
            "requests": result.requests,
            "wer": math.nan,
            "cer": math.nan,
            "scored": 0,
            "mean_latency_s": sum(latencies) / len(latencies) if latencies else math.nan,
            "total_cost": _total_cost(result),
            "elapsed_s": result.elapsed,
        }
        part: dict[str, Any] = {
            "model": [name] * len(inputs),
            "row": labels,
            "text": result.text,
            "error": result.error,
            "cached": result.cached,
            "latency_s": [math.nan if x is None else x for x in result.latency],
            "cost": [math.nan if x is None else x for x in result.cost],
        }
        if references is not None:
            wers, cers, corpus = score_texts(
                references,
                result.text,
                normalize=normalize,
                what=(f"reference column {reference!r}", f"transcripts of {name!r}"),
            )
            row.update(wer=corpus["wer"], cer=corpus["cer"], scored=corpus["rows"])
            part.update(wer=wers, cer=cers)
        summary.append(row)
        long_parts.append(pd.DataFrame(part))
    table = pd.DataFrame(summary, columns=list(TABLE_COLUMNS))
    per_row = pd.concat(long_parts, ignore_index=True)
    return ModelComparison(table=table, per_row=per_row)
