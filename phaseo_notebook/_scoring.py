"""Scoring transcripts: word and character error rates after a documented normalisation.

Normalisation
    :func:`normalize_text` is the documented normalisation applied to both the reference and
    the hypothesis before they are compared (``normalize=False`` turns it off):

    1. Unicode NFKC (full-width forms, ligatures and compatibility characters folded);
    2. case folding (``"Straße"`` -> ``"strasse"``);
    3. apostrophes removed inside words (``"don't"`` -> ``"dont"``), so a model that writes
       the apostrophe and one that does not agree;
    4. every other punctuation mark or symbol replaced by a space;
    5. each CJK ideograph and kana becomes a token of its own: Chinese and Japanese put no
       spaces between words, so without this a whole sentence would be a single "word";
    6. runs of whitespace collapsed to one space, ends stripped.

    With ``normalize=False`` only step 6 applies.

Error rates
    Word error rate (WER) and character error rate (CER) come from ``jiwer`` (the
    ``[quality]`` extra, also in ``[local]``): errors (substitutions + deletions +
    insertions) over the words (characters, spaces included) of the reference. CER is
    measured on the same normalised text without step 5: the spaces that step inserts are
    not characters of the transcript. Corpus figures are total errors over total reference
    words, not the mean of the per-row rates, so long clips weigh more than short ones.
    Rows without a reference or without a hypothesis (a failed transcription) are not
    scored. A row whose reference is empty after normalisation has no defined rate (NaN),
    but its insertions still count in the corpus numerator.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._audio import is_missing
from ._extras import require
from ._render import score_html

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ScoreResult",
    "normalize_text",
    "score_frame",
    "score_texts",
    "token_count",
]

_APOSTROPHES = "'\u2019\u02bc\u2018`"
_SPACE_RE = re.compile(r"\s+")
# CJK unified ideographs (with extension A and compatibility), hiragana and katakana.
_CJK_RE = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


# --------------------------------------------------------------------------- text


def normalize_text(text: str) -> str:
    """Normalise a transcript for scoring (the steps are in the module docstring).

    Parameters
    ----------
    text
        A reference or a hypothesis.

    Returns
    -------
    str
        Lowercase tokens separated by single spaces.

    Examples
    --------
    >>> normalize_text("Hello, World!  Don't   panic.")
    'hello world dont panic'
    >>> normalize_text("砸自己的脚。")
    '砸 自 己 的 脚'
    """
    return _normalize(text, split_cjk=True)


def _normalize(text: str, *, split_cjk: bool) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    for mark in _APOSTROPHES:
        text = text.replace(mark, "")
    text = "".join(_clean_char(ch) for ch in text)
    if split_cjk:
        text = _CJK_RE.sub(r" \1 ", text)
    return _SPACE_RE.sub(" ", text).strip()


def _clean_char(ch: str) -> str:
    category = unicodedata.category(ch)
    if category == "Cf":  # zero-width and direction marks: invisible, not separators
        return ""
    if category[0] in "PSCZ":
        return " "
    return ch


def _collapse(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip()


def token_count(text: str) -> int:
    """Words in ``text`` as scoring counts them (each CJK character is one).

    Examples
    --------
    >>> token_count("One, two... three!"), token_count("砸自己的脚")
    (3, 5)
    """
    normalized = normalize_text(text)
    return len(normalized.split()) if normalized else 0


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class _RowCounts:
    words: int
    chars: int
    word_errors: int
    char_errors: int
    substitutions: int
    deletions: int
    insertions: int


def _jiwer() -> Any:
    return require("jiwer", "quality", purpose="word error rates")


def _count(jiwer: Any, ref: str, hyp: str, ref_chars: str, hyp_chars: str) -> _RowCounts:
    """Edit counts of one pair, already normalised for words (``ref``, ``hyp``) and for
    characters; the empty cases never reach jiwer (some versions refuse empty strings)."""
    ref_words, hyp_words = ref.split(), hyp.split()
    if not ref_words or not hyp_words:
        # All deletions or all insertions: no alignment needed.
        return _RowCounts(
            words=len(ref_words),
            chars=len(ref_chars),
            word_errors=len(ref_words) + len(hyp_words),
            char_errors=len(ref_chars) + len(hyp_chars),
            substitutions=0,
            deletions=len(ref_words),
            insertions=len(hyp_words),
        )
    w = jiwer.process_words(ref, hyp)
    c = jiwer.process_characters(ref_chars, hyp_chars)
    return _RowCounts(
        words=len(ref_words),
        chars=len(ref_chars),
        word_errors=w.substitutions + w.deletions + w.insertions,
        char_errors=c.substitutions + c.deletions + c.insertions,
        substitutions=w.substitutions,
        deletions=w.deletions,
        insertions=w.insertions,
    )


@dataclass(frozen=True)
class ScoreResult:
    """Per-row and corpus error rates, as returned by ``df.stt.score(...)``.

    Attributes
    ----------
    df
        The scored DataFrame: the input plus float columns ``wer`` and ``cer`` (NaN where a
        row was not scored).
    wer, cer
        Corpus error rates: total errors over total reference words (characters); NaN when
        no row could be scored.
    rows
        Rows scored (both a reference and a hypothesis present).
    words, chars
        Reference words and characters over the scored rows.
    substitutions, deletions, insertions
        Word-level edit counts over the scored rows.
    normalized
        Whether :func:`normalize_text` was applied.

    Examples
    --------
    >>> import pandas as pd
    >>> res = pd.DataFrame({"reference": ["a b c d"], "text": ["a x c"]}).stt.score()
    >>> res.wer, res.df["wer"].tolist()
    (0.5, [0.5])
    """

    df: pd.DataFrame
    wer: float
    cer: float
    rows: int
    words: int
    chars: int
    substitutions: int
    deletions: int
    insertions: int
    normalized: bool

    def summary(self) -> dict[str, Any]:
        """The corpus figures as a plain dict (for logging or a results table).

        Examples
        --------
        >>> import pandas as pd
        >>> pd.DataFrame({"reference": ["a"], "text": ["a"]}).stt.score().summary()["wer"]
        0.0
        """
        return {
            "wer": self.wer,
            "cer": self.cer,
            "rows": self.rows,
            "words": self.words,
            "chars": self.chars,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "normalized": self.normalized,
        }

    def __repr__(self) -> str:
        return (
            f"ScoreResult(wer={self.wer:.4f}, cer={self.cer:.4f}, rows={self.rows}, "
            f"words={self.words})"
        )

    def _repr_html_(self) -> str:
        return score_html(self)


def _as_text(value: object, what: str, row: int) -> str | None:
    if is_missing(value):
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} row {row} holds {type(value).__name__} {value!r}, not text")
    return value


def score_texts(
    references: Sequence[object],
    hypotheses: Sequence[object],
    *,
    normalize: bool = True,
    what: tuple[str, str] = ("reference", "hypothesis"),
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Per-row WER and CER of aligned references and hypotheses, plus the corpus figures.

    Parameters
    ----------
    references, hypotheses
        Aligned sequences of text; None/NaN/NA where missing.
    normalize
        Apply :func:`normalize_text` to both sides first.
    what
        Names of the two inputs, for error messages.

    Returns
    -------
    tuple
        ``(wer, cer, corpus)``: per-row rates (NaN where not scored) and a dict with
        ``wer``, ``cer``, ``rows``, ``words``, ``chars``, ``substitutions``, ``deletions``,
        ``insertions``.

    Raises
    ------
    ValueError
        The two sequences differ in length.
    TypeError
        A value is neither text nor missing.

    Examples
    --------
    >>> wer, cer, corpus = score_texts(["the cat sat", "a b"], ["the cat sat down", None])
    >>> wer[0], corpus["wer"], corpus["rows"]
    (0.3333333333333333, 0.3333333333333333, 1)
    """
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} {what[0]} values for {len(hypotheses)} {what[1]} values;"
            " they must be aligned"
        )
    jiwer: Any = None
    wers: list[float] = []
    cers: list[float] = []
    totals = dict.fromkeys(
        ("words", "chars", "word_errors", "char_errors", "substitutions", "deletions"), 0
    )
    totals["insertions"] = 0
    rows = 0

    def for_words(text: str) -> str:
        return _normalize(text, split_cjk=True) if normalize else _collapse(text)

    def for_chars(text: str) -> str:
        return _normalize(text, split_cjk=False) if normalize else _collapse(text)

    for i, (ref_value, hyp_value) in enumerate(zip(references, hypotheses, strict=True)):
        ref = _as_text(ref_value, what[0], i)
        hyp = _as_text(hyp_value, what[1], i)
        if ref is None or hyp is None:
            wers.append(math.nan)
            cers.append(math.nan)
            continue
        if jiwer is None:
            jiwer = _jiwer()
        counts = _count(jiwer, for_words(ref), for_words(hyp), for_chars(ref), for_chars(hyp))
        rows += 1
        for key in totals:
            totals[key] += getattr(counts, key)
        wers.append(counts.word_errors / counts.words if counts.words else math.nan)
        cers.append(counts.char_errors / counts.chars if counts.chars else math.nan)
    corpus: dict[str, Any] = {
        "wer": totals["word_errors"] / totals["words"] if totals["words"] else math.nan,
        "cer": totals["char_errors"] / totals["chars"] if totals["chars"] else math.nan,
        "rows": rows,
        "words": totals["words"],
        "chars": totals["chars"],
        "substitutions": totals["substitutions"],
        "deletions": totals["deletions"],
        "insertions": totals["insertions"],
    }
    return wers, cers, corpus


def score_frame(
    df: pd.DataFrame,
    *,
    ref: str,
    hyp: str,
    normalize: bool = True,
    wer_col: str = "wer",
    cer_col: str = "cer",
) -> ScoreResult:
    """Score ``df[hyp]`` against ``df[ref]``; the logic behind ``df.stt.score``.

    Examples
    --------
    >>> import pandas as pd
    >>> score_frame(pd.DataFrame({"r": ["Hi there"], "h": ["hi there!"]}), ref="r", hyp="h").wer
    0.0
    """
    import pandas as pd

    for col, what in ((ref, "reference column"), (hyp, "hypothesis column")):
        if col not in df.columns:
            shown = ", ".join(map(repr, list(df.columns)[:20]))
            raise KeyError(f"{what} {col!r} is not a column of the DataFrame (columns: {shown})")
    wers, cers, corpus = score_texts(
        df[ref].tolist(),
        df[hyp].tolist(),
        normalize=normalize,
        what=(f"reference column {ref!r}", f"hypothesis column {hyp!r}"),
    )
    out = df.copy()
    out[wer_col] = pd.Series(wers, index=df.index, dtype="float64")
    out[cer_col] = pd.Series(cers, index=df.index, dtype="float64")
    return ScoreResult(df=out, normalized=normalize, **corpus)
