"""A budgeted run against the priced local gateway: estimate, stop, errors, resume, summary."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._cache import Cache
from phaseo_notebook._cli import main
from phaseo_notebook._gateway._faults import Faults
from phaseo_notebook._request import TranscribeRequest
from tests.conftest import make_wav

PRICE = 0.006  # USD per minute: a 2 s clip costs 0.0002
CLIP_COST = PRICE * 2 / 60
CLIPS = 300
UNPRICED = "acme/stt-1"  # in no price table: its cost is learnt from the answers


@pytest.fixture(scope="module")
def clips() -> list[bytes]:
    return [make_wav(5000 + i, seconds=2.0, rate=8000) for i in range(CLIPS)]


@pytest.fixture(scope="module")
def gateway() -> Iterator[pn.LocalGateway]:
    """Lists its price in its catalog, like a gateway that publishes pricing."""
    with pn.LocalGateway(price_per_minute=PRICE, faults=Faults(latency=0.01)) as gw:
        yield gw


@pytest.fixture(scope="module")
def unlisted_gateway() -> Iterator[pn.LocalGateway]:
    """Charges the same, but its catalog lists no prices (as the live gateway's)."""
    with pn.LocalGateway(
        price_per_minute=PRICE,
        models={UNPRICED: "fake"},
        list_prices=False,
        faults=Faults(latency=0.01),
    ) as gw:
        yield gw


def _sha(clip: bytes) -> str:
    return hashlib.sha256(clip).hexdigest()


def _budget_rows(out: pd.DataFrame) -> pd.Series:
    return out["text_error"].fillna("").str.startswith("BudgetExceededError:")


# -- the estimate ----------------------------------------------------------------------------


def test_estimate_matches_the_gateways_total_and_sends_nothing(
    clips: list[bytes], gateway: pn.LocalGateway
) -> None:
    df = pd.DataFrame({"audio": clips})
    gateway.reset_stats()
    with pn.Client(**gateway.client_kwargs()) as client:
        # No price given: it comes from the gateway's catalog, the one call allowed.
        estimate = df.stt.estimate(col="audio", model="local/fake", cache=False, client=client)
        assert gateway.stats().requests == 0
        out = df.stt.transcribe(
            col="audio", model="local/fake", cache=False, client=client, metadata=True
        )
    assert estimate.requests == CLIPS and estimate.cached == 0
    assert estimate.audio_seconds == pytest.approx(CLIPS * 2.0)
    assert estimate.models[0].price_per_minute == PRICE
    total = float(out["text_cost"].sum())
    assert total == pytest.approx(CLIPS * CLIP_COST)
    assert estimate.cost == pytest.approx(total, rel=0.01)
    assert out.attrs["stt"]["spent"] == pytest.approx(total)
    assert out.attrs["stt"]["audio_minutes"] == pytest.approx(CLIPS * 2 / 60)


def test_estimate_counts_after_dedupe_and_the_cache(
    clips: list[bytes], gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    first = pd.DataFrame({"audio": clips[:10]})
    twice = pd.DataFrame({"audio": clips[:20] + clips[:20]})
    with pn.Client(**gateway.client_kwargs()) as client:
        first.stt.transcribe(col="audio", model="local/fake", cache=cache, client=client)
        gateway.reset_stats()
        estimate = twice.stt.estimate(
            col="audio", model="local/fake", cache=cache, client=client, prices={"x": 1.0}
        )
        series = twice["audio"].stt.estimate(model="local/fake", cache=cache, client=client)
    assert gateway.stats().requests == 0
    for e in (estimate, series):
        assert (e.requests, e.cached, e.models[0].jobs) == (10, 10, 40)
        assert e.cost == pytest.approx(10 * CLIP_COST)
    assert "local/fake" in repr(estimate) and "<table>" in estimate._repr_html_()


def test_estimate_without_any_price_has_no_cost(
    clips: list[bytes], unlisted_gateway: pn.LocalGateway
) -> None:
    df = pd.DataFrame({"audio": clips[:5]})
    with pn.Client(**unlisted_gateway.client_kwargs()) as client:
        estimate = df.stt.estimate(col="audio", model=UNPRICED, cache=False, client=client)
        priced = df.stt.estimate(
            col="audio", model=UNPRICED, cache=False, client=client, prices={UNPRICED: PRICE}
        )
    assert estimate.cost is None and "unknown" in repr(estimate)
    assert priced.cost == pytest.approx(5 * CLIP_COST)


# -- the budget ------------------------------------------------------------------------------


def _budgeted(
    gw: pn.LocalGateway,
    df: pd.DataFrame,
    *,
    model: str,
    budget: float,
    cache: Cache | bool = False,
    prices: dict[str, float] | None = None,
    concurrency: int = 16,
) -> pd.DataFrame:
    with pn.Client(**gw.client_kwargs()) as client:
        return df.stt.transcribe(
            col="audio",
            model=model,
            cache=cache,
            client=client,
            budget=budget,
            prices=prices,
            concurrency=concurrency,
            metadata=True,
        )


@pytest.mark.parametrize("priced", [True, False], ids=["price-given", "costs-from-answers"])
def test_half_the_total_stops_at_the_budget_on_exactly_the_unsent_rows(
    clips: list[bytes],
    gateway: pn.LocalGateway,
    unlisted_gateway: pn.LocalGateway,
    priced: bool,
) -> None:
    gw = gateway if priced else unlisted_gateway
    model = "local/fake" if priced else UNPRICED
    budget = CLIPS * CLIP_COST / 2
    df = pd.DataFrame({"audio": clips})
    gw.reset_stats()
    out = _budgeted(gw, df, model=model, budget=budget, prices={model: PRICE} if priced else None)
    stats = gw.stats()
    summary = out.attrs["stt"]
    charged = float(out["text_cost"].sum())

    # Costs equal their estimates here, so the spend never passes the budget, and the
    # whole budget is used: floor(budget / clip cost) requests, not one fewer.
    assert charged <= budget + 1e-12
    assert stats.requests == summary["requests"] == CLIPS // 2
    assert summary["spent"] == pytest.approx(charged, abs=1e-12)
    assert summary["budget"] == budget and summary["not_sent_budget"] == CLIPS // 2
    assert stats.max_in_flight > 1  # one answer taught the cost, then the run went wide

    unsent = _budget_rows(out)
    sent_audio = set(stats.audio_counts)
    assert int(unsent.sum()) == CLIPS // 2
    for clip, refused, text in zip(clips, unsent, out["text"], strict=True):
        assert refused == (_sha(clip) not in sent_audio)
        assert refused == (text is None or (isinstance(text, float) and math.isnan(text)))
    assert out.loc[unsent, "text_error"].str.contains("budget of 0.03 USD").all()


def test_overspend_is_at_most_what_was_in_flight(
    clips: list[bytes], gateway: pn.LocalGateway
) -> None:
    # The price given is half what the gateway charges: every estimate is too low, so
    # the requests in flight when the budget ran out overshoot it, and only they do.
    concurrency = 8
    budget = 40 * CLIP_COST
    gateway.reset_stats()
    out = _budgeted(
        gateway,
        pd.DataFrame({"audio": clips[:120]}),
        model="local/fake",
        budget=budget,
        prices={"local/fake": PRICE / 2},
        concurrency=concurrency,
    )
    charged = float(out["text_cost"].sum())
    assert charged > budget  # the gate trusted the low price ...
    assert charged <= budget + concurrency * CLIP_COST  # ... for what was in flight only
    assert out.attrs["stt"]["spent"] == pytest.approx(charged, abs=1e-12)
    assert gateway.stats().requests == int(out["text"].notna().sum())


def test_a_rerun_with_a_larger_budget_sends_only_the_rest(
    clips: list[bytes], gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    df = pd.DataFrame({"audio": clips[:100]})
    gateway.reset_stats()
    first = _budgeted(gateway, df, model="local/fake", budget=30 * CLIP_COST, cache=cache)
    assert int(_budget_rows(first).sum()) == 70
    second = _budgeted(gateway, df, model="local/fake", budget=1.0, cache=cache)
    counts = gateway.stats().audio_counts
    assert second["text_error"].isna().all()
    assert sorted(counts) == sorted(_sha(c) for c in clips[:100])
    assert set(counts.values()) == {1}  # no finished row was sent again
    assert second.attrs["stt"]["requests"] == 70
    assert second.attrs["stt"]["cache_hits"] == 30
    assert second.attrs["stt"]["spent"] == pytest.approx(70 * CLIP_COST)


def test_errors_raise_after_the_finished_rows_are_saved(
    clips: list[bytes], gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    df = pd.DataFrame({"audio": clips[:50]})
    gateway.reset_stats()
    with (
        pn.Client(**gateway.client_kwargs()) as client,
        pytest.raises(pn.BudgetExceededError) as info,
    ):
        df.stt.transcribe(
            col="audio",
            model="local/fake",
            cache=cache,
            client=client,
            budget=20 * CLIP_COST,
            errors="raise",
        )
    assert info.value.spent == pytest.approx(20 * CLIP_COST)
    assert info.value.budget == pytest.approx(20 * CLIP_COST)
    assert gateway.stats().requests == 20
    # The 20 answers are in the cache: a rerun with more budget sends the other 30.
    gateway.reset_stats()
    out = _budgeted(gateway, df, model="local/fake", budget=1.0, cache=Cache(tmp_path / "cache"))
    assert out["text_error"].isna().all()
    assert gateway.stats().requests == 30


def test_duplicated_rows_are_paid_and_counted_once(
    clips: list[bytes], gateway: pn.LocalGateway
) -> None:
    df = pd.DataFrame({"audio": clips[:10] * 3})
    out = _budgeted(gateway, df, model="local/fake", budget=10 * CLIP_COST)
    assert out["text_error"].isna().all()  # 30 rows, 10 requests: the budget suffices
    assert out.attrs["stt"]["spent"] == pytest.approx(10 * CLIP_COST)
    assert out.attrs["stt"]["requests"] == 10


def test_answers_without_a_cost_stop_a_run_with_no_price(
    unlisted_gateway: pn.LocalGateway, shared_audio: Path
) -> None:
    # The fake engine reads no duration from FLAC, so the priced answer reports no cost:
    # with no price either, the budget cannot be held and nothing more is sent.
    files = [str(shared_audio / "jfk.flac")] + [str(p) for p in pn.sample_paths()[:3]]
    unlisted_gateway.reset_stats()
    out = _budgeted(unlisted_gateway, pd.DataFrame({"audio": files}), model=UNPRICED, budget=1.0)
    assert unlisted_gateway.stats().requests == 1
    assert int(_budget_rows(out).sum()) == 3
    assert out["text_error"].dropna().str.contains("pass prices=").all()


def test_a_run_without_budget_still_reports_its_summary(
    clips: list[bytes], gateway: pn.LocalGateway
) -> None:
    series = pd.Series(clips[:4])
    with pn.Client(**gateway.client_kwargs()) as client:
        texts = series.stt.transcribe(model="local/fake", cache=False, client=client)
    summary = texts.attrs["stt"]
    assert summary["budget"] is None and summary["requests"] == 4
    assert summary["spent"] == pytest.approx(4 * CLIP_COST)
    assert summary["currency"] == "USD"


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "5"])
def test_budget_must_be_a_positive_finite_amount(bad: object) -> None:
    with pytest.raises(ValueError, match="budget"):
        TranscribeRequest(["https://x/a.wav"], budget=bad)  # type: ignore[arg-type]


def test_prices_must_be_model_to_amount() -> None:
    with pytest.raises(ValueError, match="prices"):
        TranscribeRequest(["https://x/a.wav"], prices={"m": -1.0})
    with pytest.raises(TypeError, match="prices"):
        TranscribeRequest(["https://x/a.wav"], prices=[("m", 1.0)])  # type: ignore[arg-type]


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def clip_table(clips: list[bytes], tmp_path: Path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = []
    for i, clip in enumerate(clips[:40]):
        path = folder / f"c{i:03d}.wav"
        path.write_bytes(clip)
        paths.append(str(path))
    table = tmp_path / "in.csv"
    pd.DataFrame({"audio": paths}).to_csv(table, index=False)
    return table


def _use(gw: pn.LocalGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHASEO_BASE_URL", gw.url)
    monkeypatch.setenv("PHASEO_API_KEY", str(gw.api_key))


def test_dry_run_prints_the_estimate_and_sends_nothing(
    clip_table: Path,
    gateway: pn.LocalGateway,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use(gateway, monkeypatch)
    gateway.reset_stats()
    code = main(
        ["transcribe", str(clip_table), "--model", "local/fake", "--budget", "5", "--dry-run"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert gateway.stats().requests == 0
    assert "40 requests" in printed and "cost 0.008 USD" in printed
    assert "budget 5 USD: the estimate fits" in printed


def test_budget_on_the_command_line(
    clip_table: Path,
    gateway: pn.LocalGateway,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _use(gateway, monkeypatch)
    gateway.reset_stats()
    out = tmp_path / "out.csv"
    args = ["transcribe", str(clip_table), "--model", "local/fake", "--out", str(out)]
    code = main([*args, "--budget", str(10 * CLIP_COST), "--prices", f"local/fake={PRICE}"])
    err = capsys.readouterr().err
    assert code == 1
    assert gateway.stats().requests == 10
    written = pd.read_csv(out)
    assert int(written["text_error"].fillna("").str.startswith("BudgetExceededError:").sum()) == 30
    assert "30 request(s) not sent (budget)" in err
    assert main([*args, "--prices", "local/fake"]) == 2


# -- the upload cell -------------------------------------------------------------------------


def test_upload_cell_shows_the_estimate_for_a_paid_model_only(clips: list[bytes]) -> None:
    import time

    from tests.test_widgets import upload_value

    with (
        pn.LocalGateway(models={"openai/whisper-1": "fake"}, price_per_minute=PRICE) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        w = pn.widgets.upload(model="openai/whisper-1", client=client, cache=False)
        w.file_upload.value = upload_value({f"c{i}.wav": clips[i] for i in range(3)})
        deadline = time.monotonic() + 30
        while not w.cost_estimate.value and time.monotonic() < deadline:
            time.sleep(0.05)
        shown = w.cost_estimate.value
        assert "3 requests (0 cached)" in shown and "about 0.0006 USD at 0.006 USD/min" in shown
        assert w.cost_estimate.layout.display is None
        assert gw.stats().requests == 0  # nothing sent before Transcribe

        w.model_picker.value = "local/fake"  # an offline engine's test double: free
        assert w.cost_estimate.value == "" and w.cost_estimate.layout.display == "none"


def test_compare_applies_the_budget_to_each_models_run(clips: list[bytes]) -> None:
    df = pd.DataFrame({"audio": clips[:10]})
    with (
        pn.LocalGateway(
            models={"openai/whisper-1": "fake"},
            price_per_minute={"*": PRICE, "local/fake": PRICE / 2},
        ) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        cmp = df.stt.compare(
            "audio",
            models=["openai/whisper-1", "local/fake"],
            cache=False,
            client=client,
            budget=4 * CLIP_COST,
            prices={"openai/whisper-1": PRICE},
        )
        sent = gw.stats().requests
    table = cmp.table.set_index("model")
    assert table.loc["openai/whisper-1", "done"] == 4  # the price given
    assert table.loc["openai/whisper-1", "total_cost"] == pytest.approx(4 * CLIP_COST)
    assert table.loc["local/fake", "done"] == 8  # half the price, from the gateway's catalog
    assert table.loc["local/fake", "total_cost"] == pytest.approx(4 * CLIP_COST)
    assert sent == 12
    budget_errors = cmp.per_row["error"].fillna("").str.startswith("BudgetExceededError:")
    assert int(budget_errors.sum()) == 6 + 2


def test_the_catalog_is_asked_once_and_only_when_a_price_is_needed(
    clips: list[bytes], gateway: pn.LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phaseo_notebook import _client

    real = _client.fetch_catalog
    calls: list[object] = []

    def counting(*args: object, **kwargs: object) -> list[dict[str, object]]:
        calls.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_client, "fetch_catalog", counting)
    df = pd.DataFrame({"audio": clips[:30]})
    out = _budgeted(gateway, df, model="local/fake", budget=1.0)
    assert out["text_error"].isna().all() and len(calls) == 1  # once for 30 requests
    _budgeted(gateway, df, model="local/fake", budget=1.0, prices={"local/fake": PRICE})
    offline = df.stt.transcribe(col="audio", model="local/fake", cache=False, budget=1.0)
    assert offline.attrs["stt"]["spent"] == 0  # embedded: free, and no gateway to ask
    assert len(calls) == 1


def test_estimate_counts_the_chunks_of_a_file_over_the_models_limit(tmp_path: Path) -> None:
    long_file = tmp_path / "meeting.wav"
    long_file.write_bytes(make_wav(7, seconds=1500.0, rate=1000))
    short = make_wav(8, seconds=2.0, rate=8000)
    df = pd.DataFrame({"audio": [str(long_file), short, str(long_file)]})
    model = "openai/gpt-4o-transcribe"  # refuses more than 1400 s: two chunks
    with (
        pn.LocalGateway(models={model: "fake"}, price_per_minute=PRICE) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        estimate = df.stt.estimate(col="audio", model=model, cache=False, client=client)
        assert gw.stats().requests == 0
    assert estimate.requests == 2 + 1
    assert estimate.audio_seconds == pytest.approx(1502.0)
    assert estimate.cost == pytest.approx(PRICE * 1502 / 60)
