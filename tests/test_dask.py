"""ddf.stt.transcribe on a two-process Dask cluster, against the local gateway over HTTP."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._engines import fake_transcript

from .conftest import make_wav

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("dask.distributed")

import phaseo_notebook.dask  # noqa: E402  (registers ddf.stt; needs dask, skipped above)
from phaseo_notebook.dask import request_key  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

ROWS = 1000
PARTITIONS = 4
# Columns that differ between any two runs, whatever sends them.
VOLATILE = ["text_latency", "text_request_id"]


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """Two worker processes with one thread each, started without the developer's settings."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("PHASEO_API_KEY", "PHASEO_BASE_URL", "PHASEO_LOCAL_API_KEY"):
            mp.delenv(name, raising=False)
        mp.setenv("PHASEO_NO_PROGRESS", "1")
        with (
            distributed.LocalCluster(
                n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client


def to_dask(df: pd.DataFrame) -> Any:
    # As the module docstring says: keep bytes and missing values as they are.
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_pandas(df, npartitions=PARTITIONS, sort=False)


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, list[object]]:
    """A files folder and 1,000 inputs: 150 distinct valid ones, each in every partition.

    URLs the gateway serves, paths and in-memory bytes, each six times, plus a None or a
    missing file every tenth row. Every valid input has its own content, so the gateway's
    per-audio counts name them one to one. With each input in every partition, two workers
    transcribing their first partitions at the same time would both send it.
    """
    folder = tmp_path / "clips"
    folder.mkdir()
    for n in range(50):
        (folder / f"u{n}.wav").write_bytes(make_wav(1000 + n))
        (folder / f"p{n}.wav").write_bytes(make_wav(2000 + n))
    distinct: list[object] = [f"url:u{n}" for n in range(50)]  # a gateway URL once it runs
    distinct += [str(folder / f"p{n}.wav") for n in range(50)]
    distinct += [make_wav(3000 + n) for n in range(50)]
    values: list[object] = []
    valid = iter(range(ROWS))
    for i in range(ROWS):
        if i % 10 == 9:
            values.append(None if i % 20 == 9 else str(folder / "missing.wav"))
        else:
            values.append(distinct[next(valid) % 150])
    return folder, values


def test_thousand_rows_equal_pandas_each_input_sent_once_and_rerun_sends_nothing(
    dask_client: Any, mixed: tuple[Path, list[object]], tmp_path: Path
) -> None:
    folder, template = mixed
    cache = tmp_path / "shared-cache"
    with pn.LocalGateway(files_dir=folder) as gw:
        values = [
            gw.file_url(f"{v[4:]}.wav") if isinstance(v, str) and v.startswith("url:") else v
            for v in template
        ]
        df = pd.DataFrame({"audio": values, "row": range(ROWS)})
        df.index = pd.Index([f"clip-{(i * 7919) % 10007}" for i in range(ROWS)], name="clip_id")
        ddf = to_dask(df)
        out = ddf.stt.transcribe(
            col="audio",
            model="local/fake",
            cache=str(cache),
            client_kwargs=gw.client_kwargs(),
            concurrency=8,
            metadata=True,
        )
        with distributed.get_task_stream(client=dask_client) as stream:
            first = out.compute()
        stats = gw.stats()

        # Each of the 150 distinct valid inputs was sent exactly once, by both workers together.
        assert stats.requests == 150
        assert len(stats.audio_counts) == 150
        assert set(stats.audio_counts.values()) == {1}
        senders = {t["worker"] for t in stream.data if "_transcribe_distinct" in t["key"][0]}
        assert len(senders) == 2

        gw.reset_stats()
        again = ddf.stt.transcribe(
            col="audio",
            model="local/fake",
            cache=str(cache),
            client_kwargs=gw.client_kwargs(),
            metadata=True,
        ).compute()
        assert gw.stats().requests == 0
        assert again["text"].equals(first["text"])
        assert again.loc[again["text"].notna(), "text_cached"].all()

        expected = df.stt.transcribe(
            col="audio",
            model="local/fake",
            cache=False,
            client=pn.Client(**gw.client_kwargs()),
            metadata=True,
            progress=False,
        )

    pd.testing.assert_frame_equal(first.drop(columns=VOLATILE), expected.drop(columns=VOLATILE))
    ok = first["text"].notna()
    assert ok.sum() == 900 and first.loc[~ok, "text_error"].notna().all()
    on_disk = pd.read_parquet(cache)
    assert len(on_disk) == 150
    some_bytes = next(v for v in values if isinstance(v, bytes))
    assert first.loc[df["audio"].map(lambda v: v is some_bytes), "text"].iloc[0] == (
        fake_transcript(some_bytes)
    )


def test_language_column_matches_pandas_with_an_fsspec_cache(
    dask_client: Any, tmp_path: Path
) -> None:
    clips = [make_wav(4000 + n) for n in range(12)]
    languages: list[object] = ["en", "fr", None, float("nan"), " en ", "", 5]
    df = pd.DataFrame(
        {
            "audio": [clips[i % 12] for i in range(84)],
            "lang": [languages[i % 7] for i in range(84)],
        }
    )
    # An fsspec URL: the workers open the cache through fsspec, as they would s3://.
    cache_url = f"local://{tmp_path}/cache"
    with pn.LocalGateway() as gw:

        def run() -> pd.DataFrame:
            return (  # type: ignore[no-any-return]
                to_dask(df)
                .stt.transcribe(
                    col="audio",
                    language_col="lang",
                    model="local/fake",
                    cache=cache_url,
                    client_kwargs=gw.client_kwargs(),
                )
                .compute()
            )

        out = run()
        sent = gw.stats().requests
        rerun = run()
        assert gw.stats().requests == sent  # every answer was found in the shared cache
        pd.testing.assert_frame_equal(rerun, out)
        expected = df.stt.transcribe(
            col="audio",
            language_col="lang",
            model="local/fake",
            cache=False,
            client=pn.Client(**gw.client_kwargs()),
            progress=False,
        )
    pd.testing.assert_frame_equal(out, expected)
    # 12 clips x {"en", "fr", no language}; "" and 5 are errors, " en " is "en".
    assert sent == 36
    assert out["text_error"].str.contains("not a non-empty string").sum() == 24


def test_same_bytes_behind_different_values_are_sent_once_across_partitions(
    dask_client: Any, tmp_path: Path
) -> None:
    # The cross-partition key is the cache key: identical content under two paths and as
    # bytes, spread over every partition, is one request, as in a pandas run.
    wav = make_wav(5000)
    for name in ("a.wav", "b.wav"):
        (tmp_path / name).write_bytes(wav)
    values: list[object] = [str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), wav] * 4
    df = pd.DataFrame({"audio": values})
    with pn.LocalGateway() as gw:
        out = (
            to_dask(df)
            .stt.transcribe(
                col="audio", model="local/fake", cache=False, client_kwargs=gw.client_kwargs()
            )
            .compute()
        )
        assert gw.stats().requests == 1
    assert out["text"].tolist() == [fake_transcript(wav)] * len(values)


def test_errors_raise_brings_the_typed_error_back_from_a_worker(
    dask_client: Any, tmp_path: Path
) -> None:
    df = pd.DataFrame({"audio": [str(tmp_path / "missing.wav")] * 4})
    with pn.LocalGateway() as gw:
        out = to_dask(df).stt.transcribe(
            col="audio",
            model="local/fake",
            cache=False,
            errors="raise",
            client_kwargs=gw.client_kwargs(),
        )
        with pytest.raises(pn.AudioInputError, match="file does not exist"):
            out.compute()
        assert gw.stats().requests == 0


# ----------------------------------------------------------------- the pandas call's options


def test_timestamps_give_the_pandas_columns_dtypes_and_values(
    dask_client: Any, tmp_path: Path
) -> None:
    clips = [make_wav(6000 + n) for n in range(10)]
    (tmp_path / "a.wav").write_bytes(make_wav(6100))
    values: list[object] = [clips[i % 10] for i in range(36)]
    values[3::9] = [None, str(tmp_path / "a.wav"), str(tmp_path / "missing.wav"), None]
    df = pd.DataFrame({"audio": values, "n": range(36)})
    options: dict[str, Any] = {
        "col": "audio",
        "model": "local/fake",
        "cache": False,
        "timestamps": "word",
        "prompt": "Names: Ada.",
        "temperature": 0.2,
        "metadata": True,
    }
    # "lenient" takes every field, verbose_json included, however the audio is sent.
    with pn.LocalGateway(mode="lenient") as gw:
        lazy = to_dask(df).stt.transcribe(client_kwargs=gw.client_kwargs(), **options)
        out = lazy.compute()
        assert gw.stats().recent[-1]["fields"]["prompt"] == "Names: Ada."
        expected = df.stt.transcribe(
            client=pn.Client(**gw.client_kwargs()), progress=False, **options
        )
    assert list(out.columns)[-2:] == ["text_segments", "text_words"]
    pd.testing.assert_frame_equal(out.drop(columns=VOLATILE), expected.drop(columns=VOLATILE))
    # The lazy frame promised what compute() gives.
    assert lazy.dtypes.to_dict() == out.dtypes.to_dict()
    # The fake engine answers one segment over each clip and no words.
    ok = out["text_error"].isna()
    assert ok.sum() == 33
    assert all(
        len(s) == 1 and s[0]["text"] == t
        for s, t in zip(out.loc[ok, "text_segments"], out.loc[ok, "text"], strict=True)
    )
    assert out.loc[ok, "text_words"].map(len).eq(0).all()
    assert out.loc[~ok, "text_segments"].isna().all()


def test_prompt_and_temperature_key_the_cache_as_pandas_does_both_ways(
    dask_client: Any, tmp_path: Path
) -> None:
    df = pd.DataFrame({"audio": [make_wav(7000 + n) for n in range(8)] * 3})
    cache = str(tmp_path / "cache")
    first = {"timestamps": "segment", "prompt": "Names: Ada.", "temperature": 0.2}
    other = {"timestamps": "segment", "prompt": "Names: Grace.", "temperature": 0.2}
    with pn.LocalGateway(mode="lenient") as gw:

        def with_pandas(**options: Any) -> pd.DataFrame:
            return df.stt.transcribe(
                col="audio",
                model="local/fake",
                cache=cache,
                client=pn.Client(**gw.client_kwargs()),
                progress=False,
                metadata=True,
                **options,
            )

        def with_dask(**options: Any) -> pd.DataFrame:
            return (  # type: ignore[no-any-return]
                to_dask(df)
                .stt.transcribe(
                    col="audio",
                    model="local/fake",
                    cache=cache,
                    client_kwargs=gw.client_kwargs(),
                    metadata=True,
                    **options,
                )
                .compute()
            )

        with_pandas(**first)
        assert gw.stats().requests == 8
        # The rows pandas cached with these options are Dask's cache hits ...
        hits = with_dask(**first)
        assert gw.stats().requests == 8 and hits["text_cached"].all()
        # ... and not with another prompt, or with no options, which are other requests.
        other_prompt = with_dask(**other)
        assert gw.stats().requests == 16 and not other_prompt["text_cached"].any()
        assert gw.stats().recent[-1]["fields"]["prompt"] == "Names: Grace."
        assert not with_dask(temperature=0.2)["text_cached"].any()
        assert gw.stats().requests == 24
        # What Dask cached, pandas finds.
        again = with_pandas(**other)
        assert gw.stats().requests == 24 and again["text_cached"].all()
    pd.testing.assert_frame_equal(
        other_prompt.drop(columns=[*VOLATILE, "text_cached"]),
        again.drop(columns=[*VOLATILE, "text_cached"]),
    )


# ----------------------------------------------------------------- the budget

PRICE = 0.006  # USD per minute: a 2 s clip costs 0.0002
CLIP_COST = PRICE * 2 / 60
UNPRICED = "acme/stt-1"  # in no price table, and the gateway lists no prices


def _clips(n: int) -> list[bytes]:
    return [make_wav(8000 + i, seconds=2.0, rate=8000) for i in range(n)]


def _refused(out: pd.DataFrame) -> pd.Series:
    return out["text_error"].fillna("").str.startswith("BudgetExceededError:")


@pytest.mark.parametrize(
    ("priced", "affordable"), [(True, 20), (False, 2)], ids=["split-by-audio", "no-price-one-task"]
)
def test_a_budget_below_the_cost_stops_within_the_budget(
    dask_client: Any, tmp_path: Path, priced: bool, affordable: int
) -> None:
    clips = _clips(40)
    df = pd.DataFrame({"audio": clips + clips[:8]})  # repeated rows are paid once
    budget = affordable * CLIP_COST
    model = "local/fake" if priced else UNPRICED
    with pn.LocalGateway(
        price_per_minute=PRICE, models={UNPRICED: "fake"}, list_prices=False
    ) as gw:
        out = (
            to_dask(df)
            .stt.transcribe(
                col="audio",
                model=model,
                cache=str(tmp_path / "cache"),
                client_kwargs=gw.client_kwargs(),
                budget=budget,
                # Given, since this gateway's catalog lists no price; None: learnt.
                prices={model: PRICE} if priced else None,
                metadata=True,
            )
            .compute()
        )
        stats = gw.stats()
    done = out["text"].notna()
    first = ~out["audio"].duplicated()
    charged = float(out.loc[done & first, "text_cost"].sum())
    assert charged <= budget + 1e-12  # the whole run, every partition together
    assert set(stats.audio_counts.values()) == {1}
    assert stats.requests == int((done & first).sum())
    assert (_refused(out) | done).all() and _refused(out).any()
    if priced:
        # Each partition's share is rounded down to whole requests: at most one request
        # per partition goes unspent.
        assert stats.requests >= 20 - PARTITIONS
        assert out.loc[_refused(out), "text_error"].str.contains("share of budget=0.004").all()
    else:
        # One task and one gate, learning the cost from its first answer: as pandas. (A
        # gate per partition would send a request each before knowing the cost: 4 > 2.)
        assert stats.requests == 2


def test_budget_errors_raise_the_typed_error_and_a_rerun_pays_only_the_rest(
    dask_client: Any, tmp_path: Path
) -> None:
    clips = _clips(40)
    df = pd.DataFrame({"audio": clips})
    cache = str(tmp_path / "cache")
    with pn.LocalGateway(price_per_minute=PRICE) as gw:

        def run(budget: float, errors: Any = "store", **compute: Any) -> pd.DataFrame:
            lazy = to_dask(df).stt.transcribe(
                col="audio",
                model="local/fake",
                cache=cache,
                client_kwargs=gw.client_kwargs(),
                budget=budget,
                errors=errors,
            )
            return lazy.compute(**compute)  # type: ignore[no-any-return]

        # One partition at a time, so the run stops with the partition that raised.
        with pytest.raises(pn.BudgetExceededError, match=r"share of budget=0\.0032 USD") as info:
            run(16 * CLIP_COST, errors="raise", scheduler="sync")
        assert info.value.spent <= info.value.budget <= 16 * CLIP_COST
        paid = gw.stats().requests
        assert paid < 16
        # The finished rows were cached. (The keys carry the gateway's port, so how the 40
        # requests fall into partitions changes per run: a first partition with under 3 of
        # them, about one run in a thousand, pays nothing before it raises.)
        assert (len(pd.read_parquet(cache)) if paid else 0) == paid

        # Cached rows cost nothing: the shares follow the audio each partition has left.
        stopped = run(20 * CLIP_COST)
        paid = gw.stats().requests
        assert _refused(stopped).sum() == 40 - paid
        # A budget of exactly what is left: every share fits its partition's requests.
        rest = run((40 - paid) * CLIP_COST)
        stats = gw.stats()
    assert rest["text_error"].isna().all()
    assert stats.requests == 40 and set(stats.audio_counts.values()) == {1}


def test_budget_shares_sum_to_the_budget() -> None:
    from phaseo_notebook._budget import share_of_budget
    from phaseo_notebook.dask import _Need

    needs = [_Need(2000 * 7, 7, 1), _Need(0, 0, 3), _Need(1500, 1, 0), _Need()]
    whole = _Need(
        sum(n.known_ms for n in needs), sum(n.known for n in needs), sum(n.unknown for n in needs)
    )
    for budget in (0.03, 1.0, 7.123456789):
        shares = [share_of_budget(budget, *n.weight(whole)) for n in needs]
        total = round(sum(shares) * 1e9)
        # Rounded down per partition; the empty one holds the least a gate can hold.
        assert round(budget * 1e9) - len(needs) <= total <= round(budget * 1e9) + 1
        assert shares[-1] == 1e-9
    # Unknown lengths count at the mean known length: 15.5 s / 8 requests, 4 of them here.
    mine, total_weight = needs[1].weight(whole)
    assert mine / total_weight == pytest.approx(3 / 12)


# ----------------------------------------------------------------- checks before any scheduling


def test_bad_arguments_fail_before_anything_runs(tmp_path: Path) -> None:
    ddf = to_dask(pd.DataFrame({"audio": ["https://example.com/a.wav"]}))
    with pytest.raises(KeyError, match="'nope' is not a column"):
        ddf.stt.transcribe(col="nope", model="local/fake")
    with pytest.raises(ValueError, match="memory, which the workers"):
        ddf.stt.transcribe(col="audio", model="local/fake", cache="memory://cache")
    with pytest.raises(TypeError, match="custom transport"):
        ddf.stt.transcribe(
            col="audio",
            model="local/fake",
            client=pn.Client(transport=__import__("httpx").MockTransport(lambda r: None)),
        )
    with pytest.raises(ValueError, match="either client= or client_kwargs="):
        ddf.stt.transcribe(col="audio", client=pn.Client(), api_key="k")
    with pytest.raises(ValueError, match="concurrency"):
        ddf.stt.transcribe(col="audio", model="local/fake", concurrency=0)
    with pytest.raises(pn.ConfigurationError, match="no model given"):
        ddf.stt.transcribe(col="audio", base_url="http://127.0.0.1:9/v1")


def test_cache_paths_are_absolute_for_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phaseo_notebook.dask import _cache_dir

    monkeypatch.chdir(tmp_path)
    assert _cache_dir("rel/cache") == str(tmp_path / "rel" / "cache")
    assert _cache_dir(f"file://{tmp_path}/c") == str(tmp_path / "c")
    assert _cache_dir(pn.Cache(tmp_path / "x")) == str(tmp_path / "x")
    assert _cache_dir(True) == os.environ["PHASEO_CACHE_DIR"]
    assert _cache_dir(False) is None
    # Object stores go to the workers as URLs, which each opens with fsspec.
    assert _cache_dir("s3://bucket/stt-cache") == "s3://bucket/stt-cache"


def test_request_key_separates_kinds_and_languages() -> None:
    wav = make_wav(1)
    assert request_key(wav, None) == request_key(bytearray(wav), None)
    assert request_key("a.wav", None) != request_key(Path("a.wav"), None)
    assert request_key("a.wav", "en") == request_key("a.wav", " en ")
    assert request_key("a.wav", "") is None and request_key("a.wav", 5) is None
    assert request_key(3.5, None) is None
    # Length-prefixed: moving a byte between value and language never collides.
    assert request_key("ab", "c") != request_key("a", "bc")


def test_engine_errors_survive_pickling() -> None:
    """What a worker sends back when a partition fails (errors="raise", a refused key)."""
    errors = [
        pn.AudioInputError("file does not exist", audio="'x.wav'"),
        pn.AuthenticationError("bad key", status_code=401, code="unauthorised", request_id="r1"),
        pn.APIResponseError("truncated body", status_code=200, request_id="r2"),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and vars(back) == vars(err)
