"""The local gateway under abuse: SSRF through ``audio_url``, unauthenticated and hostile
bodies, slow clients, too many connections, foreign ``Host`` headers.

Every test drives a real gateway on 127.0.0.1 with plain httpx or raw sockets; the
hostile side is a small HTTP server on 127.0.0.1 that records what reaches it.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from yarl import URL

from phaseo_notebook._cli import build_parser
from phaseo_notebook._cli import main as cli_main
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._gateway import LocalGateway
from phaseo_notebook._gateway._fetch import MAX_REDIRECTS, UrlPolicy, address_refusal, parse_origin
from phaseo_notebook._gateway._server import GatewayLimits, host_allowed
from tests.conftest import make_wav

pytestmark = pytest.mark.timeout(90)

WAV = make_wav(7)
WAV_B64 = base64.b64encode(WAV).decode()
SECRET = b"SECRET-INTERNAL-DOCUMENT " * 40
MB = 1_000_000

MakeGateway = Callable[..., LocalGateway]


class Origin:
    """An HTTP server on ``host`` that records every request.

    ``/audio`` serves a WAV, ``/secret`` text that is not audio, ``/redirect?to=URL`` a
    302 to ``URL``, ``/loop`` a 302 to itself; anything else under ``/files/`` serves
    :data:`SECRET` (a stand-in for a different service behind a re-pointed name).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append((self.path, dict(self.headers.items())))
                path = urlsplit(self.path).path
                if path == "/audio":
                    self._send(200, WAV)
                elif path == "/redirect":
                    target = parse_qs(urlsplit(self.path).query)["to"][0]
                    self._send(302, b"", {"Location": target})
                elif path == "/loop":
                    self._send(302, b"", {"Location": "/loop"})
                else:
                    self._send(200, SECRET)

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.host = host
        self.port = int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Origin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        yield server


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[MakeGateway]:
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


def transcribe_url(gw: LocalGateway, url: str, model: str = "local/fake") -> httpx.Response:
    return httpx.post(
        gw.url + "/audio/transcriptions",
        files=[("model", (None, model)), ("audio_url", (None, url))],
        headers={"Authorization": f"Bearer {gw.api_key}"},
        timeout=60,
    )


def assert_refused(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    description: str = body["description"]
    for word in words:
        assert word in description, description
    return description


def raw_connect(gw: LocalGateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit} s (got {data[:80]!r})")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


# -- SSRF through audio_url ---------------------------------------------------------------


def test_address_policy_decisions() -> None:
    refused = {
        "127.0.0.1": "loopback",
        "127.8.9.10": "loopback",
        "::1": "loopback",
        "0.0.0.0": "unspecified",
        "::": "unspecified",
        "10.1.2.3": "private",
        "172.16.0.1": "private",
        "192.168.1.1": "private",
        "fd12::1": "private",
        "169.254.169.254": "cloud metadata",
        "fd00:ec2::254": "cloud metadata",
        "100.100.100.200": "cloud metadata",
        "169.254.1.1": "link-local",
        "fe80::1": "link-local",
        "224.0.0.1": "multicast",
        "ff02::1": "multicast",
        "100.64.0.1": "non-public",
        "::ffff:127.0.0.1": "loopback",
        "::ffff:169.254.169.254": "cloud metadata",
        "2002:7f00:1::": "loopback",  # 6to4 around 127.0.0.1
        "64:ff9b::a00:1": "private",  # NAT64 around 10.0.0.1
    }
    for address, reason in refused.items():
        assert address_refusal(address) == reason, address
    for address in ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "8.8.8.8"):
        assert address_refusal(address) is None, address

    own = UrlPolicy(own_sockets=frozenset({("127.0.0.1", 8080)}))
    assert own.admit(URL("http://127.0.0.1:8080/files/a.wav"), ["127.0.0.1"]) == ["127.0.0.1"]
    # localhost may also resolve to ::1, where the gateway does not listen: not connected to.
    assert own.admit(URL("http://localhost:8080/files/a.wav"), ["::1", "127.0.0.1"]) == [
        "127.0.0.1"
    ]
    for url in ("http://127.0.0.1:8080/_admin/stats", "http://127.0.0.1:8081/files/a.wav"):
        with pytest.raises(Exception, match="loopback"):
            own.admit(URL(url), ["127.0.0.1"])
    # One private address among public ones refuses the whole name.
    with pytest.raises(Exception, match="private"):
        UrlPolicy().admit(URL("http://mixed.example/a.wav"), ["93.184.215.14", "10.0.0.1"])
    trusted = UrlPolicy(trusted_origins=frozenset({parse_origin("http://media.lan:8000")}))
    assert trusted.admit(URL("http://MEDIA.lan:8000/x"), ["10.0.0.7"]) == ["10.0.0.7"]
    with pytest.raises(Exception, match="private"):
        trusted.admit(URL("http://media.lan:8001/x"), ["10.0.0.7"])
    assert UrlPolicy(allow_private=True).admit(URL("http://x/"), ["127.0.0.1"]) == ["127.0.0.1"]
    for bad in ("ftp://h", "http://u:p@h", "http://h/path", "http://h?q=1"):
        with pytest.raises(ValueError):
            parse_origin(bad)


def test_private_and_loopback_urls_are_refused_before_any_contact(
    make_gateway: MakeGateway, origin: Origin
) -> None:
    gw = make_gateway(mode="strict")
    port = origin.port
    spellings = [
        f"http://127.0.0.1:{port}/audio",
        f"http://localhost:{port}/audio",
        f"http://0.0.0.0:{port}/audio",
        f"http://2130706433:{port}/audio",
        f"http://0x7f.1:{port}/audio",
        f"http://0177.0.0.1:{port}/audio",
        f"http://127.1:{port}/audio",
        f"http://[::ffff:127.0.0.1]:{port}/audio",
        f"http://[::ffff:7f00:1]:{port}/audio",
        f"http://[::1]:{port}/audio",
        f"http://[::]:{port}/audio",
        # The gateway's own port, but not its /files/ route.
        f"http://127.0.0.1:{gw.port}/_admin/stats",
        f"http://127.0.0.1:{gw.port}/v1/models",
    ]
    for url in spellings:
        assert_refused(transcribe_url(gw, url), "could not fetch audio_url", "address")
    for url, reason in [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.1/a.wav", "private"),
        ("http://192.168.0.1/a.wav", "private"),
        ("http://224.0.0.1/a.wav", "multicast"),
    ]:
        assert_refused(transcribe_url(gw, url), reason)
    assert origin.requests == []
    assert gw.stats().by_status == {400: len(spellings) + 5}
    # Its own files stay reachable, by address or by name.
    for url in (gw.file_url("clip.wav"), gw.file_url("clip.wav").replace("127.0.0.1", "localhost")):
        response = transcribe_url(gw, url)
        assert response.status_code == 200, response.text
        assert response.json()["text"] == fake_transcript(WAV)


def test_allow_private_urls_turns_the_check_off(make_gateway: MakeGateway, origin: Origin) -> None:
    gw = make_gateway(mode="strict", allow_private_urls=True)
    response = transcribe_url(gw, origin.origin + "/audio")
    assert response.status_code == 200, response.text
    assert response.json()["text"] == fake_transcript(WAV)
    assert [path for path, _ in origin.requests] == ["/audio"]


def test_every_redirect_hop_is_checked(make_gateway: MakeGateway, origin: Origin) -> None:
    with Origin() as other:
        gw = make_gateway(mode="strict", allowed_url_origins=[origin.origin])
        assert transcribe_url(gw, origin.origin + "/audio").status_code == 200

        def via(target: str) -> str:
            return origin.origin + "/redirect?to=" + target

        assert_refused(transcribe_url(gw, via(other.origin + "/audio")), "loopback")
        assert other.requests == []
        assert_refused(
            transcribe_url(gw, via("http://169.254.169.254/latest/meta-data/")), "cloud metadata"
        )
        assert_refused(
            transcribe_url(gw, via(f"http://u:hunter2@127.0.0.1:{origin.port}/audio")),
            "credentials",
        )
        assert_refused(transcribe_url(gw, via("file:///etc/passwd")), "http(s)")
        # A hop to the gateway's own files is fine.
        response = transcribe_url(gw, via(gw.file_url("clip.wav")))
        assert response.status_code == 200, response.text
        assert response.json()["text"] == fake_transcript(WAV)

        origin.requests.clear()
        assert_refused(transcribe_url(gw, origin.origin + "/loop"), f"{MAX_REDIRECTS} redirects")
        assert len(origin.requests) == MAX_REDIRECTS + 1
        assert all("Authorization" not in headers for _, headers in origin.requests)


def test_url_credentials_are_refused_never_sent(make_gateway: MakeGateway, origin: Origin) -> None:
    gw = make_gateway(mode="strict", allow_private_urls=True)
    url = f"http://someone:hunter2@127.0.0.1:{origin.port}/audio"
    response = transcribe_url(gw, url)
    description = assert_refused(response, "credentials")
    assert "hunter2" not in response.text and "hunter2" not in description
    assert origin.requests == []
    assert "hunter2" not in json.dumps(gw.stats().to_dict())


def test_dns_answer_cannot_change_between_check_and_connect(
    make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # allow_remote: the gateway answers its own files under the name rebind.test too.
    gw = make_gateway(mode="strict", allow_remote=True)
    # A different server on another loopback address, same port as the gateway: where a
    # second lookup of the name would now lead, past the check made for the first.
    with Origin("127.0.0.2", gw.port) as elsewhere:
        real = socket.getaddrinfo
        lookups: list[str] = []

        def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host != "rebind.test":
                return real(host, *args, **kwargs)
            lookups.append(host)
            return real("127.0.0.1" if len(lookups) == 1 else "127.0.0.2", *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        response = transcribe_url(gw, f"http://rebind.test:{gw.port}/files/clip.wav")
    assert response.status_code == 200, response.text
    assert response.json()["text"] == fake_transcript(WAV)
    assert lookups == ["rebind.test"]
    assert elsewhere.requests == []


def test_fetched_bytes_never_appear_in_errors(make_gateway: MakeGateway, origin: Origin) -> None:
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("soundfile")
    gw = make_gateway(mode="strict", allow_private_urls=True)
    response = transcribe_url(gw, origin.origin + "/secret", model="local/pocketsphinx")
    assert_refused(response, "could not be decoded")
    assert b"SECRET" not in response.content
    # Status errors use the standard phrase, not whatever the server wrote.
    missing = transcribe_url(gw, gw.file_url("missing.wav"))
    assert_refused(missing, "HTTP 404 Not Found")


# -- admission: key before body, hostile JSON, slow clients, connection cap, Host ----------


def test_key_is_checked_before_the_body_is_read(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{gw.port}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {31 * MB}\r\n"
        "\r\n"
    ).encode()
    sockets = [raw_connect(gw) for _ in range(5)]
    try:
        for sock in sockets:
            sock.sendall(head + b"\0" * 65536)
        for sock in sockets:
            # 31 MB announced, 64 KiB sent: the answer comes without the rest.
            sock.settimeout(5)
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
            assert b'"unauthorised"' in answer
    finally:
        for sock in sockets:
            sock.close()
    stats = gw.stats()
    assert stats.by_status == {401: 5}
    assert all(record["fields"] == {} for record in stats.recent)


def test_unauthenticated_large_bodies_do_not_grow_the_server(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", process=True)
    assert gw._proc is not None
    status_file = Path(f"/proc/{gw._proc.pid}/status")
    if not status_file.exists():
        pytest.skip("needs /proc to read the server's peak memory")

    def peak_rss_mb() -> float:
        for line in status_file.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM line")

    before = peak_rss_mb()
    body = b"\0" * (31 * MB)
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answers: list[bytes] = []

    def send() -> None:
        with raw_connect(gw) as sock:
            # The server closes after answering and draining for a while; under heavy load
            # that may cut the upload (or the answer) short, which is not what is measured.
            with contextlib.suppress(OSError):
                sock.sendall(head + body)
                sock.settimeout(10)
                answers.append(sock.recv(65536))

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Ten 31 MB bodies read into memory would be over 300 MB.
    assert peak_rss_mb() - before < 60
    assert all(a.startswith(b"HTTP/1.1 401") for a in answers)
    assert gw.stats().by_status == {401: 10}


def test_declared_oversize_body_is_413_before_reading(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    with raw_connect(gw) as sock:
        sock.sendall(
            (
                "POST /v1/audio/transcriptions HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: Bearer {gw.api_key}\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\n"
                f"Content-Length: {200 * MB}\r\n\r\n"
            ).encode()
        )
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")


def test_deeply_nested_json_is_a_400_not_a_500(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    auth = {"Authorization": f"Bearer {gw.api_key}"}
    url = gw.url + "/audio/transcriptions"
    bomb = "[" * 200_000

    def post_json(content: str | bytes) -> httpx.Response:
        headers = {**auth, "Content-Type": "application/json"}
        return httpx.post(url, content=content, headers=headers, timeout=30)

    response = post_json(bomb)
    assert response.status_code == 400 and response.json()["error"] == "invalid_json", response.text
    as_field = post_json(
        json.dumps({"model": "local/fake", "audio_b64": WAV_B64, "provider": bomb})
    )
    assert as_field.status_code == 400 and "provider" in as_field.json()["description"]
    multipart = httpx.post(
        url,
        files=[
            ("model", (None, "local/fake")),
            ("audio_b64", (None, WAV_B64)),
            ("provider", (None, bomb)),
        ],
        headers=auth,
        timeout=30,
    )
    assert multipart.status_code == 400 and "provider" in multipart.json()["description"]
    # Deep but within Python's own limit: still refused, so nothing later walks it.
    nested = json.dumps(
        {"model": "local/fake", "audio_b64": WAV_B64, "x": [[[[[[[[[[[[1]]]]]]]]]]]] * 1}
    )
    deep = nested.replace("[[[[[[[[[[[[1]]]]]]]]]]]]", "[" * 500 + "1" + "]" * 500)
    response = post_json(deep)
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"
    admin = httpx.post(
        gw.url.removesuffix("/v1") + "/_admin/faults",
        content=bomb,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert admin.status_code == 400, admin.text
    assert gw.stats().by_status == {400: 4}


def test_slow_or_missing_headers_are_cut_off(make_gateway: MakeGateway) -> None:
    gw = make_gateway(server_limits=GatewayLimits(header_timeout=0.5))
    with raw_connect(gw) as idle:
        data, took = read_until_closed(idle, 10)
    assert data == b"" and took < 3
    with raw_connect(gw) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        start = time.monotonic()
        slow.settimeout(0.1)
        closed = False
        while time.monotonic() - start < 10:
            try:
                slow.sendall(b"X")  # a header that never ends
                if slow.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
        took = time.monotonic() - start
    assert closed and took < 3, took
    # A normal client is unaffected.
    assert httpx.get(gw.url.removesuffix("/v1") + "/healthz").status_code == 200


def test_slow_bodies_get_408(make_gateway: MakeGateway) -> None:
    gw = make_gateway(server_limits=GatewayLimits(body_timeout=1.5, body_idle_timeout=0.5))
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {gw.api_key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    # Stalls after a few bytes.
    with raw_connect(gw) as sock:
        sock.sendall(head + b'{"model"')
        start = time.monotonic()
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"request_timeout"' in answer
        assert 0.4 < time.monotonic() - start < 3
    # Never stalls long, but never finishes either.
    with raw_connect(gw) as sock:
        sock.sendall(head)
        sock.settimeout(0.2)
        start = time.monotonic()
        answer = b""
        while not answer and time.monotonic() - start < 10:
            sock.sendall(b" ")
            with contextlib.suppress(TimeoutError):
                answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert 1.3 < time.monotonic() - start < 4


def test_connections_over_the_cap_get_503(make_gateway: MakeGateway) -> None:
    gw = make_gateway(server_limits=GatewayLimits(max_connections=4))
    base = gw.url.removesuffix("/v1")
    idle = [raw_connect(gw) for _ in range(4)]
    try:
        time.sleep(0.3)  # let the server accept them
        response = httpx.get(base + "/healthz", timeout=5)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "service_unavailable"
        assert response.headers["Retry-After"] == "1"
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(base + "/healthz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the cap did not free up after connections closed"
        time.sleep(0.05)


def test_foreign_host_headers_are_refused(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    base = gw.url.removesuffix("/v1")
    auth = {"Authorization": f"Bearer {gw.api_key}"}
    for path in ("/v1/models", "/healthz", "/files/clip.wav", "/_admin/stats"):
        response = httpx.get(base + path, headers={**auth, "Host": f"rebound.example:{gw.port}"})
        assert response.status_code == 403, path
        assert response.json()["error"] == "host_not_allowed"
    refused = httpx.post(
        gw.url + "/audio/transcriptions",
        files=[("model", (None, "local/fake")), ("audio_b64", (None, WAV_B64))],
        headers={**auth, "Host": "rebound.example"},
    )
    assert refused.status_code == 403
    assert gw.stats().requests == 0
    for host in (f"localhost:{gw.port}", f"127.0.0.1:{gw.port}", f"[::1]:{gw.port}", "localhost"):
        assert httpx.get(base + "/v1/models", headers={**auth, "Host": host}).status_code == 200

    remote = make_gateway(mode="strict", allow_remote=True)
    response = httpx.get(
        remote.url + "/models",
        headers={"Authorization": f"Bearer {remote.api_key}", "Host": "gateway.lan:80"},
    )
    assert response.status_code == 200
    assert host_allowed(None, "127.0.0.1") and not host_allowed("", "127.0.0.1")
    assert host_allowed("127.0.0.2:80", "127.0.0.2") and not host_allowed("10.0.0.1", "127.0.0.1")


def test_provider_part_typed_application_json_is_a_field(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict")
    response = httpx.post(
        gw.url + "/audio/transcriptions",
        files=[
            ("model", (None, "local/fake")),
            ("audio_b64", (None, WAV_B64)),
            ("provider", (None, '{"only": ["local"]}', "application/json; charset=utf-8")),
        ],
        headers={"Authorization": f"Bearer {gw.api_key}"},
    )
    assert response.status_code == 200, response.text
    assert gw.stats().recent[-1]["fields"]["provider"] == '{"only": ["local"]}'


def test_unknown_model_lists_the_models_served(make_gateway: MakeGateway) -> None:
    gw = make_gateway(mode="strict", models={"openai/whisper-1": "fake"})
    response = httpx.post(
        gw.url + "/audio/transcriptions",
        files=[("model", (None, "local/whisper")), ("audio_b64", (None, WAV_B64))],
        headers={"Authorization": f"Bearer {gw.api_key}"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "unsupported_model_or_endpoint"
    assert body["reason"] == "model_not_found_or_inactive"
    assert body["available_models"] == [
        "local/fake",
        "local/pocketsphinx",
        "local/whisper-tiny.en",
        "openai/whisper-1",
    ]
    assert (
        "local/fake, local/pocketsphinx, local/whisper-tiny.en, openai/whisper-1"
        in body["description"]
    )


# -- the same options through `phaseo-notebook serve` --------------------------------------


def test_serve_flags_parse() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--allow-private-urls",
            "--allow-url-origin",
            "http://media.lan:8000",
            "--header-timeout",
            "2",
            "--body-timeout",
            "9",
            "--body-idle-timeout",
            "3",
            "--max-connections",
            "64",
        ]
    )
    assert args.allow_private_urls and args.allow_url_origin == ["http://media.lan:8000"]
    assert (args.header_timeout, args.body_timeout, args.body_idle_timeout) == (2.0, 9.0, 3.0)
    assert args.max_connections == 64
    defaults = build_parser().parse_args(["serve"])
    assert not defaults.allow_private_urls and defaults.allow_url_origin == []


def test_serve_rejects_bad_limits_and_origins(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--port", "0", "--max-connections", "0"]) == 2
    assert "max_connections" in capsys.readouterr().err
    assert cli_main(["serve", "--port", "0", "--header-timeout", "-1"]) == 2
    assert "header_timeout" in capsys.readouterr().err
    assert cli_main(["serve", "--port", "0", "--allow-url-origin", "ftp://x"]) == 2
    assert "origin" in capsys.readouterr().err


def test_process_mode_passes_the_url_and_limit_options(
    make_gateway: MakeGateway, origin: Origin
) -> None:
    gw = make_gateway(
        mode="strict",
        process=True,
        allow_private_urls=True,
        server_limits=GatewayLimits(header_timeout=0.5),
    )
    response = transcribe_url(gw, origin.origin + "/audio")
    assert response.status_code == 200, response.text
    with raw_connect(gw) as idle:
        data, took = read_until_closed(idle, 10)
    assert data == b"" and took < 3
    refusing = make_gateway(mode="strict", process=True)
    assert_refused(transcribe_url(refusing, origin.origin + "/audio"), "loopback")
    assert [path for path, _ in origin.requests] == ["/audio"]
