"""Prices (built-in table, gateway catalog, caller's prices) and the estimate of a run."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phaseo_notebook._estimate import Estimate, estimate_model
from phaseo_notebook._pricing import (
    BUILTIN_PRICES,
    cost_for_seconds,
    lookup_price,
    parse_catalog,
    resolve_prices,
)

# -- the table ---------------------------------------------------------------------------------


def test_published_openai_prices() -> None:
    assert lookup_price("openai/whisper-1") == 0.006
    assert lookup_price("openai/gpt-4o-transcribe") == 0.006
    assert lookup_price("openai/gpt-4o-mini-transcribe") == 0.003


def test_local_models_are_free() -> None:
    assert lookup_price("local/fake") == 0
    assert lookup_price("local/pocketsphinx") == 0


def test_every_row_has_a_source_and_a_date() -> None:
    for model, row in BUILTIN_PRICES.items():
        assert row.source.strip(), model
        dt.date.fromisoformat(row.as_of)
        assert 0 <= row.usd_per_minute < 1, model


def test_hourly_list_prices_are_converted_per_minute() -> None:
    assert lookup_price("openai/whisper-large-v3") == pytest.approx(0.111 / 60)
    assert lookup_price("openai/whisper-large-v3-turbo") == pytest.approx(0.04 / 60)


def test_unknown_model_has_no_price() -> None:
    assert lookup_price("acme/unknown") is None
    assert lookup_price("spacex-ai/grok-transcribe") is None


# -- precedence ---------------------------------------------------------------------------------


def test_explicit_prices_beat_the_catalog_which_beats_the_table() -> None:
    catalog = {"openai/whisper-1": 0.007, "acme/x": 0.001}
    assert lookup_price("openai/whisper-1", catalog=catalog) == 0.007
    assert lookup_price(
        "openai/whisper-1", prices={"openai/whisper-1": 0.004}, catalog=catalog
    ) == (0.004)
    assert lookup_price("acme/x", catalog=catalog) == 0.001
    assert lookup_price("acme/y", prices={"acme/y": 0}) == 0
    merged = resolve_prices({"acme/x": 0.002}, catalog=catalog)
    assert merged["acme/x"] == 0.002
    assert merged["openai/whisper-1"] == 0.007
    assert merged["openai/gpt-4o-mini-transcribe"] == 0.003


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.006", True, None])
def test_bad_explicit_prices_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="prices"):
        resolve_prices({"m": bad})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="prices"):
        lookup_price("m", prices={"m": bad})  # type: ignore[dict-item]


def test_cost_for_seconds() -> None:
    assert cost_for_seconds(120, 0.006) == pytest.approx(0.012)
    assert cost_for_seconds(0, 0.006) == 0


# -- the gateway's catalog -------------------------------------------------------------------


def test_parse_catalog_reads_per_minute_and_converts_other_units() -> None:
    body = {
        "object": "list",
        "data": [
            {"id": "a", "object": "model", "pricing": {"per_minute": 0.006, "currency": "USD"}},
            {"id": "b", "pricing": {"per_second": 0.0001}},
            {"id": "c", "pricing": {"per_hour": "0.36", "currency": "usd"}},
            {"id": "free", "pricing": {"per_minute": 0}},
        ],
    }
    prices = parse_catalog(body)
    assert prices == pytest.approx({"a": 0.006, "b": 0.006, "c": 0.006, "free": 0.0})


def test_parse_catalog_leaves_out_what_it_cannot_price() -> None:
    body = {
        "data": [
            {"id": "no-pricing", "object": "model"},
            {"id": "empty", "pricing": {}},
            {"id": "eur", "pricing": {"per_minute": 0.005, "currency": "EUR"}},
            {"id": "negative", "pricing": {"per_minute": -1}},
            {"id": "text", "pricing": {"per_minute": "cheap"}},
            {"id": "bool", "pricing": {"per_minute": True}},
            {"pricing": {"per_minute": 0.1}},
            "not an object",
            {"id": "ok", "pricing": {"per_minute": 0.002}},
        ]
    }
    assert parse_catalog(body) == {"ok": 0.002}
    assert parse_catalog(body, currency="EUR") == {"eur": 0.005}


@pytest.mark.parametrize("body", [None, [], "x", {"data": None}, {"data": {"id": "a"}}, {}])
def test_parse_catalog_of_other_shapes_is_empty(body: object) -> None:
    assert parse_catalog(body) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(body=json_values)
def test_parse_catalog_never_raises(body: object) -> None:
    out = parse_catalog({"data": [body, {"id": "x", "pricing": body}]})
    assert all(isinstance(v, float) and v >= 0 for v in out.values())


def test_a_catalog_from_the_local_gateway_shape() -> None:
    # The exact bytes the local gateway serves (see tests/test_gateway_cost.py for the wire).
    raw = json.dumps(
        {
            "object": "list",
            "data": [
                {
                    "id": "local/fake",
                    "object": "model",
                    "owned_by": "local",
                    "engine": "fake",
                    "pricing": {"per_minute": 0.006, "currency": "USD"},
                }
            ],
        }
    )
    assert lookup_price("local/fake", catalog=parse_catalog(json.loads(raw))) == 0.006


# -- the estimate ------------------------------------------------------------------------------


def test_estimate_dedupes_and_skips_the_cache() -> None:
    jobs = [("a", 60.0), ("b", 30.0), ("a", 60.0), ("c", 90.0), ("c", 90.0)]
    part = estimate_model(jobs, model="m", cached_keys={"b"}, price_per_minute=0.01)
    assert part.jobs == 5
    assert (part.requests, part.cached) == (2, 1)
    assert part.audio_seconds == 150.0
    assert part.cost == pytest.approx(0.025)
    assert part.unknown_durations == 0


def test_estimate_of_unknown_lengths_uses_the_mean_known_length() -> None:
    part = estimate_model(
        [("a", 60.0), ("b", 120.0), ("u", None)], model="m", price_per_minute=0.01
    )
    assert part.unknown_durations == 1
    assert part.audio_seconds == 180.0  # what could be read
    assert part.cost == pytest.approx(0.01 * (180 + 90) / 60)
    # A duplicate that has a length fills in the one that did not.
    part = estimate_model([("a", None), ("a", 30.0)], model="m", price_per_minute=0.01)
    assert (part.unknown_durations, part.audio_seconds) == (0, 30.0)


def test_estimate_without_price_or_any_length_has_no_cost() -> None:
    assert estimate_model([("a", 60.0)], model="m", price_per_minute=None).cost is None
    only_urls = estimate_model([("u1", None), ("u2", None)], model="m", price_per_minute=0.006)
    assert only_urls.cost is None and only_urls.requests == 2
    all_cached = estimate_model([("a", 60.0)], model="m", cached_keys={"a"}, price_per_minute=1.0)
    assert all_cached.cost == 0 and all_cached.requests == 0


def test_estimate_ignores_nonsense_lengths() -> None:
    part = estimate_model(
        [("a", float("nan")), ("b", -5.0), ("c", 60.0)], model="m", price_per_minute=0.01
    )
    assert part.unknown_durations == 2 and part.audio_seconds == 60.0


def test_estimate_of_several_models_totals_and_tables() -> None:
    cheap = estimate_model(
        [("a", 60.0), ("b", 60.0)], model="openai/gpt-4o-mini-transcribe", price_per_minute=0.003
    )
    dear = estimate_model([("a", 60.0)], model="openai/whisper-1", price_per_minute=0.006)
    est = Estimate((cheap, dear))
    assert (est.requests, est.cached, est.audio_minutes) == (3, 0, 3.0)
    assert est.cost == pytest.approx(0.012)
    assert est.currency == "USD"
    text = repr(est)
    lines = text.splitlines()
    assert lines[0] == "Estimate: 3 requests, 0 cached, 3.00 audio minutes, cost 0.012 USD"
    assert lines[1].split() == ["model", "requests", "cached", "audio", "min", "USD/min", "cost"]
    assert lines[2].split() == ["openai/gpt-4o-mini-transcribe", "2", "0", "2.00", "0.003", "0.006"]
    assert lines[3].split() == ["openai/whisper-1", "1", "0", "1.00", "0.006", "0.006"]
    page = est._repr_html_()
    assert page.count("<tr>") == 3 and "<td>openai/whisper-1</td>" in page
    assert "cost 0.012 USD" in page


def test_estimate_with_an_unpriced_model_has_no_total_cost() -> None:
    priced = estimate_model([("a", 60.0)], model="openai/whisper-1", price_per_minute=0.006)
    unpriced = estimate_model([("a", 60.0), ("u", None)], model="acme/x", price_per_minute=None)
    est = Estimate((priced, unpriced))
    assert est.cost is None and est.unknown_durations == 1
    text = repr(est)
    assert "cost unknown (no price)" in text.splitlines()[0]
    assert "1 of unknown length" in text.splitlines()[0]
    assert text.splitlines()[-1].split()[-2:] == ["unknown", "unknown"]
    assert (
        "<td>&lt;m&gt;</td>"
        in Estimate((estimate_model([], model="<m>", price_per_minute=0),))._repr_html_()
    )
