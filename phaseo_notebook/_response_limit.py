"""A cap on the size of an answer the client reads.

A broken or hostile gateway can answer with hundreds of megabytes; read whole, that grows
the client by as much (and more while it is parsed). The clients' transports are wrapped
here so that reading an answer stops with :class:`ResponseTooLargeError` once it passes
:data:`~phaseo_notebook._constants.MAX_RESPONSE_BYTES`, whether or not it announced its
length. The count is of bytes as sent, before any ``Content-Encoding`` is undone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx

from ._exceptions import ResponseTooLargeError

__all__ = ["CappedAsyncTransport", "CappedTransport", "too_large"]


def too_large(status_code: int, limit: int) -> ResponseTooLargeError:
    """The error for an answer over ``limit`` bytes (no request id: headers are unchecked).

    Examples
    --------
    >>> str(too_large(200, 64 * 1024 * 1024))
    'the gateway answered 200 with a body over the 64 MiB the client reads'
    """
    size = f"{limit / 1024 / 1024:g} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"
    return ResponseTooLargeError(
        f"the gateway answered {status_code} with a body over the {size} the client reads",
        status_code=status_code,
    )


def _announced(response: httpx.Response) -> int | None:
    try:
        return int(response.headers.get("content-length", ""))
    except ValueError:
        return None


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, limit: int, status_code: int) -> None:
        self._inner, self._limit, self._status = inner, limit, status_code

    def __iter__(self) -> Iterator[bytes]:
        size = 0
        for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise too_large(self._status, self._limit)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _CappedAsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int, status_code: int) -> None:
        self._inner, self._limit, self._status = inner, limit, status_code

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise too_large(self._status, self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx.BaseTransport):
    """A sync transport whose answers stop being read past ``limit`` bytes.

    Examples
    --------
    >>> inner = httpx.MockTransport(lambda request: httpx.Response(200, content=b"x" * 10))
    >>> with httpx.Client(transport=CappedTransport(inner, 4)) as http:
    ...     http.get("http://gw/")
    Traceback (most recent call last):
    ...
    phaseo_notebook.ResponseTooLargeError: the gateway answered 200 with a body over the 4 bytes the client reads
    """

    def __init__(self, inner: httpx.BaseTransport, limit: int) -> None:
        self._inner, self._limit = inner, limit

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        announced = _announced(response)
        if announced is not None and announced > self._limit:
            response.close()
            raise too_large(response.status_code, self._limit)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _CappedStream(response.stream, self._limit, response.status_code)
        return response

    def close(self) -> None:
        self._inner.close()


class CappedAsyncTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`CappedTransport`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        announced = _announced(response)
        if announced is not None and announced > self._limit:
            await response.aclose()
            raise too_large(response.status_code, self._limit)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedAsyncStream(response.stream, self._limit, response.status_code)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
