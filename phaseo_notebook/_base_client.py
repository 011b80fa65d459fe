"""Pure decisions shared by :class:`Client` and :class:`AsyncClient`.

Nothing here does I/O: configuration, request building, response parsing, error mapping,
the retry decision and the backoff delay. The sync and async clients hold only their send
loop and their sleep, so both behave identically by construction.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import email.utils
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from . import _constants as C
from . import _redact
from ._audio import AudioSource
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ResponseTooLargeError,
    UnknownModelError,
    UnprocessableEntityError,
)
from ._net import is_loopback_host
from ._types import ProviderOptions, TranscriptionResult
from ._version import __version__

log = logging.getLogger("phaseo_notebook")

UploadMode = Literal["contract", "file"]
#: Where a prepared call goes: the gateway over HTTP, or the engine in this process.
Route = Literal["http", "embedded"]
Timestamps = Literal["segment", "word"]
TIMESTAMP_GRANULARITIES: tuple[str, ...] = ("segment", "word")

_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """Settings after keyword arguments and environment fallbacks are applied."""

    api_key: str | None
    base_url: str
    #: True when the caller (argument or environment) chose the base URL.
    base_url_explicit: bool

    @property
    def embedded(self) -> bool:
        """No gateway configured at all: local models run in-process."""
        return self.api_key is None and not self.base_url_explicit


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything that rebuilds a client elsewhere (a Dask worker, an async twin); picklable.

    Environment fallbacks are already applied where the settings were taken, so a worker
    with other environment variables builds the same client. ``base_url`` is None when the
    default gateway applies (so a key-less worker still runs ``local/*`` models in-process).

    Examples
    --------
    >>> import pickle
    >>> s = ClientSettings(api_key=None, base_url=None, timeout=httpx.Timeout(5.0))
    >>> pickle.loads(pickle.dumps(s)) == s
    True
    """

    api_key: str | None
    base_url: str | None
    timeout: httpx.Timeout
    max_retries: int = C.DEFAULT_MAX_RETRIES
    allow_insecure_http: bool = False

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``Client(...)`` / ``AsyncClient(...)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """One checked set of per-request options and the route they take; see ``prepare``.

    Built once per run by ``Client.prepare`` / ``AsyncClient.prepare`` and sent with any
    number of sources by ``send``. Options left at None are not sent.

    Attributes
    ----------
    model, language, provider
        As sent (``provider`` parsed; ``provider_json`` its canonical JSON).
    route
        ``"http"`` (the configured gateway) or ``"embedded"`` (answered in this process).
    timestamps, prompt, temperature
        Optional request fields: ``timestamp_granularities``, ``prompt``, ``temperature``.
    """

    model: str
    language: str | None = None
    provider: ProviderOptions | None = None
    route: Route = "http"
    timestamps: Timestamps | None = None
    prompt: str | None = None
    temperature: float | None = None
    provider_json: str | None = None
    #: Canonical JSON of the optional fields that are set (None when none is): they change
    #: the answer, so they are part of the cache key.
    options_json: str | None = None
    #: Who answers (:func:`call_origin`): part of the cache key.
    origin: str = ""

    @property
    def embedded(self) -> bool:
        """True when the call is answered in this process."""
        return self.route == "embedded"

    def with_language(self, language: str | None) -> PreparedCall:
        """The same call for another (already checked) language."""
        if language == self.language:
            return self
        return dataclasses.replace(self, language=language)


def check_call_options(
    timestamps: object, prompt: object, temperature: object
) -> tuple[Timestamps | None, str | None, float | None]:
    """Check the optional request fields once; returns them as sent.

    Raises
    ------
    ValueError
        Naming the option: ``timestamps`` not ``"segment"``/``"word"``, ``prompt`` not a
        string, ``temperature`` not a number in ``[0, 1]``.

    Examples
    --------
    >>> check_call_options("word", None, 0)
    ('word', None, 0.0)
    """
    if timestamps is not None and timestamps not in TIMESTAMP_GRANULARITIES:
        raise ValueError(f"timestamps must be 'segment', 'word' or None, not {timestamps!r}")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, not {type(prompt).__name__}")
        check_encodable("prompt", prompt)
    temp: float | None = None
    if temperature is not None:
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or not 0 <= temperature <= 1
        ):
            raise ValueError(f"temperature must be a number from 0 to 1, not {temperature!r}")
        temp = float(temperature)
    return timestamps, prompt, temp  # type: ignore[return-value]


def options_json(
    timestamps: Timestamps | None, prompt: str | None, temperature: float | None
) -> str | None:
    """Canonical JSON of the optional fields that are set; None when none is.

    Examples
    --------
    >>> options_json(None, None, None) is None, options_json("word", None, 0.0)
    (True, '{"temperature":0.0,"timestamps":"word"}')
    """
    chosen = {
        name: value
        for name, value in (
            ("timestamps", timestamps),
            ("prompt", prompt),
            ("temperature", temperature),
        )
        if value is not None
    }
    return json.dumps(chosen, sort_keys=True, separators=(",", ":")) if chosen else None


#: The origin of calls answered by the engine in this process.
EMBEDDED_ORIGIN = "embedded:"


def call_origin(base_url: str, *, embedded: bool = False) -> str:
    """Who answers a call: ``scheme://host:port/path`` of the gateway, or ``"embedded:"``.

    Part of the cache key, so the same model name at two gateways (a local test double
    and the real one, say) never shares cached answers. Host and scheme are lowercased and
    the default port made explicit, so spellings of one gateway share a key.

    Examples
    --------
    >>> call_origin("HTTPS://API.phaseo.app/v1/")
    'https://api.phaseo.app:443/v1'
    >>> call_origin("http://127.0.0.1:8080/v1"), call_origin("", embedded=True)
    ('http://127.0.0.1:8080/v1', 'embedded:')
    """
    if embedded:
        return EMBEDDED_ORIGIN
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


def default_model(config: ResolvedConfig) -> str | None:
    """The model used when none is given: the embedded default with no gateway configured.

    Examples
    --------
    >>> default_model(ResolvedConfig(api_key=None, base_url="https://x", base_url_explicit=False))
    'local/whisper-tiny.en'
    """
    return C.LOCAL_DEFAULT_MODEL if config.embedded else None


def resolve_config(
    api_key: str | None, base_url: str | None, *, allow_insecure_http: bool = False
) -> ResolvedConfig:
    """Apply environment fallbacks (only where the argument is not given) and check them.

    Raises
    ------
    ConfigurationError
        For a malformed base URL, or an API key that would go over plain http to a host
        that is not this machine (unless ``allow_insecure_http``).
    """
    key = api_key if api_key is not None else os.environ.get(C.ENV_API_KEY) or None
    explicit = base_url is not None or bool(os.environ.get(C.ENV_BASE_URL))
    url = base_url if base_url is not None else os.environ.get(C.ENV_BASE_URL) or C.DEFAULT_BASE_URL
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url {url!r} is not an http(s) URL")
    insecure = key and parts.scheme == "http" and not is_loopback_host(parts.hostname)
    if insecure and not allow_insecure_http:
        raise ConfigurationError(
            f"refusing to send the API key over plain http to {parts.hostname!r}; use https,"
            " or pass allow_insecure_http=True if this network is trusted"
        )
    return ResolvedConfig(api_key=key, base_url=url, base_url_explicit=explicit)


def is_local_model(model: str) -> bool:
    """Models answered by the embedded engine when no gateway is configured."""
    return model.startswith(C.LOCAL_MODEL_PREFIX)


def runs_in_process(
    model: str | None, config: ResolvedConfig, *, custom_transport: bool = False
) -> bool:
    """Whether a call to ``model`` (the default when None) is answered in this process.

    A ``local/*`` model with no base URL configured and no custom transport: the route
    :meth:`Client.prepare` picks.

    Examples
    --------
    >>> cfg = ResolvedConfig(api_key=None, base_url="https://x", base_url_explicit=False)
    >>> runs_in_process("local/fake", cfg), runs_in_process("openai/whisper-1", cfg)
    (True, False)
    """
    chosen = model or default_model(config)
    return (
        chosen is not None
        and not custom_transport
        and is_local_model(chosen)
        and not config.base_url_explicit
    )


def choose_model(model: str | None, config: ResolvedConfig) -> str:
    """The model to use: the given one, or the embedded default when nothing is configured.

    Raises
    ------
    ConfigurationError
        No model given while a gateway is configured.
    """
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"model must be a non-empty string, not {model!r}")
        check_encodable("model", model)
        return model
    chosen = default_model(config)
    if chosen is not None:
        return chosen
    raise ConfigurationError(
        "no model given: pass model='openai/whisper-1' (or another gateway model),"
        f" or model={C.LOCAL_DEFAULT_MODEL!r} for the embedded offline engine"
    )


def check_encodable(name: str, value: str) -> None:
    """Refuse text that cannot go on the wire as UTF-8 (a lone surrogate, say).

    Raises
    ------
    ConfigurationError
        Naming the option and the offending character.

    Examples
    --------
    >>> check_encodable("language", "en")
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = value[err.start : err.end]
        raise ConfigurationError(
            f"{name} {value!r} cannot be sent: {bad!r} at position {err.start} is not"
            " valid Unicode text"
        ) from None


def check_remote_allowed(model: str, config: ResolvedConfig) -> None:
    """Fail before any request when a remote model is asked for with no key to pay for it."""
    if config.api_key:
        return
    host = urlsplit(config.base_url).hostname or ""
    if is_loopback_host(host):
        return  # a local gateway started without auth
    raise ConfigurationError(
        f"model {model!r} needs the gateway but no API key is set: set the environment variable"
        f" {C.ENV_API_KEY} (or pass api_key=...), or use model={C.LOCAL_DEFAULT_MODEL!r}"
        " for the embedded offline engine"
    )


_notice_shown = False


def embedded_notice(model: str) -> None:
    """Say once per process that transcription runs offline in this process."""
    global _notice_shown
    if _notice_shown:
        return
    _notice_shown = True
    print(
        f"phaseo-notebook: no API key or base URL set; transcribing with {model} in this"
        f" process (offline). Set {C.ENV_API_KEY} to use the gateway.",
        file=sys.stderr,
    )


#: The answer format that carries ``segments`` and ``words``.
VERBOSE_JSON = "verbose_json"


def granularities_field(timestamps: Timestamps) -> str:
    """The ``timestamp_granularities`` form value for a ``timestamps`` option.

    ``"word"`` asks for segments as well, so a run with word times still gets its
    segment column. A list travels as one field holding a JSON list: the live gateway
    sends nested values in a form as JSON strings and silently drops bracketed keys, so
    OpenAI's ``timestamp_granularities[]`` (one part per value) would never arrive.

    Examples
    --------
    >>> granularities_field("segment"), granularities_field("word")
    ('segment', '["segment","word"]')
    """
    if timestamps == "segment":
        return "segment"
    return json.dumps(["segment", timestamps], separators=(",", ":"))


def default_headers(api_key: str | None) -> dict[str, str]:
    """Headers sent with every transcription request."""
    headers = {"Accept": "application/json", "User-Agent": f"phaseo-notebook/{__version__}"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def build_multipart(
    source: AudioSource,
    *,
    model: str,
    language: str | None,
    provider: ProviderOptions | None,
    mode: UploadMode,
    data: bytes | None = None,
    timestamps: Timestamps | None = None,
    prompt: str | None = None,
    temperature: float | None = None,
) -> list[tuple[str, tuple[str | None, str | bytes] | tuple[str, bytes, str]]]:
    """The multipart/form-data parts of one transcription request.

    Parameters
    ----------
    source
        The validated input.
    mode
        ``"contract"``: ``audio_url`` for URLs, ``audio_b64`` otherwise (the API contract).
        ``"file"``: a ``file`` part with a filename and an audio MIME type (the live gateway).
    data
        The audio bytes, for everything but a URL in contract mode.
    timestamps, prompt, temperature
        Optional fields, sent only when given. ``timestamps`` asks for
        ``response_format=verbose_json`` and ``timestamp_granularities`` (see
        :func:`granularities_field`).

    Examples
    --------
    >>> from phaseo_notebook._audio import normalize_audio
    >>> src = normalize_audio("https://example.com/a.wav")
    >>> build_multipart(src, model="m", language=None, provider=None, mode="contract")
    [('model', (None, 'm')), ('audio_url', (None, 'https://example.com/a.wav'))]
    """
    parts: list[tuple[str, tuple[str | None, str | bytes] | tuple[str, bytes, str]]] = [
        ("model", (None, model))
    ]
    if mode == "contract" and source.kind == "url":
        assert source.url is not None
        parts.append(("audio_url", (None, source.url)))
    else:
        if data is None:
            raise ValueError("audio bytes are required for this request")
        if mode == "contract":
            parts.append(("audio_b64", (None, base64.b64encode(data).decode("ascii"))))
        else:
            parts.append(("file", (source.filename, data, source.mime)))
    if language:
        parts.append(("language", (None, language)))
    if provider is not None:
        parts.append(("provider", (None, provider.to_json())))
    if timestamps is not None:
        parts.append(("response_format", (None, VERBOSE_JSON)))
        parts.append(("timestamp_granularities", (None, granularities_field(timestamps))))
    if prompt is not None:
        parts.append(("prompt", (None, prompt)))
    if temperature is not None:
        parts.append(("temperature", (None, repr(temperature))))
    return parts


#: What replaces the API key wherever an answer echoes it.
REDACTED = _redact.REDACTED
#: Shorter keys are not searched for: they would match ordinary words in a transcript.
MIN_REDACTED_KEY_LENGTH = 12
_UNSAFE_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


def redact_secret(response: httpx.Response, secret: str | None) -> httpx.Response:
    """The answer with every copy of ``secret`` replaced by :data:`REDACTED`.

    A gateway or proxy that echoes the request's ``Authorization`` header (in a 401
    description, a debug field, an ``x-request-id`` header) must not carry the key into an
    exception message, a result's ``request_id`` or ``raw`` body, or the cache. Headers
    (names and values) and the body are searched, the body also through its JSON escapes
    (``\\u0073k-...``, ``\\/``). The response is returned as is when the key is not in it,
    which is the case for every well-behaved gateway, and for keys shorter than
    :data:`MIN_REDACTED_KEY_LENGTH` (real keys are far longer).

    Examples
    --------
    >>> r = httpx.Response(401, json={"description": "bad key sk-1234567890"})
    >>> redact_secret(r, "sk-1234567890").json()["description"]
    'bad key [redacted API key]'
    >>> r = httpx.Response(200, headers={"x-request-id": "sk-1234567890"}, json={"text": ""})
    >>> redact_secret(r, "sk-1234567890").headers["x-request-id"]
    '[redacted API key]'
    """
    if not secret or len(secret) < MIN_REDACTED_KEY_LENGTH:
        return response
    content = response.content
    if not _redact.may_carry(secret, content, response.headers.raw):
        return response
    body = _redact.redact_body(content, secret)
    headers, headers_changed = _redact.redact_headers(response.headers.multi_items(), secret)
    if body is None and not headers_changed:
        return response
    if body is None:
        body = content
    # The body is already decoded: drop the headers that describe its wire form.
    headers = [(k, v) for k, v in headers if k.lower() not in _UNSAFE_HEADERS]
    try:
        request: httpx.Request | None = response.request
    except RuntimeError:  # a response built by hand has none
        request = None
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=request,
        extensions=response.extensions,
    )


def request_id_from(response: httpx.Response, body: Any = None) -> str | None:
    """The gateway's request id from the body or the headers."""
    if isinstance(body, Mapping):
        for key in ("requestId", "request_id", "generation_id", "id"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    header: str | None = response.headers.get("x-request-id") or response.headers.get(
        "x-generation-id"
    )
    return header


def _decode_json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting deeper than the stack
        return None


def parse_success(response: httpx.Response) -> TranscriptionResult:
    """Parse a 2xx answer.

    Raises
    ------
    APIResponseError
        The body is not a JSON object with a string ``text`` (truncated, HTML, wrong type).
    """
    body = _decode_json(response.content)
    rid = request_id_from(response, body)
    if not isinstance(body, dict):
        snippet = response.content[:80].decode("utf-8", "replace")
        raise APIResponseError(
            f"gateway answered {response.status_code} with a body that is not a JSON object"
            f" ({len(response.content)} bytes, starts {snippet!r})",
            status_code=response.status_code,
            request_id=rid,
        )
    if not isinstance(body.get("text"), str):
        got = type(body.get("text")).__name__ if "text" in body else "no 'text' field"
        raise APIResponseError(
            f"gateway answered {response.status_code} without a string 'text' ({got})",
            status_code=response.status_code,
            request_id=rid,
        )
    return TranscriptionResult.from_body(body, request_id=response.headers.get("x-request-id"))


def error_from_response(response: httpx.Response) -> APIStatusError:
    """Map an error answer to the exception class of its status.

    Understands the live gateway's flat body (``{"error": code, "description": ...}``), an
    OpenAI-style nested one (``{"error": {"code", "message", "type"}}``) and non-JSON bodies.

    Examples
    --------
    >>> r = httpx.Response(429, json={"error": "key_limit_exceeded", "description": "slow down"})
    >>> err = error_from_response(r)
    >>> type(err).__name__, err.code, err.description
    ('RateLimitError', 'key_limit_exceeded', 'slow down')
    """
    status = response.status_code
    body = _decode_json(response.content)
    code: str | None = None
    description: str | None = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # OpenAI style
            code = _first_str(err, "code", "type")
            description = _first_str(err, "message", "description")
        else:
            code = err if isinstance(err, str) else None
            description = _first_str(body, "description", "message", "detail", "reason")
        if description is None and code is None:
            description = json.dumps(body)[:200]
    else:
        text = response.content.decode("utf-8", "replace").strip()
        kind = response.headers.get("content-type", "unknown content type").split(";")[0]
        description = f"non-JSON error body ({kind}): {text[:200]!r}" if text else "empty body"
    if is_unknown_model(status, code):
        listed = body.get("available_models") if isinstance(body, dict) else None
        return UnknownModelError(
            description or response.reason_phrase or "unknown model",
            status_code=status,
            code=code,
            request_id=request_id_from(response, body),
            body=body,
            available_models=[m for m in listed if isinstance(m, str)]
            if isinstance(listed, list)
            else (),
        )
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else APIStatusError
    return cls(
        description or response.reason_phrase or "error",
        status_code=status,
        code=code,
        request_id=request_id_from(response, body),
        body=body if body is not None else response.content.decode("utf-8", "replace"),
    )


def is_unknown_model(status: int, code: str | None) -> bool:
    """Whether an error answer says the gateway does not serve the model asked for.

    The gateway's 400 ``unsupported_model_or_endpoint``, or a 404 whose code names a
    model (``model_not_found``, as OpenAI-style gateways answer).

    Examples
    --------
    >>> is_unknown_model(400, "unsupported_model_or_endpoint"), is_unknown_model(404, None)
    (True, False)
    """
    if status == 400:
        return code == "unsupported_model_or_endpoint"
    return status == 404 and isinstance(code, str) and "model" in code.lower()


def _first_str(body: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def is_file_required(err: APIError) -> bool:
    """True when a gateway says the audio must come as a multipart ``file`` part (live behaviour)."""
    return (
        isinstance(err, BadRequestError) and "file is required" in (err.description or "").lower()
    )


def translate_transport_error(err: BaseException) -> APIConnectionError:
    """The one place where foreign transport exceptions become ours (caller chains them)."""
    name = type(err).__name__
    cause = err.__cause__
    # httpx-aiohttp maps every aiohttp connection error, including a dropped connection, to
    # ConnectTimeout; look at the aiohttp cause to tell a drop from a real timeout.
    if cause is not None and type(cause).__name__ in (
        "ServerDisconnectedError",
        "ClientOSError",
        "ClientConnectorError",
    ):
        return APIConnectionError(f"connection failed: {type(cause).__name__}: {cause}")
    if isinstance(err, httpx.TimeoutException | TimeoutError):
        return APITimeoutError(f"no answer in time ({name})")
    detail = str(err) or name
    return APIConnectionError(f"connection failed: {name}: {detail}")


class _TransportErrorMap:
    """See :func:`map_transport_errors`; stateless, so one instance serves every request."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        if isinstance(exc, httpx.TransportError | TimeoutError) or _is_aiohttp_error(exc):
            raise translate_transport_error(exc) from exc


def _is_aiohttp_error(exc: BaseException) -> bool:
    # aiohttp errors that httpx-aiohttp does not map reach us raw.
    return type(exc).__module__.split(".")[0] == "aiohttp"


_TRANSPORT_ERROR_MAP = _TransportErrorMap()


def map_transport_errors() -> contextlib.AbstractContextManager[None]:
    """Translate foreign transport failures raised in the block into :class:`APIConnectionError`.

    The one translation the sync and async send loops share (as httpx's
    ``map_httpcore_exceptions``): httpx transport errors, a ``TimeoutError`` (the attempt
    deadline) and raw aiohttp errors become :class:`APIConnectionError` or
    :class:`APITimeoutError`, chained with ``raise ... from``. Anything else passes through.

    Examples
    --------
    >>> try:
    ...     with map_transport_errors():
    ...         raise httpx.ConnectTimeout("slow")
    ... except APITimeoutError as err:
    ...     type(err.__cause__).__name__
    'ConnectTimeout'
    """
    return _TRANSPORT_ERROR_MAP


def is_retryable(err: APIError) -> bool:
    """Whether sending the same request again may succeed.

    Connection errors, timeouts, unusable bodies and 408/409/429/500/502/503/504 are retried;
    400/401/402/403/413 and an answer over the size the client reads never are.
    """
    if isinstance(err, ResponseTooLargeError):
        return False
    if isinstance(err, APIConnectionError | APIResponseError):
        return True
    if isinstance(err, APIStatusError):
        return err.status_code in C.RETRYABLE_STATUS_CODES
    return False


def retry_after_seconds(headers: httpx.Headers | None, *, now: float | None = None) -> float | None:
    """The pause a server asked for (``retry-after-ms``, then ``Retry-After``), or None.

    Examples
    --------
    >>> retry_after_seconds(httpx.Headers({"retry-after-ms": "250"}))
    0.25
    >>> retry_after_seconds(httpx.Headers({"Retry-After": "3"}))
    3.0
    """
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def retry_delay(
    attempt: int, headers: httpx.Headers | None = None, *, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    A server's ``Retry-After`` wins, capped at :data:`MAX_RETRY_AFTER`; otherwise exponential
    backoff with full jitter: uniform in ``[0, min(MAX_RETRY_DELAY, INITIAL * 2**attempt)]``,
    which spreads a crowd of clients instead of having them retry in lockstep.

    Examples
    --------
    >>> 0 <= retry_delay(0) <= 0.5
    True
    >>> retry_delay(0, httpx.Headers({"retry-after": "120"}))
    60.0
    """
    asked = retry_after_seconds(headers)
    if asked is not None:
        return min(asked, C.MAX_RETRY_AFTER)
    ceiling = min(C.MAX_RETRY_DELAY, C.INITIAL_RETRY_DELAY * (2**attempt))
    return (rng or random).uniform(0, ceiling)


def describe_error(err: BaseException) -> str:
    """A one-line reason for logs: class and message."""
    return f"{type(err).__name__}: {err}"
