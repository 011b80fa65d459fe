"""Quality flags: which transcribed rows a human should look at (``df.stt.flag``).

:func:`flag_rows` marks a row when the request failed; the text is empty although the audio
has sound in it; the text has far too few or far too many words for the clip's duration; or
the gateway reports a language other than the one asked for. Each flag is a nullable boolean
(NA where it could not be checked) and ``needs_review`` is True where any flag is True.

Words are counted by :func:`~._scoring.token_count` (a CJK character is one); durations and
loudness are measured by :func:`~._audio.measure_audio`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._audio import AudioFacts, is_missing, local_audio_bytes, measure_audio
from ._frames import check_language_choice, recorded_run, require_column
from ._scoring import token_count

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FLAG_COLUMNS",
    "flag_rows",
    "language_code",
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


# --------------------------------------------------------------------------- flags


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
        require_column(df, name, what)
        return list(df[name].tolist())

    def default(name: str | None, fallback: str) -> str | None:
        if name is not None:
            return name
        return fallback if fallback in df.columns else None

    check_language_choice(language, language_col)
    run = recorded_run(df, text_col)
    if audio_col is None:
        audio_col = run.get("audio_col")
    if language is None and language_col is None:
        language, language_col = run.get("language"), run.get("language_col")
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
    facts_memo: dict[tuple[Any, bool], AudioFacts] = {}

    def facts(i: int, need_energy: bool) -> AudioFacts:
        if audio is None:
            return AudioFacts(None, None)
        value = audio[i]
        key = (value if isinstance(value, str | bytes) else id(value), need_energy)
        if key not in facts_memo:
            data = local_audio_bytes(value)
            facts_memo[key] = (
                AudioFacts(None, None)
                if data is None
                else measure_audio(data, need_energy=need_energy, threshold_db=energy_db)
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

    _warn_unchecked(flags, texts, audio_col, durations, asked, reported, text_col)
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


def _warn_unchecked(
    flags: dict[str, list[bool | None]],
    texts: list[Any],
    audio_col: str | None,
    durations: list[Any] | None,
    asked: list[Any] | None,
    reported: list[Any] | None,
    text_col: str,
) -> None:
    """Say why flags stayed NA on rows with text, so an all-NA column is not read as "fine"."""
    import warnings

    rows = [i for i, failed in enumerate(flags["flag_error"]) if failed is False]
    reasons: list[str] = []
    no_rate = [i for i in rows if flags["flag_short"][i] is None]
    if no_rate:
        if audio_col is None and durations is None:
            why = (
                "no clip durations: pass audio_col= (local files and bytes are measured), or "
                f"transcribe with metadata=True for a {text_col}_duration column"
            )
        else:
            why = "their durations could not be measured (URL audio is never downloaded)"
        reasons.append(f"flag_short/flag_long unchecked on {len(no_rate)} row(s): {why}")
    no_language = [i for i in rows if flags["flag_language"][i] is None]
    if no_language:
        if asked is None or all(language_code(asked[i]) is None for i in no_language):
            why = "no language was asked for (language= or language_col=)"
        elif reported is None:
            why = f"no reported language: transcribe with metadata=True for {text_col}_language"
        else:
            why = "the gateway reported no language for them"
        reasons.append(f"flag_language unchecked on {len(no_language)} row(s): {why}")
    if reasons:
        warnings.warn("; ".join(reasons), UserWarning, stacklevel=4)
