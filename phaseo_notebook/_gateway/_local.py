"""`LocalGateway`: a real local gateway on 127.0.0.1, in a background thread or a subprocess.

In a thread (the default) it shares the caller's process: starting takes a few
milliseconds and :meth:`LocalGateway.stats` reads the counters directly. With
``process=True`` it runs ``python -m phaseo_notebook serve`` instead, so a benchmark
measures the client's CPU without the server's; stats, faults and reset then go through
the ``/_admin`` routes, with the same results.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final
from urllib.parse import quote

import httpx

from phaseo_notebook._gateway._app import MODES, AudioLimits, GatewayCore, Mode, build_models
from phaseo_notebook._gateway._charges import ANY_MODEL, PriceSetting, build_prices
from phaseo_notebook._gateway._faults import Faults
from phaseo_notebook._gateway._server import (
    EngineSet,
    GatewayLimits,
    GatewayServer,
    check_bind_host,
    format_base_url,
)
from phaseo_notebook._gateway._stats import GatewayStats
from phaseo_notebook._net import is_loopback_host

__all__ = ["LocalGateway", "generate_api_key", "serve_forever"]

#: How long :meth:`LocalGateway.start` waits for the server to listen.
STARTUP_TIMEOUT: Final = 30.0
_STOP_TIMEOUT: Final = 5.0
_URL_LINE: Final = re.compile(r"(http://\S+/v1)\b")
# The checkout that holds this package, so a subprocess imports the same code even
# when the package is not installed (tests run from a source tree).
_PACKAGE_ROOT: Final = Path(__file__).resolve().parents[2]


class _Generate:
    """The default of ``api_key``: generate a random key (``None`` means no auth)."""

    def __repr__(self) -> str:
        return "<generated>"


_GENERATE: Final = _Generate()


def generate_api_key() -> str:
    """A random key for a local gateway, ``pk-local-`` + 32 URL-safe characters.

    Examples
    --------
    >>> generate_api_key().startswith("pk-local-")
    True
    """
    return "pk-local-" + secrets.token_urlsafe(24)


def _make_server(
    *,
    engine: str,
    mode: Mode,
    api_key: str | None,
    models: Mapping[str, str] | Iterable[str] | None,
    faults: Faults | None,
    files_dir: str | os.PathLike[str] | None,
    workers: int | None,
    price_per_minute: PriceSetting = None,
    limits: AudioLimits | None = None,
    server_limits: GatewayLimits | None = None,
    allow_private_urls: bool = False,
    allowed_url_origins: Iterable[str] = (),
    allow_remote: bool = False,
    list_prices: bool = True,
) -> GatewayServer:
    core = GatewayCore(
        mode=mode,
        api_key=api_key,
        models=build_models(models, engine),
        price_per_minute=price_per_minute,
        limits=limits,
        list_prices=list_prices,
    )
    engines = EngineSet(workers)
    # Creating the main engine now makes a missing optional dependency fail at start,
    # not on the first request.
    engines.get(engine)
    directory = Path(files_dir) if files_dir is not None else None
    if directory is not None and not directory.is_dir():
        raise ValueError(f"files_dir {str(directory)!r} is not a directory")
    return GatewayServer(
        core,
        engines,
        faults=faults,
        files_dir=directory,
        limits=server_limits,
        allow_private_urls=allow_private_urls,
        allowed_url_origins=allowed_url_origins,
        allow_remote=allow_remote,
    )


async def serve_forever(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    engine: str = "fake",
    mode: Mode = "strict",
    api_key: str | None = None,
    models: Mapping[str, str] | Iterable[str] | None = None,
    faults: Faults | None = None,
    files_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    allow_remote: bool = False,
    allow_private_urls: bool = False,
    allowed_url_origins: Iterable[str] = (),
    server_limits: GatewayLimits | None = None,
    on_ready: Callable[[str], None] | None = None,
    price_per_minute: PriceSetting = None,
    limits: AudioLimits | None = None,
) -> None:
    """Serve a gateway until SIGINT or SIGTERM (what ``phaseo-notebook serve`` runs).

    Parameters are those of :class:`LocalGateway`; ``on_ready`` is called with the base
    URL once the server listens.

    Raises
    ------
    ValueError
        On a non-loopback ``host`` without ``allow_remote``, or a bad setting.
    OSError
        If the address cannot be bound.
    """
    check_bind_host(host, allow_remote=allow_remote)
    server = _make_server(
        engine=engine,
        mode=mode,
        api_key=api_key,
        models=models,
        faults=faults,
        files_dir=files_dir,
        workers=workers,
        price_per_minute=price_per_minute,
        limits=limits,
        server_limits=server_limits,
        allow_private_urls=allow_private_urls,
        allowed_url_origins=allowed_url_origins,
        allow_remote=allow_remote,
    )
    bound = await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        # Not available on Windows loops; Ctrl-C still ends asyncio.run() there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(format_base_url(host, bound))
        await stop.wait()
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await server.stop()


class LocalGateway:
    """A local speech-to-text gateway on 127.0.0.1: the product's offline server and the
    test double of every HTTP test.

    Serves ``POST /v1/audio/transcriptions`` with the contract's fields and the live
    gateway's JSON, ``GET /v1/models``, ``GET /files/{name}`` (files of ``files_dir``),
    ``GET /healthz`` and the ``/_admin`` routes. Use it as a context manager, or call
    :meth:`start` and :meth:`close`.

    Parameters
    ----------
    engine : {"fake", "pocketsphinx", "whisper"}
        Engine created at start, and serving the ``models`` names given without an
        engine. ``local/fake``, ``local/whisper-tiny.en`` and ``local/pocketsphinx`` are
        always served by their own. The whisper engine's model directory can be changed
        with ``PHASEO_WHISPER_MODEL_DIR``.
    mode : {"strict", "live", "lenient"}
        ``strict``: only the contract's fields (``audio_url``/``audio_b64``); ``live``:
        like the live gateway, a multipart ``file`` part is required; ``lenient``: any.
    api_key : str or None
        The key clients must send as ``Authorization: Bearer``. By default a random
        ``pk-local-...`` key; ``None`` accepts every request.
    host : str
        Address to bind; must be loopback unless ``allow_remote``.
    port : int
        Port to bind; 0 lets the OS pick a free one.
    faults : Faults or None
        Initial fault injection (see :meth:`set_faults`).
    models : Mapping of str to str, iterable of str, or None
        Extra model names: a mapping gives each its engine (``{"openai/whisper-1":
        "fake"}``), a list of names uses ``engine``. Any other model name is a 400
        ``unsupported_model_or_endpoint``, as on the live gateway.
    files_dir : path or None
        Directory served at ``/files/{name}`` (see :meth:`file_url`).
    workers : int or None
        Engine worker processes for this gateway alone; ``None`` shares the
        process-wide engine.
    process : bool
        Run the server in a subprocess (``python -m phaseo_notebook serve``) rather than
        in a background thread.
    allow_remote : bool
        Allow a non-loopback ``host``, and answer requests whatever their ``Host``
        header says (otherwise only loopback names and the bound address are accepted,
        so a web page whose name was re-pointed at 127.0.0.1 gets a 403).
    price_per_minute : float, Mapping of str to float, or None
        What answers cost, in USD per minute of the engine's audio duration: one price for
        every model, or per model (key ``"*"``: the rest). Answers report it as
        ``cost_nanos``/``currency`` and ``GET /v1/models`` lists it as ``pricing``.
        ``None`` (default): every answer costs 0.
    max_audio_bytes : int or None
        Refuse audio larger than this with a 413 ``payload_too_large`` carrying
        ``max_bytes``, as live does (lowers the 25 MB cap; thread mode only).
    max_audio_seconds : float or None
        Refuse audio longer than this with a 400 whose description says it is longer
        than the maximum, as gpt-4o-transcribe does (thread mode only).
    limits : Mapping of str to (int or None, float or None), or None
        ``{model: (max_bytes, max_seconds)}``: per-model limits replacing the two above.
    allow_private_urls : bool
        Let ``audio_url`` point at loopback, private, link-local and metadata addresses.
        Off by default: whoever can send a request could otherwise make the gateway read
        from the machine and network it runs in. Its own ``/files/`` route is always
        allowed.
    allowed_url_origins : iterable of str
        ``scheme://host[:port]`` origins that ``audio_url`` may use whatever they resolve
        to (a media server on the local network).
    server_limits : GatewayLimits or None
        Header and body timeouts and the connection cap (see
        :class:`~phaseo_notebook._gateway._server.GatewayLimits`).
    list_prices : bool
        List each model's ``pricing`` in ``GET /v1/models`` (default). ``False`` serves a
        catalog without prices, as the live gateway's is, while answers still report
        their cost (thread mode only).

    Examples
    --------
    >>> import httpx
    >>> with LocalGateway(mode="lenient", api_key=None) as gw:
    ...     r = httpx.post(gw.url + "/audio/transcriptions",
    ...                    data={"model": "local/fake", "audio_b64": "UklGRg=="})
    ...     r.json()["object"], gw.stats().requests
    ('transcription', 1)
    """

    def __init__(
        self,
        *,
        engine: str = "fake",
        mode: Mode = "strict",
        api_key: str | _Generate | None = _GENERATE,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        models: Mapping[str, str] | Iterable[str] | None = None,
        files_dir: str | os.PathLike[str] | None = None,
        workers: int | None = None,
        process: bool = False,
        allow_remote: bool = False,
        price_per_minute: PriceSetting = None,
        max_audio_bytes: int | None = None,
        max_audio_seconds: float | None = None,
        limits: Mapping[str, tuple[int | None, float | None]] | None = None,
        allow_private_urls: bool = False,
        allowed_url_origins: Iterable[str] = (),
        server_limits: GatewayLimits | None = None,
        list_prices: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        check_bind_host(host, allow_remote=allow_remote)
        self.api_key: str | None = generate_api_key() if isinstance(api_key, _Generate) else api_key
        self.engine = engine
        self.mode: Mode = mode
        self.host = host
        self.process = process
        self._requested_port = port
        self._faults = faults
        self._models = build_models(models, engine)
        # Checked now, so a bad price fails here rather than in the server thread or process.
        build_prices(price_per_minute, self._models)
        self._prices: PriceSetting = (
            dict(price_per_minute) if isinstance(price_per_minute, Mapping) else price_per_minute
        )
        self._files_dir = Path(files_dir) if files_dir is not None else None
        self._workers = workers
        self._allow_remote = allow_remote
        self._limits = _audio_limits(max_audio_bytes, max_audio_seconds, limits, process=process)
        self._allow_private_urls = allow_private_urls
        self._allowed_url_origins = tuple(allowed_url_origins)
        self._server_limits = server_limits
        if process and not list_prices:
            raise ValueError("list_prices=False is not supported with process=True")
        self._list_prices = list_prices
        self._port: int | None = None
        # Thread mode.
        self._server: GatewayServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Process mode.
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._admin: httpx.Client | None = None

    # -- properties ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port.

        Raises
        ------
        RuntimeError
            If the gateway is not running.
        """
        if self._port is None:
            raise RuntimeError("the local gateway is not running: call start() or use `with`")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT/v1``."""
        return format_base_url(self.host, self.port)

    @property
    def running(self) -> bool:
        """Whether the gateway has started and not been closed."""
        return self._port is not None

    def file_url(self, name: str) -> str:
        """The ``http://.../files/{name}`` URL that serves ``files_dir / name``.

        Examples
        --------
        >>> with LocalGateway(files_dir=".") as gw:  # doctest: +SKIP
        ...     gw.file_url("english.wav")
        'http://127.0.0.1:40123/files/english.wav'
        """
        if self._files_dir is None:
            raise ValueError("this gateway has no files_dir to serve files from")
        return self.url.removesuffix("/v1") + "/files/" + quote(name, safe="")

    def client_kwargs(self) -> dict[str, Any]:
        """``{"api_key": ..., "base_url": ...}`` for a client of this gateway.

        On a non-loopback host (``allow_remote``) it adds ``allow_insecure_http=True``,
        since a client refuses to send a key over plain http to another machine.
        """
        kwargs: dict[str, Any] = {"api_key": self.api_key, "base_url": self.url}
        if not is_loopback_host(self.host):
            kwargs["allow_insecure_http"] = True
        return kwargs

    def __repr__(self) -> str:
        where = self.url if self.running else "not running"
        return (
            f"LocalGateway({where}, engine={self.engine!r}, mode={self.mode!r}, "
            f"auth={self.api_key is not None}, process={self.process})"
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalGateway:
        """Start serving; returns once the server accepts connections.

        Raises
        ------
        RuntimeError
            If it is already running, or the server did not come up.
        """
        if self.running:
            raise RuntimeError("the local gateway is already running")
        if self.process:
            self._start_process()
        else:
            self._start_thread()
        return self

    def close(self) -> None:
        """Stop serving and release everything; safe to call twice."""
        if self._thread is not None:
            self._stop_thread()
        if self._proc is not None:
            self._stop_process()
        self._port = None

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- control -------------------------------------------------------------------------

    def stats(self) -> GatewayStats:
        """A snapshot of the transcription counters (see :class:`GatewayStats`)."""
        if self._server is not None:
            return self._server.stats.snapshot()
        return GatewayStats.from_dict(self._admin_call("GET", "/_admin/stats"))

    def reset_stats(self) -> None:
        """Zero the counters."""
        if self._server is not None:
            self._server.stats.reset()
        else:
            self._admin_call("POST", "/_admin/reset")

    def set_faults(self, faults: Faults | None) -> None:
        """Replace the fault injection (``None`` for none); applies to the next request.

        Restarts the ``fail_first`` count and the seeded random sequence.
        """
        faults = faults or Faults()
        self._faults = faults
        if self._server is not None:
            self._server.injector.set(faults)
        elif self._proc is not None:
            self._admin_call("POST", "/_admin/faults", faults.to_dict())

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults or Faults()

    # -- thread mode ---------------------------------------------------------------------

    def _start_thread(self) -> None:
        server = _make_server(
            engine=self.engine,
            mode=self.mode,
            api_key=self.api_key,
            models=self._models,
            faults=self._faults,
            files_dir=self._files_dir,
            workers=self._workers,
            price_per_minute=self._prices,
            limits=self._limits,
            server_limits=self._server_limits,
            allow_private_urls=self._allow_private_urls,
            allowed_url_origins=self._allowed_url_origins,
            allow_remote=self._allow_remote,
            list_prices=self._list_prices,
        )
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        outcome: list[BaseException | int] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                outcome.append(
                    loop.run_until_complete(server.start(self.host, self._requested_port))
                )
            except BaseException as err:
                outcome.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                _cancel_leftovers(loop)
                loop.close()

        thread = threading.Thread(target=run, name="phaseo-local-gateway", daemon=True)
        thread.start()
        if not ready.wait(STARTUP_TIMEOUT):
            raise RuntimeError(f"the local gateway did not start within {STARTUP_TIMEOUT:g} s")
        result = outcome[0]
        if isinstance(result, BaseException):
            thread.join()
            raise result
        self._server, self._loop, self._thread, self._port = server, loop, thread, result

    def _stop_thread(self) -> None:
        server, loop, thread = self._server, self._loop, self._thread
        self._server = self._loop = self._thread = None
        assert server is not None and loop is not None and thread is not None
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(server.stop(), loop)
            try:
                future.result(_STOP_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT)

    # -- process mode --------------------------------------------------------------------

    def _start_process(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "phaseo_notebook",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self._requested_port),
            "--engine",
            self.engine,
            "--mode",
            self.mode,
        ]
        for name, engine in self._models.items():
            cmd += ["--model", f"{name}={engine}"]
        if self.api_key is None:
            cmd.append("--no-auth")
        if self._files_dir is not None:
            cmd += ["--files-dir", str(self._files_dir)]
        if self._workers is not None:
            cmd += ["--workers", str(self._workers)]
        if self._allow_remote:
            cmd.append("--allow-remote")
        if isinstance(self._prices, Mapping):
            for name, price in self._prices.items():
                spec = repr(float(price)) if name == ANY_MODEL else f"{name}={float(price)!r}"
                cmd += ["--price-per-minute", spec]
        elif self._prices is not None:
            cmd += ["--price-per-minute", repr(float(self._prices))]
        if self._allow_private_urls:
            cmd.append("--allow-private-urls")
        for origin in self._allowed_url_origins:
            cmd += ["--allow-url-origin", origin]
        if self._server_limits is not None:
            limits = self._server_limits
            cmd += [
                "--header-timeout",
                repr(limits.header_timeout),
                "--body-timeout",
                repr(limits.body_timeout),
                "--body-idle-timeout",
                repr(limits.body_idle_timeout),
                "--max-connections",
                str(limits.max_connections),
            ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p
        )
        # The key travels in the environment: a command line is visible to every user.
        env.pop("PHASEO_LOCAL_API_KEY", None)
        if self.api_key is not None:
            env["PHASEO_LOCAL_API_KEY"] = self.api_key
        # Closed by _stop_process, which every exit path reaches.
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )
        try:
            url = self._read_url_line(self._proc)
            self._port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
            self._admin = httpx.Client(
                base_url=url.removesuffix("/v1"),
                headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else None,
                timeout=10.0,
            )
            self._admin_call("GET", "/healthz")
            if self._faults is not None:
                self._admin_call("POST", "/_admin/faults", self._faults.to_dict())
        except BaseException:
            self._stop_process()
            raise

    def _read_url_line(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    line = proc.stdout.readline()
                    match = _URL_LINE.search(line)
                    if match:
                        return match.group(1)
                    if not line:
                        break
                if proc.poll() is not None:
                    break
        raise RuntimeError(f"the local gateway subprocess did not start: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].strip() or "(no output)"

    def _admin_call(self, method: str, path: str, payload: Any = None) -> Any:
        if self._admin is None:
            raise RuntimeError("the local gateway is not running: call start() or use `with`")
        response = self._admin.request(method, path, json=payload)
        response.raise_for_status()
        return response.json()

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _audio_limits(
    max_bytes: int | None,
    max_seconds: float | None,
    per_model: Mapping[str, tuple[int | None, float | None]] | None,
    *,
    process: bool,
) -> AudioLimits | None:
    if max_bytes is None and max_seconds is None and not per_model:
        return None
    if process:
        # `serve` has no flags for them yet: refusing beats silently serving without limits.
        raise ValueError("audio limits are not supported with process=True")
    return AudioLimits(max_bytes, max_seconds, dict(per_model or {}))


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and reap tasks still pending, so closing the loop warns about none."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
