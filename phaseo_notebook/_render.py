"""How quality results look in a notebook: the HTML of scores and scored tables.

Scoring (:mod:`._scoring`) and flags (:mod:`._flags`) compute; this module only turns their
results into the HTML a notebook shows, so the figures can be tested without markup and the
markup changed without touching the figures.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ._scoring import ScoreResult

__all__ = ["frame_html", "percent", "score_html"]


def frame_html(frame: pd.DataFrame) -> str:
    """A DataFrame as a notebook shows it (truncated per pandas' display options).

    Examples
    --------
    >>> import pandas as pd
    >>> frame_html(pd.DataFrame({"wer": [0.5]})).startswith("<div>")
    True
    """
    shown: Any = frame  # pandas-stubs does not declare the notebook hook
    table = shown._repr_html_()
    return table if isinstance(table, str) else f"<pre>{html.escape(repr(frame))}</pre>"


def percent(value: float) -> str:
    """A rate as a percentage with one decimal, ``"n/a"`` for NaN.

    Examples
    --------
    >>> percent(0.625), percent(float("nan"))
    ('62.5%', 'n/a')
    """
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def score_html(result: ScoreResult) -> str:
    """The corpus figures of a :class:`~._scoring.ScoreResult` in one line, then its table.

    Examples
    --------
    >>> import pandas as pd
    >>> res = pd.DataFrame({"reference": ["a b c d"], "text": ["a x c"]}).stt.score()
    >>> score_html(res).startswith("<p><b>WER 50.0%</b>")
    True
    """
    head = (
        f"<p><b>WER {percent(result.wer)}</b>, <b>CER {percent(result.cer)}</b> over "
        f"{result.rows} scored rows ({result.words} reference words; "
        f"{result.substitutions} substituted, {result.deletions} deleted, "
        f"{result.insertions} inserted{'' if result.normalized else '; not normalised'})</p>"
    )
    return head + frame_html(result.df)
