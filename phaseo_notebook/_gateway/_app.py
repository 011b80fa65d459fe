"""The local gateway's request -> response core, shared by the server and the in-process transport.

Everything here is a decision about bytes already in memory: parse the body, check the key,
validate the fields for the gateway's *mode*, and build the success or error JSON. The two
pieces of I/O a transcription needs (fetching an ``audio_url``, running the engine) are
handed in by the caller, which is how the aiohttp server and the httpx
:class:`~phaseo_notebook._gateway.EmbeddedTransport` answer the same request with the same
JSON, byte for byte apart from the request id.

Modes
-----
``strict``
    The published contract only: ``model``, ``audio_url``, ``audio_b64``, ``language``,
    ``provider``. Any other field, or a ``file`` part, is a 400 ``validation_error``.
``live``
    What the live gateway does today: ``audio_url``/``audio_b64`` are ignored and a
    multipart ``file`` part with audio in it is required ("file is required").
``lenient``
    Any one of ``file``, ``audio_url`` or ``audio_b64`` (the in-process transport).

Bodies may be ``multipart/form-data`` (the contract), JSON or urlencoded, in every mode.
The live gateway's optional fields are read in ``live`` and ``lenient`` (``strict`` keeps
to the contract and refuses them):

- ``prompt`` and ``temperature`` (0-1) go to the engine;
- ``response_format=verbose_json`` adds ``segments`` (``[{"start", "end", "text"}]``,
  seconds from the start of the audio) to the answer, and ``words``
  (``[{"start", "end", "word"}]``) when ``timestamp_granularities`` includes ``word``.
  ``timestamp_granularities`` is ``segment``, ``word``, a JSON list of them
  (``["segment","word"]``, as live sends nested values in a form) or the field
  repeated; it needs ``verbose_json``. Other formats answer the usual JSON;
- ``languages`` is accepted and ignored.

Bracketed keys such as ``provider[only][]`` (and ``timestamp_granularities[]``) are
dropped without a word in every mode, as live does.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

from phaseo_notebook._constants import MAX_AUDIO_BYTES, MAX_URL_LENGTH
from phaseo_notebook._engines import (
    ENGINE_NAMES,
    AudioDecodeError,
    AudioTooLongError,
    Engine,
    EngineResult,
    EngineTimeoutError,
    TranscribeOptions,
    UnsupportedLanguageError,
)
from phaseo_notebook._exceptions import EngineModelError
from phaseo_notebook._gateway._charges import PriceSetting, build_prices, cost_nanos
from phaseo_notebook._gateway._multipart import (
    FormPart,
    MultipartError,
    boundary_from_content_type,
    parse_multipart,
)

__all__ = [
    "DEFAULT_MODELS",
    "MAX_JSON_BODY_BYTES",
    "MAX_MULTIPART_BODY_BYTES",
    "MODES",
    "NON_JSON_REPLY",
    "AudioFetchError",
    "AudioLimits",
    "DownloadBuffer",
    "GatewayCore",
    "GatewayError",
    "Mode",
    "Reply",
    "RequestForm",
    "TranscriptionJob",
    "audio_too_large",
    "build_models",
    "error_reply",
    "injected_error",
    "new_request_id",
    "payload_too_large",
    "truncate",
]

logger = logging.getLogger("phaseo_notebook.gateway")

Mode = Literal["strict", "live", "lenient"]
MODES: Final[tuple[Mode, ...]] = ("strict", "live", "lenient")

#: The live gateway's body limits (larger -> 413 ``payload_too_large`` with ``max_bytes``).
MAX_MULTIPART_BODY_BYTES: Final = 32 * 1024 * 1024
MAX_JSON_BODY_BYTES: Final = 16 * 1024 * 1024

#: Model names every local gateway serves, and the engine behind each.
DEFAULT_MODELS: Final[Mapping[str, str]] = {
    "local/fake": "fake",
    "local/pocketsphinx": "pocketsphinx",
    "local/whisper-tiny.en": "whisper",
}

_CONTRACT_FIELDS: Final = frozenset({"model", "audio_url", "audio_b64", "language", "provider"})
_LIVE_FIELDS: Final = _CONTRACT_FIELDS | {
    "prompt",
    "temperature",
    "response_format",
    "timestamp_granularities",
    "languages",
}
#: Extensions the live gateway accepts for a ``file`` part (its list, not ours: no aiff).
_LIVE_EXTENSIONS: Final = frozenset(
    {"aac", "flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "opus", "wav", "webm"}
)
_RESPONSE_FORMATS: Final = frozenset(
    {"json", "text", "srt", "verbose_json", "vtt", "diarized_json"}
)
_GRANULARITIES: Final = ("segment", "word")
_VERBOSE: Final = "verbose_json"
# The one field that may be given more than once (a form's way of sending a list).
_REPEATABLE: Final = "timestamp_granularities"
_PROVIDER_LIST_KEYS: Final = ("order", "only", "ignore")
# No request needs more than a few levels; deeper JSON is refused before anything walks it
# (Python's own recursion limit would otherwise surface as a 500).
MAX_JSON_DEPTH: Final = 32
_DATA_URI_MIME_PREFIXES: Final = ("audio/", "video/", "application/octet-stream")

# The code the live gateway puts in the body for each status (its table), plus plausible
# codes for statuses it does not list, so injected errors always look like the real thing.
_CODE_BY_STATUS: Final[Mapping[int, str]] = {
    400: "validation_error",
    401: "unauthorised",
    402: "insufficient_funds",
    403: "guardrail_blocked",
    404: "not_found",
    408: "request_timeout",
    409: "not_ready",
    413: "payload_too_large",
    422: "validation_error",
    429: "key_limit_exceeded",
    500: "gateway_error",
    501: "not_implemented_yet",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}
_TYPE_BY_STATUS: Final[Mapping[int, str]] = {
    400: "invalid_request",
    401: "authentication",
    402: "billing",
    403: "permission",
    404: "not_found",
    409: "conflict",
    413: "invalid_request",
    422: "invalid_request",
    429: "rate_limit",
    502: "upstream",
    503: "upstream",
    504: "upstream",
}

_JSON_TYPE: Final = "application/json"


class GatewayError(Exception):
    """An error answer: status, live-style code and description, plus extra body keys.

    Parameters
    ----------
    status : int
        The HTTP status.
    code : str
        The live gateway's ``error`` code (``validation_error``, ``unauthorised``, ...).
    description : str
        Human-readable; becomes ``description``.
    extra : Mapping or None
        More top-level body keys (``reason``, ``max_bytes``, ``reset_at``, ...).
    headers : Mapping or None
        Extra response headers (``Retry-After``).

    Examples
    --------
    >>> err = GatewayError(400, "model_required", "model is required")
    >>> err.status, err.code
    (400, 'model_required')
    """

    def __init__(
        self,
        status: int,
        code: str,
        description: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.extra: Mapping[str, Any] = extra or {}
        self.headers: Mapping[str, str] = headers or {}


class AudioFetchError(Exception):
    """An ``audio_url`` that could not be downloaded; the message says why.

    Raised by the fetch function an adapter hands to :meth:`GatewayCore.arun`.
    """


def _validation(description: str, field_name: str | None = None) -> GatewayError:
    extra = {"details": [{"field": field_name, "message": description}]} if field_name else None
    return GatewayError(400, "validation_error", description, extra=extra)


def payload_too_large(max_bytes: int, what: str) -> GatewayError:
    """The 413 ``payload_too_large`` for ``what`` over ``max_bytes`` (live puts it in the body)."""
    return GatewayError(
        413,
        "payload_too_large",
        f"{what} is larger than the limit of {max_bytes} bytes",
        extra={"max_bytes": max_bytes},
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete answer: status, body bytes, content type and extra headers.

    Examples
    --------
    >>> Reply(200, b"{}").content_type
    'application/json'
    """

    status: int
    body: bytes
    content_type: str = _JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def new_request_id() -> str:
    """A fresh request id, ``req_`` + 24 hex digits.

    Examples
    --------
    >>> len(new_request_id())
    28
    """
    return "req_" + os.urandom(12).hex()


def error_reply(err: GatewayError, request_id: str) -> Reply:
    """The live gateway's flat error body for ``err``, with ``x-request-id``.

    Examples
    --------
    >>> reply = error_reply(GatewayError(401, "unauthorised", "no key"), "req_1")
    >>> json.loads(reply.body)["error"], reply.headers["x-request-id"]
    ('unauthorised', 'req_1')
    """
    status = err.status
    body: dict[str, Any] = {
        "generation_id": request_id,
        "status_code": status,
        "error": err.code,
        "error_type": _TYPE_BY_STATUS.get(status, "server" if status >= 500 else "invalid_request"),
        "error_origin": "gateway",
        "description": err.description,
    }
    body.update(err.extra)
    return Reply(status, _dumps(body), headers={"x-request-id": request_id, **err.headers})


def injected_error(status: int, retry_after: float | None) -> GatewayError:
    """The error a fault injects for ``status``, with the body keys live sends for it.

    Parameters
    ----------
    status : int
        An HTTP error status.
    retry_after : float or None
        Seconds for ``Retry-After`` (and ``retry-after-ms``), if any.

    Examples
    --------
    >>> injected_error(429, 1.5).headers["Retry-After"]
    '1.5'
    """
    code = _CODE_BY_STATUS.get(status, "injected_error")
    extra: dict[str, Any] = {}
    if status == 429:
        wait = retry_after if retry_after is not None else 1.0
        reset = datetime.fromtimestamp(time.time() + wait, tz=UTC)
        extra["reset_at"] = reset.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    elif status == 502:
        extra["failed_statuses"] = [429]
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = format(retry_after, "g")
        headers["retry-after-ms"] = str(round(retry_after * 1000))
    return GatewayError(
        status, code, f"{code.replace('_', ' ')} (injected fault)", extra=extra, headers=headers
    )


#: What a proxy in front of a gateway answers when the gateway is down.
NON_JSON_REPLY: Final = Reply(
    502,
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n",
    content_type="text/html",
)


def truncate(reply: Reply) -> Reply:
    """``reply`` with its body cut in half (a broken JSON body with a valid HTTP frame)."""
    return Reply(
        reply.status, reply.body[: len(reply.body) // 2], reply.content_type, reply.headers
    )


@dataclass(frozen=True, slots=True)
class RequestForm:
    """A parsed request body: its fields in order, and its file parts.

    Parameters
    ----------
    fields : tuple of (str, Any)
        Multipart text fields (``str`` values) or JSON object members (any JSON value).
    files : tuple of FormPart
        Multipart file parts.
    """

    fields: tuple[tuple[str, Any], ...]
    files: tuple[FormPart, ...] = ()


@dataclass(frozen=True, slots=True)
class TranscriptionJob:
    """A validated transcription request.

    Exactly one of ``audio`` and ``audio_url`` is set.

    Parameters
    ----------
    model : str
        The model asked for.
    engine : str
        The engine that serves it.
    language : str or None
        The language asked for.
    audio : bytes or None
        The audio, from a ``file`` part or ``audio_b64``.
    audio_url : str or None
        The URL to fetch it from.
    options : TranscribeOptions
        Prompt, temperature and timestamps for the engine.
    verbose : bool
        Whether the answer carries ``segments`` (and ``words``): ``verbose_json``.
    """

    model: str
    engine: str
    language: str | None
    audio: bytes | None = None
    audio_url: str | None = None
    options: TranscribeOptions = field(default_factory=TranscribeOptions)
    verbose: bool = False

    @property
    def identity(self) -> str:
        """``sha256(audio)`` hex, or ``"url:" + audio_url`` (the client's dedupe key)."""
        if self.audio_url is not None:
            return "url:" + self.audio_url
        assert self.audio is not None
        return sha256(self.audio).hexdigest()


@dataclass(frozen=True, slots=True)
class AudioLimits:
    """Per-file limits a gateway enforces, as live and its providers do.

    Parameters
    ----------
    max_bytes : int or None
        Audio larger than this is a 413 ``payload_too_large`` with ``max_bytes``. It can
        only lower the per-file cap (``MAX_AUDIO_BYTES``).
    max_seconds : float or None
        Audio longer than this (by its header) is a 400 saying so, worded as OpenAI
        words it for gpt-4o-transcribe.
    per_model : Mapping of str to (int or None, float or None)
        ``{model: (max_bytes, max_seconds)}``, replacing both defaults for that model.

    Examples
    --------
    >>> AudioLimits(max_seconds=1400, per_model={"m": (1000, None)}).for_model("m")
    (1000, None)
    """

    max_bytes: int | None = None
    max_seconds: float | None = None
    per_model: Mapping[str, tuple[int | None, float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for max_bytes, max_seconds in [
            (self.max_bytes, self.max_seconds),
            *self.per_model.values(),
        ]:
            if max_bytes is not None and not 0 < max_bytes <= MAX_AUDIO_BYTES:
                raise ValueError(f"max_bytes must be in 1..{MAX_AUDIO_BYTES}, not {max_bytes!r}")
            if max_seconds is not None and not max_seconds > 0:
                raise ValueError(f"max_seconds must be positive, not {max_seconds!r}")

    def for_model(self, model: str) -> tuple[int | None, float | None]:
        """``(max_bytes, max_seconds)`` for ``model``."""
        return self.per_model.get(model, (self.max_bytes, self.max_seconds))

    def check(self, model: str, audio: bytes) -> None:
        """Refuse ``audio`` for ``model`` if it is over a limit.

        Raises
        ------
        GatewayError
            413 with ``max_bytes``, or 400 "audio duration ... is longer than N seconds".
        """
        max_bytes, max_seconds = self.for_model(model)
        if max_bytes is not None and len(audio) > max_bytes:
            raise payload_too_large(max_bytes, "audio")
        if max_seconds is None:
            return
        # A header read, not a decode: cheap at admission. Audio whose header cannot be
        # read is left to the engine's decoder, which refuses it with its own 400.
        from phaseo_notebook._duration import read_header

        header = read_header(audio)
        seconds = header.seconds if header is not None else None
        if seconds is not None and seconds > max_seconds:
            raise _validation(
                f"audio duration {seconds:g} seconds is longer than {max_seconds:g} seconds "
                "which is the maximum for this model",
                "file",
            )


def build_models(models: Mapping[str, str] | Iterable[str] | None, engine: str) -> dict[str, str]:
    """The model -> engine map of a gateway: :data:`DEFAULT_MODELS` plus ``models``.

    Parameters
    ----------
    models : Mapping, iterable of str, or None
        Extra model names. A mapping names each one's engine; a plain list of names is
        served by ``engine``.
    engine : str
        The engine for names given without one.

    Returns
    -------
    dict of str to str

    Raises
    ------
    ValueError
        If a name is empty or an engine is unknown.
    TypeError
        If ``models`` is a single string rather than a collection of names.

    Examples
    --------
    >>> build_models(["openai/whisper-1"], "fake")["openai/whisper-1"]
    'fake'
    """
    _check_engine(engine)
    out = dict(DEFAULT_MODELS)
    if models is None:
        return out
    if isinstance(models, str):
        raise TypeError("models must be a mapping of model name to engine, or a list of names")
    pairs = models.items() if isinstance(models, Mapping) else ((name, engine) for name in models)
    for name, engine_name in pairs:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model names must be non-empty strings, got {name!r}")
        _check_engine(engine_name)
        out[name] = engine_name
    return out


def _check_engine(name: str) -> None:
    if name not in ENGINE_NAMES:
        valid = ", ".join(repr(n) for n in ENGINE_NAMES)
        raise ValueError(f"unknown engine {name!r}; valid engines: {valid}")


class GatewayCore:
    """Parsing, auth, validation and answer building for one gateway configuration.

    Parameters
    ----------
    mode : {"strict", "live", "lenient"}
        Which request shapes are accepted (see the module docstring).
    api_key : str or None
        The key ``Authorization: Bearer`` must carry; ``None`` accepts anything.
    models : Mapping of str to str or None
        Model name -> engine name (default :data:`DEFAULT_MODELS`).
    price_per_minute : float, Mapping of str to float, or None
        What answers cost (see :mod:`~phaseo_notebook._gateway._charges`); None: free.
    limits : AudioLimits or None
        Per-file limits beyond the 25 MB cap, checked before the engine runs.
    list_prices : bool
        List each model's ``pricing`` in ``GET /v1/models``; ``False``: a catalog without
        prices, like the live gateway's.

    Examples
    --------
    >>> core = GatewayCore(mode="lenient")
    >>> form = core.parse("application/json", b'{"model": "local/fake", "audio_b64": "AAAA"}')
    >>> core.validate(form).engine
    'fake'
    """

    def __init__(
        self,
        *,
        mode: Mode = "strict",
        api_key: str | None = None,
        models: Mapping[str, str] | None = None,
        price_per_minute: PriceSetting = None,
        limits: AudioLimits | None = None,
        list_prices: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        if api_key is not None and not api_key:
            raise ValueError("api_key must be a non-empty string, or None for no auth")
        self.mode: Mode = mode
        self.limits = limits
        self.models: dict[str, str] = dict(DEFAULT_MODELS if models is None else models)
        self._api_key = api_key.encode("utf-8") if api_key is not None else None
        self._allowed = _CONTRACT_FIELDS if mode == "strict" else _LIVE_FIELDS
        self.prices: dict[str, float] = build_prices(price_per_minute, self.models)
        self._models_body = _dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": name,
                        "object": "model",
                        "owned_by": "local",
                        "engine": engine,
                        **(
                            {"pricing": {"per_minute": self.prices[name], "currency": "USD"}}
                            if list_prices
                            else {}
                        ),
                    }
                    for name, engine in self.models.items()
                ],
            }
        )

    # -- auth -------------------------------------------------------------------------

    def authorise(self, authorization: str | None) -> None:
        """Check an ``Authorization`` header value.

        Raises
        ------
        GatewayError
            401 ``unauthorised`` when a key is configured and the header lacks it.
        """
        if self._api_key is None:
            return
        scheme, _, token = (authorization or "").strip().partition(" ")
        # compare_digest keeps the comparison time independent of where the keys differ.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("utf-8"), self._api_key
        ):
            raise GatewayError(
                401, "unauthorised", "missing or invalid API key (Authorization: Bearer <key>)"
            )

    # -- parsing ------------------------------------------------------------------------

    def parse(self, content_type: str | None, body: bytes) -> RequestForm:
        """Parse a ``multipart/form-data``, JSON or urlencoded body.

        Urlencoded forms are read because the live gateway reads its non-JSON bodies as
        web forms, which covers them (and ``httpx.post(data=...)`` sends them).

        Raises
        ------
        GatewayError
            413 over the body limits, 400 ``invalid_json`` / ``validation_error`` when the
            body cannot be read as a form.
        """
        media_type = (content_type or "").partition(";")[0].strip().lower()
        if media_type == "multipart/form-data":
            if len(body) > MAX_MULTIPART_BODY_BYTES:
                raise payload_too_large(MAX_MULTIPART_BODY_BYTES, "request body")
            try:
                parts = parse_multipart(body, boundary_from_content_type(content_type or ""))
                fields = tuple((p.name, p.text()) for p in parts if not p.is_file)
            except MultipartError as err:
                raise _validation(f"malformed multipart/form-data body: {err}") from err
            files = tuple(p for p in parts if p.is_file)
            return RequestForm(fields, files)
        if media_type == _JSON_TYPE or media_type.endswith("+json"):
            if len(body) > MAX_JSON_BODY_BYTES:
                raise payload_too_large(MAX_JSON_BODY_BYTES, "JSON request body")
            try:
                data = json.loads(body)
            except (UnicodeDecodeError, ValueError) as err:
                raise GatewayError(400, "invalid_json", f"request body is not JSON: {err}") from err
            except RecursionError as err:
                raise GatewayError(400, "invalid_json", _TOO_DEEP) from err
            if not isinstance(data, dict):
                raise GatewayError(400, "invalid_json", "request body must be a JSON object")
            if _too_deep(data):
                raise GatewayError(400, "invalid_json", _TOO_DEEP)
            return RequestForm(tuple(data.items()))
        if media_type == "application/x-www-form-urlencoded":
            if len(body) > MAX_MULTIPART_BODY_BYTES:
                raise payload_too_large(MAX_MULTIPART_BODY_BYTES, "request body")
            try:
                pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            except (UnicodeDecodeError, ValueError) as err:
                raise _validation(f"malformed urlencoded body: {err}") from err
            return RequestForm(tuple(pairs))
        shown = media_type or "none"
        raise _validation(
            f"unsupported Content-Type {shown!r}: send multipart/form-data or application/json"
        )

    def describe(
        self, form: RequestForm | None, content_type: str | None, authorization: str | None
    ) -> dict[str, Any]:
        """The record that the stats keep for a request (no key, no audio bytes).

        ``audio_b64`` is replaced by its length; only the scheme of ``Authorization``
        is kept; ``form`` is ``None`` when the body could not be parsed.
        """
        fields: dict[str, Any] = {}
        file: dict[str, Any] | None = None
        if form is not None:
            for name, value in form.fields:
                if name == "audio_b64" and isinstance(value, str):
                    value = len(value)
                elif name == "audio_url" and isinstance(value, str) and "@" in value:
                    value = _hide_userinfo(value)
                fields[name] = value
            for part in form.files:
                info = {
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "size": len(part.data),
                }
                if part.name == "file" and file is None:
                    file = info
                else:
                    fields[part.name] = info
        scheme = (authorization or "").strip().partition(" ")[0] or None
        return {
            "fields": fields,
            "file": file,
            "authorization": scheme,
            "content_type": (content_type or "").partition(";")[0].strip().lower() or None,
        }

    # -- validation ---------------------------------------------------------------------

    def validate(self, form: RequestForm) -> TranscriptionJob:
        """Check a parsed request against the mode; return what to transcribe.

        Raises
        ------
        GatewayError
            400 ``validation_error``, ``model_required`` or ``unsupported_model_or_endpoint``;
            413 for audio over the per-file limit.
        """
        values: dict[str, Any] = {}
        for name, value in form.fields:
            if "[" in name:
                continue  # live drops bracketed keys (provider[only][]) silently
            if name == "file" and self.mode != "strict":
                continue  # a text "file" is no upload: answered below as missing audio
            if name not in self._allowed:
                raise _validation(f"unknown field {name!r} (mode {self.mode})", name)
            if name == _REPEATABLE and name in values:
                values[name] = [*_as_list(values[name]), value]
                continue
            if name in values:
                raise _validation(f"field {name!r} is given more than once", name)
            values[name] = value
        file = self._file_part(form.files)

        model = values.get("model")
        if model is None or model == "":
            raise GatewayError(400, "model_required", "model is required")
        if not isinstance(model, str):
            raise _validation("model must be a string", "model")
        engine = self.models.get(model)
        if engine is None:
            available = sorted(self.models)
            raise GatewayError(
                400,
                "unsupported_model_or_endpoint",
                f"model {model!r} is not available for audio transcriptions; this gateway "
                f"serves: {', '.join(available)}",
                extra={
                    "reason": "model_not_found_or_inactive",
                    "model": model,
                    "available_models": available,
                },
            )
        language = _optional_text(values, "language")
        if "provider" in values:
            _check_provider(values["provider"], strict=self.mode == "strict")
        options, verbose = TranscribeOptions(), False
        if self.mode != "strict":
            _check_live_extras(values)
            options, verbose = _engine_options(values)

        if self.mode == "live":
            # Live strips audio_url/audio_b64 before it looks for the audio.
            if file is None or not _looks_like_audio(file):
                raise _validation(
                    "file is required: send the audio as a multipart file part named 'file' "
                    f"(extension one of {', '.join(sorted(_LIVE_EXTENSIONS))}, or audio/* type)",
                    "file",
                )
            return TranscriptionJob(
                model,
                engine,
                language,
                audio=_check_audio(file.data),
                options=options,
                verbose=verbose,
            )
        audio_url = _optional_text(values, "audio_url")
        audio_b64 = _optional_text(values, "audio_b64")
        given = [
            n
            for n, v in (("file", file), ("audio_url", audio_url), ("audio_b64", audio_b64))
            if v is not None
        ]
        if len(given) != 1:
            allowed = (
                "audio_url or audio_b64"
                if self.mode == "strict"
                else "file, audio_url or audio_b64"
            )
            what = "no audio" if not given else f"more than one audio input ({', '.join(given)})"
            raise _validation(f"{what}: give exactly one of {allowed}", given[0] if given else None)
        if file is not None:
            audio: bytes | None = _check_audio(file.data)
        elif audio_b64 is not None:
            audio = _decode_b64(audio_b64)
        else:
            assert audio_url is not None
            return TranscriptionJob(
                model,
                engine,
                language,
                audio_url=_check_url(audio_url),
                options=options,
                verbose=verbose,
            )
        return TranscriptionJob(
            model, engine, language, audio=audio, options=options, verbose=verbose
        )

    def _file_part(self, files: tuple[FormPart, ...]) -> FormPart | None:
        file: FormPart | None = None
        for part in files:
            if part.name != "file" or self.mode == "strict":
                raise _validation(
                    f"unexpected file part {part.name!r} (mode {self.mode}; the contract "
                    "sends audio as audio_url or audio_b64)",
                    part.name,
                )
            if file is not None:
                raise _validation("file part 'file' is given more than once", "file")
            file = part
        return file

    # -- answers --------------------------------------------------------------------------

    def models_reply(self) -> Reply:
        """``GET /v1/models``: the models this gateway serves."""
        return Reply(200, self._models_body)

    def success_reply(self, job: TranscriptionJob, result: EngineResult, request_id: str) -> Reply:
        """The 200 answer for a finished transcription (keys whose value is None omitted)."""
        body: dict[str, Any] = {
            "text": result.text,
            "requestId": request_id,
            "id": request_id,
            "object": "transcription",
            "model": job.model,
            "provider": "local",
        }
        language = result.language or job.language
        if language is not None:
            body["language"] = language
        if result.duration is not None:
            body["duration"] = result.duration
            body["usage"] = {"seconds": result.duration}
        if job.verbose:
            body["segments"] = [s.to_dict() for s in result.segments or ()]
            if job.options.timestamps == "word":
                body["words"] = [w.to_dict() for w in result.words or ()]
        # A priced model's cost follows the engine's duration; with no duration it is
        # unknown, and left out rather than reported as free.
        price = self.prices.get(job.model, 0.0)
        if price == 0 or result.duration is not None:
            body["cost_nanos"] = cost_nanos(price, result.duration or 0.0)
            body["currency"] = "USD"
        return Reply(200, _dumps(body), headers={"x-request-id": request_id})

    def failure_reply(self, err: BaseException, request_id: str, *, fetched: bool = False) -> Reply:
        """Map an exception raised while transcribing to its error answer.

        With ``fetched`` (the audio came from ``audio_url``) a decode error says no more
        than that: the decoder's message may quote the audio's first bytes, and echoing
        what a URL returned would hand its content to whoever asked for it.
        """
        if isinstance(err, GatewayError):
            return error_reply(err, request_id)
        if isinstance(err, AudioTooLongError):
            return error_reply(
                GatewayError(
                    413,
                    "payload_too_large",
                    str(err),
                    extra={"max_seconds": err.max_duration},
                ),
                request_id,
            )
        if isinstance(err, AudioDecodeError):
            if fetched:
                described = _validation(
                    "the audio fetched from audio_url could not be decoded "
                    "(not a supported audio format, or corrupt)",
                    "audio_url",
                )
                return error_reply(described, request_id)
            return error_reply(_validation(str(err), "audio"), request_id)
        if isinstance(err, UnsupportedLanguageError):
            return error_reply(_validation(str(err), "language"), request_id)
        if isinstance(err, EngineTimeoutError):
            return error_reply(GatewayError(504, "upstream_timeout", str(err)), request_id)
        if isinstance(err, EngineModelError):
            logger.error("local gateway: %s", err)
            return error_reply(GatewayError(500, "gateway_error", str(err)), request_id)
        if isinstance(err, AudioFetchError):
            return error_reply(
                _validation(f"could not fetch audio_url: {err}", "audio_url"), request_id
            )
        if isinstance(err, ImportError):
            # An engine whose optional dependencies are missing: the message has the pip line.
            return error_reply(GatewayError(501, "not_implemented_yet", str(err)), request_id)
        logger.exception("local gateway: transcription failed", exc_info=err)
        return error_reply(
            GatewayError(500, "gateway_error", f"transcription failed: {type(err).__name__}"),
            request_id,
        )

    async def arun(
        self,
        job: TranscriptionJob,
        request_id: str,
        *,
        engines: Callable[[str], Engine],
        fetch: Callable[[str], Awaitable[bytes]],
        reraise: tuple[type[Exception], ...] = (),
    ) -> Reply:
        """Fetch (if by URL) and transcribe ``job`` with the async engine API.

        Parameters
        ----------
        job : TranscriptionJob
            From :meth:`validate`.
        request_id : str
            The id for the answer.
        engines : callable
            Engine name -> engine.
        fetch : async callable
            URL -> bytes; raises :class:`AudioFetchError` (or :class:`GatewayError`).
        reraise : tuple of exception types
            Exceptions to let through instead of answering them (default none).

        Returns
        -------
        Reply
            Success or error; never raises for a request's own failure, except ``reraise``.
        """
        try:
            audio = job.audio
            if audio is None:
                assert job.audio_url is not None
                audio = _check_audio(await fetch(job.audio_url))
            if self.limits is not None:
                self.limits.check(job.model, audio)
            result = await engines(job.engine).atranscribe(
                audio, language=job.language, options=job.options
            )
        except reraise:
            raise
        except Exception as err:
            return self.failure_reply(err, request_id, fetched=job.audio_url is not None)
        return self.success_reply(job, result, request_id)

    def run(
        self,
        job: TranscriptionJob,
        request_id: str,
        *,
        engines: Callable[[str], Engine],
        fetch: Callable[[str], bytes],
        reraise: tuple[type[Exception], ...] = (),
    ) -> Reply:
        """Blocking twin of :meth:`arun` (the engine's ``transcribe``, a sync fetch)."""
        try:
            audio = job.audio
            if audio is None:
                assert job.audio_url is not None
                audio = _check_audio(fetch(job.audio_url))
            if self.limits is not None:
                self.limits.check(job.model, audio)
            result = engines(job.engine).transcribe(
                audio, language=job.language, options=job.options
            )
        except reraise:
            raise
        except Exception as err:
            return self.failure_reply(err, request_id, fetched=job.audio_url is not None)
        return self.success_reply(job, result, request_id)


def audio_too_large() -> GatewayError:
    """The 413 for audio over the per-file limit."""
    return payload_too_large(MAX_AUDIO_BYTES, "audio")


class DownloadBuffer:
    """Collects a download's chunks, stopping with a 413 as soon as it exceeds the audio cap.

    Shared by every ``audio_url`` fetcher so they all enforce the cap the same way, and
    before the whole body is in memory.

    Parameters
    ----------
    content_length : int or None
        The declared length, checked up front when known.

    Examples
    --------
    >>> buffer = DownloadBuffer(None)
    >>> buffer.add(b"abc")
    >>> buffer.getvalue()
    b'abc'
    """

    def __init__(self, content_length: int | None) -> None:
        if content_length is not None and content_length > MAX_AUDIO_BYTES:
            raise audio_too_large()
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        """Append a chunk.

        Raises
        ------
        GatewayError
            413 once the total is over the per-file limit.
        """
        self._size += len(chunk)
        if self._size > MAX_AUDIO_BYTES:
            raise audio_too_large()
        self._chunks.append(chunk)

    def getvalue(self) -> bytes:
        """Everything received."""
        return b"".join(self._chunks)


def _check_audio(data: bytes) -> bytes:
    if not data:
        raise _validation("audio is empty (0 bytes)", "audio")
    if len(data) > MAX_AUDIO_BYTES:
        raise audio_too_large()
    return data


def _optional_text(values: Mapping[str, Any], name: str) -> str | None:
    """A string field, with ``""`` meaning absent (as an empty form input does)."""
    value = values.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _validation(f"{name} must be a string", name)
    return value


def _looks_like_audio(part: FormPart) -> bool:
    ctype = (part.content_type or "").lower()
    if ctype.startswith("audio/"):
        return True
    ext = (part.filename or "").rpartition(".")[2].lower()
    return "." in (part.filename or "") and ext in _LIVE_EXTENSIONS


def _decode_b64(value: str) -> bytes:
    payload = value
    if value[:5].lower() == "data:":
        header, comma, payload = value.partition(",")
        params = [p.strip().lower() for p in header[5:].split(";")]
        mime = params[0]
        if not comma or "base64" not in params[1:]:
            raise _validation("audio_b64 data URI must be 'data:audio/...;base64,...'", "audio_b64")
        if mime and not mime.startswith(_DATA_URI_MIME_PREFIXES):
            raise _validation(
                f"audio_b64 data URI has MIME type {mime!r}, not audio/*", "audio_b64"
            )
    try:
        # Line breaks are common in base64 written by other tools; validate=True would
        # reject them, so they go first.
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise _validation(f"audio_b64 is not valid base64: {err}", "audio_b64") from err
    return _check_audio(data)


def _check_url(url: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise _validation(f"audio_url is longer than {MAX_URL_LENGTH} characters", "audio_url")
    try:
        parts = urlsplit(url)
        scheme, hostname, has_userinfo = parts.scheme, parts.hostname, "@" in parts.netloc
    except ValueError:  # a bad port or bracketed host
        scheme, hostname, has_userinfo = "", None, False
    if scheme.lower() not in ("http", "https") or not hostname:
        raise _validation("audio_url must be an absolute http(s) URL", "audio_url")
    if has_userinfo:
        # Never sent on as credentials, and never kept: the URL is the dedupe identity.
        raise _validation(
            "audio_url must not contain credentials (user:password@); use a pre-signed URL",
            "audio_url",
        )
    return url


_TOO_DEEP: Final = f"request body is nested deeper than {MAX_JSON_DEPTH} levels"


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests lists/objects more than ``limit`` deep.

    Iterative, so the check itself cannot run out of stack.

    Examples
    --------
    >>> _too_deep({"a": [[1]]}, 3), _too_deep({"a": [[1]]}, 2)
    (False, True)
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return False


def _hide_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (for records, not requests).

    Examples
    --------
    >>> _hide_userinfo("http://u:p@h/a.wav")
    'http://***@h/a.wav'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:authority_end]
    if "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{rest[authority_end:]}"


def _check_provider(value: Any, *, strict: bool) -> None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise _validation(f"provider must be a JSON object: {err}", "provider") from err
        except RecursionError as err:
            raise _validation(
                f"provider is nested deeper than {MAX_JSON_DEPTH} levels", "provider"
            ) from err
        if _too_deep(value):
            raise _validation(f"provider is nested deeper than {MAX_JSON_DEPTH} levels", "provider")
    if not isinstance(value, dict):
        raise _validation("provider must be a JSON object", "provider")
    for key, item in value.items():
        if key in _PROVIDER_LIST_KEYS:
            if not isinstance(item, list) or not all(isinstance(v, str) for v in item):
                raise _validation(f"provider.{key} must be a list of strings", "provider")
        elif key == "include_alpha":
            if not isinstance(item, bool):
                raise _validation("provider.include_alpha must be a boolean", "provider")
        elif strict:
            raise _validation(f"unknown provider option {key!r}", "provider")


def _check_live_extras(values: Mapping[str, Any]) -> None:
    temperature = values.get("temperature")
    if temperature is not None and temperature != "":
        try:
            number = float(temperature)
        except (TypeError, ValueError):
            number = -1.0
        if isinstance(temperature, bool) or not 0.0 <= number <= 1.0:
            raise _validation("temperature must be a number between 0 and 1", "temperature")
    response_format = values.get("response_format")
    if response_format not in (None, "") and response_format not in _RESPONSE_FORMATS:
        raise _validation(
            f"response_format must be one of {', '.join(sorted(_RESPONSE_FORMATS))}",
            "response_format",
        )


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _granularities(value: Any) -> set[str]:
    """``timestamp_granularities`` as a set: one name, a JSON list, a list, or repeats."""
    items: list[Any] = []
    for item in _as_list(value):
        if isinstance(item, str) and item.strip().startswith("["):
            try:
                item = json.loads(item)
            except ValueError as err:
                raise _validation(
                    f"timestamp_granularities is not a JSON list: {err}", _REPEATABLE
                ) from err
        items.extend(_as_list(item))
    names: set[str] = set()
    for item in items:
        if item in ("", None):
            continue
        if not isinstance(item, str) or item.strip() not in _GRANULARITIES:
            raise _validation(
                f"timestamp_granularities must be {' and/or '.join(_GRANULARITIES)}, got {item!r}",
                _REPEATABLE,
            )
        names.add(item.strip())
    return names


def _engine_options(values: Mapping[str, Any]) -> tuple[TranscribeOptions, bool]:
    """The engine options and whether the answer is verbose, from checked live fields."""
    verbose = values.get("response_format") == _VERBOSE
    granularities = _granularities(values.get(_REPEATABLE))
    if granularities and not verbose:
        raise _validation("timestamp_granularities needs response_format=verbose_json", _REPEATABLE)
    timestamps: Literal["segment", "word"] | None = None
    if verbose:
        timestamps = "word" if "word" in granularities else "segment"
    prompt = _optional_text(values, "prompt")
    temperature = values.get("temperature")
    return (
        TranscribeOptions(
            prompt=prompt,
            temperature=None if temperature in (None, "") else float(temperature),
            timestamps=timestamps,
        ),
        verbose,
    )
