"""A rerun served from the cache: the frame of the run that paid for it, row for row.

The engine fills cached rows column by column (no answer object per row) and groups into
requests only the rows it must send; these tests hold that to the frame a first run gives.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._engines import fake_transcript

from .conftest import make_wav

LONG_AGO_NS = 1_600_000_000 * 10**9
#: What only a sent row has, and what only a cached row has.
SENT_ONLY = ["text_cached", "text_latency"]


def test_a_cached_rerun_returns_the_frame_of_the_first_run(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(make_wav(7))
    os.utime(clip, ns=(LONG_AGO_NS, LONG_AGO_NS))  # old enough for its hash to be kept
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    (served_dir / "u.wav").write_bytes(make_wav(3))
    with pn.LocalGateway(engine="fake", mode="live", files_dir=served_dir) as gw:
        values: list[object] = [
            make_wav(1),
            str(clip),
            gw.file_url("u.wav"),  # fetched by the gateway
            make_wav(1),  # a duplicate: one request, two rows
            None,
            make_wav(7),  # the file's bytes: the file's request
            str(tmp_path / "missing.wav"),
            f"  {clip}",  # not a path the file system knows: refused, not looked up
            make_wav(2),
        ]
        df = pd.DataFrame(
            {"audio": values, "n": range(len(values))},
            index=pd.Index([f"r{(i * 5) % 9}" for i in range(len(values))], name="id"),
        )

        def run() -> pd.DataFrame:
            return df.stt.transcribe(
                col="audio",
                model="local/fake",
                client=pn.Client(**gw.client_kwargs()),
                cache=tmp_path / "cache",
                progress=False,
                metadata=True,
                timestamps="word",
            )

        first = run()
        sent = gw.stats().requests
        again = run()
        assert gw.stats().requests == sent  # nothing sent again
    served = [True, True, True, True, False, True, False, False, True]
    assert again["text_cached"].tolist() == served
    assert not first["text_cached"].any()
    assert again["text_latency"].isna().all()
    assert first["text_latency"].notna().tolist() == served
    assert list(again.columns) == list(first.columns)
    assert again.dtypes.equals(first.dtypes)
    pd.testing.assert_frame_equal(again.drop(columns=SENT_ONLY), first.drop(columns=SENT_ONLY))
    # Every metadata column came back from the cache, not only the text.
    row = again.iloc[1]
    assert row["text"] == fake_transcript(make_wav(7)) and row["text_provider"] == "local"
    assert row["text_request_id"] and row["text_duration"] == pytest.approx(0.1)
    assert row["text_segments"][0]["text"] == row["text"] and row["text_words"] == []


def test_a_partly_cached_rerun_sends_the_rest_and_fills_every_row_in_place(
    tmp_path: Path,
) -> None:
    clips = [make_wav(i) for i in range(5)]
    seen = pd.DataFrame({"audio": clips[:2], "lang": ["en", "fr"]})
    df = pd.DataFrame(
        {
            "audio": [clips[0], clips[3], clips[1], clips[0], clips[4], clips[1], None, clips[3]],
            "lang": ["en", "en", "fr", "de", "en", "fr", "en", "en"],
        }
    )
    with pn.LocalGateway(engine="fake") as gw:
        kw = {
            "col": "audio",
            "model": "local/fake",
            "language_col": "lang",
            "client": pn.Client(**gw.client_kwargs()),
            "cache": tmp_path / "cache",
            "progress": False,
            "metadata": True,
        }
        seen.stt.transcribe(**kw)
        gw.reset_stats()
        out = df.stt.transcribe(**kw)
        # clip 3 in English (twice), clip 0 in German, clip 4: three requests.
        assert gw.stats().requests == 3
    assert out["text_cached"].tolist() == [True, False, True, False, False, True, False, False]
    want = [fake_transcript(c) if c is not None else None for c in df["audio"]]
    assert out["text"].tolist()[:6] == want[:6] and out["text"].iloc[7] == want[7]
    assert pd.isna(out["text"].iloc[6]) and "missing value" in out["text_error"].iloc[6]
    sent = [False, True, False, True, True, False, False, True]
    assert out["text_latency"].notna().tolist() == sent


def test_errors_raise_raises_the_first_refused_row() -> None:
    kw = {"col": "audio", "model": "local/fake", "cache": False, "progress": False}
    bad_language_first = pd.DataFrame(
        {"audio": [make_wav(1), None, make_wav(2)], "lang": ["en", "", "en"]}
    )
    with pytest.raises(ValueError, match="language ''"):
        bad_language_first.stt.transcribe(language_col="lang", errors="raise", **kw)
    missing_first = pd.DataFrame(
        {"audio": [make_wav(1), None, make_wav(2)], "lang": ["en", "en", 3]}
    )
    with pytest.raises(pn.AudioInputError, match="missing value"):
        missing_first.stt.transcribe(language_col="lang", errors="raise", **kw)
    broken_then_missing = pd.DataFrame({"audio": ["no such file.wav", None]})
    with pytest.raises(pn.AudioInputError, match="does not exist"):
        broken_then_missing.stt.transcribe(errors="raise", **kw)
