"""Speech engines behind the local gateway.

Two engines implement :class:`Engine`:

- ``"fake"``: :class:`FakeEngine`, a deterministic hash of the audio bytes; for tests
  and benchmarks of everything above the engine.
- ``"pocketsphinx"``: :class:`PocketSphinxEngine`, real offline English recognition
  with the model shipped inside the ``pocketsphinx`` wheel (the ``[local]`` extra).

Use :func:`get_engine` for a new engine that the caller closes, or
:func:`shared_engine` for the one per process that every in-process gateway shares
(so they share one worker pool rather than each spawning ``os.cpu_count()`` processes).
"""

from __future__ import annotations

import atexit
import threading
from typing import Protocol, runtime_checkable

from phaseo_notebook._engines._decode import (
    AudioDecodeError,
    EngineResult,
    decode_to_pcm16k,
    wav_duration,
)
from phaseo_notebook._engines._fake import FakeEngine, fake_transcript

__all__ = [
    "ENGINE_NAMES",
    "AudioDecodeError",
    "Engine",
    "EngineResult",
    "FakeEngine",
    "decode_to_pcm16k",
    "fake_transcript",
    "get_engine",
    "shared_engine",
    "wav_duration",
]

#: Names accepted by :func:`get_engine` and :func:`shared_engine`.
ENGINE_NAMES: tuple[str, ...] = ("fake", "pocketsphinx")


@runtime_checkable
class Engine(Protocol):
    """A speech-to-text engine.

    Attributes
    ----------
    name : str
        ``"fake"`` or ``"pocketsphinx"``.

    Examples
    --------
    >>> engine: Engine = get_engine("fake")
    >>> engine.transcribe(b"...", language="en").language
    'en'
    """

    name: str

    def transcribe(self, data: bytes, *, language: str | None = None) -> EngineResult:
        """Transcribe encoded audio; synchronous, thread-safe, may be slow."""
        ...

    async def atranscribe(self, data: bytes, *, language: str | None = None) -> EngineResult:
        """Transcribe encoded audio without blocking the event loop for long."""
        ...

    def close(self) -> None:
        """Release the engine's resources (worker processes, decoders)."""
        ...


def get_engine(name: str, *, workers: int | None = None) -> Engine:
    """Create a new engine by name; the caller owns it and should :meth:`~Engine.close` it.

    Parameters
    ----------
    name : str
        ``"fake"`` or ``"pocketsphinx"``.
    workers : int or None
        Worker processes for :meth:`~Engine.atranscribe` (PocketSphinx only; default
        ``os.cpu_count()``). Ignored by the fake engine.

    Returns
    -------
    Engine

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`ENGINE_NAMES`.

    Examples
    --------
    >>> get_engine("fake").name
    'fake'
    >>> get_engine("whisper")
    Traceback (most recent call last):
    ...
    ValueError: unknown engine 'whisper'; valid engines: 'fake', 'pocketsphinx'
    """
    if name == "fake":
        return FakeEngine()
    if name == "pocketsphinx":
        # Imported here so that the fake engine never pays for (or needs) the local extra.
        from phaseo_notebook._engines._pocketsphinx import PocketSphinxEngine

        return PocketSphinxEngine(workers=workers)
    valid = ", ".join(repr(n) for n in ENGINE_NAMES)
    raise ValueError(f"unknown engine {name!r}; valid engines: {valid}")


_shared: dict[str, Engine] = {}
_shared_lock = threading.Lock()


def shared_engine(name: str) -> Engine:
    """Return the process-wide engine for ``name``, creating it on first use.

    Every in-process gateway and embedded transport asks for its engine here, so they
    share one PocketSphinx worker pool instead of oversubscribing the cores. The
    engines are closed at interpreter exit. Thread-safe.

    Parameters
    ----------
    name : str
        ``"fake"`` or ``"pocketsphinx"``.

    Returns
    -------
    Engine
        The same object on every call with the same ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`ENGINE_NAMES`.

    Examples
    --------
    >>> shared_engine("fake") is shared_engine("fake")
    True
    """
    with _shared_lock:
        engine = _shared.get(name)
        if engine is None:
            engine = get_engine(name)
            if not _shared:
                atexit.register(_close_shared)
            _shared[name] = engine
        return engine


def _close_shared() -> None:
    """Close every shared engine (registered with ``atexit``)."""
    with _shared_lock:
        engines = list(_shared.values())
        _shared.clear()
    for engine in engines:
        engine.close()
