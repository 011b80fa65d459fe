"""`EmbeddedTransport`: the local gateway answered in-process, with no socket.

When no API key and no base URL are configured, the client sends its ``local/*``
requests here. They go through the same :class:`~._app.GatewayCore` as the HTTP server
(mode ``lenient``, no auth), so a result or an error looks exactly the same whether it
came over 127.0.0.1 or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import httpx

from phaseo_notebook._engines import shared_engine
from phaseo_notebook._exceptions import EngineModelError
from phaseo_notebook._gateway._app import (
    AudioFetchError,
    DownloadBuffer,
    GatewayCore,
    GatewayError,
    Mode,
    Reply,
    TranscriptionJob,
    error_reply,
    new_request_id,
)

__all__ = ["EmbeddedTransport"]

#: Time allowed to download an ``audio_url`` (connect and read).
FETCH_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)
_TRANSCRIPTIONS_SUFFIX: Final = "/audio/transcriptions"
# In-process, a missing optional extra is the caller's own ImportError naming the pip
# line, and a corrupt model the caller's own EngineModelError; the HTTP server can only
# describe them (501, 500) to a client somewhere else.
_RERAISE: Final[tuple[type[Exception], ...]] = (ImportError, EngineModelError)
_MODELS_SUFFIX: Final = "/models"


class EmbeddedTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An httpx transport that answers gateway requests in-process with the local engines.

    ``POST .../audio/transcriptions`` and ``GET .../models`` are answered whatever the
    host and base path; anything else is a 404 in the gateway's error format. Engines
    come from :func:`~phaseo_notebook._engines.shared_engine`, so each model is loaded
    once per process however many clients exist. The sync path calls the engine's
    ``transcribe``; the async path awaits ``atranscribe`` (a worker pool for Whisper
    and PocketSphinx), so the event loop is never blocked for long. An engine whose optional
    dependencies are missing raises its ``ImportError`` (naming the ``pip install``
    line) to the caller, where the HTTP server answers 501 ``not_implemented_yet``.

    Parameters
    ----------
    models : Mapping of str to str or None
        Model name -> engine name (default ``local/fake``, ``local/whisper-tiny.en`` and
        ``local/pocketsphinx``).
    mode : {"strict", "live", "lenient"}
        Request shapes accepted (default ``lenient``: a ``file`` part, ``audio_url`` or
        ``audio_b64``).

    Examples
    --------
    >>> import httpx
    >>> client = httpx.Client(transport=EmbeddedTransport(), base_url="http://local/v1")
    >>> r = client.post("/audio/transcriptions",
    ...                 data={"model": "local/fake", "audio_b64": "UklGRg=="})
    >>> r.status_code, r.json()["provider"]
    (200, 'local')
    """

    def __init__(self, *, models: Mapping[str, str] | None = None, mode: Mode = "lenient") -> None:
        self._core = GatewayCore(mode=mode, api_key=None, models=models)

    def __repr__(self) -> str:
        return f"EmbeddedTransport(mode={self._core.mode!r}, models={sorted(self._core.models)})"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer ``request`` synchronously."""
        request_id = new_request_id()
        job = self._job(request, request.read(), request_id)
        if isinstance(job, Reply):
            return _response(job, request)
        reply = self._core.run(
            job, request_id, engines=shared_engine, fetch=_fetch_sync, reraise=_RERAISE
        )
        return _response(reply, request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer ``request`` without blocking the event loop on the engine."""
        request_id = new_request_id()
        job = self._job(request, await request.aread(), request_id)
        if isinstance(job, Reply):
            return _response(job, request)
        reply = await self._core.arun(
            job, request_id, engines=shared_engine, fetch=_fetch_async, reraise=_RERAISE
        )
        return _response(reply, request)

    def _job(
        self, request: httpx.Request, body: bytes, request_id: str
    ) -> Reply | TranscriptionJob:
        """Route and validate; a :class:`Reply` when the answer needs no engine."""
        path = request.url.path.rstrip("/")
        if path.endswith(_MODELS_SUFFIX) and request.method == "GET":
            return self._core.models_reply()
        if not path.endswith(_TRANSCRIPTIONS_SUFFIX):
            return error_reply(GatewayError(404, "not_found", f"no route {path!r}"), request_id)
        if request.method != "POST":
            return error_reply(
                GatewayError(405, "method_not_allowed", f"{request.method} is not allowed"),
                request_id,
            )
        try:
            form = self._core.parse(request.headers.get("Content-Type"), body)
            return self._core.validate(form)
        except GatewayError as err:
            return error_reply(err, request_id)

    def close(self) -> None:
        """Nothing to release: the engines are shared by the whole process."""

    async def aclose(self) -> None:
        """Nothing to release: the engines are shared by the whole process."""


def _response(reply: Reply, request: httpx.Request) -> httpx.Response:
    headers = {
        "content-type": reply.content_type,
        "content-length": str(len(reply.body)),
        **reply.headers,
    }
    # A stream rather than content=: httpx reads content= at once, and a caller that
    # streams the body (iter_raw, as over a socket) would then find it already consumed.
    stream = httpx.ByteStream(reply.body)
    return httpx.Response(reply.status, headers=headers, stream=stream, request=request)


def _start(response: httpx.Response) -> DownloadBuffer:
    if response.status_code >= 400:
        raise AudioFetchError(f"HTTP {response.status_code} {response.reason_phrase}".strip())
    length = response.headers.get("content-length")
    return DownloadBuffer(int(length) if length is not None and length.isdigit() else None)


def _fetch_sync(url: str) -> bytes:
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            buffer = _start(response)
            for chunk in response.iter_bytes():
                buffer.add(chunk)
    except httpx.HTTPError as err:
        raise AudioFetchError(str(err) or type(err).__name__) from err
    return buffer.getvalue()


async def _fetch_async(url: str) -> bytes:
    try:
        async with (
            httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            buffer = _start(response)
            async for chunk in response.aiter_bytes():
                buffer.add(chunk)
    except httpx.HTTPError as err:
        raise AudioFetchError(str(err) or type(err).__name__) from err
    return buffer.getvalue()
