"""The local gateway over real HTTP on 127.0.0.1, driven with plain httpx.

Every test talks to a real aiohttp server (or, for the in-process transport, compares
against one); nothing here uses the project's client, so a bug on either side of the
wire cannot hide the other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from phaseo_notebook._cli import main as cli_main
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._gateway import EmbeddedTransport, Faults, GatewayStats, LocalGateway
from phaseo_notebook._gateway._faults import FaultDecision, FaultInjector, FaultKind, decide
from phaseo_notebook._gateway._multipart import (
    MultipartError,
    boundary_from_content_type,
    parse_multipart,
)
from tests.conftest import REPO_ROOT, SHARED_AUDIO, make_wav

pytestmark = pytest.mark.timeout(60)

WAV = make_wav(3)
WAV_B64 = base64.b64encode(WAV).decode()
MiB = 1024 * 1024

MakeGateway = Callable[..., LocalGateway]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[MakeGateway]:
    """Start gateways on free ports (serving ``tmp_path/files``); all closed afterwards."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "clip.wav").write_bytes(WAV)
    started: list[LocalGateway] = []

    def make(**kwargs: Any) -> LocalGateway:
        kwargs.setdefault("files_dir", files)
        gw = LocalGateway(**kwargs).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.close()


def form(*parts: tuple[str, Any], **fields: str) -> list[tuple[str, Any]]:
    """Text fields as multipart parts, then ``parts`` (httpx sends ``data=`` alone urlencoded)."""
    return [*((name, (None, value)) for name, value in fields.items()), *parts]


def audio_file(data: bytes = WAV, name: str = "clip.wav", ctype: str = "audio/wav") -> Any:
    return ("file", (name, data, ctype))


def post(
    gw: LocalGateway,
    parts: list[tuple[str, Any]] | None = None,
    *,
    key: str | bool | None = True,
    timeout: float = 10.0,
    **kwargs: Any,
) -> httpx.Response:
    """POST to the gateway's transcriptions route, with its key unless told otherwise."""
    headers = {}
    token = gw.api_key if key is True else key
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(
        gw.url + "/audio/transcriptions",
        files=parts,
        headers=headers,
        timeout=timeout,
        **kwargs,
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The flat live-style error body, with its request id in body and header."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code
    assert body["status_code"] == status
    assert body["error_origin"] == "gateway"
    assert body["generation_id"] == response.headers["x-request-id"]
    assert isinstance(body["description"], str) and isinstance(body["error_type"], str)
    return body


# -- multipart parser ---------------------------------------------------------------------


def test_multipart_parser_reads_fields_files_unicode_and_empty_values() -> None:
    request = httpx.Request(
        "POST",
        "http://x/",
        files=[
            ("model", (None, "local/fake")),
            ("language", (None, "")),
            ("prompt", (None, "héllo ✓ — 漢字")),
            ("file", ("ünï.wav", b"RIFF\r\n--not-a-boundary\r\n", "audio/wav")),
        ],
    )
    parts = parse_multipart(
        request.read(), boundary_from_content_type(request.headers["content-type"])
    )
    assert [(p.name, p.is_file) for p in parts] == [
        ("model", False),
        ("language", False),
        ("prompt", False),
        ("file", True),
    ]
    assert parts[1].text() == ""
    assert parts[2].text() == "héllo ✓ — 漢字"
    assert (parts[3].filename, parts[3].content_type) == ("ünï.wav", "audio/wav")
    assert parts[3].data == b"RIFF\r\n--not-a-boundary\r\n"


def test_multipart_parser_quoted_boundary_escapes_and_errors() -> None:
    body = (
        b"preamble\r\n--a b\r\n"
        b'Content-Disposition: form-data; name="f"; filename="x \\"q\\";.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
        b"DATA\r\n--a b--\r\n"
    )
    (part,) = parse_multipart(
        body, boundary_from_content_type('multipart/form-data; boundary="a b"')
    )
    assert (part.name, part.filename, part.data) == ("f", 'x "q";.wav', b"DATA")
    with pytest.raises(MultipartError):
        boundary_from_content_type("multipart/form-data")
    with pytest.raises(MultipartError, match="closing boundary"):
        parse_multipart(b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nno end', "b")
    with pytest.raises(MultipartError, match="Content-Disposition"):
        parse_multipart(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "b")


def test_server_records_parsed_fields_and_file(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="live")
    parts = form(
        audio_file(name="ünï.wav", ctype="audio/x-wav"),
        model="local/fake",
        language="",
        prompt="héllo ✓",
    )
    response = post(gw, parts)
    assert response.status_code == 200, response.text
    (record,) = gw.stats().recent
    assert record["fields"] == {"model": "local/fake", "language": "", "prompt": "héllo ✓"}
    assert record["file"] == {
        "filename": "ünï.wav",
        "content_type": "audio/x-wav",
        "size": len(WAV),
    }
    assert record["content_type"] == "multipart/form-data"
    assert record["authorization"] == "Bearer"


# -- modes --------------------------------------------------------------------------------


def test_strict_accepts_contract_fields(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    response = post(gw, form(model="local/fake", audio_b64=WAV_B64, language="fr"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == fake_transcript(WAV)
    assert body["requestId"] == response.headers["x-request-id"] == body["id"]
    assert body["object"] == "transcription"
    assert (body["model"], body["provider"], body["language"]) == ("local/fake", "local", "fr")
    assert body["duration"] == pytest.approx(0.1)
    assert body["usage"] == {"seconds": body["duration"]}
    assert (body["cost_nanos"], body["currency"]) == (0, "USD")


def test_strict_rejects_unknown_fields_and_file_parts(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    body = assert_error(
        post(gw, form(model="local/fake", audio_b64=WAV_B64, prompt="hi")), 400, "validation_error"
    )
    assert "'prompt'" in body["description"]
    assert body["details"][0]["field"] == "prompt"
    body = assert_error(post(gw, form(audio_file(), model="local/fake")), 400, "validation_error")
    assert "'file'" in body["description"]
    body = assert_error(
        post(gw, form(model="local/fake", audio_b64=WAV_B64, audio_url=gw.file_url("clip.wav"))),
        400,
        "validation_error",
    )
    assert "exactly one" in body["description"]
    assert_error(post(gw, form(model="local/fake")), 400, "validation_error")


def test_live_requires_a_file_part(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="live")
    for parts in (
        form(model="local/fake", audio_b64=WAV_B64),
        form(model="local/fake", audio_url=gw.file_url("clip.wav")),
        form(audio_file(name="notes.txt", ctype="text/plain"), model="local/fake"),
        form(model="local/fake", file="not an upload"),
    ):
        body = assert_error(post(gw, parts), 400, "validation_error")
        assert "file is required" in body["description"]
    assert gw.stats().audio_counts == {}
    for file_part in (audio_file(), audio_file(name="blob", ctype="audio/ogg")):
        response = post(
            gw, form(file_part, model="local/fake", temperature="0.2", response_format="json")
        )
        assert response.status_code == 200, response.text
        assert response.json()["text"] == fake_transcript(WAV)
    assert_error(
        post(gw, form(audio_file(), model="local/fake", temperature="7")),
        400,
        "validation_error",
    )


def test_verbose_json_and_timestamp_granularities(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="live")
    seconds = 0.1  # make_wav's clip
    segment = [{"start": 0.0, "end": seconds, "text": fake_transcript(WAV)}]
    for granularities in ([], [("timestamp_granularities", (None, "segment"))]):
        body = post(
            gw,
            form(audio_file(), *granularities, model="local/fake", response_format="verbose_json"),
        ).json()
        assert body["segments"] == segment and "words" not in body
    # "word": one name, a JSON list, or the field repeated; the fake engine has no word times.
    for granularities in (
        [("timestamp_granularities", (None, "word"))],
        [("timestamp_granularities", (None, '["segment", "word"]'))],
        [
            ("timestamp_granularities", (None, "segment")),
            ("timestamp_granularities", (None, "word")),
        ],
    ):
        body = post(
            gw,
            form(audio_file(), *granularities, model="local/fake", response_format="verbose_json"),
        ).json()
        assert body["segments"] == segment and body["words"] == [], granularities
    plain = post(gw, form(audio_file(), model="local/fake", response_format="json")).json()
    assert "segments" not in plain and "words" not in plain
    for bad in ("sentence", '["word", 3]', "[oops"):
        response = post(
            gw,
            form(
                audio_file(),
                ("timestamp_granularities", (None, bad)),
                model="local/fake",
                response_format="verbose_json",
            ),
        )
        body = assert_error(response, 400, "validation_error")
        assert body["details"][0]["field"] == "timestamp_granularities"
    # Granularities without verbose_json would be silently lost: refused.
    response = post(
        gw, form(audio_file(), ("timestamp_granularities", (None, "word")), model="local/fake")
    )
    assert "verbose_json" in assert_error(response, 400, "validation_error")["description"]
    # A JSON body takes a real list; strict mode keeps to the contract.
    lenient = make_gateway(mode="lenient")
    body = httpx.post(
        lenient.url + "/audio/transcriptions",
        json={
            "model": "local/fake",
            "audio_b64": WAV_B64,
            "response_format": "verbose_json",
            "timestamp_granularities": ["word"],
        },
        headers={"Authorization": f"Bearer {lenient.api_key}"},
    ).json()
    assert body["segments"] == segment and body["words"] == []
    strict = make_gateway(mode="strict")
    response = post(
        strict, form(model="local/fake", audio_b64=WAV_B64, response_format="verbose_json")
    )
    assert_error(response, 400, "validation_error")


def test_lenient_accepts_file_url_and_b64(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="lenient")
    texts = {
        post(gw, parts).json()["text"]
        for parts in (
            form(audio_file(), model="local/fake"),
            form(model="local/fake", audio_b64=WAV_B64),
            form(model="local/fake", audio_b64="data:audio/wav;base64," + WAV_B64),
            form(model="local/fake", audio_url=gw.file_url("clip.wav")),
        )
    }
    assert texts == {fake_transcript(WAV)}
    assert gw.stats().by_status == {200: 4}


def test_json_and_urlencoded_bodies_are_accepted(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    response = httpx.post(
        gw.url + "/audio/transcriptions",
        json={"model": "local/fake", "audio_b64": WAV_B64, "provider": {"only": ["local"]}},
        headers={"Authorization": f"Bearer {gw.api_key}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["text"] == fake_transcript(WAV)
    bad = httpx.post(
        gw.url + "/audio/transcriptions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {gw.api_key}", "Content-Type": "application/json"},
    )
    assert_error(bad, 400, "invalid_json")
    urlencoded = httpx.post(
        gw.url + "/audio/transcriptions",
        data={"model": "local/fake", "audio_b64": WAV_B64},
        headers={"Authorization": f"Bearer {gw.api_key}"},
    )
    assert urlencoded.json()["text"] == fake_transcript(WAV)
    plain = httpx.post(
        gw.url + "/audio/transcriptions",
        content=b"model=local/fake",
        headers={"Authorization": f"Bearer {gw.api_key}", "Content-Type": "text/plain"},
    )
    assert "Content-Type" in assert_error(plain, 400, "validation_error")["description"]


# -- auth, models, validation -------------------------------------------------------------


def test_auth_required_when_a_key_is_set(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    assert gw.api_key is not None and gw.api_key.startswith("pk-local-")
    assert gw.api_key not in repr(gw)
    parts = form(model="local/fake", audio_b64=WAV_B64)
    assert_error(post(gw, parts, key=None), 401, "unauthorised")
    assert_error(post(gw, parts, key="pk-local-wrong"), 401, "unauthorised")
    assert_error(httpx.get(gw.url + "/models"), 401, "unauthorised")
    assert_error(httpx.get(gw.url.removesuffix("/v1") + "/_admin/stats"), 401, "unauthorised")
    assert post(gw, parts).status_code == 200
    stats = gw.stats()
    assert stats.by_status == {401: 2, 200: 1}
    assert [r["authorization"] for r in stats.recent] == [None, "Bearer", "Bearer"]
    assert gw.api_key not in json.dumps(stats.to_dict())


def test_no_key_accepts_anything(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", api_key=None)
    assert post(gw, form(model="local/fake", audio_b64=WAV_B64), key="whatever").status_code == 200
    assert post(gw, form(model="local/fake", audio_b64=WAV_B64), key=None).status_code == 200


def test_models_route_and_model_errors(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", models={"openai/whisper-1": "fake"})
    listed = httpx.get(gw.url + "/models", headers={"Authorization": f"Bearer {gw.api_key}"})
    assert [m["id"] for m in listed.json()["data"]] == [
        "local/fake",
        "local/pocketsphinx",
        "local/whisper-tiny.en",
        "openai/whisper-1",
    ]
    assert post(gw, form(model="openai/whisper-1", audio_b64=WAV_B64)).status_code == 200
    assert_error(post(gw, form(audio_b64=WAV_B64)), 400, "model_required")
    assert_error(post(gw, form(model="", audio_b64=WAV_B64)), 400, "model_required")
    body = assert_error(
        post(gw, form(model="openai/gpt-4o-transcribe", audio_b64=WAV_B64)),
        400,
        "unsupported_model_or_endpoint",
    )
    assert body["reason"] == "model_not_found_or_inactive"


def test_bad_base64_and_data_uri(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    for value in ("not base64!", "QUJ", "data:text/plain;base64," + WAV_B64, "data:audio/wav,abc"):
        body = assert_error(
            post(gw, form(model="local/fake", audio_b64=value)), 400, "validation_error"
        )
        assert "audio_b64" in body["description"]
    wrapped = "\n".join(WAV_B64[i : i + 76] for i in range(0, len(WAV_B64), 76))
    assert post(gw, form(model="local/fake", audio_b64=wrapped)).status_code == 200


def test_provider_json_validated_and_bracket_keys_dropped(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    base = {"model": "local/fake", "audio_b64": WAV_B64}
    ok = post(gw, form(**base, provider='{"only": ["local"], "include_alpha": true}'))
    assert ok.status_code == 200, ok.text
    for bad in ("{only: local}", '["local"]', '"local"', '{"only": "local"}'):
        body = assert_error(post(gw, form(**base, provider=bad)), 400, "validation_error")
        assert "provider" in body["description"]
    dropped = post(gw, form(("provider[only][]", (None, "openai")), **base))
    assert dropped.status_code == 200, dropped.text
    assert gw.stats().recent[-1]["fields"]["provider[only][]"] == "openai"


def test_oversize_body_and_audio_are_413(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="lenient")
    body = assert_error(
        post(gw, form(audio_file(b"\0" * (32 * MiB + 1)), model="local/fake")),
        413,
        "payload_too_large",
    )
    assert body["max_bytes"] == 32 * MiB
    body = assert_error(
        post(gw, form(audio_file(b"\0" * 25_000_001), model="local/fake")),
        413,
        "payload_too_large",
    )
    assert body["max_bytes"] == 25_000_000
    # The connection is still usable after the server answered early.
    assert post(gw, form(model="local/fake", audio_b64=WAV_B64)).status_code == 200


def test_audio_url_fetched_from_the_files_route(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    url = gw.file_url("clip.wav")
    assert httpx.get(url).content == WAV
    assert httpx.get(url.replace("clip.wav", "..%2Fsecret")).status_code == 404
    response = post(gw, form(model="local/fake", audio_url=url))
    assert response.json()["text"] == fake_transcript(WAV)
    body = assert_error(
        post(gw, form(model="local/fake", audio_url=gw.file_url("missing.wav"))),
        400,
        "validation_error",
    )
    assert body["description"].startswith("could not fetch audio_url: HTTP 404")
    assert_error(
        post(gw, form(model="local/fake", audio_url="ftp://x/a.wav")), 400, "validation_error"
    )
    counts = gw.stats().audio_counts
    assert counts["url:" + url] == 1


# -- faults -------------------------------------------------------------------------------


def test_injected_errors_have_live_bodies_and_retry_after(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    parts = form(model="local/fake", audio_b64=WAV_B64)
    gw.set_faults(Faults(error_rate=1.0, error_statuses=(429,), retry_after=0.25))
    response = post(gw, parts)
    body = assert_error(response, 429, "key_limit_exceeded")
    assert body["reset_at"].endswith("Z")
    assert response.headers["Retry-After"] == "0.25"
    assert response.headers["retry-after-ms"] == "250"
    gw.set_faults(Faults(error_rate=1.0, error_statuses=(502,)))
    response = post(gw, parts)
    assert assert_error(response, 502, "upstream_error")["failed_statuses"] == [429]
    assert "Retry-After" not in response.headers
    gw.set_faults(Faults(error_rate=1.0, error_statuses=(500,)))
    assert_error(post(gw, parts), 500, "gateway_error")
    gw.set_faults(Faults(error_rate=1.0, error_statuses=(503,), retry_after=2))
    assert post(gw, parts).headers["Retry-After"] == "2"
    gw.set_faults(None)
    assert post(gw, parts).status_code == 200
    assert gw.stats().by_status == {429: 1, 502: 1, 500: 1, 503: 1, 200: 1}


def test_fail_first_is_deterministic(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", faults=Faults(fail_status=503, fail_first=2))
    parts = form(model="local/fake", audio_b64=WAV_B64)
    assert [post(gw, parts).status_code for _ in range(3)] == [503, 503, 200]
    gw.set_faults(Faults(fail_status=500, fail_first=1))  # restarts the count
    assert [post(gw, parts).status_code for _ in range(2)] == [500, 200]
    # The same audio arrived five times, faulted or not.
    assert gw.stats().audio_counts == {hashlib.sha256(WAV).hexdigest(): 5}


def test_seeded_error_rate_repeats(make_gateway: MakeGateway) -> None:
    faults = Faults(error_rate=0.5, error_statuses=(500, 503), seed=11)
    parts = form(model="local/fake", audio_b64=WAV_B64)
    runs = []
    for _ in range(2):
        gw = make_gateway(mode="strict", faults=faults)
        runs.append([post(gw, parts).status_code for _ in range(16)])
    assert runs[0] == runs[1]
    assert {200, 500, 503} <= set(runs[0])


def test_drop_closes_without_answer(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", faults=Faults(drop_rate=1.0))
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(gw, form(model="local/fake", audio_b64=WAV_B64))
    stats = gw.stats()
    assert (stats.requests, stats.dropped, stats.by_status, stats.in_flight) == (1, 1, {}, 0)


def test_slow_answer_trips_client_timeout_and_close_is_quick(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", faults=Faults(slow_rate=1.0, slow_seconds=30))
    with pytest.raises(httpx.ReadTimeout):
        post(gw, form(model="local/fake", audio_b64=WAV_B64), timeout=0.3)
    # The client went away: its request is cancelled, not left sleeping for 30 s.
    deadline = time.monotonic() + 5
    while gw.stats().in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gw.stats().in_flight == 0

    def patient() -> None:
        with contextlib.suppress(httpx.HTTPError):
            post(gw, form(model="local/fake", audio_b64=WAV_B64), timeout=60)

    waiting = threading.Thread(target=patient)
    waiting.start()
    deadline = time.monotonic() + 5
    while gw.stats().in_flight != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gw.stats().in_flight == 1
    start = time.perf_counter()
    gw.close()
    assert time.perf_counter() - start < 1.0
    waiting.join(5)
    assert not waiting.is_alive()


def test_truncated_and_non_json_bodies(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", faults=Faults(truncated_rate=1.0))
    parts = form(model="local/fake", audio_b64=WAV_B64)
    response = post(gw, parts)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        response.json()
    gw.set_faults(Faults(non_json_rate=1.0))
    response = post(gw, parts)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<html>")


def test_latency_and_max_in_flight(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", faults=Faults(latency=0.3))
    concurrency = 8

    async def send_all() -> list[int]:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {gw.api_key}"}) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        gw.url + "/audio/transcriptions",
                        files=form(
                            model="local/fake", audio_b64=base64.b64encode(make_wav(i)).decode()
                        ),
                    )
                    for i in range(concurrency)
                )
            )
        return [r.status_code for r in responses]

    start = time.perf_counter()
    assert asyncio.run(send_all()) == [200] * concurrency
    assert 0.3 <= time.perf_counter() - start < 2.0
    stats = gw.stats()
    assert (stats.requests, stats.max_in_flight, stats.in_flight) == (concurrency, concurrency, 0)
    assert sorted(stats.audio_counts.values()) == [1] * concurrency
    gw.reset_stats()
    assert gw.stats() == GatewayStats()


def test_faults_validation_and_pure_decision() -> None:
    for bad in (
        {"error_rate": 1.5},
        {"latency": -1},
        {"drop_rate": 0.6, "error_rate": 0.6},
        {"error_statuses": (200,)},
        {"fail_first": 2},
        {"nonsense": 1},
    ):
        with pytest.raises(ValueError):
            Faults.from_dict(bad)
    faults = Faults(drop_rate=0.25, error_rate=0.25, slow_rate=0.25, seed=5)
    assert Faults.from_dict(json.loads(json.dumps(faults.to_dict()))) == faults
    rng_a, rng_b = random.Random(9), random.Random(9)
    seq_a = [decide(faults, rng_a, i) for i in range(50)]
    assert seq_a == [decide(faults, rng_b, i) for i in range(50)]
    assert {d.kind for d in seq_a} == {
        FaultKind.NONE,
        FaultKind.DROP,
        FaultKind.ERROR,
        FaultKind.SLOW,
    }
    assert FaultInjector().next() == FaultDecision(FaultKind.NONE)
    injector = FaultInjector(Faults(latency=0.5, fail_status=429, fail_first=1, retry_after=3))
    assert injector.next() == FaultDecision(FaultKind.ERROR, 0.5, 429, 3)
    assert injector.next() == FaultDecision(FaultKind.NONE, 0.5)


# -- process mode, CLI, in-process transport ----------------------------------------------


def test_process_mode_controls_through_admin_routes(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="lenient", process=True, faults=Faults(fail_status=503, fail_first=1))
    # The key reaches the subprocess through its environment, never its command line.
    assert gw._proc is not None and gw.api_key is not None
    assert gw.api_key not in " ".join(map(str, gw._proc.args))  # type: ignore[arg-type]
    parts = form(audio_file(), model="local/fake")
    assert [post(gw, parts).status_code for _ in range(2)] == [503, 200]
    assert post(gw, form(model="local/fake", audio_url=gw.file_url("clip.wav"))).status_code == 200
    stats = gw.stats()
    assert stats.requests == 3
    assert stats.by_status == {503: 1, 200: 2}
    assert stats.audio_counts[hashlib.sha256(WAV).hexdigest()] == 2
    gw.set_faults(Faults(error_rate=1.0, error_statuses=(500,)))
    assert post(gw, parts).status_code == 500
    gw.reset_stats()
    assert gw.stats().requests == 0


def test_embedded_transport_matches_the_server(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="lenient", api_key=None)
    cases = [
        form(audio_file(), model="local/fake", language="de"),
        form(model="local/fake", audio_url=gw.file_url("clip.wav")),
        form(model="local/nope", audio_b64=WAV_B64),
        form(audio_b64=WAV_B64),
    ]
    volatile = {"requestId", "id", "generation_id"}

    def strip(response: httpx.Response) -> tuple[int, dict[str, Any]]:
        body = {k: v for k, v in response.json().items() if k not in volatile}
        return response.status_code, body

    over_http = [strip(post(gw, parts)) for parts in cases]
    assert [status for status, _ in over_http] == [200, 200, 400, 400]
    with httpx.Client(transport=EmbeddedTransport(), base_url="http://embedded/v1") as client:
        in_process = [strip(client.post("/audio/transcriptions", files=p)) for p in cases]
        assert client.get("/models").json()["data"][0]["id"] == "local/fake"
        # Streamed like a socket's answer, not handed over already read.
        with client.stream("POST", "/audio/transcriptions", files=cases[0]) as streamed:
            raw = b"".join(streamed.iter_raw())
        assert json.loads(raw)["text"] == fake_transcript(WAV)
        assert int(streamed.headers["content-length"]) == len(raw)

    async def send_async() -> list[tuple[int, dict[str, Any]]]:
        async with httpx.AsyncClient(
            transport=EmbeddedTransport(), base_url="http://embedded/v1"
        ) as client:
            return [strip(await client.post("/audio/transcriptions", files=p)) for p in cases]

    assert in_process == over_http
    assert asyncio.run(send_async()) == over_http


def test_cli_help_and_remote_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--allow-remote" in out and "--files-dir" in out
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "non-loopback" in capsys.readouterr().err


@pytest.mark.parametrize("chosen_key", [True, False], ids=["env-key", "generated-key"])
def test_cli_serve_subprocess_answers(chosen_key: bool, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    key = "pk-local-chosen-by-test"
    if chosen_key:
        env["PHASEO_LOCAL_API_KEY"] = key
    proc = subprocess.Popen(
        [sys.executable, "-m", "phaseo_notebook", "serve", "--port", "0", "--mode", "lenient"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split(" on ", 1)[1].split()[0]
        if chosen_key:
            assert key not in line
        else:
            key = line.split("API key ", 1)[1].split()[0]
        response = httpx.post(
            url + "/audio/transcriptions",
            files=form(model="local/fake", audio_b64=WAV_B64),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.json()["text"] == fake_transcript(WAV)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _MissingExtraEngine:
    """An engine whose optional dependency is not installed."""

    name = "pocketsphinx"

    def transcribe(self, data: bytes, *, language: str | None = None, options: Any = None) -> Any:
        raise ImportError("needs soundfile: pip install 'phaseo-notebook[local]'")

    async def atranscribe(
        self, data: bytes, *, language: str | None = None, options: Any = None
    ) -> Any:
        return self.transcribe(data, language=language)

    def close(self) -> None:
        pass


def test_missing_extra_is_501_over_http_and_import_error_in_process(
    make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phaseo_notebook._gateway import _embedded, _server

    monkeypatch.setattr(_server, "shared_engine", lambda name: _MissingExtraEngine())
    monkeypatch.setattr(_embedded, "shared_engine", lambda name: _MissingExtraEngine())
    gw = make_gateway(mode="strict")
    parts = form(model="local/pocketsphinx", audio_b64=WAV_B64)
    body = assert_error(post(gw, parts), 501, "not_implemented_yet")
    assert "pip install 'phaseo-notebook[local]'" in body["description"]
    with (
        httpx.Client(transport=EmbeddedTransport(), base_url="http://embedded/v1") as client,
        pytest.raises(ImportError, match="phaseo-notebook"),
    ):
        client.post("/audio/transcriptions", files=parts)


def test_pocketsphinx_transcribes_english(make_gateway: MakeGateway) -> None:
    pytest.importorskip("pocketsphinx")
    gw = make_gateway(mode="live", engine="pocketsphinx", workers=1)
    audio = (SHARED_AUDIO / "english.wav").read_bytes()
    response = post(gw, form(audio_file(audio), model="local/pocketsphinx"), timeout=60.0)
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "one two three"
    assert response.json()["duration"] == pytest.approx(2.7, abs=0.1)
