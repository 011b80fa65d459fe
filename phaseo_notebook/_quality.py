"""Transcript quality: word and character error rates, and flags for human review.

Scoring
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

    With ``normalize=False`` only step 6 applies. Word error rate (WER) and character error
    rate (CER) come from ``jiwer`` (the ``[quality]`` extra, also in ``[local]``): errors
    (substitutions + deletions + insertions) over the words (characters, spaces included) of
    the reference. CER is measured on the same normalised text without step 5: the spaces
    that step inserts are not characters of the transcript. Corpus figures are total errors over total reference words, not the mean
    of the per-row rates, so long clips weigh more than short ones. Rows without a reference
    or without a hypothesis (a failed transcription) are not scored. A row whose reference is
    empty after normalisation has no defined rate (NaN), but its insertions still count in
    the corpus numerator.

Flags
    :func:`flag_rows` marks rows a human should look at: the request failed; the text is
    empty although the audio has sound in it; the text has far too few or far too many
    words for the clip's duration; the gateway reports a language other than the one asked
    for. Each flag is a nullable boolean (NA where it could not be checked) and
    ``needs_review`` is True where any flag is True.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._audio import is_missing
from ._extras import MissingExtraError, require

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

__all__ = [
    "FLAG_COLUMNS",
    "ScoreResult",
    "flag_rows",
    "language_code",
    "normalize_text",
    "score_frame",
    "score_texts",
    "token_count",
]

#: The flag columns :func:`flag_rows` adds, besides ``needs_review`` and ``review_reasons``.
FLAG_COLUMNS = ("flag_error", "flag_empty", "flag_short", "flag_long", "flag_language")
_REASONS = {
    "flag_error": "error",
    "flag_empty": "empty_text",
    "flag_short": "too_short",
    "flag_long": "too_long",
    "flag_language": "language",
}

#: Slowest plausible speech, in tokens per second, for clips of at least ``MIN_SHORT_DURATION``.
DEFAULT_MIN_RATE = 0.5
#: Fastest plausible speech: fast English is about 4 words/s, fast Mandarin 7 syllables/s.
DEFAULT_MAX_RATE = 7.0
#: Below this many seconds a single word is normal, so "too short" is not judged.
MIN_SHORT_DURATION = 2.0
#: "Too long" is judged only from this many tokens on: two words in a 0.2 s clip happen.
MIN_LONG_TOKENS = 4
#: A 20 ms frame louder than this (RMS, dB relative to full scale) counts as sound.
DEFAULT_ENERGY_DB = -40.0
#: Seconds of loud frames that make a clip "not silent".
MIN_SOUND_SECONDS = 0.1
_FRAME_SECONDS = 0.02

_APOSTROPHES = "'\u2019\u02bc\u2018`"
_SPACE_RE = re.compile(r"\s+")
# CJK unified ideographs (with extension A and compatibility), hiragana and katakana.
_CJK_RE = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")

# Full language names some providers report (Whisper's verbose output says "english").
_LANGUAGE_NAMES = {
    "arabic": "ar",
    "catalan": "ca",
    "chinese": "zh",
    "mandarin": "zh",
    "czech": "cs",
    "danish": "da",
    "dutch": "nl",
    "english": "en",
    "finnish": "fi",
    "french": "fr",
    "german": "de",
    "greek": "el",
    "hebrew": "he",
    "hindi": "hi",
    "hungarian": "hu",
    "indonesian": "id",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "norwegian": "no",
    "polish": "pl",
    "portuguese": "pt",
    "romanian": "ro",
    "russian": "ru",
    "spanish": "es",
    "swedish": "sv",
    "thai": "th",
    "turkish": "tr",
    "ukrainian": "uk",
    "vietnamese": "vi",
}
_ISO639_2 = {
    "ara": "ar",
    "chi": "zh",
    "zho": "zh",
    "deu": "de",
    "ger": "de",
    "eng": "en",
    "fra": "fr",
    "fre": "fr",
    "ita": "it",
    "jpn": "ja",
    "kor": "ko",
    "nld": "nl",
    "dut": "nl",
    "por": "pt",
    "rus": "ru",
    "spa": "es",
}


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


def language_code(value: object) -> str | None:
    """The ISO 639-1 code of a language tag or name, lowercased; None when missing.

    Examples
    --------
    >>> language_code("en-US"), language_code("English"), language_code("fra"), language_code(None)
    ('en', 'en', 'fr', None)
    """
    if is_missing(value) or not isinstance(value, str) or not value.strip():
        return None
    tag = value.strip().lower().replace("_", "-")
    primary = tag.split("-", 1)[0]
    return _LANGUAGE_NAMES.get(tag) or _ISO639_2.get(primary) or primary


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
        head = (
            f"<p><b>WER {_percent(self.wer)}</b>, <b>CER {_percent(self.cer)}</b> over "
            f"{self.rows} scored rows ({self.words} reference words; "
            f"{self.substitutions} substituted, {self.deletions} deleted, "
            f"{self.insertions} inserted{'' if self.normalized else '; not normalised'})</p>"
        )
        return head + _frame_html(self.df)


def _frame_html(frame: pd.DataFrame) -> str:
    """A DataFrame as a notebook shows it (truncated per pandas' display options)."""
    shown: Any = frame  # pandas-stubs does not declare the notebook hook
    table = shown._repr_html_()
    return table if isinstance(table, str) else f"<pre>{html.escape(repr(frame))}</pre>"


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


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


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class _AudioFacts:
    duration: float | None
    loud_seconds: float | None


def _read_audio_bytes(value: object) -> bytes | None:
    """The bytes of a local input (path, bytes, data URI); None for URLs and bad inputs."""
    from ._audio import normalize_audio
    from ._exceptions import AudioInputError

    try:
        source = normalize_audio(value)
        if source.kind == "url":
            return None  # flags never download: that is the gateway's job
        return source.read()
    except (AudioInputError, ValueError, TypeError):
        return None


def _loud_seconds(samples: npt.NDArray[np.float32], rate: int, threshold_db: float) -> float:
    import numpy as np

    frame = max(1, int(rate * _FRAME_SECONDS))
    usable = (len(samples) // frame) * frame
    if usable == 0:
        return 0.0
    frames = samples[:usable].reshape(-1, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    threshold = 10.0 ** (threshold_db / 20.0)
    return float(np.count_nonzero(rms > threshold)) * frame / rate


def _audio_facts(data: bytes, *, need_energy: bool, threshold_db: float) -> _AudioFacts:
    """Duration (header only when possible) and, if asked, seconds of loud 20 ms frames."""
    import io

    from ._engines import wav_duration

    duration = wav_duration(data)
    if not need_energy and duration is not None:
        return _AudioFacts(duration, None)
    try:
        soundfile = require("soundfile", "local", purpose="audio checks of the quality flags")
    except MissingExtraError:
        return _AudioFacts(duration, None)
    try:
        if not need_energy:
            info = soundfile.info(io.BytesIO(data))
            return _AudioFacts(float(info.frames) / float(info.samplerate), None)
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:  # libsndfile cannot read it: the check is skipped, not the run
        return _AudioFacts(duration, None)
    if samples.shape[0] == 0 or rate <= 0:
        return _AudioFacts(duration, None)
    mono = samples.mean(axis=1)
    return _AudioFacts(samples.shape[0] / float(rate), _loud_seconds(mono, int(rate), threshold_db))


def _float_or_none(value: object) -> float | None:
    if is_missing(value) or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def flag_rows(
    df: pd.DataFrame,
    *,
    audio_col: str | None = None,
    text_col: str = "text",
    language: str | None = None,
    language_col: str | None = None,
    error_col: str | None = None,
    duration_col: str | None = None,
    reported_language_col: str | None = None,
    min_rate: float = DEFAULT_MIN_RATE,
    max_rate: float = DEFAULT_MAX_RATE,
    energy_db: float = DEFAULT_ENERGY_DB,
) -> pd.DataFrame:
    """Add quality flags and ``needs_review``; the logic behind ``df.stt.flag``.

    Parameters
    ----------
    df
        Usually the output of ``df.stt.transcribe(..., metadata=True)``.
    audio_col
        Column of audio inputs, read (never downloaded: URLs are skipped) for the clip's
        duration where ``duration_col`` has none, and for its loudness where the text is
        empty. Without it, both checks use ``duration_col`` only.
    text_col
        Column of transcripts.
    language, language_col
        The language asked for, for every row or per row.
    error_col
        Column of per-row errors; default ``f"{text_col}_error"`` when present.
    duration_col
        Clip durations in seconds; default ``f"{text_col}_duration"`` when present.
    reported_language_col
        Language the gateway reports; default ``f"{text_col}_language"`` when present.
    min_rate, max_rate
        Plausible speech rate in tokens per second (words; a CJK character is a token).
    energy_db
        RMS level (dBFS) of a 20 ms frame above which the frame counts as sound.

    Returns
    -------
    pandas.DataFrame
        A copy with nullable boolean columns ``flag_error`` (the row failed), ``flag_empty``
        (empty text, yet at least 0.1 s of frames above ``energy_db``), ``flag_short``
        (fewer than ``min_rate`` tokens/s in a clip of 2 s or more), ``flag_long`` (more than
        ``max_rate`` tokens/s, from 4 tokens on), ``flag_language`` (reported language
        differs from the one asked for); NA where a flag could not be checked (no duration,
        URL audio, the ``[local]`` extra missing for non-WAV audio). ``needs_review`` is
        True where any flag is True, and ``review_reasons`` names them.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"text": ["hi", None], "text_error": [None, "APIError: boom"]})
    >>> flag_rows(df)["needs_review"].tolist()
    [False, True]
    """
    import pandas as pd

    def column(name: str | None, what: str) -> list[Any] | None:
        if name is None:
            return None
        if name not in df.columns:
            shown = ", ".join(map(repr, list(df.columns)[:20]))
            raise KeyError(f"{what} {name!r} is not a column of the DataFrame (columns: {shown})")
        return list(df[name].tolist())

    def default(name: str | None, fallback: str) -> str | None:
        if name is not None:
            return name
        return fallback if fallback in df.columns else None

    if language is not None and language_col is not None:
        raise ValueError("give either language= or language_col=, not both")
    for name, value in (("min_rate", min_rate), ("max_rate", max_rate)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(
                f"{name} must be a positive number of tokens per second, not {value!r}"
            )
    if min_rate >= max_rate:
        raise ValueError(f"min_rate ({min_rate}) must be below max_rate ({max_rate})")

    n = len(df)
    texts = column(text_col, "text column")
    assert texts is not None
    audio = column(audio_col, "audio column")
    errors = column(default(error_col, f"{text_col}_error"), "error column")
    durations = column(default(duration_col, f"{text_col}_duration"), "duration column")
    reported = column(
        default(reported_language_col, f"{text_col}_language"), "reported language column"
    )
    asked = column(language_col, "language column") if language_col else [language] * n

    flags: dict[str, list[bool | None]] = {name: [None] * n for name in FLAG_COLUMNS}
    facts_memo: dict[tuple[Any, bool], _AudioFacts] = {}

    def facts(i: int, need_energy: bool) -> _AudioFacts:
        if audio is None:
            return _AudioFacts(None, None)
        value = audio[i]
        key = (value if isinstance(value, str | bytes) else id(value), need_energy)
        if key not in facts_memo:
            data = _read_audio_bytes(value)
            facts_memo[key] = (
                _AudioFacts(None, None)
                if data is None
                else _audio_facts(data, need_energy=need_energy, threshold_db=energy_db)
            )
        return facts_memo[key]

    for i in range(n):
        text = texts[i]
        failed = is_missing(text) or (errors is not None and not is_missing(errors[i]))
        flags["flag_error"][i] = bool(failed)
        if failed:
            continue
        if not isinstance(text, str):
            raise TypeError(
                f"text column {text_col!r} row {i} holds {type(text).__name__}, not text"
            )
        tokens = token_count(text)
        duration = _float_or_none(durations[i]) if durations is not None else None
        if tokens == 0:
            loud = facts(i, need_energy=True).loud_seconds
            flags["flag_empty"][i] = None if loud is None else loud >= MIN_SOUND_SECONDS
        else:
            flags["flag_empty"][i] = False
        if duration is None:
            duration = facts(i, need_energy=False).duration
        if duration is not None and duration > 0 and tokens > 0:
            rate = tokens / duration
            flags["flag_short"][i] = duration >= MIN_SHORT_DURATION and rate < min_rate
            flags["flag_long"][i] = tokens >= MIN_LONG_TOKENS and rate > max_rate
        elif tokens == 0:
            # Empty text is judged by the loudness check alone, not twice.
            flags["flag_short"][i] = False
            flags["flag_long"][i] = False
        want = language_code(asked[i]) if asked is not None else None
        got = language_code(reported[i]) if reported is not None else None
        if want is not None and got is not None:
            flags["flag_language"][i] = want != got

    out = df.copy()
    for name, values in flags.items():
        out[name] = pd.array(values, dtype="boolean")
    reasons = [
        ",".join(_REASONS[name] for name in FLAG_COLUMNS if flags[name][i] is True)
        for i in range(n)
    ]
    out["needs_review"] = pd.Series([bool(r) for r in reasons], index=df.index, dtype="bool")
    out["review_reasons"] = pd.Series(reasons, index=df.index, dtype=object)
    return out
