"""The API key goes to the configured gateway in the Authorization header, and nowhere else.

Every place a key could end up in a shared notebook or on disk is searched for it: reprs,
error messages and tracebacks (over real HTTP, for every kind of failure), log records of
every logger at DEBUG, the cache files, widget state, a saved notebook's outputs, the local
gateway's request records and its command line. Servers that echo the key back are used to
show that an answer cannot smuggle it into those places either.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import secrets
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook import _constants as C
from phaseo_notebook._base_client import REDACTED
from phaseo_notebook._batch import transcribe_many_sync
from phaseo_notebook._engines import fake_transcript

from .conftest import REPO_ROOT, make_wav

KEY = "sk-phaseo-secret-" + secrets.token_hex(12)
WAV = make_wav(5, seconds=0.05)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(C, "MAX_RETRY_DELAY", 0.05)


def assert_no_key(*texts: object) -> None:
    """None of the texts (or reprs of non-strings) contains the key."""
    for text in texts:
        shown = text if isinstance(text, str) else repr(text)
        assert KEY not in shown, shown[:500]


def error_texts(err: BaseException) -> list[str]:
    """Everything an error shows: message, repr, attributes, the formatted traceback."""
    texts = [str(err), repr(err), "".join(traceback.format_exception(err))]
    texts += [repr(v) for v in vars(err).values()]
    cause: BaseException | None = err
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        texts.append(repr(cause.args))
        cause = cause.__cause__ or cause.__context__
    return texts


# ----------------------------------------------------------------- a server that tells tales


class TattleServer:
    """A plain HTTP server on 127.0.0.1 that records every request it gets.

    ``POST`` answers with ``answer(authorization)`` -> (status, content type, body, extra
    headers), so a test can make it echo the key back; ``GET /clip.wav`` serves a WAV and
    ``GET /hop`` redirects to it.
    """

    def __init__(self, answer: Any = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.answer: Any = answer or (lambda auth: (200, "application/json", b'{"text": "ok"}', {}))
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the tests read the records instead

            def _record(self) -> None:
                owner.requests.append((self.command, self.path, dict(self.headers.items())))

            def do_GET(self) -> None:
                self._record()
                if self.path.endswith("/hop"):
                    self._send(302, "text/plain", b"", {"Location": "/clip.wav"})
                else:
                    self._send(200, "audio/wav", WAV, {})

            def do_POST(self) -> None:
                self._record()
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._send(*owner.answer(self.headers.get("Authorization", "")))

            def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> TattleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


Answer = tuple[int, str, bytes, dict[str, str]]


def echo_in_401(auth: str) -> Answer:
    body = {
        "error": "unauthorised",
        "description": f"key {auth.removeprefix('Bearer ')} is revoked",
    }
    return 401, "application/json", json.dumps(body).encode(), {}


def echo_in_html_502(auth: str) -> Answer:
    return 502, "text/html", f"<html><pre>Authorization: {auth}</pre></html>".encode(), {}


def echo_in_truncated_200(auth: str) -> Answer:
    return 200, "application/json", f'{{"debug": "{auth}", "text": "cut'.encode(), {}


def echo_in_success(auth: str) -> Answer:
    body = {"text": "hello there", "debug": {"authorization": auth}, "requestId": "req_echo"}
    return 200, "application/json", json.dumps(body).encode(), {}


# ----------------------------------------------------------------- reprs


def test_reprs_and_strs_hold_no_key(tmp_path: Path) -> None:
    with pn.LocalGateway(api_key=KEY) as gw:
        client = pn.Client(**gw.client_kwargs())
        aclient = pn.AsyncClient(**gw.client_kwargs())
        result = client.transcribe(WAV, model="local/fake")
        df = pd.DataFrame({"audio": [WAV, make_wav(6), None]})
        out = df.stt.transcribe(
            col="audio", model="local/fake", client=client, cache=tmp_path, metadata=True
        )
        batch = transcribe_many_sync([WAV], model="local/fake", client=client, cache=tmp_path)
        running = [repr(gw), str(gw)]
    assert result.text == fake_transcript(WAV)
    assert_no_key(
        repr(client),
        str(client),
        repr(aclient),
        str(aclient),
        *running,
        repr(gw),
        repr(result),
        str(result),
        repr(result.raw),
        repr(batch),
        repr(out),
        out.to_html(),
        out.drop(columns="audio").to_json(),
        repr(pn.Cache(tmp_path)),
        repr(pn.Cache(tmp_path).info()),
    )
    asyncio.run(aclient.aclose())
    client.close()


# ----------------------------------------------------------------- errors over real HTTP

# (faults, expected error) for every way the local gateway can fail a request.
FAILURES: list[tuple[str, pn.Faults, type[pn.PhaseoError]]] = [
    *(
        (str(status), pn.Faults(fail_status=status, fail_first=10**6), cls)
        for status, cls in [
            (400, pn.BadRequestError),
            (402, pn.PaymentRequiredError),
            (403, pn.PermissionDeniedError),
            (404, pn.NotFoundError),
            (409, pn.ConflictError),
            (413, pn.PayloadTooLargeError),
            (422, pn.UnprocessableEntityError),
            (429, pn.RateLimitError),
            (500, pn.InternalServerError),
            (502, pn.InternalServerError),
            (503, pn.InternalServerError),
        ]
    ),
    ("drop", pn.Faults(drop_rate=1.0), pn.APIConnectionError),
    ("slow", pn.Faults(slow_rate=1.0, slow_seconds=5), pn.APITimeoutError),
    ("truncated", pn.Faults(truncated_rate=1.0), pn.APIResponseError),
    ("non-json", pn.Faults(non_json_rate=1.0), pn.InternalServerError),
]


async def _async_transcribe(kwargs: dict[str, Any], audio: object) -> pn.TranscriptionResult:
    async with pn.AsyncClient(**kwargs) as client:
        return await client.transcribe(audio, model="local/fake")


def _transcribe(kind: str, kwargs: dict[str, Any], audio: object = WAV) -> BaseException:
    """Run one transcription that must fail; return its error."""
    try:
        if kind == "sync":
            with pn.Client(**kwargs) as client:
                client.transcribe(audio, model="local/fake")
        else:
            asyncio.run(_async_transcribe(kwargs, audio))
    except pn.PhaseoError as err:
        return err
    raise AssertionError("the transcription did not fail")


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("name", "faults", "expected"), FAILURES, ids=[f[0] for f in FAILURES])
def test_no_error_over_real_http_shows_the_key(
    kind: str, name: str, faults: pn.Faults, expected: type[pn.PhaseoError]
) -> None:
    with pn.LocalGateway(api_key=KEY, faults=faults) as gw:
        err = _transcribe(kind, {**gw.client_kwargs(), "timeout": 0.5, "max_retries": 1})
        batch_client = pn.Client(**gw.client_kwargs(), timeout=0.5, max_retries=0)
        shown: Sequence[str | None]
        try:
            shown = transcribe_many_sync(
                [WAV], model="local/fake", cache=False, row_retries=0, client=batch_client
            ).error
        except pn.PhaseoError as stopped:  # 402 and 403 stop a run instead of filling rows
            assert isinstance(stopped, expected)
            shown = error_texts(stopped)
        else:
            assert shown[0] is not None and shown[0].startswith(expected.__name__)
    assert isinstance(err, expected), repr(err)
    assert_no_key(*error_texts(err), *shown)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_refused_key_is_not_repeated_in_the_401(kind: str) -> None:
    with pn.LocalGateway(api_key="pk-the-gateway-expects-another") as gw:
        err = _transcribe(kind, {"api_key": KEY, "base_url": gw.url})
        with pytest.raises(pn.AuthenticationError) as info:
            transcribe_many_sync(
                [WAV],
                model="local/fake",
                cache=False,
                client=pn.Client(api_key=KEY, base_url=gw.url),
            )
    assert isinstance(err, pn.AuthenticationError)
    assert_no_key(*error_texts(err), *error_texts(info.value))


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (echo_in_401, pn.AuthenticationError),
        (echo_in_html_502, pn.InternalServerError),
        (echo_in_truncated_200, pn.APIResponseError),
    ],
    ids=["401-json", "502-html", "truncated-200"],
)
def test_an_answer_that_echoes_the_key_cannot_put_it_in_an_error(
    kind: str, answer: Any, expected: type[pn.PhaseoError]
) -> None:
    with TattleServer(answer) as server:
        err = _transcribe(
            kind, {"api_key": KEY, "base_url": server.origin + "/v1", "max_retries": 0}
        )
    assert isinstance(err, expected), repr(err)
    assert REDACTED in str(err) or REDACTED in repr(vars(err))
    assert_no_key(*error_texts(err))


def test_a_refused_insecure_url_does_not_show_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pn.ConfigurationError, match="plain http") as info:
        pn.Client(api_key=KEY, base_url="http://gateway.example/v1")
    monkeypatch.setenv("PHASEO_API_KEY", KEY)
    monkeypatch.setenv("PHASEO_BASE_URL", "http://gateway.example/v1")
    with pytest.raises(pn.ConfigurationError, match="plain http") as info2:
        pn.AsyncClient()
    assert_no_key(*error_texts(info.value), *error_texts(info2.value))


# ----------------------------------------------------------------- logs


def test_no_log_record_at_any_level_shows_the_key(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: httpx, httpcore, aiohttp, ours
    faults = pn.Faults(error_rate=0.3, drop_rate=0.1, truncated_rate=0.1, seed=2)
    with pn.LocalGateway(api_key=KEY, faults=faults) as gw:
        with pn.Client(**gw.client_kwargs()) as client:
            for i in range(10):
                client.transcribe(make_wav(i), model="local/fake")
        df = pd.DataFrame({"audio": [make_wav(i) for i in range(10, 60)]})
        df.stt.transcribe(
            col="audio", model="local/fake", client=pn.Client(**gw.client_kwargs()), cache=tmp_path
        )
    with pn.LocalGateway(api_key="pk-another-key-entirely") as gw:
        _transcribe("sync", {"api_key": KEY, "base_url": gw.url})
    with TattleServer(echo_in_401) as server:
        _transcribe("async", {"api_key": KEY, "base_url": server.origin + "/v1"})
    records = caplog.records
    # Logging really was on for everything: our retries and the HTTP libraries' own records.
    assert sum(r.getMessage().startswith("retrying") for r in records) >= 5
    assert {r.name.split(".")[0] for r in records} >= {"phaseo_notebook", "httpx", "httpcore"}
    for record in records:
        assert_no_key(record.getMessage(), repr(record.args), record.exc_text or "")
    assert_no_key(caplog.text)


# ----------------------------------------------------------------- the cache


def test_the_cache_holds_no_key_even_when_an_answer_echoes_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pn.LocalGateway(api_key=KEY, faults=pn.Faults(error_rate=0.2, seed=4)) as gw:
        transcribe_many_sync(
            [make_wav(i) for i in range(30)],
            model="local/fake",
            cache=cache,
            client=pn.Client(**gw.client_kwargs()),
        )
    with TattleServer(echo_in_success) as server:
        for kind in ("sync", "async"):
            kwargs: dict[str, Any] = {"api_key": KEY, "base_url": server.origin + "/v1"}
            client: pn.Client | pn.AsyncClient = (
                pn.Client(**kwargs) if kind == "sync" else pn.AsyncClient(**kwargs)
            )
            res = transcribe_many_sync(
                [make_wav(100 + len(kind))], model="m", cache=cache, client=client
            )
            assert res.text == ["hello there"]
    table = pd.read_parquet(cache)
    assert len(table) == 32
    # The echoing answer was stored, with the key masked.
    assert table["raw"].str.contains(REDACTED, regex=False).sum() == 2
    assert_no_key(
        table.to_json(date_format="iso"), pn.Cache(cache).to_pandas().to_json(date_format="iso")
    )
    for path in cache.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


# ----------------------------------------------------------------- where the key may go


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_audio_downloads_never_carry_the_key(kind: str) -> None:
    # A live-mode gateway wants a file part, so the client downloads the URL itself; the
    # audio host, and the host it redirects to, must see no key.
    with TattleServer() as files, pn.LocalGateway(api_key=KEY, mode="live") as gw:
        kwargs = gw.client_kwargs()
        if kind == "sync":
            with pn.Client(**kwargs) as client:
                text = client.transcribe(files.origin + "/hop", model="local/fake").text
        else:
            text = asyncio.run(_async_transcribe(kwargs, files.origin + "/hop")).text
        recent = gw.stats().recent
    assert text == fake_transcript(WAV)
    assert [(m, p) for m, p, _ in files.requests] == [("GET", "/hop"), ("GET", "/clip.wav")]
    for _, _, headers in files.requests:
        assert "authorization" not in {h.lower() for h in headers}
        assert_no_key(json.dumps(headers))
    # The key did reach the gateway (its Bearer check passed), in the header only.
    assert [r["authorization"] for r in recent] == ["Bearer", "Bearer"]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_gateway_redirect_is_not_followed_with_the_key(kind: str, status: int) -> None:
    with TattleServer() as elsewhere:
        target = elsewhere.origin + "/v1/audio/transcriptions"
        with TattleServer(lambda auth: (status, "text/plain", b"", {"Location": target})) as gw:
            err = _transcribe(kind, {"api_key": KEY, "base_url": gw.origin + "/v1"})
        assert len(gw.requests) == 1
    assert isinstance(err, pn.APIStatusError) and err.status_code == status
    assert elsewhere.requests == []


@pytest.mark.parametrize(
    "base_url",
    [
        "http://gateway.example/v1",
        "http://10.0.0.5:8080/v1",
        "http://0.0.0.0:8080/v1",
        "http://[2001:db8::1]/v1",
        "http://[::ffff:127.0.0.1]/v1",
        "http://localhost.example.com/v1",
        "http://127.0.0.1.nip.io/v1",
        "http://127.0.0.1@gateway.example/v1",
        "HTTP://GATEWAY.EXAMPLE/v1",
    ],
)
def test_plain_http_to_another_machine_is_refused_without_opt_in(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cls in (pn.Client, pn.AsyncClient):
        with pytest.raises(pn.ConfigurationError, match="refusing to send the API key"):
            cls(api_key=KEY, base_url=base_url)
    monkeypatch.setenv("PHASEO_API_KEY", KEY)
    monkeypatch.setenv("PHASEO_BASE_URL", base_url)
    with pytest.raises(pn.ConfigurationError, match="refusing to send the API key"):
        pn.Client()
    # The explicit opt-in, and only it, allows it.
    pn.Client(allow_insecure_http=True).close()
    asyncio.run(pn.AsyncClient(allow_insecure_http=True).aclose())


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:9/v1", "http://127.8.9.10/v1", "http://localhost:9/v1", "http://[::1]:9/v1"],
)
def test_plain_http_to_this_machine_is_allowed(base_url: str) -> None:
    pn.Client(api_key=KEY, base_url=base_url).close()
    asyncio.run(pn.AsyncClient(api_key=KEY, base_url=base_url).aclose())


# ----------------------------------------------------------------- the local gateway


def test_gateway_request_records_and_command_line_hold_no_key() -> None:
    with pn.LocalGateway(api_key=KEY) as gw, pn.Client(**gw.client_kwargs()) as client:
        client.transcribe(WAV, model="local/fake")
        stats = gw.stats()
    assert [r["authorization"] for r in stats.recent] == ["Bearer"]
    assert_no_key(json.dumps(stats.to_dict()))

    with pn.LocalGateway(api_key=KEY, process=True) as gw:
        assert gw._proc is not None
        cmdline = Path(f"/proc/{gw._proc.pid}/cmdline").read_bytes()
        with pn.Client(**gw.client_kwargs()) as client:
            client.transcribe(WAV, model="local/fake")
        stats = gw.stats()  # through the admin route, over HTTP
    assert KEY.encode() not in cmdline
    assert stats.requests == 1
    assert_no_key(json.dumps(stats.to_dict()), repr(gw))


# ----------------------------------------------------------------- widgets


def _all_widget_states(roots: list[Any]) -> str:
    """The synced state of every widget alive (and of everything under ``roots``)."""
    import ipywidgets

    found: dict[int, Any] = {}
    registry = getattr(ipywidgets.widgets.widget, "_instances", {})
    todo = [*roots, *registry.values()]
    while todo:
        w = todo.pop()
        if id(w) in found or not isinstance(w, ipywidgets.Widget):
            continue
        found[id(w)] = w
        for name in w.keys:
            value = getattr(w, name)
            todo.extend(value if isinstance(value, tuple | list) else [value])
    return json.dumps(
        [w.get_state() for w in found.values()] + [repr(w) for w in found.values()],
        default=lambda v: repr(bytes(v)[:32]) if isinstance(v, memoryview | bytes) else repr(v),
    )


def _upload_value(files: dict[str, bytes]) -> tuple[dict[str, Any], ...]:
    import datetime

    return tuple(
        {
            "name": name,
            "type": "audio/wav",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
        }
        for name, content in files.items()
    )


def test_widget_state_holds_no_key_after_success_or_an_echoed_error(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    widgets = pytest.importorskip("phaseo_notebook.widgets")
    with pn.LocalGateway(api_key=KEY) as gw:
        good = widgets.upload(
            model="local/fake", client=pn.Client(**gw.client_kwargs()), cache=tmp_path
        )
        good.file_upload.value = _upload_value({"a.wav": WAV, "b.wav": make_wav(7)})
        good.transcribe_button.click()
        assert good.wait(60)
    assert good.df["error"].isna().all()
    reviewer = widgets.review(good.df, audio_col="audio", text_col="text")
    with TattleServer(echo_in_401) as server:
        bad = widgets.upload(
            model="m", client=pn.Client(api_key=KEY, base_url=server.origin + "/v1"), cache=False
        )
        bad.file_upload.value = _upload_value({"c.wav": make_wav(8)})
        bad.transcribe_button.click()
        assert bad.wait(60)
    # The failed run's message is on show (masked), and no state anywhere holds the key.
    assert isinstance(bad.error, pn.AuthenticationError)
    assert REDACTED in bad.status.value
    assert_no_key(_all_widget_states([good, bad, reviewer]), repr(good), repr(bad), repr(reviewer))


# ----------------------------------------------------------------- a saved notebook


def test_a_saved_notebook_holds_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    with pn.LocalGateway(api_key=KEY, faults=pn.Faults(error_rate=0.2, seed=9)) as gw:
        # The notebook gets the key the way users are told to give it: the environment.
        monkeypatch.setenv("PHASEO_API_KEY", KEY)
        monkeypatch.setenv("PHASEO_BASE_URL", gw.url)
        cells = [
            f"import sys, logging; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
            "logging.basicConfig(level=logging.DEBUG, force=True)\n"
            "import pandas as pd, phaseo_notebook as pn\n"
            "from tests.conftest import make_wav",
            "client = pn.Client()\nprint(client)\nclient",
            "result = client.transcribe(make_wav(1), model='local/fake')\n"
            "print(result.raw)\nresult",
            "df = pd.DataFrame({'audio': [make_wav(i) for i in range(12)] + [None]})\n"
            f"out = df.stt.transcribe(col='audio', model='local/fake', metadata=True,"
            f" cache={str(tmp_path / 'cache')!r})\n"
            "out",
            f"pn.Cache({str(tmp_path / 'cache')!r}).to_pandas()",
            "client.transcribe(make_wav(2), model='no/such-model')",  # raises: a traceback
            "pn.Client(base_url='http://gateway.example/v1')",  # refused: a traceback
            "%xmode Context\nclient.transcribe(b'not audio', model='local/fake')",
        ]
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
        nbclient.NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()
        served = gw.stats().by_status.get(200, 0)
    saved = tmp_path / "run.ipynb"
    nbformat.write(nb, saved)
    text = saved.read_text()
    # The notebook really ran against the gateway with the key, and failed where it should.
    assert served >= 13
    errors = [o["ename"] for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert errors == ["UnknownModelError", "ConfigurationError", "AudioInputError"]
    assert "DEBUG" in text and "retrying" in text
    assert KEY not in text
    assert KEY not in json.dumps(nb)  # the escaped form too


def test_key_in_authorization_header_only_for_the_gateway() -> None:
    # The transport sees exactly one place with the key: the Authorization header.
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "ok"})

    with pn.Client(
        api_key=KEY, base_url="https://gw.example/v1", transport=httpx.MockTransport(handler)
    ) as client:
        client.transcribe(WAV, model="m", language="en", provider={"only": ["a"]})
    (request,) = seen
    assert request.headers["authorization"] == f"Bearer {KEY}"
    others = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    assert_no_key(json.dumps(others), str(request.url))
    assert KEY.encode() not in request.read()
