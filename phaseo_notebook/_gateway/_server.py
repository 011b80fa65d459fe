"""The aiohttp.web adapter: routes, admission limits, fault injection and counters.

Each handler reads the request, hands the bytes to :class:`~._app.GatewayCore` and writes
its :class:`~._app.Reply`; nothing here knows the wire format. The hot path (a small
multipart POST to the fake engine) stays on the event loop with no thread hops and no
access log, so one core serves well over a thousand requests per second.

Routes
------
``POST /v1/audio/transcriptions``, ``GET /v1/models``, ``GET /healthz``,
``GET /files/{name}`` (files of ``files_dir``, no auth, for ``audio_url`` tests),
``GET /_admin/stats``, ``POST /_admin/reset``, ``GET|POST /_admin/faults``.

Admission, cheapest check first, so an abusive request costs as little as possible
-------------------------------------------------------------------------------------
1. At most ``max_connections`` open connections; one more is answered 503 and closed.
2. Complete request headers within ``header_timeout`` of the connection opening (or of
   the previous answer on a kept-alive connection), else the connection is closed; the
   same timeout closes idle keep-alive connections. Header lines are capped at 8190
   bytes (aiohttp's limits, set explicitly).
3. A ``Host`` that is not a loopback name or the bound address is a 403 (a page served
   elsewhere whose name was re-pointed at 127.0.0.1 must not reach the gateway), unless
   ``allow_remote``.
4. The API key, before a byte of the body is read (401); a declared length over the
   limit is a 413 before reading too.
5. The body, within ``body_timeout`` in all and ``body_idle_timeout`` between chunks
   (408), and never past the 32 MiB limit (413).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from phaseo_notebook._engines import Engine, get_engine, shared_engine
from phaseo_notebook._gateway._app import (
    MAX_MULTIPART_BODY_BYTES,
    NON_JSON_REPLY,
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
from phaseo_notebook._gateway._fetch import AudioFetcher, UrlPolicy, parse_origin
from phaseo_notebook._gateway._stats import StatsRecorder
from phaseo_notebook._net import is_loopback_host

__all__ = [
    "EngineSet",
    "GatewayLimits",
    "GatewayServer",
    "check_bind_host",
    "default_max_connections",
    "format_base_url",
    "host_allowed",
]

logger = logging.getLogger("phaseo_notebook.gateway")

# How long a shutdown waits for requests still being answered (a slow-fault sleep of
# 30 s must not hold up ``close()``, which promises to return in well under a second).
_SHUTDOWN_TIMEOUT: Final = 0.25
# After an early answer (401, 413, 408) aiohttp keeps reading and discarding the rest of
# the body for this long, so the client can read the answer rather than a reset; then
# the connection is closed.
_LINGERING_TIME: Final = 2.0
# aiohttp's own defaults, stated so they do not change under us.
_MAX_LINE_SIZE: Final = 8190
_MAX_FIELD_SIZE: Final = 8190
# Host header values remembered as allowed (a bound: clients choose the values).
_SEEN_HOSTS: Final = 64
# How long a connection over the cap may take to send its request before it is closed.
_BUSY_WAIT: Final = 1.0


def default_max_connections() -> int:
    """The default connection cap: 512, or half the open-file limit when that is lower.

    Each connection holds a file descriptor; the cap keeps enough of them free for the
    engines, the served files and ``audio_url`` downloads.

    Examples
    --------
    >>> 16 <= default_max_connections() <= 512
    True
    """
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no resource module on Windows
        return 512
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 512
    return max(16, min(512, soft // 2))


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """How long a client may take, and how many connections may be open at once.

    Parameters
    ----------
    header_timeout : float
        Seconds for a connection to send complete request headers, counted from when
        it opened or its previous answer ended; an idle keep-alive connection is closed
        after this long too (longer than the clients' 5 s idle expiry, so a client
        never reuses a connection the server is closing).
    body_timeout : float
        Seconds to receive a whole request body (408 ``request_timeout`` past it).
    body_idle_timeout : float
        Seconds without a byte of body before the same 408.
    max_connections : int
        Open connections at most; one more gets a 503 and is closed.

    Examples
    --------
    >>> GatewayLimits(header_timeout=5).body_timeout
    60.0
    """

    header_timeout: float = 15.0
    body_timeout: float = 60.0
    body_idle_timeout: float = 15.0
    max_connections: int = dataclasses.field(default_factory=default_max_connections)

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "body_idle_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(self.max_connections, bool) or not (
            isinstance(self.max_connections, int) and self.max_connections >= 1
        ):
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections!r}")


def host_allowed(host_header: str | None, bound_host: str) -> bool:
    """Whether a ``Host`` header names this machine: a loopback name or ``bound_host``.

    A missing header (HTTP/1.0) is allowed: browsers, the only clients a DNS-rebinding
    page can drive, always send one.

    Examples
    --------
    >>> host_allowed("localhost:8080", "127.0.0.1"), host_allowed("[::1]:80", "127.0.0.1")
    (True, True)
    >>> host_allowed("evil.example:8080", "127.0.0.1")
    False
    """
    if host_header is None:
        return True
    value = host_header.strip().lower()
    if value.startswith("["):
        name = value[1:].partition("]")[0]
    else:
        name = value.rpartition(":")[0] if value.count(":") == 1 else value
    name = name.rstrip(".")
    return bool(name) and (is_loopback_host(name) or name == bound_host.strip("[]").lower())


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
    limits : GatewayLimits or None
        Timeouts and the connection cap (default :class:`GatewayLimits`).
    allow_private_urls : bool
        Fetch ``audio_url`` from private, loopback and link-local addresses too.
    allowed_url_origins : iterable of str
        ``scheme://host[:port]`` origins fetched from whatever they resolve to.
    allow_remote : bool
        Accept any ``Host`` header (the gateway is meant to be reached by other names).

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
        limits: GatewayLimits | None = None,
        allow_private_urls: bool = False,
        allowed_url_origins: Iterable[str] = (),
        allow_remote: bool = False,
    ) -> None:
        self.core = core
        self.engines = engines
        self.stats = StatsRecorder()
        self.injector = FaultInjector(faults)
        self.files_dir = files_dir.resolve() if files_dir is not None else None
        self.limits = limits or GatewayLimits()
        self.allow_remote = allow_remote
        self.fetcher = AudioFetcher(
            UrlPolicy(
                allow_private=allow_private_urls,
                trusted_origins=frozenset(parse_origin(o) for o in allowed_url_origins),
            )
        )
        self._bound_host = "127.0.0.1"
        self._runner: web.AppRunner | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(client_max_size=MAX_MULTIPART_BODY_BYTES)
        guard = self._host_guard
        app.router.add_post("/v1/audio/transcriptions", guard(self._transcriptions))
        app.router.add_get("/v1/models", guard(self._models))
        app.router.add_get("/healthz", guard(self._healthz))
        app.router.add_get("/files/{name}", guard(self._file))
        app.router.add_get("/_admin/stats", guard(self._admin_stats))
        app.router.add_post("/_admin/reset", guard(self._admin_reset))
        app.router.add_get("/_admin/faults", guard(self._admin_faults))
        app.router.add_post("/_admin/faults", guard(self._admin_faults))
        app.on_cleanup.append(self._close_session)
        return app

    def _host_guard(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """``handler`` behind the Host check (a no-op with ``allow_remote``)."""
        if self.allow_remote:
            return handler

        # The few Host values a gateway sees, once judged good, skip the parsing.
        seen: set[str | None] = set()

        async def guarded(request: web.Request) -> web.StreamResponse:
            host = request.headers.get("Host")
            if host in seen:
                return await handler(request)
            if not host_allowed(host, self._bound_host):
                refusal = GatewayError(
                    403,
                    "host_not_allowed",
                    "the Host header does not name this gateway's address; it answers "
                    "only to loopback names unless started with allow_remote / --allow-remote",
                )
                return _response(error_reply(refusal, new_request_id()))
            if len(seen) < _SEEN_HOSTS:
                seen.add(host)
            return await handler(request)

        return guarded

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); return the bound port."""
        limits = self.limits
        runner = web.AppRunner(
            self.make_app(),
            access_log=None,  # a log line per request would cost more than the request
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            # aiohttp's keep-alive timer also runs from the moment a connection opens
            # until its first complete request, which makes it the header timeout.
            keepalive_timeout=limits.header_timeout,
            lingering_time=_LINGERING_TIME,
            max_line_size=_MAX_LINE_SIZE,
            max_field_size=_MAX_FIELD_SIZE,
            # A client that disconnects cancels its handler, which stops the engine
            # work it started (a worker mid-file is stopped) instead of finishing
            # work nobody will read.
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            site = _CappedSite(runner, host, port, max_connections=limits.max_connections)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_host = host
        addresses = runner.addresses
        self.fetcher.policy = dataclasses.replace(
            self.fetcher.policy,
            own_sockets=frozenset((str(a[0]), int(a[1])) for a in addresses),
        )
        return int(addresses[0][1])

    async def stop(self) -> None:
        """Stop listening, drop open connections and close the engines it owns."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._close_session()
        self.engines.close()

    async def _close_session(self, _app: web.Application | None = None) -> None:
        await self.fetcher.close()

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
            # The key first: an unauthenticated body is never read, let alone parsed.
            core.authorise(authorization)
            form = core.parse(content_type, await self._read_body(request))
        except GatewayError as err:
            failure = err
        self.stats.record(core.describe(form, content_type, authorization))
        try:
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
        reply = await core.arun(job, request_id, engines=self.engines.get, fetch=self.fetcher)
        if kind is FaultKind.TRUNCATED:
            reply = truncate(reply)
        return reply

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body, under the size limit and the body timeouts.

        Raises
        ------
        GatewayError
            413 over :data:`MAX_MULTIPART_BODY_BYTES` (declared or received), 408 when
            the body is too slow.
        """
        limit = MAX_MULTIPART_BODY_BYTES
        declared = request.content_length
        if declared is not None and declared > limit:
            raise payload_too_large(limit, "request body")
        content = request.content
        if content.is_eof():
            # A small body usually arrives with its headers: nothing left to wait for.
            body = await request.read()
            if len(body) > limit:
                raise payload_too_large(limit, "request body")
            return body
        limits = self.limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.body_timeout
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(min(deadline, loop.time() + limits.body_idle_timeout)) as cm:
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise payload_too_large(limit, "request body")
                    chunks.append(chunk)
                    cm.reschedule(min(deadline, loop.time() + limits.body_idle_timeout))
        except TimeoutError as err:
            raise GatewayError(
                408,
                "request_timeout",
                f"request body not received in time (at most {limits.body_timeout:g} s in "
                f"all, {limits.body_idle_timeout:g} s without data)",
            ) from err
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

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
            except RecursionError:
                failure = GatewayError(400, "validation_error", "invalid faults: nested too deep")
                return _response(error_reply(failure, new_request_id()))
            except ValueError as err:
                failure = GatewayError(400, "validation_error", f"invalid faults: {err}")
                return _response(error_reply(failure, new_request_id()))
            self.injector.set(faults)
        return web.json_response(self.injector.faults.to_dict())


class _CappedSite(web.BaseSite):
    """A TCP site that answers 503 to connections over ``max_connections``.

    aiohttp has no connection cap of its own; this wraps its protocol factory, so each
    connection over the cap costs one short-lived socket instead of a request handler.
    """

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._max_connections = max_connections

    @property
    def name(self) -> str:
        return format_base_url(self._host, self._port).removesuffix("/v1")

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        cap = self._max_connections

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= cap:
                return _BusyProtocol()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self._host, self._port)


def _busy_reply() -> bytes:
    reply = error_reply(
        GatewayError(
            503,
            "service_unavailable",
            "too many open connections to the local gateway; retry shortly",
            headers={"Retry-After": "1"},
        ),
        new_request_id(),
    )
    head = [
        "HTTP/1.1 503 Service Unavailable",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in reply.headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body


class _BusyProtocol(asyncio.Protocol):
    """Answers a connection over the cap with a 503 once it sends something, then closes."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(_BUSY_WAIT, transport.close)

    def data_received(self, data: bytes) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.write(_busy_reply())
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
