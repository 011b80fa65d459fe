"""The async client's transcription requests, sent through one aiohttp session.

httpx's API over its aiohttp transport costs about a millisecond of CPU per request at
dozens in flight: header normalisation (``Headers.encoding`` some 80 times a request), URL
parsing, and a multipart body streamed in many small writes, each a system call. Per run
nothing of that changes but the audio, so here the URL, the headers and every form field
around the audio are encoded once per prepared call, and each request is one bytes body
written at once.

The answer comes back as an :class:`httpx.Response` (raw headers, body as received, still
encoded as the server sent it), so parsing, key redaction, error mapping and retries run
the very code the httpx path runs, and foreign errors reach
:func:`._base_client.map_transport_errors` as raw aiohttp errors it already translates.
Only the async client's POSTs with the default transport come here: downloads of URL
inputs, the sync client and custom transports (``MockTransport``) stay on httpx.

aiohttp is imported with the package, not on the first request: its import (about 0.15 s,
two TLS contexts built at module level included) is paid once, where imports are, instead
of delaying the first run. Every way of transcribing needs it (the local gateway is an
aiohttp server too).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import aiohttp
import httpx
import yarl

from . import _constants as C
from ._response_limit import too_large

__all__ = ["AiohttpSender", "encode_multipart"]

#: Connections idle longer than this are closed (httpx's default keep-alive expiry).
KEEPALIVE_SECONDS = 5.0
#: The fields that carry the audio, one per request: everything else is per call.
AUDIO_FIELDS = frozenset({"audio_url", "audio_b64", "file"})

# The escaping httpx applies to a form field's name and file name (HTML5 form encoding).
_FORM_ESCAPES = {'"': "%22", "\\": "\\\\"}
_FORM_ESCAPES.update({chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B})
_FORM_ESCAPE_RE = re.compile("|".join(re.escape(c) for c in _FORM_ESCAPES))

Part = tuple[str, Any]


def _param(name: str, value: str) -> bytes:
    escaped = _FORM_ESCAPE_RE.sub(lambda m: _FORM_ESCAPES[m.group(0)], value)
    return f'{name}="{escaped}"'.encode()


def _encode_part(boundary: bytes, part: Part) -> bytes:
    """One field, as httpx's multipart encoder writes it (boundary line to trailing CRLF)."""
    return b"".join(_part_chunks(boundary, part))


def _part_chunks(boundary: bytes, part: Part) -> list[bytes]:
    name, spec = part
    filename: str | None = spec[0]
    value = spec[1]
    content_type: str | None = spec[2] if len(spec) > 2 else None
    head = [b"--", boundary, b"\r\nContent-Disposition: form-data; ", _param("name", name)]
    if filename:
        head += [b"; ", _param("filename", filename)]
    if content_type is not None:
        head += [b"\r\nContent-Type: ", content_type.encode()]
    head.append(b"\r\n\r\n")
    head.append(value.encode("utf-8") if isinstance(value, str) else value)
    head.append(b"\r\n")
    return head


def encode_multipart(parts: Sequence[Part], boundary: str) -> bytes:
    """A ``multipart/form-data`` body of ``parts`` (as :func:`build_multipart` gives them).

    Byte for byte what httpx sends for ``files=parts`` with the same boundary.

    Examples
    --------
    >>> encode_multipart([("model", (None, "m"))], "b")
    b'--b\\r\\nContent-Disposition: form-data; name="model"\\r\\n\\r\\nm\\r\\n--b--\\r\\n'
    """
    b = boundary.encode("ascii")
    return b"".join(_encode_part(b, p) for p in parts) + b"--" + b + b"--\r\n"


class AiohttpSender:
    """Sends transcription POSTs for one :class:`AsyncClient` through one aiohttp session.

    Parameters
    ----------
    headers
        The client's request headers (key included); a multipart content type is added.
    timeout
        The client's ``httpx.Timeout``: connect, read and pool map to aiohttp's own.
    max_connections
        The connection pool's size.
    verify_tls
        Build httpx's TLS context (certifi, ``SSL_CERT_FILE``) for https gateways, so
        certificates are checked as on the httpx path. Built on first use.

    Examples
    --------
    >>> sender = AiohttpSender({"Accept": "application/json"}, httpx.Timeout(5.0), 4)
    >>> sender.content_type.startswith("multipart/form-data; boundary=")
    True
    """

    def __init__(
        self,
        headers: dict[str, str],
        timeout: httpx.Timeout,
        max_connections: int,
        *,
        verify_tls: bool = True,
    ) -> None:
        self._boundary = os.urandom(16).hex()
        self.content_type = f"multipart/form-data; boundary={self._boundary}"
        self._headers = {**headers, "Content-Type": self.content_type}
        self._timeout = timeout
        self._max_connections = max_connections
        self._verify_tls = verify_tls
        self._session: aiohttp.ClientSession | None = None
        self._client_timeout: aiohttp.ClientTimeout | None = None
        self._urls: dict[str, Any] = {}
        # (id of a prepared call, upload mode) -> (that call, fields before, fields after
        # the audio): the call is held so its id cannot be reused while the entry lives.
        self._frames: dict[tuple[int, str], tuple[object, bytes, bytes]] = {}

    def _open(self, url: str) -> aiohttp.ClientSession:
        ssl: Any = True
        if self._verify_tls and url.startswith("https:"):
            ssl = httpx.create_ssl_context()
        t = self._timeout
        self._client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=t.connect, sock_read=t.read, connect=t.pool
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=KEEPALIVE_SECONDS, ssl=ssl
            ),
            headers=self._headers,
            # The body is handed to httpx as received; it decodes it as on its own path.
            auto_decompress=False,
        )
        return self._session

    def body(self, call: object, mode: str, parts: Sequence[Part]) -> bytes:
        """The request body; the fields around the audio are encoded once per call and mode."""
        if len(parts) < 2 or parts[1][0] not in AUDIO_FIELDS:
            return encode_multipart(parts, self._boundary)  # a layout this does not know
        key = (id(call), mode)
        frame = self._frames.get(key)
        if frame is None or frame[0] is not call:
            b = self._boundary.encode("ascii")
            before = _encode_part(b, parts[0])
            after = b"".join(_encode_part(b, p) for p in parts[2:]) + b"--" + b + b"--\r\n"
            frame = self._frames[key] = (call, before, after)
        # One join, so a large file is copied once into its body, not once per piece.
        chunks = _part_chunks(self._boundary.encode("ascii"), parts[1])
        return b"".join([frame[1], *chunks, frame[2]])

    async def post(self, url: str, body: bytes) -> httpx.Response:
        """One POST; the answer's status, raw headers and body as an ``httpx.Response``.

        Raises
        ------
        aiohttp.ClientError, TimeoutError
            Raw, for :func:`._base_client.map_transport_errors` to translate.
        """
        session = self._session or self._open(url)
        target = self._urls.get(url)
        if target is None:
            target = self._urls[url] = yarl.URL(url)
        async with session.post(
            target,
            data=body,
            allow_redirects=False,
            compress=False,
            timeout=self._client_timeout,
        ) as resp:
            content = await _read_capped(resp)
            status, raw_headers, reason = resp.status, resp.raw_headers, resp.reason
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode()
        return httpx.Response(
            status, headers=list(raw_headers), content=content, extensions=extensions
        )

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


async def _read_capped(resp: Any) -> bytes:
    """The body of an aiohttp response, refused past ``MAX_RESPONSE_BYTES``.

    An answer of announced length within the cap is read in one call (the common case);
    one without a length is read chunk by chunk and stopped at the cap.
    """
    cap = C.MAX_RESPONSE_BYTES
    length = resp.content_length
    if length is not None and length <= cap:
        body: bytes = await resp.read()
        return body
    if length is not None:
        raise too_large(resp.status, cap)
    chunks = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > cap:
            raise too_large(resp.status, cap)
        chunks.append(chunk)
    return b"".join(chunks)


class LazyAiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's aiohttp transport, built on first use.

    Building it loads a TLS context (about a tenth of a second); a run whose requests all
    go through :class:`AiohttpSender` never needs it, only URL downloads do.

    Examples
    --------
    >>> t = LazyAiohttpTransport(httpx.Limits(max_connections=4))
    >>> t.built
    False
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._inner: httpx.AsyncBaseTransport | None = None

    @property
    def built(self) -> bool:
        """Whether the underlying transport exists yet."""
        return self._inner is not None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            from httpx_aiohttp import AiohttpTransport

            self._inner = AiohttpTransport(limits=self._limits)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
