"""Scoring transcripts: word and character error rates after a documented normalisation.

Normalisation
    Both the reference and the hypothesis are normalised the same way before they are
    compared (``normalize=False`` turns it off). :func:`normalize_text` does steps 1-6,
    :func:`normalize_for_scoring` adds step 7, and scoring compares the result of step 7:

    1. Unicode NFKC (full-width forms, ligatures and compatibility characters folded);
    2. case folding (``"Straße"`` -> ``"strasse"``);
    3. apostrophes removed inside words (``"don't"`` -> ``"dont"``), so a model that writes
       the apostrophe and one that does not agree;
    4. every other punctuation mark or symbol replaced by a space; the words inside
       parentheses and brackets are kept, only the marks go;
    5. each CJK ideograph and kana becomes a token of its own: Chinese and Japanese put no
       spaces between words, so without this a whole sentence would be a single "word";
    6. runs of whitespace collapsed to one space, ends stripped;
    7. numbers written in English words become digits, and every digit is a token of its
       own, whichever way it was written: ``"1, 2, 3"``, ``"123"`` and ``"one two three"``
       all become ``"1 2 3"``; ``"5551234"`` and ``"five five five one two three four"``
       both become ``"5 5 5 1 2 3 4"``; ``"twenty five"``, ``"twenty-five"`` and ``"25"``
       become ``"2 5"``. A cardinal is read as one number (``"two thousand and five"`` is
       2005, ``"nineteen eighty four"`` is 19 then 84), single digit words in a row are read
       digit by digit, ``"oh"`` right after a number is a zero (``"five oh one"``), and
       ``"double"``/``"triple"`` repeat the digit after them. Ordinals, decimals, currency
       and percent words are left as words. Step 7 runs on every text: in another language
       only English number words (rare there) would change.

    Why every digit is a token: a number can be said and written in several groupings
    ("five five five" or "555", "1, 2, 3" or "123"); one token per digit makes them all
    the same token sequence, and a wrong digit counts as one error, not as a whole wrong
    number. A number therefore weighs as many words as it has digits.

    With ``normalize=False`` only step 6 applies. :func:`token_count` (the words the
    quality flags count against a clip's duration) stops after step 6.

    Compared with the reference normaliser of the Open ASR Leaderboard (Whisper's
    ``EnglishTextNormalizer``), which also folds case and punctuation and turns spelled
    numbers into digits: that one deletes words in parentheses and brackets and filler
    words ("um", "uh"), which this one never does, since a deleted reference word is an
    error the score would hide; it also expands contractions, rewrites British spellings
    and writes currency and percentages as symbols, which this one does not. It keeps digit
    sequences whole (``"one two three"`` -> ``"123"``, while ``"1, 2, 3"`` stays
    ``"1 2 3"``), so there the first example above differs; here it does not.

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
from ._frames import require_column
from ._render import score_html

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ScoreResult",
    "normalize_for_scoring",
    "normalize_text",
    "score_frame",
    "score_texts",
    "token_count",
]

_APOSTROPHES = "'\u2019\u02bc\u2018`"
_SPACE_RE = re.compile(r"\s+")
# CJK unified ideographs (with extension A and compatibility), hiragana and katakana.
_CJK_RE = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")
_DIGIT_RE = re.compile(r"\d")

_DIGIT_WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_SCALES = {
    "thousand": 10**3,
    "million": 10**6,
    "billion": 10**9,
    "trillion": 10**12,
}
_ZEROS_AFTER_A_NUMBER = frozenset({"oh", "o"})
_REPEATS = {"double": 2, "triple": 3}


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


def normalize_for_scoring(text: str) -> str:
    """The text scoring compares: :func:`normalize_text`, then numbers as single digits.

    Parameters
    ----------
    text
        A reference or a hypothesis.

    Returns
    -------
    str
        Lowercase tokens separated by single spaces, each digit a token (step 7 of the
        module docstring).

    Examples
    --------
    >>> normalize_for_scoring("1, 2, 3") == normalize_for_scoring("One two three.")
    True
    >>> normalize_for_scoring("Call 5551234 (office)")
    'call 5 5 5 1 2 3 4 office'
    >>> normalize_for_scoring("twenty-five past nineteen hundred")
    '2 5 past 1 9 0 0'
    """
    return _numbers_as_digits(_normalize(text, split_cjk=True))


def _numbers_as_digits(normalized: str) -> str:
    """Step 7 on text already through steps 1-6 (lowercase words, no punctuation)."""
    words = normalized.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        after = words[i + 1] if i + 1 < len(words) else None
        if word in _REPEATS and after in _DIGIT_WORDS:
            out.extend([str(_DIGIT_WORDS[after])] * _REPEATS[word])
            i += 2
        elif word in _DIGIT_WORDS or word in _TEENS or word in _TENS:
            value, i = _read_cardinal(words, i)
            out.append(str(value))
        elif word in _ZEROS_AFTER_A_NUMBER and out and out[-1].isdigit():
            out.append("0")
            i += 1
        else:
            out.append(word)
            i += 1
    return _collapse(_DIGIT_RE.sub(r" \g<0> ", " ".join(out)))


def _read_cardinal(words: list[str], start: int) -> tuple[int, int]:
    """The value of the number words from ``words[start]``, and the index after them.

    A word joins the number only where English grammar puts it: units after tens
    ("twenty five"), anything after "hundred" or a scale ("one hundred and five"),
    "hundred" after a number below 100, a scale after a smaller group. Anything else ends
    the number, so "five five" is two numbers and "nineteen eighty" is 19 then 80.
    """
    total = 0  # the groups already multiplied by a scale (thousands, millions, ...)
    group = 0  # the group below 1000 being read
    last = ""  # what the previous word was: "unit", "teen", "tens", "hundred", "scale"
    smallest_scale = math.inf
    i = start
    while i < len(words):
        word = words[i]
        after_multiplier = last in ("hundred", "scale")
        if word in _DIGIT_WORDS:
            value = _DIGIT_WORDS[word]
            if value == 0:
                if last:
                    break
                return 0, i + 1  # "zero" is a number of its own: nothing extends it
            if last and last != "tens" and not after_multiplier:
                break
            group += value
            last = "unit"
        elif word in _TEENS or word in _TENS:
            if last and not after_multiplier:
                break
            group += _TEENS.get(word) or _TENS[word]
            last = "teen" if word in _TEENS else "tens"
        elif word == "hundred":
            if last not in ("unit", "teen", "tens") or group >= 100:
                break
            group *= 100
            last = "hundred"
        elif word in _SCALES:
            scale = _SCALES[word]
            if not last or last == "scale" or group == 0 or scale >= smallest_scale:
                break
            total += group * scale
            group = 0
            smallest_scale = scale
            last = "scale"
        elif word == "and":
            following = words[i + 1] if i + 1 < len(words) else None
            number_follows = following in _DIGIT_WORDS or following in _TEENS or following in _TENS
            if not (after_multiplier and number_follows and following != "zero"):
                break
        else:
            break
        i += 1
    return total + group, i


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
        Whether :func:`normalize_for_scoring` was applied.

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
        Apply :func:`normalize_for_scoring` to both sides first.
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
        return normalize_for_scoring(text) if normalize else _collapse(text)

    def for_chars(text: str) -> str:
        if not normalize:
            return _collapse(text)
        return _numbers_as_digits(_normalize(text, split_cjk=False))

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

    require_column(df, ref, "reference column")
    require_column(df, hyp, "hypothesis column")
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
