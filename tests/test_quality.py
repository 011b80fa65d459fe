"""Scoring (WER/CER), quality flags and model comparison, against hand-computed figures."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._accessor import SttDataFrameAccessor
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._flags import language_code
from phaseo_notebook._scoring import (
    normalize_for_scoring,
    normalize_text,
    score_texts,
    token_count,
)

from .conftest import make_wav


def stt(df: pd.DataFrame) -> SttDataFrameAccessor:
    """``df.stt``, typed: the stubs read an unknown attribute as a column."""
    return cast(SttDataFrameAccessor, df.stt)


def bar_heights(ax: Any) -> list[float]:
    return [float(bar.get_height()) for bar in ax.patches]


def silent_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buf.getvalue()


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("  Don\u2019t   PANIC.\n", "dont panic"),
        ("twenty-one $5 50%", "twenty one 5 50"),
        ("Stra\u00dfe \uff21\uff22", "strasse ab"),  # case folding and full-width forms (NFKC)
        ("zero\u200bwidth", "zerowidth"),
        ("\u7838\u81ea\u5df1\u7684\u811a\u3002", "\u7838 \u81ea \u5df1 \u7684 \u811a"),
        ("", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_token_count_and_language_code() -> None:
    assert token_count("One, two... three!") == 3
    assert token_count("\u7838\u81ea\u5df1\u7684\u811a") == 5
    assert token_count("  ...  ") == 0
    assert [language_code(v) for v in ("en-US", "English", "fra", "ZH_cn", None, "")] == [
        "en",
        "en",
        "fr",
        "zh",
        None,
        None,
    ]


# --------------------------------------------------------------------------- scoring


def test_wer_and_cer_hand_computed() -> None:
    # the cat [sat->sit] on [the] mat: 1 substitution + 1 deletion over 6 words.
    # Characters: "sat"->"sit" is 1, "the " deleted is 4: 5 edits over 22 characters.
    wer, cer, corpus = score_texts(["the cat sat on the mat"], ["the cat sit on mat"])
    assert wer == [pytest.approx(2 / 6)]
    assert cer == [pytest.approx(5 / 22)]
    assert (corpus["substitutions"], corpus["deletions"], corpus["insertions"]) == (1, 1, 0)
    # Two words inserted over a two-word reference: 100%, and 4 characters over 3.
    wer, cer, _ = score_texts(["a b"], ["a b c d"])
    assert wer == [1.0]
    assert cer == [pytest.approx(4 / 3)]


def test_normalisation_can_be_turned_off() -> None:
    on = stt(pd.DataFrame({"reference": ["Hello, World!"], "text": ["hello world"]})).score()
    assert (on.wer, on.cer) == (0.0, 0.0)
    off = stt(pd.DataFrame({"reference": ["Hello, World!"], "text": ["hello world"]})).score(
        normalize=False
    )
    # Both words differ as written (case, punctuation): 2 substitutions over 2 words.
    # Characters: H->h, W->w substituted, "," and "!" deleted: 4 over 13.
    assert off.wer == 1.0
    assert off.cer == pytest.approx(4 / 13)
    assert off.normalized is False
    # Whitespace is never content, even with normalisation off.
    ws = stt(pd.DataFrame({"reference": ["a  b"], "text": [" a b "]})).score(normalize=False)
    assert ws.wer == 0.0


def test_cjk_is_scored_per_character() -> None:
    wer, cer, corpus = score_texts(["\u7838\u81ea\u5df1\u7684\u811a"], ["\u7838\u81ea\u5df1\u811a"])
    # One of five characters dropped; the spaces normalisation puts between them do not count.
    assert wer == [pytest.approx(0.2)]
    assert cer == [pytest.approx(0.2)]
    assert corpus["chars"] == 5


def test_corpus_figures_are_total_errors_over_total_words() -> None:
    df = pd.DataFrame(
        {
            "reference": ["the cat sat on the mat", "a b", "x", None, ""],
            "text": ["the cat sit on mat", "a b c d", None, "y", "z"],
        },
        index=["r1", "r2", "r3", "r4", "r5"],
    )
    res = stt(df).score(ref="reference", hyp="text")
    # Scored rows: r1 (2 errors / 6 words), r2 (2 / 2), r5 (1 insertion / 0 words).
    # Corpus: 5 errors over 8 words; the mean of per-row rates would be 0.667.
    assert res.wer == pytest.approx(5 / 8)
    assert res.rows == 3
    assert res.words == 8
    assert res.df.loc["r1", "wer"] == pytest.approx(1 / 3)
    assert res.df.loc["r2", "wer"] == 1.0
    assert res.df[["wer", "cer"]].loc[["r3", "r4", "r5"]].isna().all().all()
    assert list(res.df.index) == list(df.index)
    assert "wer" not in df.columns  # a new frame, the input untouched
    assert res.summary()["wer"] == res.wer
    assert "WER 62.5%" in res._repr_html_()


def test_score_rejects_bad_input() -> None:
    df = pd.DataFrame({"reference": ["a"], "text": ["a"]})
    with pytest.raises(KeyError, match="'ref2' is not a column"):
        stt(df).score(ref="ref2")
    with pytest.raises(TypeError, match="reference column 'reference' row 0 holds int"):
        stt(pd.DataFrame({"reference": [3], "text": ["3"]})).score()
    with pytest.raises(ValueError, match="aligned"):
        score_texts(["a"], ["a", "b"])


# --------------------------------------------------------------------------- numbers


def test_numbers_in_words_and_in_digits_score_alike() -> None:
    refs = ["1, 2, 3", "5551234", "Call 555-1234 in 2025.", "twenty-five (25) people"]
    hyps = [
        "one two three",
        "five five five one two three four",
        "call five five five one two three four in twenty twenty five",
        "25 twenty five people",
    ]
    wer, cer, corpus = score_texts(refs, hyps)
    assert wer == [0.0, 0.0, 0.0, 0.0]
    assert cer == [0.0, 0.0, 0.0, 0.0]
    assert corpus["wer"] == 0.0
    res = stt(pd.DataFrame({"reference": refs[:2], "text": hyps[:2]})).score()
    assert (res.wer, res.cer) == (0.0, 0.0)
    # Without normalisation they are different words again.
    off = stt(pd.DataFrame({"reference": refs[:2], "text": hyps[:2]})).score(normalize=False)
    assert off.wer == pytest.approx((3 + 7) / (3 + 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One, two, three!", "1 2 3"),
        ("123", "1 2 3"),
        ("5551234", "5 5 5 1 2 3 4"),
        ("5,551,234", "5 5 5 1 2 3 4"),
        ("five five five one two three four", "5 5 5 1 2 3 4"),
        ("twenty-five", "2 5"),
        ("two thousand and five", "2 0 0 5"),
        ("nineteen eighty four", "1 9 8 4"),
        ("one hundred and five", "1 0 5"),
        ("two million three hundred thousand", "2 3 0 0 0 0 0"),
        ("five oh one", "5 0 1"),
        ("double five", "5 5"),
        ("zero one", "0 1"),
        # Words that only look like numbers, or "and"/"oh" outside a number, stay words.
        ("oh yes and five and six", "oh yes and 5 and 6"),
        ("someone said a hundred", "someone said a hundred"),
        ("double check", "double check"),
    ],
)
def test_normalize_for_scoring_reads_numbers_as_digits(text: str, expected: str) -> None:
    assert normalize_for_scoring(text) == expected


def test_normalisation_keeps_words_in_parentheses_and_brackets() -> None:
    assert normalize_for_scoring("Hello (world) [laughs] {um}") == "hello world laughs um"
    # A bracketed reference word the hypothesis misses is a deletion, not hidden.
    wer, _, corpus = score_texts(["hello (world)"], ["hello"])
    assert wer == [0.5]
    assert corpus["deletions"] == 1


def test_wer_with_numbers_hand_computed() -> None:
    # Reference tokens: call 5 5 5 1 2 3 4 at 9 (10). The hypothesis says "five" for
    # "9" and drops "at": 1 substitution + 1 deletion = 2 errors over 10 words.
    wer, _, corpus = score_texts(
        ["Call 555 1234 at 9"], ["call five five five one two three four five"]
    )
    assert wer == [pytest.approx(2 / 10)]
    assert (corpus["substitutions"], corpus["deletions"], corpus["insertions"]) == (1, 1, 0)
    assert corpus["words"] == 10


# --------------------------------------------------------------------------- flags


def test_flag_error_and_empty_text_with_and_without_sound() -> None:
    df = pd.DataFrame(
        {
            "audio": [make_wav(3, seconds=0.5), silent_wav(0.5), make_wav(4, seconds=0.5), b"x"],
            "text": ["", "", None, "fine words"],
            "text_error": [None, None, "APIStatusError: boom", None],
        },
        index=[10, 20, 30, 40],
    )
    out = stt(df).flag(audio_col="audio")
    assert out["flag_empty"].tolist()[:2] == [True, False]  # a tone is sound; silence is not
    assert out["flag_error"].tolist() == [False, False, True, False]
    assert out["needs_review"].tolist() == [True, False, True, False]
    assert out["review_reasons"].tolist() == ["empty_text", "", "error", ""]
    assert list(out.index) == [10, 20, 30, 40]
    assert out["flag_empty"].dtype == "boolean"


def test_flag_text_too_short_or_too_long_for_the_duration() -> None:
    twenty = " ".join(["word"] * 20)
    df = pd.DataFrame(
        {
            "text": ["hello", "hello", twenty, "one two three", "hello"],
            "text_duration": [10.0, 1.0, 1.0, 1.5, None],
        }
    )
    out = stt(df).flag()
    # 0.1 words/s over 10 s: too short; a single word in 1 s is normal speech.
    assert out["flag_short"].tolist()[:4] == [True, False, False, False]
    # 20 words in one second: too long.
    assert out["flag_long"].tolist()[:4] == [False, False, True, False]
    # No duration and no audio to read it from: not checkable.
    assert out["flag_short"].isna().tolist() == [False, False, False, False, True]
    assert out["review_reasons"].tolist() == ["too_short", "", "too_long", "", ""]


def test_flag_reads_the_duration_from_the_audio(tmp_path: Path) -> None:
    path = tmp_path / "one_second.wav"
    path.write_bytes(make_wav(5, seconds=1.0))
    twenty = " ".join(["word"] * 20)
    df = pd.DataFrame({"audio": [str(path), "https://example.com/a.wav"], "text": [twenty] * 2})
    out = stt(df).flag(audio_col="audio")
    assert out["flag_long"].iloc[0] == True  # noqa: E712 (a nullable boolean)
    assert out["flag_long"].isna().iloc[1]  # URLs are never downloaded to check


def test_flag_language_mismatch() -> None:
    df = pd.DataFrame(
        {
            "text": ["a b", "a b", "a b", "a b"],
            "text_language": ["en", "English", "en", None],
            "asked": ["fr", "en", "en-GB", "fr"],
        }
    )
    out = stt(df).flag(language_col="asked")
    assert out["flag_language"].tolist()[:3] == [True, False, False]
    assert out["flag_language"].isna().tolist() == [False, False, False, True]
    assert stt(df).flag(language="fr")["flag_language"].tolist()[:3] == [True, True, True]
    assert stt(df).flag()["flag_language"].isna().all()  # nothing asked: nothing to compare


def test_flag_rejects_bad_arguments() -> None:
    df = pd.DataFrame({"text": ["a"]})
    with pytest.raises(ValueError, match="not both"):
        stt(df).flag(language="en", language_col="x")
    with pytest.raises(KeyError, match="'nope' is not a column"):
        stt(df).flag(audio_col="nope")
    with pytest.raises(ValueError, match="min_rate"):
        stt(df).flag(min_rate=8.0, max_rate=7.0)
    with pytest.raises(ValueError, match="max_rate"):
        stt(df).flag(max_rate=0)


# --------------------------------------------------------------------------- compare


@pytest.fixture(scope="module")
def mixed_gateway() -> Iterator[pn.LocalGateway]:
    """One gateway serving a fake model and a real (PocketSphinx) one, for the module."""
    with pn.LocalGateway(
        engine="pocketsphinx",
        models={"a/model": "fake", "b/model": "fake", "real/model": "pocketsphinx"},
    ) as gw:
        yield gw


def test_compare_over_a_gateway_shares_cache_and_concurrency(
    mixed_gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    gw = mixed_gateway
    gw.reset_stats()
    gw.set_faults(pn.Faults(latency=0.05))
    clips = [make_wav(i) for i in range(6)]
    texts = [fake_transcript(c) for c in clips]
    # Row 5 repeats row 0's audio: one request serves both.
    clips.append(clips[0])
    texts.append(texts[0])
    references = list(texts)
    references[3] = " ".join(["zzz", *references[3].split()[1:]])  # exactly one substitution
    total_words = sum(len(r.split()) for r in references)
    df = pd.DataFrame({"audio": clips, "reference": references})
    cache = pn.Cache(tmp_path / "cache")
    try:
        with pn.Client(**gw.client_kwargs()) as client:
            cmp = stt(df).compare(
                "audio",
                models=["a/model", "b/model"],
                reference="reference",
                concurrency=3,
                cache=cache,
                client=client,
                progress=False,
            )
            table = cmp.table.set_index("model")
            assert list(cmp.table["model"]) == ["a/model", "b/model"]
            for model in ("a/model", "b/model"):
                row = table.loc[model]
                assert (row["rows"], row["done"], row["errors"], row["cached"]) == (7, 7, 0, 0)
                assert row["requests"] == 6
                assert row["wer"] == pytest.approx(1 / total_words)
                assert row["scored"] == 7
                assert row["mean_latency_s"] >= 0.05
                assert row["total_cost"] == 0.0  # the local gateway reports a cost of 0
            stats = gw.stats()
            assert stats.requests == 12  # 6 distinct clips x 2 models, duplicates sent once
            assert 2 <= stats.max_in_flight <= 3
            # Again: every row from the shared cache, nothing sent.
            again = stt(df).compare(
                "audio",
                models=["a/model", "b/model"],
                reference="reference",
                cache=cache,
                client=client,
                progress=False,
            )
        assert gw.stats().requests == 12
        assert again.table["cached"].tolist() == [7, 7]
        assert again.table["requests"].tolist() == [0, 0]
        assert again.table["mean_latency_s"].isna().all()
        assert again.table["wer"].tolist() == cmp.table["wer"].tolist()
    finally:
        gw.set_faults(None)
    per_row = cmp.per_row
    assert len(per_row) == 14
    assert per_row.loc[per_row["model"] == "a/model", "text"].tolist() == texts
    assert cmp.wide("wer").shape == (7, 2)
    assert cmp.wide("text")["b/model"].tolist() == texts


def test_compare_a_real_engine_against_a_fake_one(mixed_gateway: pn.LocalGateway) -> None:
    samples = pn.load_samples()
    with pn.Client(**mixed_gateway.client_kwargs()) as client:
        cmp = stt(samples).compare(
            "audio",
            models=["real/model", "a/model"],
            reference="reference",
            cache=False,
            client=client,
            progress=False,
        )
    wer = cmp.table.set_index("model")["wer"]
    # PocketSphinx gets the bundled clips almost right (1 word in 42 measured); the fake
    # engine's words come from a hash and are essentially all wrong.
    assert wer["real/model"] < 0.1
    assert wer["a/model"] > 0.8


def test_compare_with_the_embedded_engine_and_plot() -> None:
    from matplotlib.figure import Figure

    samples = pn.load_samples().head(3)
    cmp = stt(samples).compare(
        "audio", models=["local/pocketsphinx", "local/fake"], reference="reference", progress=False
    )
    wer = cmp.table.set_index("model")["wer"].to_dict()
    assert wer["local/pocketsphinx"] == 0.0  # these three clips come out exactly
    assert wer["local/fake"] > 0.8
    fig = cmp.plot()
    assert isinstance(fig, Figure)
    ax_wer, ax_cost = fig.axes
    heights = bar_heights(ax_wer)
    assert heights == pytest.approx([0.0, wer["local/fake"] * 100])
    assert ax_wer.get_title() == "Word error rate (%)"
    assert ax_cost.get_title() == "Total cost"
    assert bar_heights(ax_cost) == [0.0, 0.0]  # embedded: free
    assert [t.get_text() for t in ax_wer.get_xticklabels()] == ["local/pocketsphinx", "local/fake"]
    png = io.BytesIO()
    fig.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG")

    no_ref = stt(samples).compare("audio", models=["local/fake"], progress=False)
    assert no_ref.table["wer"].isna().all()
    texts = [t.get_text() for t in no_ref.plot().axes[0].texts]
    assert "no reference given" in texts


def test_compare_total_cost_counts_each_request_once() -> None:
    """Cost aggregation, as one decision: duplicate rows share a request and its cost."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        body = {"text": "hi", "requestId": f"req-{calls}", "cost_nanos": 2_500_000}
        return httpx.Response(200, json=body)

    df = pd.DataFrame({"audio": [make_wav(1), make_wav(2), make_wav(1)]})
    with pn.Client(api_key="k", transport=httpx.MockTransport(handler)) as client:
        cmp = stt(df).compare(
            "audio", models=["x/model"], client=client, cache=False, progress=False
        )
    assert calls == 2
    assert cmp.table.loc[0, "total_cost"] == pytest.approx(0.005)
    assert cmp.per_row["cost"].tolist() == pytest.approx([0.0025] * 3)


def test_compare_rejects_bad_arguments() -> None:
    df = pd.DataFrame({"audio": [make_wav(1)], "reference": ["x"]})
    with pytest.raises(ValueError, match="models is empty"):
        stt(df).compare("audio", models=[])
    with pytest.raises(TypeError, match="list of model names"):
        stt(df).compare("audio", models="local/fake")
    with pytest.raises(ValueError, match="more than once"):
        stt(df).compare("audio", models=["local/fake", "local/fake"])
    with pytest.raises(KeyError, match="reference column 'ref'"):
        stt(df).compare("audio", models=["local/fake"], reference="ref")
    with pytest.raises(KeyError, match="audio column 'sound'"):
        stt(df).compare("sound", models=["local/fake"])


# --------------------------------------------------------------------------- real recordings

#: Reference transcripts from ../shared/audio/README.md, with the language spoken.
SHARED_REFERENCES: dict[str, tuple[str, str]] = {
    "english.wav": ("en", "one two three"),
    "jfk.flac": (
        "en",
        "And so my fellow Americans, ask not what your country can do for you, "
        "ask what you can do for your country.",
    ),
    "french.aiff": ("fr", "si la dict\u00e9e num\u00e9ro un"),
    "chinese.flac": ("zh", "\u7838\u81ea\u5df1\u7684\u811a"),
}


@pytest.mark.slow
def test_shared_recordings_scored_against_their_references(
    mixed_gateway: pn.LocalGateway, shared_audio: Path
) -> None:
    df = pd.DataFrame(
        {
            "audio": [str(shared_audio / name) for name in SHARED_REFERENCES],
            "language": [lang for lang, _ in SHARED_REFERENCES.values()],
            "reference": [ref for _, ref in SHARED_REFERENCES.values()],
        },
        index=list(SHARED_REFERENCES),
    )
    with pn.Client(**mixed_gateway.client_kwargs()) as client:
        out = stt(df).transcribe(
            col="audio",
            model="real/model",
            language_col="language",
            client=client,
            cache=False,
            metadata=True,
            progress=False,
        )
    assert out["text_error"].isna().all(), out["text_error"].tolist()
    scored = stt(out).score(ref="reference", hyp="text").df
    wer = scored["wer"].to_dict()
    assert wer["english.wav"] == 0.0
    # Measured: 11 errors in 22 words (0.50) with PocketSphinx 5.1.1's en-us model.
    assert wer["jfk.flac"] <= 0.65
    # The English model on French and Chinese gets nothing right (measured: French 1.4,
    # "the city to the new the whole"; Chinese 1.0, "that's that young").
    assert wer["french.aiff"] >= 0.8
    assert wer["chinese.flac"] >= 0.8
    # The gateway reports the language it used (English), so asking for fr/zh is flagged.
    assert out["text_language"].tolist() == ["en"] * 4
    flags = stt(out).flag(audio_col="audio", language_col="language")
    assert flags["flag_language"].to_dict() == {
        "english.wav": False,
        "jfk.flac": False,
        "french.aiff": True,
        "chinese.flac": True,
    }
    assert flags.loc[["french.aiff", "chinese.flac"], "needs_review"].all()
    assert not flags.loc[["english.wav", "jfk.flac"], "needs_review"].any()
    # 22 words in 11 s of speech is a normal rate: neither too short nor too long.
    assert not flags.loc["jfk.flac", ["flag_short", "flag_long"]].any()
