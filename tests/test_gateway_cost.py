"""The local gateway charges a configured price, and estimates and budgets agree with it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

import phaseo_notebook as pn
from phaseo_notebook._budget import BudgetGate
from phaseo_notebook._cli import main
from phaseo_notebook._duration import audio_seconds
from phaseo_notebook._estimate import estimate_model
from phaseo_notebook._gateway._charges import build_prices, parse_price_specs
from phaseo_notebook._pricing import lookup_price, parse_catalog
from tests.conftest import SHARED_AUDIO, make_wav

PRICE = 0.006  # USD per minute: 2 s cost 200,000 nano-USD


def _catalog(gw: pn.LocalGateway) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {gw.api_key}"} if gw.api_key else {}
    answer = httpx.get(gw.url + "/models", headers=headers, timeout=10)
    answer.raise_for_status()
    body: dict[str, object] = answer.json()
    return body


def test_answer_cost_is_price_times_duration() -> None:
    with pn.LocalGateway(price_per_minute=PRICE) as gw, pn.Client(**gw.client_kwargs()) as c:
        result = c.transcribe(make_wav(1, seconds=2.0, rate=8000), model="local/fake")
        longer = c.transcribe(make_wav(2, seconds=7.25, rate=8000), model="local/fake")
    assert result.duration == 2.0
    assert result.raw["cost_nanos"] == 200_000
    assert result.cost == pytest.approx(PRICE * 2 / 60, abs=1e-9)
    assert result.currency == "USD"
    assert longer.cost == pytest.approx(PRICE * 7.25 / 60, abs=1e-9)


def test_prices_per_model() -> None:
    prices = {"*": 0.003, "openai/whisper-1": 0.006}
    with (
        pn.LocalGateway(models=["openai/whisper-1"], price_per_minute=prices) as gw,
        pn.Client(**gw.client_kwargs()) as c,
    ):
        clip = make_wav(3, seconds=2.0, rate=8000)
        assert c.transcribe(clip, model="openai/whisper-1").raw["cost_nanos"] == 200_000
        assert c.transcribe(clip, model="local/fake").raw["cost_nanos"] == 100_000


def test_models_lists_pricing() -> None:
    prices = {"*": 0.002, "openai/whisper-1": 0.004}
    with pn.LocalGateway(models=["openai/whisper-1"], price_per_minute=prices) as gw:
        body = _catalog(gw)
    entries = {e["id"]: e for e in body["data"]}  # type: ignore[attr-defined]
    assert entries["openai/whisper-1"]["pricing"] == {"per_minute": 0.004, "currency": "USD"}
    assert entries["local/fake"]["pricing"] == {"per_minute": 0.002, "currency": "USD"}
    catalog = parse_catalog(body)
    assert catalog == {
        "local/fake": 0.002,
        "local/pocketsphinx": 0.002,
        "local/whisper-tiny.en": 0.002,
        "openai/whisper-1": 0.004,
    }
    # The gateway's catalog is preferred over the built-in list price.
    assert lookup_price("openai/whisper-1", catalog=catalog) == 0.004


def test_without_a_price_answers_are_free() -> None:
    with pn.LocalGateway() as gw, pn.Client(**gw.client_kwargs()) as c:
        result = c.transcribe(make_wav(4, seconds=2.0, rate=8000), model="local/fake")
        body = _catalog(gw)
    assert result.raw["cost_nanos"] == 0 and result.cost == 0
    assert parse_catalog(body) == {
        "local/fake": 0.0,
        "local/pocketsphinx": 0.0,
        "local/whisper-tiny.en": 0.0,
    }


def test_a_priced_answer_without_duration_reports_no_cost() -> None:
    # The fake engine reads the length of WAV only: for FLAC it has none, so the cost of
    # the answer is unknown, and left out rather than reported as free.
    with pn.LocalGateway(price_per_minute=PRICE) as gw, pn.Client(**gw.client_kwargs()) as c:
        result = c.transcribe(SHARED_AUDIO / "jfk.flac", model="local/fake")
    assert result.duration is None
    assert "cost_nanos" not in result.raw
    assert result.cost is None


def test_bad_price_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="does not serve"):
        pn.LocalGateway(price_per_minute={"openai/whisper-1": 0.006})
    with pytest.raises(ValueError, match="non-negative"):
        pn.LocalGateway(price_per_minute=-1.0)
    with pytest.raises(ValueError, match="number"):
        pn.LocalGateway(price_per_minute={"*": "cheap"})  # type: ignore[dict-item]
    assert build_prices(None, ["a"]) == {"a": 0.0}


def test_price_specs_of_the_command_line() -> None:
    assert parse_price_specs(["0.006"]) == {"*": 0.006}
    assert parse_price_specs(["openai/whisper-1=0.004", "0.001"]) == {
        "openai/whisper-1": 0.004,
        "*": 0.001,
    }
    for bad in ("abc", "=0.1", "m=-1", "m=nan"):
        with pytest.raises(ValueError, match="price-per-minute"):
            parse_price_specs([bad])


def test_serve_refuses_a_bad_price(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--no-auth", "--price-per-minute", "abc"]) == 2
    assert "--price-per-minute 'abc'" in capsys.readouterr().err


def test_process_gateway_charges_the_same() -> None:
    prices = {"*": PRICE, "local/pocketsphinx": 0.0, "local/whisper-tiny.en": 0.0}
    with (
        pn.LocalGateway(process=True, price_per_minute=prices) as gw,
        pn.Client(**gw.client_kwargs()) as c,
    ):
        result = c.transcribe(make_wav(5, seconds=2.0, rate=8000), model="local/fake")
        catalog = parse_catalog(_catalog(gw))
    assert result.raw["cost_nanos"] == 200_000
    assert catalog == {
        "local/fake": PRICE,
        "local/pocketsphinx": 0.0,
        "local/whisper-tiny.en": 0.0,
    }


# -- 300 clips of 2 s: estimate, spend and budget against the gateway's answers -------------

CLIPS = 300


@pytest.fixture(scope="module")
def clips() -> list[bytes]:
    return [make_wav(1000 + i, seconds=2.0, rate=8000) for i in range(CLIPS)]


@pytest.fixture(scope="module")
def priced_gateway() -> Iterator[pn.LocalGateway]:
    with pn.LocalGateway(price_per_minute=PRICE) as gw:
        yield gw


def test_estimate_matches_the_gateways_total(
    clips: list[bytes], priced_gateway: pn.LocalGateway
) -> None:
    # The estimate sees only the clips and the price the gateway's catalog lists.
    catalog = parse_catalog(_catalog(priced_gateway))
    jobs = [(hashlib.sha256(c).hexdigest(), audio_seconds(c)) for c in clips]
    estimate = estimate_model(
        jobs, model="local/fake", price_per_minute=lookup_price("local/fake", catalog=catalog)
    )
    assert estimate.requests == CLIPS and estimate.unknown_durations == 0
    assert estimate.cost is not None

    priced_gateway.reset_stats()
    with pn.Client(**priced_gateway.client_kwargs()) as c:
        costs = [c.transcribe(clip, model="local/fake").cost for clip in clips]
    assert priced_gateway.stats().requests == CLIPS
    assert all(cost is not None for cost in costs)
    total = sum(cost for cost in costs if cost is not None)
    assert total == pytest.approx(CLIPS * PRICE * 2 / 60)  # the gateway did charge
    assert estimate.cost == pytest.approx(total, rel=0.01)


def _budgeted_run(
    gw: pn.LocalGateway, clips: list[bytes], gate: BudgetGate
) -> tuple[int, list[float]]:
    """Send clips one at a time through the gate; stop at the first final refusal."""
    costs: list[float] = []
    with pn.Client(**gw.client_kwargs()) as c:
        for clip in clips:
            seconds = audio_seconds(clip)
            reservation = gate.try_reserve(gate.estimate(seconds))
            if reservation is None:
                assert gate.in_flight == 0  # sequential: the refusal is final
                break
            result = c.transcribe(clip, model="local/fake")
            gate.settle(reservation, result.cost, seconds=result.duration or seconds)
            assert result.cost is not None
            costs.append(result.cost)
    return len(costs), costs


@pytest.mark.parametrize("priced", [True, False], ids=["price-given", "costs-from-answers"])
def test_half_the_total_stops_at_the_budget(
    clips: list[bytes], priced_gateway: pn.LocalGateway, priced: bool
) -> None:
    clip_cost = PRICE * 2 / 60
    budget = CLIPS * clip_cost / 2
    gate = BudgetGate(budget, price_per_minute=PRICE if priced else None)
    priced_gateway.reset_stats()
    sent, costs = _budgeted_run(priced_gateway, clips, gate)
    assert sent == CLIPS // 2  # the whole budget used, not a request more
    assert priced_gateway.stats().requests == sent
    assert gate.spent == pytest.approx(sum(costs), abs=1e-9)
    assert gate.spent <= budget + 1e-12
    assert gate.refusal is not None and gate.error().spent == gate.spent


def test_a_metadata_run_reports_the_cost_the_estimate_predicted(
    clips: list[bytes], priced_gateway: pn.LocalGateway
) -> None:
    import pandas as pd

    df = pd.DataFrame({"audio": clips})
    jobs = [(hashlib.sha256(c).hexdigest(), audio_seconds(c)) for c in clips]
    estimate = estimate_model(jobs, model="local/fake", price_per_minute=PRICE)
    with pn.Client(**priced_gateway.client_kwargs()) as client:
        out = df.stt.transcribe(
            col="audio", model="local/fake", metadata=True, cache=False, client=client
        )
    assert out["text_error"].isna().all()
    assert out["text_cost"].notna().all()
    assert estimate.cost == pytest.approx(out["text_cost"].sum(), rel=0.01)
