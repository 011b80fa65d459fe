"""Speech engines behind the local gateway.

Three engines implement :class:`Engine`:

- ``"fake"``: :class:`FakeEngine`, a deterministic hash of the audio bytes; for tests
  and benchmarks of everything above the engine.
- ``"whisper"``: ``WhisperEngine``, Whisper tiny.en on faster-whisper (the
  ``[local]`` extra), the default offline engine (model ``local/whisper-tiny.en``).
- ``"pocketsphinx"``: ``PocketSphinxEngine``, CMU PocketSphinx with the model shipped
  inside the ``pocketsphinx`` wheel (the ``[local]`` extra).

Every engine decodes through the one safe decoder (:func:`decode_to_pcm16k`: sample
rate and duration bounds), and the real ones run in worker processes that load their
model once, end with their parent, and stop a job past its time limit or abandoned
by its caller (:mod:`._workers`).

Use :func:`get_engine` for a new engine that the caller closes, or
:func:`shared_engine` for the one per process that every in-process gateway shares
(so they share one worker pool rather than each spawning ``os.cpu_count()`` processes).
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Protocol, runtime_checkable

from phaseo_notebook._engines._decode import (
    DEFAULT_MAX_DURATION,
    AudioDecodeError,
    AudioTooLongError,
    EngineResult,
    Segment,
    TranscribeOptions,
    UnsupportedLanguageError,
    Word,
    decode_to_pcm16k,
    wav_duration,
)
from phaseo_notebook._engines._fake import FakeEngine, fake_transcript
from phaseo_notebook._engines._workers import (
    DEFAULT_JOB_TIMEOUT,
    EngineCrashedError,
    EngineTimeoutError,
)

__all__ = [
    "DEFAULT_JOB_TIMEOUT",
    "DEFAULT_MAX_DURATION",
    "ENGINE_NAMES",
    "AudioDecodeError",
    "AudioTooLongError",
    "Engine",
    "EngineCrashedError",
    "EngineResult",
    "EngineTimeoutError",
    "FakeEngine",
    "Segment",
    "TranscribeOptions",
    "UnsupportedLanguageError",
    "Word",
    "decode_to_pcm16k",
    "fake_transcript",
    "get_engine",
    "shared_engine",
    "wav_duration",
]

#: Names accepted by :func:`get_engine` and :func:`shared_engine`.
ENGINE_NAMES: tuple[str, ...] = ("fake", "pocketsphinx", "whisper")


@runtime_checkable
class Engine(Protocol):
    """A speech-to-text engine.

    Attributes
    ----------
    name : str
        ``"fake"``, ``"pocketsphinx"`` or ``"whisper"``.

    Examples
    --------
    >>> engine: Engine = get_engine("fake")
    >>> engine.transcribe(b"...", language="en").language
    'en'
    """

    name: str

    def transcribe(
        self,
        data: bytes,
        *,
        language: str | None = None,
        options: TranscribeOptions | None = None,
    ) -> EngineResult:
        """Transcribe encoded audio; synchronous, thread-safe, may be slow."""
        ...

    async def atranscribe(
        self,
        data: bytes,
        *,
        language: str | None = None,
        options: TranscribeOptions | None = None,
    ) -> EngineResult:
        """Transcribe encoded audio without blocking the event loop for long.

        Cancelling the call stops the work (a worker running it is stopped).
        """
        ...

    def close(self) -> None:
        """Release the engine's resources (worker processes, decoders)."""
        ...


def get_engine(
    name: str,
    *,
    workers: int | None = None,
    max_duration: float = DEFAULT_MAX_DURATION,
    job_timeout: float | None = DEFAULT_JOB_TIMEOUT,
    model_dir: str | os.PathLike[str] | None = None,
) -> Engine:
    """Create a new engine by name; the caller owns it and should :meth:`~Engine.close` it.

    Parameters
    ----------
    name : str
        ``"fake"``, ``"pocketsphinx"`` or ``"whisper"``.
    workers : int or None
        Worker processes for :meth:`~Engine.atranscribe` (default ``os.cpu_count()``).
        Ignored by the fake engine, as are the settings below.
    max_duration : float
        Longest audio decoded, in seconds (default 2 hours; longer is refused with
        :class:`AudioTooLongError`).
    job_timeout : float or None
        Time limit of one job in a worker, in seconds (default 30 minutes).
    model_dir : path or None
        Whisper only: a CTranslate2 Whisper model directory to use instead of the
        bundled tiny.en (default ``$PHASEO_WHISPER_MODEL_DIR``).

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
    >>> get_engine("whisper-large")
    Traceback (most recent call last):
    ...
    ValueError: unknown engine 'whisper-large'; valid engines: 'fake', 'pocketsphinx', 'whisper'
    """
    if name == "fake":
        return FakeEngine()
    # Imported here so that the fake engine never pays for (or needs) the local extra.
    if name == "pocketsphinx":
        from phaseo_notebook._engines._pocketsphinx import PocketSphinxEngine

        return PocketSphinxEngine(workers, max_duration=max_duration, job_timeout=job_timeout)
    if name == "whisper":
        from phaseo_notebook._engines._whisper import WhisperEngine

        return WhisperEngine(
            workers, model_dir=model_dir, max_duration=max_duration, job_timeout=job_timeout
        )
    valid = ", ".join(repr(n) for n in ENGINE_NAMES)
    raise ValueError(f"unknown engine {name!r}; valid engines: {valid}")


_shared: dict[str, Engine] = {}
_shared_lock = threading.Lock()


def shared_engine(name: str) -> Engine:
    """Return the process-wide engine for ``name``, creating it on first use.

    Every in-process gateway and embedded transport asks for its engine here, so they
    share one worker pool per engine instead of oversubscribing the cores. The
    engines are closed at interpreter exit. Thread-safe.

    Parameters
    ----------
    name : str
        ``"fake"``, ``"pocketsphinx"`` or ``"whisper"``.

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
