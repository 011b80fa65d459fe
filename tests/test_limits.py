"""Per-model limits: the known table, refusals read, the refusal budget, the limits file,
and the local gateway refusing over-limit audio over real HTTP as live does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

import phaseo_notebook as pn
from phaseo_notebook._chunking import encode_flac, iter_pcm, needs_chunking, plan_chunks, probe
from phaseo_notebook._gateway._app import AudioLimits
from phaseo_notebook._limits import (
    DEFAULT_LIMITS,
    KNOWN_LIMITS,
    LimitBook,
    ModelLimits,
    learn_from_refusal,
)

# -- the table ---------------------------------------------------------------------------


def test_default_is_the_smaller_reading_of_25_mb() -> None:
    # 25 MB (SI) rather than 25 MiB (26,214,400): a chunk under it passes both readings.
    assert ModelLimits(max_bytes=25_000_000) == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_bytes is not None and DEFAULT_LIMITS.max_bytes < 26_214_400


def test_gpt4o_models_are_known_to_stop_at_1400_seconds() -> None:
    book = LimitBook()
    for model in ("openai/gpt-4o-transcribe", "openai/gpt-4o-mini-transcribe"):
        assert book.limits_for(model) == ModelLimits(25_000_000, 1400.0)
        assert "1400" in KNOWN_LIMITS[model][1]
    assert book.limits_for("openai/whisper-1") == ModelLimits(25_000_000, None)


def test_model_limits_validate_and_tighten() -> None:
    with pytest.raises(ValueError):
        ModelLimits(max_bytes=0)
    with pytest.raises(ValueError):
        ModelLimits(max_seconds=float("nan"))
    assert ModelLimits(10, None).tighten(ModelLimits(20, 5.0)) == ModelLimits(10, 5.0)
    assert ModelLimits(10, 5.0).admits(10, None)
    assert not ModelLimits(10, 5.0).admits(1, 5.5)


# -- reading refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "description",
    [
        "longer than 1400 seconds",
        "audio duration 1500 s exceeds the maximum of 1400 s",
        "maximum audio length is 1400 seconds",
        "audio duration 1535.05 seconds is longer than 1400 seconds which is the maximum "
        "for this model",
        "Audio is too long: maximum duration: 1400s",
        "The audio file exceeds the limit of 1400 seconds.",
        "File too long. Max 1400 seconds.",
    ],
)
def test_duration_refusals_are_read(description: str) -> None:
    for status in (400, 422):
        body = {"error": "validation_error", "description": description}
        assert learn_from_refusal(status, body) == ModelLimits(max_seconds=1400.0)
    assert learn_from_refusal(400, description) == ModelLimits(max_seconds=1400.0)


def test_duration_in_minutes_and_nested_upstream_errors() -> None:
    assert learn_from_refusal(400, "maximum audio length is 25 minutes") == ModelLimits(
        max_seconds=1500.0
    )
    body = {
        "error": "upstream_error",
        "description": "provider rejected the request",
        "upstream_error": {"message": "audio duration 1600 seconds is longer than 1400 seconds"},
    }
    assert learn_from_refusal(400, body) == ModelLimits(max_seconds=1400.0)


def test_payload_too_large_is_read() -> None:
    assert learn_from_refusal(413, {"max_bytes": 26214400}) == ModelLimits(max_bytes=26214400)
    assert learn_from_refusal(413, {"max_bytes": "1000"}) == ModelLimits(max_bytes=1000)
    assert learn_from_refusal(
        413, {"description": "audio is larger than the limit of 5000 bytes"}
    ) == ModelLimits(max_bytes=5000)
    assert learn_from_refusal(413, b'{"no": "number"}') is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"description": "model is required"}),
        (400, {"description": "audio duration 1500 seconds"}),  # a duration, not a limit
        (401, {"description": "longer than 10 seconds"}),  # not a refusal of the audio
        (400, {"description": "longer than 0 seconds"}),
        (413, {"max_bytes": True}),
        (413, {"max_bytes": -5}),
        (413, {"max_bytes": 10**400}),  # too large for a float: a hostile body, not a crash
        (400, {"description": "longer than N seconds", "max_seconds": 10**400}),
        (400, None),
    ],
)
def test_refusals_that_state_no_limit_teach_nothing(status: int, body: object) -> None:
    assert learn_from_refusal(status, body) is None  # type: ignore[arg-type]


# -- the refusal budget --------------------------------------------------------------------


def test_a_refusal_with_a_new_limit_leads_to_a_rechunk() -> None:
    book = LimitBook()
    verdict = book.record_refusal("acme/asr", 400, {"description": "longer than 600 seconds"})
    assert verdict.rechunk
    assert verdict.learned == ModelLimits(max_seconds=600.0)
    assert verdict.limits == ModelLimits(25_000_000, 600.0)
    assert book.limits_for("acme/asr") == verdict.limits
    assert book.refusals("acme/asr") == 1
    assert book.limits_for("other/model") == DEFAULT_LIMITS


def test_a_model_pays_for_at_most_two_refusals() -> None:
    book = LimitBook()
    first = book.record_refusal("m", 413, {"max_bytes": 20_000_000})
    second = book.record_refusal("m", 400, {"description": "longer than 900 seconds"})
    third = book.record_refusal("m", 413, {"max_bytes": 10_000_000})
    assert (first.rechunk, second.rechunk, third.rechunk) == (True, True, False)
    assert not book.may_rechunk("m")
    assert book.may_rechunk("n")
    assert book.limits_for("m") == ModelLimits(10_000_000, 900.0)  # still learned


def test_a_refusal_that_teaches_nothing_new_is_the_rows_error() -> None:
    book = LimitBook()
    assert not book.record_refusal("m", 400, {"description": "bad audio"}).rechunk
    assert book.refusals("m") == 0  # not a limit: no part of the budget
    assert not book.record_refusal("m", 413, {"error": "payload_too_large"}).rechunk
    assert book.refusals("m") == 1  # a 413 is about size even when it names no number
    book.record_refusal("n", 400, {"description": "longer than 60 seconds"})
    # The same limit again: planning under it already failed, so re-chunking would loop.
    assert not book.record_refusal("n", 400, {"description": "longer than 60 seconds"}).rechunk
    # A looser limit than the known one teaches nothing either.
    assert not book.record_refusal(
        "openai/gpt-4o-transcribe", 400, {"description": "longer than 3000 seconds"}
    ).rechunk


def test_a_413_without_a_number_teaches_the_size_sent() -> None:
    book = LimitBook()
    verdict = book.record_refusal("m", 413, {"error": "payload_too_large"}, sent_bytes=12_000_000)
    assert verdict.rechunk
    assert book.limits_for("m").max_bytes == 11_999_999


# -- the limits file -------------------------------------------------------------------------


def test_learned_limits_persist_for_later_runs(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "limits.json"
    book = LimitBook(path=path, scope="https://gw.example/v1")
    book.record_refusal("m", 400, {"description": "longer than 300 seconds"})
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["limits.json"]  # no temp files left
    later = LimitBook(path=path, scope="https://gw.example/v1")
    assert later.limits_for("m") == ModelLimits(25_000_000, 300.0)
    assert later.refusals("m") == 0  # the budget is per run
    # Another gateway's limits are its own, and saving one scope keeps the other.
    other = LimitBook(path=path, scope="http://127.0.0.1:8080/v1")
    assert other.limits_for("m") == DEFAULT_LIMITS
    other.learn("x", ModelLimits(max_bytes=1000))
    data = json.loads(path.read_text())
    assert set(data["scopes"]) == {"https://gw.example/v1", "http://127.0.0.1:8080/v1"}
    assert LimitBook(path=path, scope="https://gw.example/v1").limits_for("m").max_seconds == 300


def test_an_unreadable_or_old_limits_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    path.write_text("{not json")
    assert LimitBook(path=path).learned() == {}
    old = time.time() - 90 * 24 * 3600
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "scopes": {
                    "": {
                        "stale": {"max_bytes": 10, "max_seconds": None, "learned_at": old},
                        "fresh": {"max_bytes": 20, "max_seconds": None, "learned_at": time.time()},
                        "broken": {"max_bytes": -1, "learned_at": time.time()},
                    }
                },
            }
        )
    )
    assert LimitBook(path=path).learned() == {"fresh": ModelLimits(max_bytes=20)}


# -- the local gateway's limits, over HTTP ---------------------------------------------------


def _post(gw: pn.LocalGateway, model: str, data: bytes, name: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/audio/transcriptions",
        data={"model": model},
        files={"file": (name, data, "audio/flac")},
        timeout=30,
    )


@pytest.fixture(scope="module")
def jfk_16k(request: pytest.FixtureRequest) -> bytes:
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
    return encode_flac(list(iter_pcm(shared / "jfk.flac")))


def test_gateway_refuses_over_limit_audio_like_live(jfk_16k: bytes, shared_audio: Path) -> None:
    original = (shared_audio / "jfk.flac").read_bytes()  # 1.15 MB, 11 s
    with pn.LocalGateway(
        mode="live", api_key=None, max_audio_bytes=500_000, max_audio_seconds=5
    ) as gw:
        too_big = _post(gw, "local/fake", original, "jfk.flac")
        assert too_big.status_code == 413
        body = too_big.json()
        assert (body["error"], body["max_bytes"]) == ("payload_too_large", 500_000)
        assert learn_from_refusal(413, body) == ModelLimits(max_bytes=500_000)

        too_long = _post(gw, "local/fake", jfk_16k, "jfk.flac")  # 11 s in 190 KB
        assert too_long.status_code == 400
        body = too_long.json()
        assert body["error"] == "validation_error"
        assert "longer than 5 seconds" in body["description"]
        assert learn_from_refusal(400, body) == ModelLimits(max_seconds=5.0)

        chunks = list(plan_chunks(jfk_16k, ModelLimits(500_000, 5)))
        for chunk in chunks:
            assert _post(gw, "local/fake", chunk.data, "chunk.flac").status_code == 200


def test_gateway_limits_per_model(jfk_16k: bytes) -> None:
    with pn.LocalGateway(
        mode="lenient",
        api_key=None,
        models={"openai/gpt-4o-transcribe": "fake"},
        limits={"openai/gpt-4o-transcribe": (None, 5.0)},
    ) as gw:
        assert _post(gw, "openai/gpt-4o-transcribe", jfk_16k, "a.flac").status_code == 400
        assert _post(gw, "local/fake", jfk_16k, "a.flac").status_code == 200


def test_gateway_limits_apply_to_audio_b64_too(jfk_16k: bytes) -> None:
    import base64

    with pn.LocalGateway(mode="strict", api_key=None, max_audio_bytes=100_000) as gw:
        response = httpx.post(
            gw.url + "/audio/transcriptions",
            json={"model": "local/fake", "audio_b64": base64.b64encode(jfk_16k).decode()},
        )
        assert response.status_code == 413
        assert response.json()["max_bytes"] == 100_000


def test_a_run_learns_the_limit_from_one_refusal_and_rechunks(jfk_16k: bytes) -> None:
    # The loop the batch engine runs for a row: send whole, learn from the refusal,
    # plan again under the learned limit, send the chunks.
    model = "acme/long-model"
    book = LimitBook()
    sent: list[int] = []
    with pn.LocalGateway(
        mode="live", api_key=None, models={model: "fake"}, limits={model: (None, 4.0)}
    ) as gw:
        info = probe(jfk_16k)
        assert not needs_chunking(info.size_bytes, info.seconds, book.limits_for(model))
        pending = [jfk_16k]
        answered = 0
        while pending:
            data = pending.pop(0)
            response = _post(gw, model, data, "audio.flac")
            sent.append(response.status_code)
            if response.status_code == 200:
                answered += 1
                continue
            verdict = book.record_refusal(model, response.status_code, response.json())
            assert verdict.rechunk
            pending = [c.data for c in plan_chunks(data, verdict.limits)]
        assert gw.stats().requests == len(sent)
    assert sent[0] == 400 and sent[1:] == [200] * answered
    assert book.refusals(model) == 1
    assert book.limits_for(model).max_seconds == 4.0
    assert answered == len(list(plan_chunks(jfk_16k, ModelLimits(25_000_000, 4.0)))) >= 3


def test_gateway_limit_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        pn.LocalGateway(max_audio_bytes=30_000_000)
    with pytest.raises(ValueError, match="max_seconds"):
        pn.LocalGateway(max_audio_seconds=0)
    assert AudioLimits(max_bytes=10).for_model("any") == (10, None)


def test_gateway_subprocess_enforces_the_same_limits(jfk_16k: bytes) -> None:
    # `serve --max-audio-bytes/--max-audio-seconds/--model-limits` carry them to a subprocess.
    with pn.LocalGateway(
        mode="live",
        api_key=None,
        process=True,
        max_audio_bytes=150_000,
        models={"acme/short": "fake"},
        limits={"acme/short": (None, 5.0)},
    ) as gw:
        whole = _post(gw, "local/fake", jfk_16k, "a.flac")
        assert whole.status_code == 413 and whole.json()["max_bytes"] == 150_000
        short = _post(gw, "acme/short", jfk_16k, "a.flac")
        assert short.status_code == 400 and "longer than 5 seconds" in short.json()["description"]
        first = next(iter(plan_chunks(jfk_16k, ModelLimits(100_000, 4.0))))
        assert _post(gw, "acme/short", first.data, "a.flac").status_code == 200


def test_gateway_without_limits_accepts_long_audio(jfk_16k: bytes) -> None:
    with pn.LocalGateway(mode="live", api_key=None) as gw:
        assert _post(gw, "local/fake", jfk_16k, "jfk.flac").status_code == 200
