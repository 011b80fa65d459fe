"""The gateway clients: :class:`Client` (sync) and :class:`AsyncClient`.

Both share every decision through :mod:`._base_client`; each holds only its send loop, its
sleep and its transport. The async client sends its transcription requests through aiohttp
directly (:mod:`._wire`) and everything else through the httpx API on an aiohttp transport,
which is about ten times faster than httpx's own pool at dozens of requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx

from . import _base_client as B
from . import _constants as C
from . import _redact
from ._audio import AudioSource, coerce_download, normalize_audio
from ._exceptions import APIConnectionError, APIError, APITimeoutError, AudioInputError
from ._response_limit import CappedAsyncTransport, too_large
from ._types import ProviderOptions, TranscriptionResult, coerce_provider
from ._wire import AiohttpSender, LazyAiohttpTransport

__all__ = ["AsyncClient", "Client", "default_model"]

log = logging.getLogger("phaseo_notebook")

#: Called with each transient failure before it is retried (the batch engine's rate signal).
OnRetry = Callable[[APIError], None] | None

_EMBEDDED_BASE_URL = "http://embedded.invalid/v1"
_DEFAULT_MAX_CONNECTIONS = 256


def _coerce_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if timeout is None:
        return C.DEFAULT_TIMEOUT
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(f"timeout must be a positive, finite number of seconds, not {timeout!r}")
    return httpx.Timeout(float(timeout), connect=min(float(timeout), 10.0))


class _BaseClient:
    """Configuration and per-request preparation common to both clients."""

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
        allow_insecure_http: bool,
        has_transport: bool,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, not {max_retries!r}")
        self._config = B.resolve_config(api_key, base_url, allow_insecure_http=allow_insecure_http)
        self._allow_insecure_http = allow_insecure_http
        self.timeout = _coerce_timeout(timeout)
        # httpx's timeouts bound each socket operation; a server that trickles bytes could
        # otherwise hold one attempt forever, so each attempt also has a total deadline.
        t = self.timeout
        self._attempt_deadline = (
            None if t.read is None else t.read + (t.connect or 0.0) + (t.write or 0.0)
        )
        self.max_retries = max_retries
        self._has_transport = has_transport
        # Switched to "file" for the rest of this client's life once a gateway says so.
        self._upload_mode: B.UploadMode = "contract"
        self._headers = B.default_headers(self._config.api_key)
        key = self._config.api_key
        if key and len(key) >= B.MIN_REDACTED_KEY_LENGTH:
            _redact.protect_logs(key)  # the HTTP libraries' DEBUG logs print raw headers

    @property
    def base_url(self) -> str:
        """The gateway's base URL (``PHASEO_BASE_URL`` or the default)."""
        return self._config.base_url

    @property
    def upload_mode(self) -> str:
        """``"contract"`` (audio_url / audio_b64) or ``"file"`` (multipart file part)."""
        return self._upload_mode

    def __repr__(self) -> str:
        key = "set" if self._config.api_key else "not set"
        return (
            f"{type(self).__name__}(base_url={self._config.base_url!r}, api_key=<{key}>,"
            f" max_retries={self.max_retries})"
        )

    @property
    def settings(self) -> B.ClientSettings:
        """This client's configuration, picklable: ``Client.from_settings`` rebuilds it.

        Examples
        --------
        >>> import phaseo_notebook as pn
        >>> with pn.Client(max_retries=1) as c:
        ...     c.settings.max_retries
        1
        """
        return B.ClientSettings(
            api_key=self._config.api_key,
            base_url=self._config.base_url if self._config.base_url_explicit else None,
            timeout=self.timeout,
            max_retries=self.max_retries,
            allow_insecure_http=self._allow_insecure_http,
        )

    @property
    def has_custom_transport(self) -> bool:
        """True when built with ``transport=``: such a client cannot be rebuilt elsewhere."""
        return self._has_transport

    @property
    def default_model(self) -> str | None:
        """The model used when none is given (the embedded default when no gateway is set).

        Examples
        --------
        >>> import phaseo_notebook as pn
        >>> with pn.Client(base_url="http://127.0.0.1:9") as c:
        ...     c.default_model is None
        True
        """
        return B.default_model(self._config)

    def prepare(
        self,
        model: str | None = None,
        language: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
        *,
        timestamps: B.Timestamps | None = None,
        prompt: str | None = None,
        temperature: float | None = None,
    ) -> B.PreparedCall:
        """Check the per-call options once and choose the route; ``send`` then sends it.

        The route is ``"embedded"`` (answered in this process) for a ``local/*`` model when
        no base URL is set (argument or ``PHASEO_BASE_URL``) and no custom transport is
        given, ``"http"`` otherwise. A remote model with no key fails here, before any I/O.

        Raises
        ------
        ConfigurationError
            No usable model, or a remote model with no key.
        ValueError
            A malformed option, named.

        Examples
        --------
        >>> import phaseo_notebook as pn
        >>> with pn.Client() as c:
        ...     c.prepare("local/fake").route
        'embedded'
        """
        chosen = B.choose_model(model, self._config)
        if language is not None and (not isinstance(language, str) or not language.strip()):
            raise ValueError(f"language must be a non-empty string or None, not {language!r}")
        if language is not None:
            B.check_encodable("language", language)
        options = coerce_provider(provider)
        timestamps, prompt, temperature = B.check_call_options(timestamps, prompt, temperature)
        embedded = self.runs_in_process(chosen)
        if embedded:
            B.embedded_notice(chosen)
        else:
            B.check_remote_allowed(chosen, self._config)
        return B.PreparedCall(
            model=chosen,
            language=language,
            provider=options,
            route="embedded" if embedded else "http",
            timestamps=timestamps,
            prompt=prompt,
            temperature=temperature,
            provider_json=options.to_json() if options is not None else None,
            options_json=B.options_json(timestamps, prompt, temperature),
            origin=B.call_origin(self.base_url, embedded=embedded),
        )

    def runs_in_process(self, model: str | None = None) -> bool:
        """Whether a call to ``model`` (the default model when None) is answered offline, here.

        The same decision :meth:`prepare` makes, without its checks and notice.

        Examples
        --------
        >>> import phaseo_notebook as pn
        >>> with pn.Client() as c:
        ...     c.runs_in_process("local/fake"), c.runs_in_process("openai/whisper-1")
        (True, False)
        """
        return B.runs_in_process(model, self._config, custom_transport=self._has_transport)

    def to_async(self, *, max_connections: int = _DEFAULT_MAX_CONNECTIONS) -> AsyncClient:
        """An :class:`AsyncClient` with these settings and the upload mode this one learnt."""
        twin = AsyncClient.from_settings(self.settings, max_connections=max_connections)
        twin._upload_mode = self._upload_mode
        return twin

    def _give_up(self, err: APIError, attempt: int) -> bool:
        return attempt >= self.max_retries or not B.is_retryable(err)

    def _log_retry(
        self, err: APIError, attempt: int, delay: float, source: AudioSource, on_retry: OnRetry
    ) -> None:
        if on_retry is not None:
            on_retry(err)
        log.debug(
            "retrying transcription of %s (retry %d of %d) in %.2f s: %s",
            source.label,
            attempt + 1,
            self.max_retries,
            delay,
            B.describe_error(err),
        )

    def _switch_to_file(self, err: APIError, mode: B.UploadMode) -> bool:
        """Adopt file uploads if the gateway says so; True when the request should be resent.

        Decided per request from the mode it was sent in: with many requests in flight, all
        those sent before the first answer arrived get the same 400 and each is resent once.
        """
        if mode == "contract" and B.is_file_required(err):
            if self._upload_mode != "file":
                log.debug("gateway requires a multipart file part; switching this client to it")
            self._upload_mode = "file"
            return True
        return False


class Client(_BaseClient):
    """A synchronous client for the gateway's ``POST /audio/transcriptions``.

    Parameters
    ----------
    api_key
        Bearer key; falls back to ``PHASEO_API_KEY``. Never shown in ``repr`` or errors.
    base_url
        Gateway base URL; falls back to ``PHASEO_BASE_URL``, then ``https://api.phaseo.app/v1``.
        With neither a key nor a base URL, ``local/*`` models run in this process, offline.
    timeout
        Seconds (or an ``httpx.Timeout``) for one attempt.
    max_retries
        Retries of transient failures (connection errors, timeouts, 408/409/429/5xx);
        ``0`` disables them.
    transport
        An ``httpx.BaseTransport`` to send through (tests use ``httpx.MockTransport``).
    allow_insecure_http
        Allow sending the key over plain http to a host that is not this machine.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> with pn.LocalGateway() as gw, pn.Client(**gw.client_kwargs()) as client:
    ...     result = client.transcribe(pn.sample_paths()[0], model="local/fake")
    >>> isinstance(result.text, str)
    True
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = C.DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            allow_insecure_http=allow_insecure_http,
            has_transport=transport is not None,
        )
        self._http = httpx.Client(timeout=self.timeout, transport=transport)
        self._embedded_http: httpx.Client | None = None

    @classmethod
    def from_settings(cls, settings: B.ClientSettings) -> Client:
        """A client with the given settings (for example taken on another machine)."""
        return cls(**settings.kwargs())

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pools."""
        self._http.close()
        if self._embedded_http is not None:
            self._embedded_http.close()

    def _embedded(self) -> httpx.Client:
        if self._embedded_http is None:
            from ._gateway import EmbeddedTransport

            self._embedded_http = httpx.Client(transport=EmbeddedTransport(), timeout=None)
        return self._embedded_http

    def transcribe(
        self,
        audio: object,
        *,
        model: str | None = None,
        language: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
    ) -> TranscriptionResult:
        """Transcribe one audio input.

        Parameters
        ----------
        audio
            An http(s) URL, a local path, bytes, or a ``data:audio/...;base64,`` URI.
        model
            Gateway model id (``"openai/whisper-1"``, ...). Defaults to ``local/whisper-tiny.en``
            when no gateway is configured.
        language
            ISO language code of the speech, if known.
        provider
            Provider routing options (a dict or :class:`ProviderOptions`).

        Returns
        -------
        TranscriptionResult

        Raises
        ------
        AudioInputError
            The input is invalid (nothing was sent).
        APIStatusError
            The gateway refused (a subclass per status), after retries where they apply.
        APIConnectionError
            No answer, after retries.

        Examples
        --------
        >>> import phaseo_notebook as pn
        >>> with pn.Client() as client:  # no key: embedded engine, offline
        ...     text = client.transcribe(pn.sample_paths()[0]).text
        """
        return self.send(normalize_audio(audio), self.prepare(model, language, provider))

    def send(
        self, source: AudioSource, call: B.PreparedCall, on_retry: OnRetry = None
    ) -> TranscriptionResult:
        """Send one checked input with a prepared call: build, send, parse, retry.

        The file fallback happens here. ``on_retry`` is called with each transient failure
        before it is retried.

        Raises
        ------
        APIStatusError, APIConnectionError
            As :meth:`transcribe`.
        """
        embedded = call.route == "embedded"
        http = self._embedded() if embedded else self._http
        base = _EMBEDDED_BASE_URL if embedded else self.base_url
        data: bytes | None = None
        attempt = 0
        while True:
            mode: B.UploadMode = "contract" if embedded else self._upload_mode
            if data is None and not (mode == "contract" and source.kind == "url"):
                source, data = self._load(source)
            parts = _parts(source, call, mode, data)
            headers: httpx.Headers | None = None
            try:
                with B.map_transport_errors():
                    response = self._post(http, base + C.TRANSCRIPTIONS_PATH, parts, embedded)
            except APIConnectionError as exc:
                err: APIError = exc
            else:
                response = B.redact_secret(response, self._config.api_key)
                headers = response.headers
                if response.is_success:
                    try:
                        return B.parse_success(response)
                    except APIError as exc:
                        err = exc
                else:
                    err = B.error_from_response(response)
                    if self._switch_to_file(err, mode):
                        continue
            if self._give_up(err, attempt):
                raise err
            delay = B.retry_delay(attempt, headers)
            self._log_retry(err, attempt, delay, source, on_retry)
            time.sleep(delay)
            attempt += 1

    def _post(
        self, http: httpx.Client, url: str, parts: list[Any], embedded: bool
    ) -> httpx.Response:
        """One attempt, read chunk by chunk so that it ends by the attempt deadline."""
        limit = None if embedded else self._attempt_deadline
        deadline = None if limit is None else time.monotonic() + limit
        with http.stream("POST", url, files=parts, headers=self._headers) as response:
            if response.is_stream_consumed:  # a transport that answers from memory
                return response
            chunks = []
            size, cap = 0, C.MAX_RESPONSE_BYTES
            for chunk in response.iter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:  # a gateway cannot make the client hold more than this
                    raise too_large(response.status_code, cap)
                if deadline is not None and time.monotonic() > deadline:
                    raise httpx.ReadTimeout(
                        f"no complete answer within {limit:g} s", request=response.request
                    )
        # Rebuilt from the raw bytes: the new response decodes them (gzip, ...) as usual.
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=b"".join(chunks),
            request=response.request,
            extensions=response.extensions,
        )

    def _load(self, source: AudioSource) -> tuple[AudioSource, bytes]:
        """The bytes to upload; a URL is downloaded (without the API key) first."""
        if source.kind != "url":
            return source, source.read()
        assert source.url is not None
        limit = self._attempt_deadline
        deadline = None if limit is None else time.monotonic() + limit
        try:
            with self._http.stream("GET", source.url, follow_redirects=True) as response:
                _check_download_status(response, source)
                chunks = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    _check_download_size(size, source)
                    if deadline is not None and time.monotonic() > deadline:
                        raise APITimeoutError(f"could not download {source.label} in {limit:g} s")
                    chunks.append(chunk)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"could not download {source.label}: {exc}") from exc
        downloaded = coerce_download(b"".join(chunks), source)
        return downloaded, downloaded.read()


def default_model(client: Client | AsyncClient | None = None) -> str | None:
    """The model a run uses when none is given, for ``client`` or one from the environment.

    The embedded default (``local/whisper-tiny.en``) when neither a key nor a base URL is set;
    None when a gateway is configured, where there is no sensible default.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> with pn.Client(api_key="sk-test") as c:
    ...     default_model(c) is None
    True
    """
    if client is not None:
        return client.default_model
    return B.default_model(B.resolve_config(None, None))


def runs_in_process(model: str | None, client: Client | AsyncClient | None = None) -> bool:
    """:meth:`Client.runs_in_process` for ``client``, or for one from the environment.

    Examples
    --------
    >>> runs_in_process("openai/whisper-1")
    False
    """
    if client is not None:
        return client.runs_in_process(model)
    return B.runs_in_process(model, B.resolve_config(None, None))


def fetch_catalog(
    client: Client | AsyncClient | None = None, *, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The gateway's model catalog (``GET /models``): one dict per model, as it answers.

    Empty when no gateway is configured (models run offline), with a custom transport (a
    test double has no catalog), or when the gateway does not answer in ``timeout`` seconds
    or answers anything but a catalog: a missing catalog never stops a run.

    Examples
    --------
    >>> fetch_catalog(None)  # no key and no base URL: nothing to ask
    []
    """
    config = client._config if client is not None else B.resolve_config(None, None)
    if (client is not None and client._has_transport) or config.embedded:
        return []
    try:
        reply = httpx.get(
            config.base_url + "/models",
            headers=B.default_headers(config.api_key),
            timeout=timeout,
        )
        reply.raise_for_status()
        data = reply.json().get("data", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def _parts(
    source: AudioSource, call: B.PreparedCall, mode: B.UploadMode, data: bytes | None
) -> list[Any]:
    return B.build_multipart(
        source,
        model=call.model,
        language=call.language,
        provider=call.provider,
        mode=mode,
        data=data,
        timestamps=call.timestamps,
        prompt=call.prompt,
        temperature=call.temperature,
    )


def _check_download_status(response: httpx.Response, source: AudioSource) -> None:
    if not response.is_success:
        raise AudioInputError(
            f"could not download the URL (HTTP {response.status_code})", audio=source.label
        )


def _check_download_size(size: int, source: AudioSource) -> None:
    if size > C.MAX_AUDIO_BYTES:
        raise AudioInputError(
            f"download is over the {C.MAX_AUDIO_BYTES // 1_000_000} MB limit per file",
            audio=source.label,
        )


def _environment_proxies() -> bool:
    """Whether ``HTTP(S)_PROXY`` or ``ALL_PROXY`` is set.

    httpx sends through such a proxy; aiohttp, as used here, would not. With one set, every
    request stays on httpx.
    """
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


async def _read_get_body(request: httpx.Request) -> None:
    # The aiohttp transport sends a body it finds unread as chunked, even the empty body of
    # the GET that httpx builds to follow a redirect; servers that take no body with a GET
    # then read the chunk terminator as the next request. Read, it is sent as no body at all.
    if request.method == "GET":
        await request.aread()


class AsyncClient(_BaseClient):
    """The asynchronous twin of :class:`Client`; use it as an async context manager.

    Parameters are those of :class:`Client`, plus ``max_connections`` (the connection pool
    size). ``transport`` is an ``httpx.AsyncBaseTransport``; by default requests go through
    the aiohttp transport.

    Examples
    --------
    >>> import asyncio, phaseo_notebook as pn
    >>> async def main(gw):
    ...     async with pn.AsyncClient(**gw.client_kwargs()) as client:
    ...         return await client.transcribe(pn.sample_paths()[0], model="local/fake")
    >>> with pn.LocalGateway() as gw:
    ...     result = asyncio.run(main(gw))
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = C.DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        allow_insecure_http: bool = False,
        max_connections: int = _DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            allow_insecure_http=allow_insecure_http,
            has_transport=transport is not None,
        )
        # Transcription POSTs with the default transport go through aiohttp directly (see
        # _wire); httpx keeps downloads and custom transports.
        self._wire: AiohttpSender | None = None
        if transport is None and not _environment_proxies():
            self._wire = AiohttpSender(self._headers, self.timeout, max_connections)
        if transport is None:
            transport = LazyAiohttpTransport(
                httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                )
            )
        self._http = httpx.AsyncClient(
            timeout=self.timeout,
            transport=CappedAsyncTransport(transport, C.MAX_RESPONSE_BYTES),
            event_hooks={"request": [_read_get_body]},
        )
        self._embedded_http: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(
        cls, settings: B.ClientSettings, *, max_connections: int = _DEFAULT_MAX_CONNECTIONS
    ) -> AsyncClient:
        """A client with the given settings (for example taken on another machine)."""
        return cls(**settings.kwargs(), max_connections=max_connections)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pools."""
        await self._http.aclose()
        if self._wire is not None:
            await self._wire.aclose()
        if self._embedded_http is not None:
            await self._embedded_http.aclose()

    def _embedded(self) -> httpx.AsyncClient:
        if self._embedded_http is None:
            from ._gateway import EmbeddedTransport

            self._embedded_http = httpx.AsyncClient(transport=EmbeddedTransport(), timeout=None)
        return self._embedded_http

    async def transcribe(
        self,
        audio: object,
        *,
        model: str | None = None,
        language: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
    ) -> TranscriptionResult:
        """Transcribe one audio input; see :meth:`Client.transcribe`.

        Examples
        --------
        >>> async def first_text(client, clip):
        ...     return (await client.transcribe(clip, model="local/fake")).text
        """
        return await self.send(normalize_audio(audio), self.prepare(model, language, provider))

    async def send(
        self, source: AudioSource, call: B.PreparedCall, on_retry: OnRetry = None
    ) -> TranscriptionResult:
        """Send one checked input with a prepared call; see :meth:`Client.send`."""
        embedded = call.route == "embedded"
        http = self._embedded() if embedded else self._http
        wire = None if embedded else self._wire
        base = _EMBEDDED_BASE_URL if embedded else self.base_url
        url = base + C.TRANSCRIPTIONS_PATH
        data: bytes | None = None
        attempt = 0
        while True:
            mode: B.UploadMode = "contract" if embedded else self._upload_mode
            if data is None and not (mode == "contract" and source.kind == "url"):
                source, data = await self._load(source)
            parts = _parts(source, call, mode, data)
            headers: httpx.Headers | None = None
            try:
                with B.map_transport_errors():
                    async with asyncio.timeout(None if embedded else self._attempt_deadline):
                        if wire is not None:
                            response = await wire.post(url, wire.body(call, mode, parts))
                        else:
                            response = await http.post(url, files=parts, headers=self._headers)
                            # httpx binds a response and its stream to each other; that cycle
                            # would keep the request, and so the audio it carries, alive until
                            # the cyclic GC runs. The body is already read, so dropping the
                            # stream frees the audio.
                            response.stream = httpx.ByteStream(b"")
            except APIConnectionError as exc:
                err: APIError = exc
            else:
                response = B.redact_secret(response, self._config.api_key)
                headers = response.headers
                if response.is_success:
                    try:
                        return B.parse_success(response)
                    except APIError as exc:
                        err = exc
                else:
                    err = B.error_from_response(response)
                    if self._switch_to_file(err, mode):
                        continue
            if self._give_up(err, attempt):
                raise err
            delay = B.retry_delay(attempt, headers)
            self._log_retry(err, attempt, delay, source, on_retry)
            await asyncio.sleep(delay)
            attempt += 1

    async def _load(self, source: AudioSource) -> tuple[AudioSource, bytes]:
        """The bytes to upload; files are read off the event loop, URLs downloaded without the key."""
        if source.kind != "url":
            if source.data is not None:
                return source, source.data
            if source.size is not None and source.size <= C.INLINE_READ_BYTES:
                # A small file reads in microseconds from the page cache: cheaper than the
                # hand-off to a thread and back, which costs about as much as the request.
                return source, source.read()
            return source, await asyncio.to_thread(source.read)
        assert source.url is not None
        limit = self._attempt_deadline
        try:
            async with (
                asyncio.timeout(limit),
                self._http.stream("GET", source.url, follow_redirects=True) as response,
            ):
                _check_download_status(response, source)
                chunks = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    _check_download_size(size, source)
                    chunks.append(chunk)
        except TimeoutError as exc:
            raise APITimeoutError(f"could not download {source.label} in {limit:g} s") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"could not download {source.label}: {exc}") from exc
        downloaded = coerce_download(b"".join(chunks), source)
        return downloaded, downloaded.read()
