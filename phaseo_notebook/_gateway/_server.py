"""The aiohttp.web adapter: routes, fault injection, counters and the ``audio_url`` fetcher.

Each handler reads the request, hands the bytes to :class:`~._app.GatewayCore` and writes
its :class:`~._app.Reply`; nothing here knows the wire format. The hot path (a small
multipart POST to the fake engine) stays on the event loop with no thread hops and no
access log, so one core serves well over a thousand requests per second.

Routes
------
``POST /v1/audio/transcriptions``, ``GET /v1/models``, ``GET /healthz``,
``GET /files/{name}`` (files of ``files_dir``, no auth, for ``audio_url`` tests),
``GET /_admin/stats``, ``POST /_admin/reset``, ``GET|POST /_admin/faults``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from phaseo_notebook._engines import Engine, get_engine, shared_engine
from phaseo_notebook._gateway._app import (
    MAX_MULTIPART_BODY_BYTES,
    NON_JSON_REPLY,
    AudioFetchError,
    DownloadBuffer,
    GatewayCore,
    GatewayError,
    Reply,
    RequestForm,
    error_reply,
    injected_error,
    new_request_id,
    payload_too_large,
    truncate,
)
from phaseo_notebook._gateway._faults import FaultInjector, FaultKind, Faults
from phaseo_notebook._gateway._stats import StatsRecorder
from phaseo_notebook._net import is_loopback_host

__all__ = ["EngineSet", "GatewayServer", "check_bind_host", "format_base_url"]

logger = logging.getLogger("phaseo_notebook.gateway")

#: Total time allowed to download an ``audio_url``.
FETCH_TIMEOUT: Final = 30.0
# How long a shutdown waits for requests still being answered (a slow-fault sleep of
# 30 s must not hold up ``close()``, which promises to return in well under a second).
_SHUTDOWN_TIMEOUT: Final = 0.25
_FETCH_CHUNK: Final = 1 << 16


def check_bind_host(host: str, *, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless ``allow_remote``.

    The gateway serves files and accepts audio from anyone who can reach it, so binding
    beyond this machine has to be asked for explicitly.

    Raises
    ------
    ValueError
        For a non-loopback ``host`` without ``allow_remote``.
    """
    if not allow_remote and not is_loopback_host(host):
        raise ValueError(
            f"refusing to listen on non-loopback host {host!r}: the local gateway serves files "
            "and accepts audio from anyone who can reach it; pass allow_remote=True "
            "(--allow-remote) to do it anyway"
        )


def format_base_url(host: str, port: int) -> str:
    """``http://host:port/v1``, with IPv6 hosts bracketed.

    Examples
    --------
    >>> format_base_url("::1", 8080)
    'http://[::1]:8080/v1'
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


class EngineSet:
    """The engines of one gateway, created on first use.

    With ``workers=None`` they are the process-wide :func:`shared_engine` ones (so
    several gateways share one worker pool per engine); otherwise the gateway owns
    engines built with that many workers and closes them with :meth:`close`.

    Examples
    --------
    >>> EngineSet().get("fake").name
    'fake'
    """

    def __init__(self, workers: int | None = None) -> None:
        self._workers = workers
        self._owned: dict[str, Engine] = {}

    def get(self, name: str) -> Engine:
        """The engine called ``name``."""
        if self._workers is None:
            return shared_engine(name)
        engine = self._owned.get(name)
        if engine is None:
            engine = self._owned[name] = get_engine(name, workers=self._workers)
        return engine

    def close(self) -> None:
        """Close the engines this set created itself."""
        owned, self._owned = self._owned, {}
        for engine in owned.values():
            engine.close()


def _response(reply: Reply) -> web.Response:
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=reply.headers or None,
    )


class GatewayServer:
    """One gateway: its core, counters, faults and engines, served by aiohttp.

    Parameters
    ----------
    core : GatewayCore
        Mode, key and models.
    engines : EngineSet
        Where the engines come from.
    faults : Faults or None
        The initial faults.
    files_dir : pathlib.Path or None
        Directory served at ``/files/{name}``.

    Examples
    --------
    >>> server = GatewayServer(GatewayCore(mode="lenient"), EngineSet())
    >>> app = server.make_app()  # e.g. for aiohttp's pytest plugin
    """

    def __init__(
        self,
        core: GatewayCore,
        engines: EngineSet,
        *,
        faults: Faults | None = None,
        files_dir: Path | None = None,
    ) -> None:
        self.core = core
        self.engines = engines
        self.stats = StatsRecorder()
        self.injector = FaultInjector(faults)
        self.files_dir = files_dir.resolve() if files_dir is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(client_max_size=MAX_MULTIPART_BODY_BYTES)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/_admin/stats", self._admin_stats)
        app.router.add_post("/_admin/reset", self._admin_reset)
        app.router.add_get("/_admin/faults", self._admin_faults)
        app.router.add_post("/_admin/faults", self._admin_faults)
        app.on_cleanup.append(self._close_session)
        return app

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); return the bound port."""
        runner = web.AppRunner(
            self.make_app(),
            access_log=None,  # a log line per request would cost more than the request
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            # A client that disconnects cancels its handler, which stops the engine
            # work it started (a worker mid-file is stopped) instead of finishing
            # work nobody will read.
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        return int(address[1])

    async def stop(self) -> None:
        """Stop listening, drop open connections and close the engines it owns."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._close_session()
        self.engines.close()

    async def _close_session(self, _app: web.Application | None = None) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- transcriptions ------------------------------------------------------------------

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.arrive()
        status: int | None = None
        dropped = False
        try:
            reply = await self._answer(request)
            if reply is None:
                dropped = True
                # A dropped connection: closing the transport now means the client gets
                # EOF instead of a response, and aiohttp's write of the placeholder below
                # fails quietly as a "premature client disconnection".
                transport = request.transport
                if transport is not None:
                    transport.close()
                return web.Response()
            status = reply.status
            return _response(reply)
        finally:
            stats.finish(status, dropped=dropped)

    async def _answer(self, request: web.Request) -> Reply | None:
        """The reply for a transcription request, or ``None`` to drop the connection."""
        core = self.core
        request_id = new_request_id()
        authorization = request.headers.get("Authorization")
        content_type = request.headers.get("Content-Type")
        form: RequestForm | None = None
        failure: GatewayError | None = None
        try:
            form = core.parse(content_type, await request.read())
        except web.HTTPRequestEntityTooLarge:
            failure = payload_too_large(MAX_MULTIPART_BODY_BYTES, "request body")
        except GatewayError as err:
            failure = err
        self.stats.record(core.describe(form, content_type, authorization))
        try:
            core.authorise(authorization)
            if failure is not None:
                raise failure
            assert form is not None
            job = core.validate(form)
        except GatewayError as err:
            latency = self.injector.faults.latency
            if latency:
                await asyncio.sleep(latency)
            return error_reply(err, request_id)

        self.stats.audio(job.identity)
        decision = self.injector.next()
        if decision.delay:
            await asyncio.sleep(decision.delay)
        kind = decision.kind
        if kind is FaultKind.DROP:
            return None
        if kind is FaultKind.ERROR:
            assert decision.status is not None
            return error_reply(injected_error(decision.status, decision.retry_after), request_id)
        if kind is FaultKind.NON_JSON:
            return NON_JSON_REPLY
        reply = await core.arun(job, request_id, engines=self.engines.get, fetch=self._fetch)
        if kind is FaultKind.TRUNCATED:
            reply = truncate(reply)
        return reply

    async def _fetch(self, url: str) -> bytes:
        """Download ``url`` with a time limit and the per-file size cap."""
        session = self._session
        if session is None:
            session = self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
            )
        try:
            async with session.get(url) as resp:
                if resp.status >= 400:
                    raise AudioFetchError(f"HTTP {resp.status} {resp.reason or ''}".strip())
                buffer = DownloadBuffer(resp.content_length)
                async for chunk in resp.content.iter_chunked(_FETCH_CHUNK):
                    buffer.add(chunk)
                return buffer.getvalue()
        except TimeoutError as err:
            raise AudioFetchError(f"timed out after {FETCH_TIMEOUT:g} s") from err
        except aiohttp.ClientError as err:
            raise AudioFetchError(str(err) or type(err).__name__) from err

    # -- other routes --------------------------------------------------------------------

    def _unauthorised(self, request: web.Request) -> web.Response | None:
        try:
            self.core.authorise(request.headers.get("Authorization"))
        except GatewayError as err:
            return _response(error_reply(err, new_request_id()))
        return None

    async def _models(self, request: web.Request) -> web.Response:
        return self._unauthorised(request) or _response(self.core.models_reply())

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        files_dir = self.files_dir
        # One plain file name only: nothing may climb out of files_dir.
        if (
            files_dir is None
            or name in ("", ".", "..")
            or any(c in name for c in "/\\\x00")
            or not (files_dir / name).is_file()
        ):
            return _response(
                error_reply(GatewayError(404, "not_found", "no such file"), new_request_id())
            )
        return web.FileResponse(files_dir / name)

    async def _admin_stats(self, request: web.Request) -> web.Response:
        return self._unauthorised(request) or web.json_response(self.stats.snapshot().to_dict())

    async def _admin_reset(self, request: web.Request) -> web.Response:
        denied = self._unauthorised(request)
        if denied is not None:
            return denied
        self.stats.reset()
        return web.json_response({"reset": True})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        denied = self._unauthorised(request)
        if denied is not None:
            return denied
        if request.method == "POST":
            try:
                data: Any = json.loads(await request.read() or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("body must be a JSON object of Faults fields")
                faults = Faults.from_dict(data)
            except ValueError as err:
                failure = GatewayError(400, "validation_error", f"invalid faults: {err}")
                return _response(error_reply(failure, new_request_id()))
            self.injector.set(faults)
        return web.json_response(self.injector.faults.to_dict())
