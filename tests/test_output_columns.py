"""The columns a run adds: their names and one dtype each; what ``df.stt.flag()`` finds alone."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._frames import TEXT_DTYPE

from .conftest import make_wav

METADATA_COLUMNS = [
    "text_cached",
    "text_provider",
    "text_duration",
    "text_cost",
    "text_latency",
    "text_request_id",
    "text_language",
]


def transcribe(paths: list[str], **kwargs: object) -> pd.DataFrame:
    df = pd.DataFrame({"audio": paths})
    return df.stt.transcribe(col="audio", model="local/fake", cache=False, progress=False, **kwargs)


def test_text_error_has_one_dtype_whether_or_not_rows_fail(tmp_path: Path) -> None:
    good = [str(p) for p in pn.sample_paths()[:2]]
    all_ok = transcribe(good, metadata=True)
    some_failed = transcribe([*good, str(tmp_path / "missing.wav")], metadata=True)
    all_failed = transcribe([str(tmp_path / "missing.wav")], metadata=True)
    for out in (all_ok, some_failed, all_failed):
        for col in ("text", "text_error", "text_provider", "text_request_id", "text_language"):
            assert out[col].dtype == TEXT_DTYPE, (col, out[col].dtype)
    assert all_ok["text_error"].isna().all()
    assert some_failed["text_error"].notna().tolist() == [False, False, True]
    assert some_failed["text_error"].iloc[2].startswith("AudioInputError:")
    # pandas' own string dtype: what a column of strings with gaps gets anyway.
    assert pd.Series(["x", None]).dtype == TEXT_DTYPE


def test_metadata_adds_the_documented_columns() -> None:
    out = transcribe([str(pn.sample_paths()[0])], metadata=True, language="en")
    assert list(out.columns) == ["audio", "text", "text_error", *METADATA_COLUMNS]
    assert out["text_request_id"].iloc[0]  # the gateway's id of the answer
    assert out["text_language"].iloc[0] == "en"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for col in METADATA_COLUMNS:
        assert f"`{col}`" in readme, col


def test_flag_finds_the_audio_column_and_language_of_the_run(tmp_path: Path) -> None:
    # 6 s of tone transcribed by the fake engine: few words for its length, so "too short".
    long_clip = tmp_path / "long.wav"
    long_clip.write_bytes(make_wav(3, seconds=6.0))
    out = transcribe([str(long_clip)], language="en")
    assert "text_duration" not in out.columns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flagged = out.stt.flag()
    # The durations were measured from the recorded audio column; only the language is
    # unchecked (no metadata=True, so no reported language), and the warning says so.
    assert [str(w.message) for w in caught] == [
        "flag_language unchecked on 1 row(s): no reported language: transcribe with"
        " metadata=True for text_language"
    ]
    measured = pd.Series([len(out["text"].iloc[0].split()) / 6.0 < 0.5])
    assert flagged["flag_short"].tolist() == measured.tolist()
    assert flagged["flag_long"].tolist() == [False]
    # The language asked for is remembered; the fake engine echoes it, so no mismatch.
    out_meta = transcribe([str(long_clip)], language="en", metadata=True)
    assert out_meta.stt.flag()["flag_language"].tolist() == [False]
    assert out_meta.stt.flag(language="fr")["flag_language"].tolist() == [True]


def test_flag_says_why_a_flag_could_not_be_computed() -> None:
    out = transcribe([str(pn.sample_paths()[0])])
    bare = out.drop(columns="audio")  # the recorded audio column is gone
    with pytest.warns(UserWarning, match="flag_short/flag_long unchecked on 1 row.*audio_col="):
        flagged = bare.stt.flag()
    assert flagged["flag_short"].isna().all()
    with pytest.warns(UserWarning, match="flag_language unchecked on 1 row.*language="):
        out.stt.flag()
    urls = pd.DataFrame({"audio": ["https://example.com/a.wav"], "text": ["hello there"]})
    with pytest.warns(UserWarning, match="could not be measured"):
        urls.stt.flag(audio_col="audio", language="en")
