"""Counters of what the local gateway received, for tests and benchmarks to assert on.

The server's event loop writes them while a test thread reads them, so every access
goes through one lock; each update is a handful of dict operations, far below the
per-request budget. :class:`GatewayStats` is the frozen snapshot that callers get, in
the same shape whether the gateway runs in a thread or in another process (where it
travels as JSON through ``GET /_admin/stats``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RECENT_LIMIT", "GatewayStats", "StatsRecorder"]

#: How many request records :attr:`GatewayStats.recent` keeps (the newest ones).
RECENT_LIMIT = 200


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """A snapshot of the local gateway's counters.

    Only ``POST /v1/audio/transcriptions`` is counted; models, admin, file and health
    routes are not.

    Parameters
    ----------
    requests : int
        Transcription requests received (including rejected and faulted ones).
    by_status : dict of int to int
        Answers sent, by HTTP status.
    in_flight : int
        Requests being handled right now.
    max_in_flight : int
        High-water mark of ``in_flight``, counted from a request's arrival to its answer.
    audio_counts : dict of str to int
        How often each audio input was sent: the key is the SHA-256 hex of the audio
        bytes (file part or ``audio_b64``), or ``"url:" + audio_url``.
    dropped : int
        Connections closed without an answer by the ``drop_rate`` fault.
    recent : tuple of dict
        The newest request records (at most :data:`RECENT_LIMIT`), oldest first:
        ``{"fields": {...}, "file": {"filename", "content_type", "size"} or None,
        "authorization": "Bearer" or None, "content_type": ...}``. ``audio_b64`` is
        replaced by its length and only the scheme of ``Authorization`` is kept.

    Examples
    --------
    >>> stats = GatewayStats(requests=2, by_status={200: 2})
    >>> stats.to_dict()["by_status"]
    {'200': 2}
    >>> GatewayStats.from_dict(stats.to_dict()) == stats
    True
    """

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    audio_counts: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    recent: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (status keys become strings, as JSON requires)."""
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "audio_counts": dict(self.audio_counts),
            "dropped": self.dropped,
            "recent": list(self.recent),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GatewayStats:
        """Rebuild a snapshot from :meth:`to_dict` output (e.g. the admin route's JSON)."""
        return cls(
            requests=int(data["requests"]),
            by_status={int(k): int(v) for k, v in data["by_status"].items()},
            in_flight=int(data["in_flight"]),
            max_in_flight=int(data["max_in_flight"]),
            audio_counts={str(k): int(v) for k, v in data["audio_counts"].items()},
            dropped=int(data["dropped"]),
            recent=tuple(data["recent"]),
        )


class StatsRecorder:
    """The live, thread-safe counters behind :class:`GatewayStats`.

    Examples
    --------
    >>> recorder = StatsRecorder()
    >>> recorder.arrive()
    >>> recorder.finish(200)
    >>> recorder.snapshot().by_status
    {200: 1}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._by_status: dict[int, int] = {}
        self._in_flight = 0
        self._max_in_flight = 0
        self._audio_counts: dict[str, int] = {}
        self._dropped = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_LIMIT)

    def arrive(self) -> None:
        """Count a transcription request, in flight from the moment it arrives."""
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            if self._in_flight > self._max_in_flight:
                self._max_in_flight = self._in_flight

    def record(self, record: dict[str, Any]) -> None:
        """Keep what :attr:`GatewayStats.recent` shows for a request."""
        with self._lock:
            self._recent.append(record)

    def audio(self, identity: str) -> None:
        """Count one send of the audio input ``identity``."""
        with self._lock:
            self._audio_counts[identity] = self._audio_counts.get(identity, 0) + 1

    def finish(self, status: int | None, *, dropped: bool = False) -> None:
        """Count the end of a request.

        Parameters
        ----------
        status : int or None
            The answer's status; ``None`` when there was no answer.
        dropped : bool
            Whether the drop fault closed the connection (a client that went away or
            a shutdown also leave ``status`` at ``None``, but are not drops).
        """
        with self._lock:
            self._in_flight -= 1
            if status is not None:
                self._by_status[status] = self._by_status.get(status, 0) + 1
            elif dropped:
                self._dropped += 1

    def snapshot(self) -> GatewayStats:
        """The counters as they are now."""
        with self._lock:
            return GatewayStats(
                requests=self._requests,
                by_status=dict(self._by_status),
                in_flight=self._in_flight,
                max_in_flight=self._max_in_flight,
                audio_counts=dict(self._audio_counts),
                dropped=self._dropped,
                recent=tuple(self._recent),
            )

    def reset(self) -> None:
        """Zero every counter; requests still in flight stay counted as in flight.

        Keeping them means their answers do not drive ``in_flight`` negative.
        """
        with self._lock:
            self._requests = 0
            self._by_status = {}
            self._max_in_flight = self._in_flight
            self._audio_counts = {}
            self._dropped = 0
            self._recent.clear()
