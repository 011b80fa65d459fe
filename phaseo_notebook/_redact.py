"""Keep the API key out of everything an answer can carry: headers, bodies, logs.

A gateway or proxy that echoes the request's ``Authorization`` header (in an error
description, a debug field, a request-id header) must not carry the key into an exception
message, a traceback, a result (``request_id``, ``raw``), the cache, a notebook's output or
a log. :func:`redact_headers` and :func:`redact_body` clean one answer before anything
reads it; :func:`protect_logs` adds a filter to the HTTP libraries' loggers, whose DEBUG
records print raw response headers.

Pure text functions, except :func:`protect_logs`, which registers the key process-wide.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

__all__ = [
    "HTTP_LOGGERS",
    "REDACTED",
    "SecretLogFilter",
    "may_carry",
    "protect_logs",
    "redact_body",
    "redact_headers",
    "redact_text",
]

#: What replaces the API key wherever an answer echoes it.
REDACTED = "[redacted API key]"

#: The loggers the HTTP stack writes to. A filter on a logger sees only records created on
#: that logger (not those of its children), so every one is named.
HTTP_LOGGERS: tuple[str, ...] = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "hpack",
    "hpack.hpack",
    "hpack.table",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.access",
    "aiohttp.server",
    "aiohttp.web",
)


@functools.lru_cache(maxsize=16)
def _forms(secret: str) -> tuple[str, ...]:
    """The key as written, and percent-encoded when that differs (a header or a URL)."""
    encoded = quote(secret, safe="")
    return (secret,) if encoded == secret else (secret, encoded)


@functools.lru_cache(maxsize=16)
def _needles(secret: str) -> tuple[bytes, ...]:
    return tuple(form.encode("utf-8") for form in _forms(secret))


def may_carry(secret: str, content: bytes, raw_headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an answer could carry the key: a byte search, before any decoding.

    False is certain (nothing to redact); True means :func:`redact_body` and
    :func:`redact_headers` must look. A body with a backslash counts as a maybe: JSON escapes
    can hide the key from a byte search. This keeps a clean answer, the common case, to a few
    ``in`` tests.

    Examples
    --------
    >>> may_carry("sk-1234567890ab", b'{"text": "hi"}', [(b"x-request-id", b"r1")])
    False
    >>> may_carry("sk-1234567890ab", b'{"text": "hi"}', [(b"x-echo", b"sk-1234567890ab")])
    True
    """
    needles = _needles(secret)
    if b"\\" in content or any(n in content for n in needles):
        return True
    return any(n in name or n in value for name, value in raw_headers for n in needles)


def redact_text(text: str, secret: str) -> str:
    """``text`` with every copy of ``secret`` (plain or percent-encoded) replaced.

    Examples
    --------
    >>> redact_text("id sk-1234567890/ab and sk-1234567890%2Fab", "sk-1234567890/ab")
    'id [redacted API key] and [redacted API key]'
    """
    for form in _forms(secret):
        if form in text:
            text = text.replace(form, REDACTED)
    return text


def redact_headers(items: list[tuple[str, str]], secret: str) -> tuple[list[tuple[str, str]], bool]:
    """Header pairs with the key replaced in names and values; True when any changed.

    Examples
    --------
    >>> redact_headers([("x-request-id", "sk-1234567890ab")], "sk-1234567890ab")
    ([('x-request-id', '[redacted API key]')], True)
    """
    changed = False
    out = []
    for name, value in items:
        clean_name, clean_value = redact_text(name, secret), redact_text(value, secret)
        changed = changed or clean_name != name or clean_value != value
        out.append((clean_name, clean_value))
    return out, changed


def _walk(value: Any, secret: str) -> tuple[Any, bool]:
    if isinstance(value, str):
        clean = redact_text(value, secret)
        return clean, clean != value
    if isinstance(value, list):
        changed = False
        items = []
        for item in value:
            clean, hit = _walk(item, secret)
            changed = changed or hit
            items.append(clean)
        return items, changed
    if isinstance(value, dict):
        changed = False
        mapping = {}
        for key, item in value.items():
            clean_key, hit_key = _walk(key, secret)
            clean, hit = _walk(item, secret)
            changed = changed or hit or hit_key
            mapping[clean_key] = clean
        return mapping, changed
    return value, False


def redact_body(content: bytes, secret: str) -> bytes | None:
    """The body with the key replaced, or None when it does not carry the key.

    Looks at the raw bytes, and at the decoded values of a JSON body that uses escapes
    (``\\u0073k-...``, ``\\/``), which hide the key from a byte search. Such a body is
    written back as JSON with the same values, the key aside.

    Examples
    --------
    >>> redact_body(b'{"debug": "\\\\u0073k-1234567890\\\\/ab"}', "sk-1234567890/ab")
    b'{"debug": "[redacted API key]"}'
    >>> redact_body(b'{"text": "hello"}', "sk-1234567890/ab") is None
    True
    """
    out = content
    changed = False
    for form in _forms(secret):
        needle = form.encode("utf-8")
        if needle in out:
            out = out.replace(needle, REDACTED.encode("ascii"))
            changed = True
    if b"\\" in out:  # only an escaped body can hide the key from the search above
        try:
            decoded = json.loads(out)
        except (ValueError, UnicodeDecodeError, RecursionError):
            decoded = None
        if decoded is not None:
            clean, hit = _walk(decoded, secret)
            if hit:
                out = json.dumps(clean, ensure_ascii=False).encode("utf-8")
                changed = True
    return out if changed else None


class SecretLogFilter(logging.Filter):
    """Rewrites a log record whose message carries a registered key.

    Runs only for records that pass the logger's level, so it costs nothing while the
    HTTP libraries' DEBUG logs are off (the default).
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        clean = message
        for secret in self.secrets:
            clean = redact_text(clean, secret)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = SecretLogFilter()
_installed = False
_lock = threading.Lock()


def protect_logs(secret: str) -> None:
    """Keep ``secret`` out of the records of every logger in :data:`HTTP_LOGGERS`.

    Examples
    --------
    >>> protect_logs("sk-doctest-0123456789")
    >>> logging.getLogger("httpcore.http11").filters[-1].secrets >= {"sk-doctest-0123456789"}
    True
    """
    global _installed
    with _lock:
        _FILTER.secrets.add(secret)
        if not _installed:
            for name in HTTP_LOGGERS:
                logging.getLogger(name).addFilter(_FILTER)
            _installed = True
