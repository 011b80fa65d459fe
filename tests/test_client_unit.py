"""Unit tests of single client decisions through httpx.MockTransport (no sockets)."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

import phaseo_notebook as pn
from phaseo_notebook import _base_client as B
from phaseo_notebook._audio import normalize_audio


def parse_form(request: httpx.Request) -> dict[str, Any]:
    """Decode a multipart/form-data request independently of the project's own parser."""
    body = request.read()
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary="), ctype
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        if filename is not None:
            fields[name] = {
                "filename": filename,
                "content_type": part.get_content_type(),
                "data": payload,
            }
        else:
            fields[name] = payload.decode()
    return fields


class Recorder:
    """A MockTransport handler that answers from a script and records what it got."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        # A fresh response each time: a Response object is consumed by the client that reads it.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    def client(self, **kwargs: Any) -> pn.Client:
        kwargs.setdefault("api_key", "sk-test-secret-123")
        kwargs.setdefault("base_url", "https://gw.example/v1")
        return pn.Client(transport=httpx.MockTransport(self), **kwargs)


OK = httpx.Response(200, json={"text": "hello world", "model": "m", "requestId": "req_1"})


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []
    monkeypatch.setattr("phaseo_notebook._client.time.sleep", delays.append)
    return delays


# ----------------------------------------------------------------- request building


def test_url_goes_as_audio_url_with_bearer_and_fields() -> None:
    rec = Recorder(OK)
    with rec.client() as client:
        result = client.transcribe(
            "https://cdn.example/a.wav",
            model="openai/whisper-1",
            language="en",
            provider={"only": ["openai"], "include_alpha": True},
        )
    assert result.text == "hello world" and result.request_id == "req_1"
    (req,) = rec.requests
    assert req.method == "POST" and str(req.url) == "https://gw.example/v1/audio/transcriptions"
    assert req.headers["authorization"] == "Bearer sk-test-secret-123"
    form = parse_form(req)
    assert form == {
        "model": "openai/whisper-1",
        "audio_url": "https://cdn.example/a.wav",
        "language": "en",
        "provider": '{"include_alpha":true,"only":["openai"]}',
    }


def test_path_bytes_and_data_uri_go_as_audio_b64(wav_file: Path, wav_bytes: bytes) -> None:
    rec = Recorder(OK)
    data_uri = "data:audio/wav;base64," + base64.b64encode(wav_bytes).decode()
    with rec.client() as client:
        for audio in (wav_file, str(wav_file), wav_bytes, bytearray(wav_bytes), data_uri):
            client.transcribe(audio, model="m")
    sent = [base64.b64decode(parse_form(r)["audio_b64"]) for r in rec.requests]
    assert sent[0] == sent[1] == wav_file.read_bytes()
    assert sent[2] == sent[3] == sent[4] == wav_bytes
    assert all("audio_url" not in parse_form(r) for r in rec.requests)


def test_provider_options_object_is_sent_as_json_string() -> None:
    rec = Recorder(OK)
    with rec.client() as client:
        client.transcribe(
            "https://x.example/a.mp3", model="m", provider=pn.ProviderOptions(order=["a", "b"])
        )
    assert json.loads(parse_form(rec.requests[0])["provider"]) == {"order": ["a", "b"]}


def test_unknown_provider_option_is_a_typed_error() -> None:
    rec = Recorder(OK)
    with rec.client() as client, pytest.raises(pn.ConfigurationError, match="unknown provider"):
        client.transcribe("https://x.example/a.mp3", model="m", provider={"fastest": True})
    assert rec.requests == []


def test_success_fields_are_typed() -> None:
    body = {
        "text": "hi",
        "model": "openai/whisper-1",
        "provider": "openai",
        "language": "english",
        "duration": 2.5,
        "cost_nanos": 2_000_000,
        "currency": "USD",
        "requestId": "r-9",
        "segments": [],
    }
    rec = Recorder(httpx.Response(200, json=body))
    with rec.client() as client:
        r = client.transcribe("https://x.example/a.wav", model="m")
    assert (r.model, r.provider, r.language, r.duration, r.cost, r.currency, r.request_id) == (
        "openai/whisper-1",
        "openai",
        "english",
        2.5,
        0.002,
        "USD",
        "r-9",
    )
    assert r.raw == body


# ----------------------------------------------------------------- configuration


def test_env_fallbacks_only_when_argument_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHASEO_API_KEY", "env-key")
    monkeypatch.setenv("PHASEO_BASE_URL", "https://env.example/v1/")
    rec = Recorder(OK)
    t = httpx.MockTransport(rec)
    with pn.Client(transport=t) as client:
        client.transcribe("https://x.example/a.wav", model="m")
    with pn.Client(transport=t, api_key="arg-key", base_url="https://arg.example/v2") as client:
        client.transcribe("https://x.example/a.wav", model="m")
    assert rec.requests[0].headers["authorization"] == "Bearer env-key"
    assert str(rec.requests[0].url).startswith("https://env.example/v1/audio")
    assert rec.requests[1].headers["authorization"] == "Bearer arg-key"
    assert str(rec.requests[1].url).startswith("https://arg.example/v2/audio")


def test_default_base_url() -> None:
    assert pn.Client(api_key="k").base_url == "https://api.phaseo.app/v1"


def test_remote_model_without_key_fails_before_any_request() -> None:
    with pn.Client() as client, pytest.raises(pn.ConfigurationError, match="PHASEO_API_KEY"):
        client.transcribe("https://x.example/a.wav", model="openai/whisper-1")


def test_model_required_when_a_gateway_is_configured() -> None:
    rec = Recorder(OK)
    with rec.client() as client, pytest.raises(pn.ConfigurationError, match="no model given"):
        client.transcribe("https://x.example/a.wav")
    assert rec.requests == []


def test_key_is_refused_over_plain_http_to_a_remote_host() -> None:
    with pytest.raises(pn.ConfigurationError, match="plain http"):
        pn.Client(api_key="k", base_url="http://gw.example/v1")
    pn.Client(api_key="k", base_url="http://127.0.0.1:9/v1").close()
    pn.Client(api_key="k", base_url="http://gw.example/v1", allow_insecure_http=True).close()


def test_key_never_in_repr() -> None:
    client = pn.Client(api_key="sk-very-secret", base_url="https://gw.example/v1")
    assert "sk-very-secret" not in repr(client) and "set" in repr(client)


def test_bad_arguments_are_typed() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        pn.Client(api_key="k", max_retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        pn.Client(api_key="k", timeout=0)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, pn.BadRequestError),
        (401, pn.AuthenticationError),
        (402, pn.PaymentRequiredError),
        (403, pn.PermissionDeniedError),
        (413, pn.PayloadTooLargeError),
        (429, pn.RateLimitError),
        (500, pn.InternalServerError),
        (502, pn.InternalServerError),
    ],
)
def test_flat_live_error_body(status: int, cls: type[pn.APIStatusError]) -> None:
    body = {
        "generation_id": "gen_7",
        "status_code": status,
        "error": "some_code",
        "error_type": "x",
        "description": "what went wrong",
    }
    rec = Recorder(httpx.Response(status, json=body))
    with rec.client(max_retries=0) as client, pytest.raises(cls) as info:
        client.transcribe("https://x.example/a.wav", model="m")
    err = info.value
    assert (err.status_code, err.code, err.description, err.request_id) == (
        status,
        "some_code",
        "what went wrong",
        "gen_7",
    )
    assert err.body == body
    assert isinstance(err, pn.PhaseoError)


def test_openai_style_nested_error_body() -> None:
    body = {
        "error": {
            "message": "Invalid file format.",
            "type": "invalid_request_error",
            "code": "bad_file",
        }
    }
    rec = Recorder(httpx.Response(400, json=body, headers={"x-request-id": "hdr-1"}))
    with rec.client() as client, pytest.raises(pn.BadRequestError) as info:
        client.transcribe("https://x.example/a.wav", model="m")
    assert info.value.code == "bad_file"
    assert info.value.description == "Invalid file format."
    assert info.value.request_id == "hdr-1"


def test_non_json_error_body_gives_clear_message() -> None:
    rec = Recorder(
        httpx.Response(
            403, text="<html>Forbidden by proxy</html>", headers={"content-type": "text/html"}
        )
    )
    with rec.client() as client, pytest.raises(pn.PermissionDeniedError) as info:
        client.transcribe("https://x.example/a.wav", model="m")
    assert "non-JSON error body (text/html)" in str(info.value)
    assert "Forbidden by proxy" in str(info.value)


def test_api_key_not_in_error_messages() -> None:
    rec = Recorder(httpx.Response(401, json={"error": "unauthorised", "description": "bad key"}))
    with rec.client() as client, pytest.raises(pn.AuthenticationError) as info:
        client.transcribe("https://x.example/a.wav", model="m")
    assert "sk-test-secret-123" not in str(info.value) and "sk-test-secret-123" not in repr(
        info.value
    )


# ----------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int, no_sleep: list[float]) -> None:
    rec = Recorder(httpx.Response(status, json={"error": "e", "description": "d"}), OK)
    with rec.client() as client:
        assert client.transcribe("https://x.example/a.wav", model="m").text == "hello world"
    assert len(rec.requests) == 2 and len(no_sleep) == 1


@pytest.mark.parametrize("status", [400, 401, 402, 403, 413])
def test_permanent_statuses_are_never_retried(status: int, no_sleep: list[float]) -> None:
    rec = Recorder(httpx.Response(status, json={"error": "e", "description": "d"}), OK)
    with rec.client() as client, pytest.raises(pn.APIStatusError):
        client.transcribe("https://x.example/a.wav", model="m")
    assert len(rec.requests) == 1 and no_sleep == []


def test_retries_stop_after_max_retries(no_sleep: list[float]) -> None:
    rec = Recorder(httpx.Response(503, json={"error": "e", "description": "d"}))
    with rec.client(max_retries=2) as client, pytest.raises(pn.InternalServerError):
        client.transcribe("https://x.example/a.wav", model="m")
    assert len(rec.requests) == 3 and len(no_sleep) == 2


def test_max_retries_zero_disables(no_sleep: list[float]) -> None:
    rec = Recorder(httpx.Response(429, json={"error": "key_limit_exceeded"}), OK)
    with rec.client(max_retries=0) as client, pytest.raises(pn.RateLimitError):
        client.transcribe("https://x.example/a.wav", model="m")
    assert len(rec.requests) == 1


def test_retry_after_headers_are_honoured_and_capped(no_sleep: list[float]) -> None:
    rec = Recorder(
        httpx.Response(429, headers={"retry-after-ms": "1500"}),
        httpx.Response(503, headers={"Retry-After": "7"}),
        httpx.Response(503, headers={"Retry-After": "3600"}),
        OK,
    )
    with rec.client() as client:
        client.transcribe("https://x.example/a.wav", model="m")
    assert no_sleep == [1.5, 7.0, 60.0]


def test_backoff_is_exponential_with_full_jitter() -> None:
    import random

    rng = random.Random(0)
    for attempt in range(6):
        ceiling = min(8.0, 0.5 * 2**attempt)
        samples = [B.retry_delay(attempt, rng=rng) for _ in range(200)]
        assert min(samples) >= 0 and max(samples) <= ceiling
        assert max(samples) > ceiling * 0.8  # the whole range is used, not a fixed delay


def test_connection_errors_and_timeouts_are_retried_and_typed(no_sleep: list[float]) -> None:
    rec = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), OK)
    with rec.client() as client:
        assert client.transcribe("https://x.example/a.wav", model="m").text == "hello world"
    rec = Recorder(httpx.ReadTimeout("slow"))
    with rec.client(max_retries=1) as client, pytest.raises(pn.APITimeoutError) as info:
        client.transcribe("https://x.example/a.wav", model="m")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    rec = Recorder(httpx.ConnectError("refused"))
    with rec.client(max_retries=0) as client, pytest.raises(pn.APIConnectionError) as info2:
        client.transcribe("https://x.example/a.wav", model="m")
    assert not isinstance(info2.value, pn.APITimeoutError)


@pytest.mark.parametrize(
    "body", [b'{"text": "trunc', b"<html>502</html>", b'{"no_text": 1}', b'{"text": 5}', b"[]"]
)
def test_unusable_success_bodies_are_typed_and_retried(body: bytes) -> None:
    rec = Recorder(httpx.Response(200, content=body), OK)
    with rec.client() as client:
        assert client.transcribe("https://x.example/a.wav", model="m").text == "hello world"
    rec = Recorder(httpx.Response(200, content=body))
    with rec.client(max_retries=0) as client, pytest.raises(pn.APIResponseError):
        client.transcribe("https://x.example/a.wav", model="m")


def test_every_retry_is_logged_at_debug_with_reason(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(httpx.Response(502, json={"error": "upstream_error", "description": "down"}), OK)
    with caplog.at_level(logging.DEBUG, logger="phaseo_notebook"), rec.client() as client:
        client.transcribe("https://x.example/a.wav", model="m")
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 1 and retries[0].levelno == logging.DEBUG
    assert "upstream_error" in retries[0].getMessage()
    assert "sk-test-secret-123" not in caplog.text


# ----------------------------------------------------------------- live fallback


FILE_REQUIRED = httpx.Response(
    400,
    json={"status_code": 400, "error": "validation_error", "description": "file is required"},
)


def test_file_required_switches_to_file_part_once_and_for_good(wav_file: Path) -> None:
    rec = Recorder(FILE_REQUIRED, OK)
    with rec.client() as client:
        client.transcribe(wav_file, model="m")
        assert client.upload_mode == "file"
        client.transcribe(wav_file, model="m")
    first, second, third = (parse_form(r) for r in rec.requests)
    assert "audio_b64" in first and "file" not in first
    for form in (second, third):
        assert "audio_b64" not in form
        assert form["file"]["filename"] == "clip.wav"
        assert form["file"]["content_type"] == "audio/wav"
        assert form["file"]["data"] == wav_file.read_bytes()
    assert len(rec.requests) == 3


def test_file_fallback_downloads_urls_without_the_key(wav_bytes: bytes) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "cdn.example":
            return httpx.Response(200, content=wav_bytes)
        if len(seen) == 1:
            return httpx.Response(
                400, json={"error": "validation_error", "description": "file is required"}
            )
        return httpx.Response(200, json={"text": "ok"})

    with pn.Client(
        api_key="sk-k", base_url="https://gw.example/v1", transport=httpx.MockTransport(handler)
    ) as client:
        client.transcribe("https://cdn.example/x/voice.wav", model="m")
    download = [r for r in seen if r.url.host == "cdn.example"]
    assert len(download) == 1 and "authorization" not in download[0].headers
    upload = parse_form(seen[-1])
    assert upload["file"]["data"] == wav_bytes and upload["file"]["filename"] == "voice.wav"


def test_file_fallback_happens_only_for_that_message() -> None:
    rec = Recorder(
        httpx.Response(
            400, json={"error": "validation_error", "description": "language is invalid"}
        )
    )
    with rec.client() as client, pytest.raises(pn.BadRequestError):
        client.transcribe("https://x.example/a.wav", model="m")
    assert len(rec.requests) == 1 and client.upload_mode == "contract"


# ----------------------------------------------------------------- async twin


async def test_async_client_shares_the_decisions(wav_bytes: bytes) -> None:
    calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(
                400, json={"error": "validation_error", "description": "file is required"}
            )
        if len(calls) == 2:
            return httpx.Response(429, headers={"retry-after-ms": "1"})
        return httpx.Response(200, json={"text": "hello world"})

    async with pn.AsyncClient(
        api_key="k", base_url="https://gw.example/v1", transport=httpx.MockTransport(handler)
    ) as client:
        result = await client.transcribe(wav_bytes, model="m", language="fr")
    assert result.text == "hello world" and len(calls) == 3
    assert parse_form(calls[2])["file"]["data"] == wav_bytes
    assert parse_form(calls[2])["language"] == "fr"


# ----------------------------------------------------------------- the package's call API


def test_client_settings_pickle_and_rebuild_a_client_that_sends_the_same_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pickle

    monkeypatch.setenv("PHASEO_API_KEY", "sk-from-the-environment-1")
    original = pn.Client(base_url="https://gw.example/v1", timeout=7.0, max_retries=1)
    settings = pickle.loads(pickle.dumps(original.settings))
    assert settings == original.settings
    # Environment fallbacks were applied where the settings were taken, not where used.
    monkeypatch.delenv("PHASEO_API_KEY")
    assert settings.api_key == "sk-from-the-environment-1"

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "hello world"})

    rebuilt = pn.Client(**settings.kwargs(), transport=httpx.MockTransport(handler))
    assert rebuilt.timeout == original.timeout and rebuilt.max_retries == 1
    twin = pn.Client(**original.settings.kwargs(), transport=httpx.MockTransport(handler))
    for client in (rebuilt, twin):
        call = client.prepare("m", "fr", {"only": ["a"]})
        assert client.send(normalize_audio("https://x/a.wav"), call).text == "hello world"
    first, second = seen
    assert str(first.url) == str(second.url) == "https://gw.example/v1/audio/transcriptions"
    assert first.headers["authorization"] == second.headers["authorization"]
    assert first.headers["authorization"] == "Bearer sk-from-the-environment-1"
    assert parse_form(first) == parse_form(second)
    original.close()


def test_prepare_picks_the_embedded_route_only_for_local_models_and_no_gateway_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PHASEO_API_KEY", raising=False)
    monkeypatch.delenv("PHASEO_BASE_URL", raising=False)
    with pn.Client() as client:
        call = client.prepare()
        assert (call.route, call.model) == ("embedded", "local/whisper-tiny.en")
        assert client.default_model == "local/whisper-tiny.en"
        assert client.prepare("local/fake").embedded
    with pn.Client(api_key="sk-test-secret-123") as client:
        # A local model with a key but no gateway URL still runs here; a remote one does not.
        assert client.prepare("local/fake").route == "embedded"
        assert client.prepare("openai/whisper-1").route == "http"
        assert client.default_model is None
        with pytest.raises(pn.ConfigurationError, match="no model given"):
            client.prepare()
    with pn.Client(base_url="http://127.0.0.1:9/v1") as client:
        assert client.prepare("local/fake").route == "http"


def test_prepare_checks_and_sends_the_optional_fields_only_when_set() -> None:
    rec = Recorder(OK)
    client = rec.client()
    plain = client.prepare("m")
    assert (plain.timestamps, plain.prompt, plain.temperature, plain.options_json) == (
        None,
        None,
        None,
        None,
    )
    client.send(normalize_audio("https://x/a.wav"), plain)
    assert set(parse_form(rec.requests[0])) == {"model", "audio_url"}
    call = client.prepare("m", timestamps="word", prompt="names: Ada", temperature=0)
    client.send(normalize_audio("https://x/a.wav"), call)
    form = parse_form(rec.requests[1])
    assert form["timestamp_granularities"] == "word"
    assert form["prompt"] == "names: Ada" and float(form["temperature"]) == 0.0
    with pytest.raises(ValueError, match="timestamps"):
        client.prepare("m", timestamps="sentence")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        client.prepare("m", temperature=1.5)
    with pytest.raises(ValueError, match="prompt"):
        client.prepare("m", prompt=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("foreign", "ours"),
    [
        (httpx.ConnectTimeout("slow connect"), pn.APITimeoutError),
        (httpx.ReadTimeout("slow read"), pn.APITimeoutError),
        (httpx.ConnectError("refused"), pn.APIConnectionError),
        (TimeoutError(), pn.APITimeoutError),
    ],
)
def test_one_translation_of_transport_errors_chains_the_cause(
    foreign: Exception, ours: type[pn.APIConnectionError]
) -> None:
    with pytest.raises(ours) as info, B.map_transport_errors():
        raise foreign
    assert info.value.__cause__ is foreign
    # Anything else passes through untouched.
    with pytest.raises(KeyError), B.map_transport_errors():
        raise KeyError("not a transport error")


async def test_both_send_loops_map_transport_errors_the_same_way() -> None:
    def sync_handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    async def async_handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    source = normalize_audio("https://x/a.wav")
    kwargs: dict[str, Any] = {"api_key": "k", "base_url": "https://gw.example/v1"}
    with pn.Client(**kwargs, max_retries=0, transport=httpx.MockTransport(sync_handler)) as c:
        with pytest.raises(pn.APITimeoutError) as sync_info:
            c.send(source, c.prepare("m"))
    async with pn.AsyncClient(
        **kwargs, max_retries=0, transport=httpx.MockTransport(async_handler)
    ) as ac:
        with pytest.raises(pn.APITimeoutError) as async_info:
            await ac.send(source, ac.prepare("m"))
    for info in (sync_info, async_info):
        assert isinstance(info.value.__cause__, httpx.ConnectTimeout)
    assert str(sync_info.value) == str(async_info.value)


def test_an_async_twin_keeps_the_settings_and_the_learnt_upload_mode(wav_bytes: bytes) -> None:
    rec = Recorder(
        httpx.Response(400, json={"error": "validation_error", "description": "file is required"}),
        OK,
    )
    client = rec.client()
    client.transcribe(wav_bytes, model="m")
    assert client.upload_mode == "file"
    twin = client.to_async(max_connections=4)
    assert twin.upload_mode == "file"
    assert twin.settings == client.settings
