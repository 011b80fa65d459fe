"""No call hangs: every client call and every batch run ends within a bound.

Two kinds of servers on 127.0.0.1 never finish an answer: the local gateway with its slow
fault (silent until long after the client's timeout), and a raw socket server below that
trickles its answer one byte at a time, which per-read timeouts alone never catch.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook import _constants as C
from phaseo_notebook._batch import transcribe_many, transcribe_many_sync

from .conftest import make_wav

pytestmark = pytest.mark.timeout(60)

TrickleMode = Literal["body", "headers"]
#: Seconds between two trickled bytes: well under any read timeout used here.
GAP = 0.05
#: How long a trickled answer would take to finish (a hang, as far as the tests care).
TRICKLE_SECONDS = 120.0


class Trickler:
    """An HTTP server on 127.0.0.1 whose every answer trickles in one byte per ``GAP``.

    ``mode="body"`` sends complete headers, then the body a byte at a time; ``"headers"``
    never finishes the header block. Either way, each byte arrives well within a read
    timeout, so only a total deadline ends the attempt.
    """

    def __init__(self, mode: TrickleMode) -> None:
        self.mode = mode
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> Trickler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                return
            head += chunk
        self.requests.append(head.split(b"\r\n", 1)[0])
        if self.mode == "body":
            first = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            first += b"Content-Length: 100000\r\n\r\n"
        else:
            first = b"HTTP/1.1 200 OK\r\nX-Slow: "
        try:
            sock.sendall(first)
            end = time.monotonic() + TRICKLE_SECONDS
            while not self._stop.wait(GAP) and time.monotonic() < end:
                sock.sendall(b"a")
        except OSError:
            return  # the client gave up and closed the connection: what we want


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(C, "MAX_RETRY_DELAY", 0.05)


@pytest.fixture
def silent_gateway() -> Iterator[pn.LocalGateway]:
    """A gateway that answers every transcription 30 s late: silent until then."""
    with pn.LocalGateway(faults=pn.Faults(slow_rate=1.0, slow_seconds=30)) as gw:
        yield gw


# ----------------------------------------------------------------- single calls


def test_sync_client_gives_up_on_a_silent_gateway_within_its_retries(
    silent_gateway: pn.LocalGateway,
) -> None:
    t0 = time.monotonic()
    with pn.Client(**silent_gateway.client_kwargs(), timeout=0.3, max_retries=2) as client:
        with pytest.raises(pn.APITimeoutError):
            client.transcribe(make_wav(1), model="local/fake")
    elapsed = time.monotonic() - t0
    # Three attempts of 0.3 s each plus short backoff; never the gateway's 30 s.
    assert elapsed < 3.0
    assert silent_gateway.stats().requests == 3


async def test_async_client_gives_up_on_a_silent_gateway_within_its_retries(
    silent_gateway: pn.LocalGateway,
) -> None:
    t0 = time.monotonic()
    async with pn.AsyncClient(
        **silent_gateway.client_kwargs(), timeout=0.3, max_retries=2
    ) as client:
        with pytest.raises(pn.APITimeoutError):
            await client.transcribe(make_wav(1), model="local/fake")
    assert time.monotonic() - t0 < 3.0
    assert silent_gateway.stats().requests == 3


def test_sync_client_cuts_a_trickled_answer_at_the_attempt_deadline() -> None:
    with Trickler("body") as server:
        client = pn.Client(api_key="sk-test", base_url=server.url, timeout=0.3, max_retries=1)
        t0 = time.monotonic()
        with client, pytest.raises(pn.APITimeoutError):
            client.transcribe(make_wav(1), model="m")
        elapsed = time.monotonic() - t0
        assert len(server.requests) == 2
    # Attempt deadline = connect + write + read timeouts = 0.9 s; two attempts.
    assert elapsed < 4.0, elapsed


@pytest.mark.parametrize("mode", ["body", "headers"])
async def test_async_client_cuts_a_trickled_answer_at_the_attempt_deadline(
    mode: TrickleMode,
) -> None:
    with Trickler(mode) as server:
        async with pn.AsyncClient(
            api_key="sk-test", base_url=server.url, timeout=0.3, max_retries=1
        ) as client:
            t0 = time.monotonic()
            with pytest.raises(pn.APITimeoutError):
                await client.transcribe(make_wav(1), model="m")
            elapsed = time.monotonic() - t0
        assert len(server.requests) == 2
    assert elapsed < 4.0, elapsed


def test_sync_client_cuts_a_trickled_download() -> None:
    # A live-mode gateway wants the audio as a file part, so the client downloads URLs
    # itself: a download that never ends must not hold the call either.
    with Trickler("body") as files, pn.LocalGateway(mode="live") as gw:
        client = pn.Client(**gw.client_kwargs(), timeout=0.3)
        t0 = time.monotonic()
        with client, pytest.raises(pn.APITimeoutError, match="could not download"):
            client.transcribe(files.url + "/clip.wav", model="local/fake")
        elapsed = time.monotonic() - t0
        assert files.requests == [b"GET /v1/clip.wav HTTP/1.1"]
    assert elapsed < 4.0, elapsed


async def test_async_client_cuts_a_trickled_download() -> None:
    with Trickler("body") as files, pn.LocalGateway(mode="live") as gw:
        async with pn.AsyncClient(**gw.client_kwargs(), timeout=0.3) as client:
            t0 = time.monotonic()
            with pytest.raises(pn.APITimeoutError, match="could not download"):
                await client.transcribe(files.url + "/clip.wav", model="local/fake")
            elapsed = time.monotonic() - t0
        assert files.requests == [b"GET /v1/clip.wav HTTP/1.1"]
    assert elapsed < 4.0, elapsed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -1.0, True, "30"])
def test_client_timeout_must_be_positive_and_finite(bad: object) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        pn.Client(api_key="k", timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        pn.AsyncClient(api_key="k", timeout=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------- batch deadline


@pytest.fixture(params=["silent", "retry-after"])
def stuck_gateway(request: pytest.FixtureRequest) -> Iterator[pn.LocalGateway]:
    """A gateway on which no row can finish soon: silent answers, or 503 + Retry-After 30 s."""
    if request.param == "silent":
        faults = pn.Faults(slow_rate=1.0, slow_seconds=30)
    else:
        faults = pn.Faults(error_rate=1.0, error_statuses=(503,), retry_after=30.0)
    with pn.LocalGateway(faults=faults) as gw:
        yield gw


def test_batch_deadline_stores_an_error_per_unfinished_row(
    stuck_gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(20)]})
    # The client alone would wait a minute per attempt: only the deadline ends the run.
    client = pn.Client(**stuck_gateway.client_kwargs(), timeout=60)
    t0 = time.monotonic()
    out = df.stt.transcribe(
        col="audio", model="local/fake", deadline=1.0, cache=tmp_path, client=client
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed
    assert out["text"].isna().all()
    assert out["text_error"].str.startswith("APITimeoutError: batch deadline of 1.0 s").all()


def test_batch_deadline_raises_with_errors_raise(
    stuck_gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    client = pn.Client(**stuck_gateway.client_kwargs(), timeout=60)
    t0 = time.monotonic()
    with pytest.raises(pn.APITimeoutError, match=r"batch deadline of 1\.0 s reached"):
        transcribe_many_sync(
            [make_wav(i) for i in range(20)],
            model="local/fake",
            deadline=1.0,
            errors="raise",
            cache=tmp_path,
            client=client,
        )
    assert time.monotonic() - t0 < 3.0


async def test_batch_deadline_inside_a_running_loop(silent_gateway: pn.LocalGateway) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(10)]})
    async with pn.AsyncClient(**silent_gateway.client_kwargs(), timeout=60) as client:
        t0 = time.monotonic()
        out = await df.stt.atranscribe(
            col="audio", model="local/fake", deadline=0.8, cache=False, client=client
        )
        elapsed = time.monotonic() - t0
    assert elapsed < 2.5, elapsed
    assert out["text_error"].str.contains("deadline").all()


async def test_batch_deadline_counts_from_the_call() -> None:
    # Planning is part of the budget: a deadline already spent by the time requests could
    # start leaves every row unfinished instead of granting a fresh allowance.
    loop = asyncio.get_running_loop()
    with pn.LocalGateway(faults=pn.Faults(latency=0.3)) as gw:
        async with pn.AsyncClient(**gw.client_kwargs()) as client:
            slow_inputs = _SlowSequence([make_wav(i) for i in range(4)], delay=0.5)
            t0 = loop.time()
            res = await transcribe_many(
                slow_inputs,
                model="local/fake",
                deadline=0.4,
                cache=False,
                client=client,
                progress=False,
            )
            elapsed = loop.time() - t0
        assert gw.stats().requests == 0
    assert res.errors == 4
    assert elapsed < 1.5


class _SlowSequence(list[bytes]):
    """Inputs whose reading takes ``delay`` seconds (a slow network drive, say)."""

    def __init__(self, items: list[bytes], delay: float) -> None:
        super().__init__(items)
        self._delay = delay
        self._slept = False

    def _first_read(self) -> None:
        if not self._slept:
            self._slept = True
            time.sleep(self._delay)

    # The engine may index the inputs or iterate over them: the first read of either kind
    # is the slow one.
    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        self._first_read()
        return super().__getitem__(index)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._first_read()
        return super().__iter__()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -2, True, "5"])
def test_batch_deadline_must_be_positive_and_finite(bad: object) -> None:
    with pytest.raises(ValueError, match="deadline must be a positive, finite number"):
        transcribe_many_sync([make_wav(1)], model="local/fake", deadline=bad, cache=False)
