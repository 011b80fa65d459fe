"""The async client's own send path: the same bytes as httpx, the same answers and errors."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import phaseo_notebook as pn
from phaseo_notebook._audio import normalize_audio
from phaseo_notebook._base_client import PreparedCall, build_multipart
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._wire import AiohttpSender, encode_multipart

from .conftest import make_wav

BOUNDARY = "0123456789abcdef0123456789abcdef"


def httpx_body(parts: list[Any], boundary: str = BOUNDARY) -> bytes:
    request = httpx.Request(
        "POST",
        "http://gw.invalid/v1/audio/transcriptions",
        files=parts,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    return request.read()


@pytest.mark.parametrize(
    "filename",
    ["clip.wav", 'say "hi".wav', "back\\slash.wav", "new\nline\r.wav", "été 音.wav", "esc\x1b.wav"],
)
def test_encoding_is_byte_for_byte_what_httpx_sends(filename: str) -> None:
    parts: list[Any] = [
        ("model", (None, "openai/whisper-1")),
        ("file", (filename, make_wav(1), "audio/wav")),
        ("language", (None, "fr")),
        ("provider", (None, '{"order":["a"]}')),
        ("prompt", (None, 'Zoë said "ok"\n')),
        ("temperature", (None, "0.2")),
    ]
    assert encode_multipart(parts, BOUNDARY) == httpx_body(parts)


@pytest.mark.parametrize("mode", ["contract", "file"])
def test_fields_around_the_audio_are_encoded_once_per_call_and_stay_right(
    mode: str, tmp_path: Any
) -> None:
    sender = AiohttpSender({"Accept": "application/json"}, httpx.Timeout(5.0), 4)
    boundary = sender.content_type.split("boundary=")[1]
    calls = [
        PreparedCall(model="m", language="en", temperature=0.5),
        PreparedCall(model="m", language="de", prompt="Namen"),
    ]
    for i in range(3):
        for call in calls:
            path = tmp_path / f"a{i}.wav"
            path.write_bytes(make_wav(i))
            source = normalize_audio(str(path))
            parts = build_multipart(
                source,
                model=call.model,
                language=call.language,
                provider=call.provider,
                mode=mode,  # type: ignore[arg-type]
                data=source.read(),
                timestamps=call.timestamps,
                prompt=call.prompt,
                temperature=call.temperature,
            )
            assert sender.body(call, mode, parts) == httpx_body(parts, boundary)
    # One entry per call and mode, however many requests.
    assert len(sender._frames) == 2


def test_a_layout_without_the_audio_second_is_encoded_whole() -> None:
    sender = AiohttpSender({}, httpx.Timeout(5.0), 4)
    boundary = sender.content_type.split("boundary=")[1]
    parts: list[Any] = [("model", (None, "m")), ("language", (None, "en"))]
    assert sender.body(object(), "contract", parts) == httpx_body(parts, boundary)
    assert sender._frames == {}


async def test_async_client_posts_through_the_sender_and_keeps_httpx_idle(
    wav_bytes: bytes,
) -> None:
    with pn.LocalGateway(engine="fake", mode="strict") as gw:
        async with pn.AsyncClient(**gw.client_kwargs()) as client:
            assert client._wire is not None
            results = await asyncio.gather(
                *(client.transcribe(make_wav(i), model="local/fake") for i in range(10))
            )
            assert client._wire._session is not None
            # The httpx transport (and its TLS context) is built only for URL downloads.
            # (under the answer-size cap, which wraps it)
            transport = client._http._transport
            inner = getattr(transport, "_inner", transport)
            assert not inner.built
        stats = gw.stats()
    assert [r.text for r in results] == [fake_transcript(make_wav(i)) for i in range(10)]
    assert stats.by_status == {200: 10}


async def test_a_custom_transport_still_goes_through_httpx(wav_bytes: bytes) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "mocked"})

    async with pn.AsyncClient(
        api_key="sk-test", base_url="https://gw.invalid/v1", transport=httpx.MockTransport(answer)
    ) as client:
        assert client._wire is None
        result = await client.transcribe(wav_bytes, model="openai/whisper-1")
    assert result.text == "mocked" and len(seen) == 1


class _GzipHandler(BaseHTTPRequestHandler):
    """Answers every POST with a gzipped JSON body, whatever the client accepts."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = gzip.compress(json.dumps({"text": "squeezed", "duration": 1.5}).encode())
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("X-Request-Id", "req_gz")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gzip_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GzipHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


async def test_an_encoded_answer_is_decoded_as_httpx_decodes_it(
    gzip_server: str, wav_bytes: bytes
) -> None:
    async with pn.AsyncClient(api_key="sk-test", base_url=gzip_server) as client:
        result = await client.transcribe(wav_bytes, model="openai/whisper-1")
    assert (result.text, result.duration, result.request_id) == ("squeezed", 1.5, "req_gz")


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
async def test_a_proxy_in_the_environment_keeps_every_request_on_httpx(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "http://proxy.invalid:3128")
    async with pn.AsyncClient(api_key="sk-test", base_url="https://gw.invalid/v1") as client:
        assert client._wire is None
    monkeypatch.delenv(variable)
    async with pn.AsyncClient(api_key="sk-test", base_url="https://gw.invalid/v1") as client:
        assert client._wire is not None
