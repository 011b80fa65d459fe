"""Hostile input, generated: whatever comes in, out comes a typed error or a clean result.

Property-based tests (hypothesis) over the audio input normaliser, the response parser and
the request builder. The properties: an input is either normalised or refused with an
``AudioInputError``; a response is either a result with a string ``text`` or an
``APIResponseError`` / ``APIStatusError``; a request that is sent is well-formed multipart
whose fields, read back with Python's own ``email`` parser, are exactly what was given.
"""

from __future__ import annotations

import base64
import decimal
import email.parser
import email.policy
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import phaseo_notebook as pn
from phaseo_notebook._audio import AudioSource, normalize_audio
from phaseo_notebook._base_client import error_from_response, parse_success
from phaseo_notebook._batch import transcribe_many_sync

from .conftest import make_wav

# The machine is shared: no per-example time limit, but a bounded number of examples.
FAST = settings(max_examples=300, deadline=None)
SLOW = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

WAV = make_wav(3, seconds=0.01)
OK_BODY = b'{"text": "fine"}'

# ----------------------------------------------------------------- strategies

#: Text that includes lone surrogates, which Python strings may hold but no wire can carry.
any_text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=60)
url_text = st.text(
    st.characters(blacklist_characters="/?#@", blacklist_categories=["Cs"]), max_size=12
)
hosts = st.one_of(
    st.sampled_from(
        [
            "example.com",
            "127.0.0.1",
            "localhost",
            "[::1]",
            "[2001:db8::7]",
            "[::ffff:127.0.0.1]",
            "[fe80::1%25eth0]",
            "[::1",
            "::1]",
            "[zz::1]",
            "[]",
            "",
            "xn--bcher-kva.example",
            "bücher.example",
            "例え.テスト",
            "a..b",
            "-x-.com",
            "0x7f.1",
            "under_score.example",
            "\u0000host",
            "ho st",
        ]
    ),
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
    st.text(st.characters(categories=["L", "N", "Pd"]), min_size=1, max_size=20),
)
userinfo = st.one_of(
    st.just(""),
    st.builds(lambda u: f"{u}@", url_text),
    st.builds(lambda u, p: f"{u}:{p}@", url_text, url_text.filter(bool)),
)
ports = st.one_of(
    st.just(""),
    st.integers(-10, 100_000).map(lambda p: f":{p}"),
    url_text.map(lambda p: f":{p}"),
)
schemes = st.sampled_from(
    ["http", "https", "HTTP", "hTTpS", "file", "javascript", "ftp", "data", "ws", "s3", "blob"]
)
urls = st.builds(
    lambda s, sep, u, h, p, path: f"{s}:{sep}{u}{h}{p}/{path}",
    schemes,
    st.sampled_from(["//", "", "/", "///"]),
    userinfo,
    hosts,
    ports,
    any_text,
)
data_uris = st.builds(
    lambda mime, params, payload: f"data:{mime}{params},{payload}",
    st.sampled_from(
        ["audio/wav", "AUDIO/WAV", "", "text/plain", "audio/", "application/octet-stream"]
    ),
    st.sampled_from([";base64", "", ";charset=utf-8;base64", ";BASE64", ";base64;x=1"]),
    st.one_of(
        any_text,
        st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        st.binary(max_size=64).map(lambda b: base64.b64encode(WAV[:44] + b).decode()[:-1]),
        st.just(base64.b64encode(WAV).decode()),
    ),
)
odd_objects = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.booleans(),
    st.complex_numbers(),
    st.just(np.float64("nan")),
    st.just(np.int64(7)),
    st.just(pd.NA),
    st.just(pd.NaT),
    st.just(decimal.Decimal("NaN")),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
    st.just(Path("/definitely/not/here.wav")),
)
audio_inputs = st.one_of(
    odd_objects,
    st.binary(max_size=128),
    st.binary(max_size=64).map(lambda b: WAV[:12] + b),  # a RIFF/WAVE header, then anything
    any_text,
    urls,
    data_uris,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)
    ),
    max_leaves=10,
)
_SUCCESS_KEYS = [
    "text",
    "model",
    "provider",
    "language",
    "duration",
    "requestId",
    "id",
    "cost_nanos",
    "cost_cents",
    "currency",
]
success_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.dictionaries(st.sampled_from(_SUCCESS_KEYS), json_values, max_size=6).map(
        lambda d: json.dumps(d).encode()
    ),
    st.builds(
        lambda text, extra: json.dumps({"text": text, **extra}).encode(),
        any_text,
        st.dictionaries(st.sampled_from(_SUCCESS_KEYS[1:]), json_values, max_size=5),
    ),
)
_ERROR_KEYS = [
    "error",
    "description",
    "message",
    "detail",
    "reason",
    "code",
    "type",
    "requestId",
    "request_id",
    "generation_id",
    "id",
]
error_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(_ERROR_KEYS),
        st.one_of(json_values, st.dictionaries(st.sampled_from(_ERROR_KEYS), json_values)),
        max_size=5,
    ).map(lambda d: json.dumps(d).encode()),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
response_headers = st.dictionaries(
    st.sampled_from(["content-type", "x-request-id", "x-generation-id", "retry-after"]),
    header_text,
    max_size=3,
)

# ----------------------------------------------------------------- the normaliser


def _normalise_or_refuse(value: object) -> AudioSource | pn.AudioInputError:
    """The property every input must satisfy; returns the outcome for further checks."""
    try:
        source = normalize_audio(value)
    except pn.AudioInputError as err:
        message = str(err)
        assert message.startswith("audio input ") and err.reason in message
        return err
    assert isinstance(source, AudioSource)
    assert isinstance(repr(source), str)
    return source


@FAST
@given(audio_inputs)
@example(None)
@example(float("nan"))
@example(0)
@example("javascript:alert(1)")
@example("file:///etc/passwd")
@example("https://user:hunter2secret@example.com/a.wav")
@example("http://[::1]:8080/a.wav")
@example("http://bücher.example/a.wav")
@example("http://\ud800.example/a.wav")
@example("\ud800.wav")
@example("data:audio/wav;base64,@@not-base64@@")
@example("data:audio/wav;base64,\ud800")
def test_normaliser_gives_a_source_or_a_typed_error(value: object) -> None:
    outcome = _normalise_or_refuse(value)
    if isinstance(outcome, pn.AudioInputError):
        return
    if outcome.kind == "url":
        # Only http(s) URLs without credentials get through, byte for byte as given.
        from urllib.parse import urlsplit

        assert isinstance(value, str)
        parts = urlsplit(outcome.url or "")
        assert parts.scheme.lower() in ("http", "https") and parts.hostname
        assert parts.username is None and parts.password is None
        assert outcome.identity() == "url:" + value.strip()
    else:
        # Everything else is audio by its content, never by its name.
        assert outcome.format is not None
        assert outcome.size and outcome.size > 0


credential_urls = st.builds(
    lambda s, u, p, h, port, path: f"{s}://{u}:{p}@{h}{port}/{path}",
    st.sampled_from(["http", "https", "HTTPS", "ftp", "file"]),
    url_text,
    st.text(st.characters(blacklist_categories=["Cs", "Cc", "Zs"]), min_size=6, max_size=16),
    hosts,
    ports,
    any_text,
)


@FAST
@given(credential_urls)
@example("https://bob:hunter2@example.com/a.wav")
@example("https://bob:p@ss@word@example.com/a.wav")
@example("https://bob:hunter2@example.com:99999/a.wav")
@example("https://bob:hunter2@[::1/a.wav")
def test_urls_with_credentials_are_refused_without_echoing_the_password(url: str) -> None:
    password = url.split("://", 1)[1].split("@")[0].split(":", 1)[1]
    # Only passwords that nothing else in the URL repeats can be looked for in a message.
    assume(url.count(password) == 1 and "/" not in password and "?" not in password)
    assume("#" not in password)
    outcome = _normalise_or_refuse(url)
    assert isinstance(outcome, pn.AudioInputError)
    assert password not in str(outcome)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a" * 1_000_000, "path cannot be used"),
        ("http://example.com/" + "a" * 100_000, "longer than 8192"),
        ("data:audio/wav;base64," + "A" * 36_000_000, "over the 25 MB limit"),
        ("data:audio/wav;base64," + "@" * 1_000_000, "invalid base64"),
        # Over one upload, so it would be sent as chunks: refused from its header at once.
        (b"RIFF" + b"\x00" * 26_000_000, "not audio"),
        ("\x00" * 10, "NUL"),
    ],
    ids=["long-path", "long-url", "huge-data-uri", "bad-base64", "huge-bytes", "nul-path"],
)
def test_huge_and_odd_values_are_refused_quickly(value: object, message: str) -> None:
    with pytest.raises(pn.AudioInputError, match=message) as info:
        normalize_audio(value)
    # The message names the input without echoing megabytes of it.
    assert len(str(info.value)) < 300


# ----------------------------------------------------------------- the response parser


@FAST
@given(st.integers(200, 299), success_bodies, response_headers)
@example(200, b"[" * 100_000, {})
@example(200, b'{"text": "a", "cost_nanos": ' + b"9" * 400 + b"}", {})
@example(200, b'{"text": "a", "duration": NaN, "cost_cents": Infinity}', {})
@example(200, b'{"text": ["a"]}', {})
@example(200, b'{"txt": "a"}', {})
@example(200, b"\xff\xfe{", {"content-type": "application/json"})
def test_success_parser_gives_a_result_or_a_typed_error(
    status: int, body: bytes, headers: dict[str, str]
) -> None:
    response = httpx.Response(status, content=body, headers=headers)
    try:
        result = parse_success(response)
    except pn.APIResponseError as err:
        assert err.status_code == status
        assert isinstance(str(err), str) and len(str(err)) < 400
        return
    decoded = json.loads(body)
    assert isinstance(result.text, str) and result.text == decoded["text"]
    for number in (result.cost, result.duration):
        assert number is None or (isinstance(number, float) and math.isfinite(number))
    for text in (result.model, result.provider, result.language, result.request_id):
        assert text is None or isinstance(text, str)


_EXPECTED_CLASS: dict[int, type[pn.APIStatusError]] = {
    400: pn.BadRequestError,
    401: pn.AuthenticationError,
    402: pn.PaymentRequiredError,
    403: pn.PermissionDeniedError,
    404: pn.NotFoundError,
    409: pn.ConflictError,
    413: pn.PayloadTooLargeError,
    422: pn.UnprocessableEntityError,
    429: pn.RateLimitError,
}


@FAST
@given(st.integers(400, 599), error_bodies, response_headers)
@example(401, b"[" * 100_000, {})
@example(502, b"<html>bad gateway</html>", {"content-type": "text/html"})
@example(429, b'{"error": {"code": 5, "message": ["x"]}}', {})
@example(500, b"", {})
def test_error_parser_maps_every_answer_to_its_status_class(
    status: int, body: bytes, headers: dict[str, str]
) -> None:
    err = error_from_response(httpx.Response(status, content=body, headers=headers))
    expected = _EXPECTED_CLASS.get(status, pn.InternalServerError if status >= 500 else None)
    assert type(err) is (expected or pn.APIStatusError)
    assert err.status_code == status
    assert isinstance(err.description, str) and err.description
    assert err.code is None or isinstance(err.code, str)
    assert err.request_id is None or isinstance(err.request_id, str)
    assert str(err).startswith(f"gateway answered {status}")
    assert len(str(err)) < 1000


# ----------------------------------------------------------------- requests on the wire


def parse_multipart(request: httpx.Request) -> list[tuple[str, str | None, str | None, bytes]]:
    """Read a multipart body back with the standard library: (name, filename, type, data)."""
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary="), ctype
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + request.read()
    )
    assert message.is_multipart() and not message.defects, message.defects
    parts = []
    for part in message.iter_parts():
        assert not part.defects, part.defects
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        content_type = part.get_content_type() if part.get_filename() is not None else None
        parts.append((name, part.get_filename(), content_type, payload))
    return parts


class Recording:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self, answer: Callable[[httpx.Request, int], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._answer(request, len(self.requests))

    def client(self, **kwargs: Any) -> pn.Client:
        return pn.Client(
            api_key="sk-hostile-input-test",
            base_url="https://gw.example/v1",
            transport=httpx.MockTransport(self),
            **kwargs,
        )


def _always_ok(request: httpx.Request, n: int) -> httpx.Response:
    return httpx.Response(200, content=OK_BODY)


def _file_required_then_ok(request: httpx.Request, n: int) -> httpx.Response:
    if n == 1:
        return httpx.Response(
            400, json={"error": "validation_error", "description": "file is required"}
        )
    return httpx.Response(200, content=OK_BODY)


options_text = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40).filter(
    str.strip
)
providers = st.one_of(
    st.none(),
    st.builds(
        pn.ProviderOptions,
        order=st.none() | st.lists(options_text, max_size=3),
        only=st.none() | st.lists(st.text(max_size=10), max_size=3),
        include_alpha=st.none() | st.booleans(),
    ),
)
valid_audio = st.one_of(
    st.binary(max_size=200).map(lambda b: WAV + b),
    st.binary(max_size=200).map(
        lambda b: "data:audio/wav;base64," + base64.b64encode(WAV + b).decode()
    ),
)


@SLOW
@given(valid_audio, options_text, st.none() | options_text, providers)
def test_contract_requests_are_well_formed_multipart(
    audio: bytes | str, model: str, language: str | None, provider: pn.ProviderOptions | None
) -> None:
    rec = Recording(_always_ok)
    with rec.client(max_retries=0) as client:
        assert (
            client.transcribe(audio, model=model, language=language, provider=provider).text
            == "fine"
        )
    (request,) = rec.requests
    parts = parse_multipart(request)
    fields = {name: data for name, _, _, data in parts}
    assert len(fields) == len(parts), "a field was sent twice"
    assert fields.pop("model").decode() == model
    assert base64.b64decode(fields.pop("audio_b64")) == normalize_audio(audio).data
    if language is not None:
        assert fields.pop("language").decode() == language
    if provider is not None:
        assert json.loads(fields.pop("provider")) == provider.to_dict()
    assert fields == {}
    assert all(filename is None for _, filename, _, _ in parts)


@SLOW
@given(
    st.text(
        st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]),
        min_size=1,
        max_size=40,
    ).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200),
    st.binary(max_size=100),
)
def test_file_parts_survive_odd_file_names(name: str, tail: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(WAV + tail)
        rec = Recording(_file_required_then_ok)
        with rec.client(max_retries=0) as client:
            assert client.transcribe(path, model="m").text == "fine"
    first, second = (parse_multipart(r) for r in rec.requests)
    assert [p[0] for p in first] == ["model", "audio_b64"]
    assert [p[0] for p in second] == ["model", "file"]
    _, filename, content_type, data = second[1]
    assert data == WAV + tail
    assert content_type == "audio/wav"
    # The name reaches the gateway as one header parameter ending in the audio extension.
    assert filename is not None and filename.endswith(".wav")
    assert not any(c in filename for c in '\r\n"')


@SLOW
@given(st.integers(100, 599), success_bodies | error_bodies, response_headers)
def test_hostile_answers_through_the_client_are_typed(
    status: int, body: bytes, headers: dict[str, str]
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(status, content=body, headers=headers)

    rec = Recording(answer)
    with rec.client(max_retries=0) as client:
        try:
            result = client.transcribe(WAV, model="m")
        except pn.APIError as err:
            assert isinstance(str(err), str)
        else:
            assert 200 <= status < 300 and isinstance(result.text, str)


@SLOW
@given(options_text.map(lambda s: s + "\ud800"), st.sampled_from(["model", "language"]))
def test_text_that_cannot_be_sent_is_refused_before_sending(text: str, option: str) -> None:
    rec = Recording(_always_ok)
    kwargs: dict[str, Any] = {"model": "m", option: text}
    with (
        rec.client() as client,
        pytest.raises(pn.ConfigurationError, match=f"{option} .* not valid"),
    ):
        client.transcribe(WAV, **kwargs)
    assert rec.requests == []


BATCH = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@BATCH
@given(
    st.lists(st.one_of(audio_inputs, valid_audio), min_size=1, max_size=12),
    st.lists(
        st.one_of(st.none(), st.just(float("nan")), options_text, any_text, st.integers()),
        min_size=12,
        max_size=12,
    ),
    st.lists(st.tuples(st.integers(200, 599), success_bodies), min_size=1, max_size=5),
)
def test_batch_turns_every_hostile_row_into_a_clean_outcome(
    inputs: list[object], languages: list[object], answers: list[tuple[int, bytes]]
) -> None:
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        status, body = answers[n % len(answers)]
        # 401/402/403 stop a run on purpose; hostile bodies are what is tested here.
        if status in (401, 402, 403):
            status = 400
        return httpx.Response(status, content=body)

    rec = Recording(answer)
    res = transcribe_many_sync(
        inputs,
        languages=languages[: len(inputs)],
        model="m",
        client=rec.client(max_retries=0),
        cache=False,
        progress=False,
        row_retries=0,
        concurrency=4,
    )
    assert len(res.text) == len(res.error) == len(inputs)
    for text, error in zip(res.text, res.error, strict=True):
        assert (text is None) != (error is None)
        if error is not None:
            kind = error.split(":", 1)[0]
            assert kind in {
                "AudioInputError",
                "ValueError",
                "ConfigurationError",
                "APIResponseError",
                "BadRequestError",
                "NotFoundError",
                "ConflictError",
                "PayloadTooLargeError",
                "UnprocessableEntityError",
                "RateLimitError",
                "InternalServerError",
                "APIStatusError",
            }, error
    for request in rec.requests:
        parse_multipart(request)
