"""A pool of engine worker processes fed through pipes, with time limits and cancellation.

Why not ``concurrent.futures.ProcessPoolExecutor``: its "spawn" workers re-import the
user's main module, so a plain script without an ``if __name__ == "__main__":`` guard
runs itself again in every worker (and ``python -`` fails outright); "fork" is unsafe in a
process that runs event loops in threads. These workers are fresh interpreters running
``python -m phaseo_notebook._engines._worker_main``: they import nothing of the caller's.
Each loads its engine's model once, at start, and keeps it.

What a worker runs is a :class:`WorkerSpec`: the engine module, which provides
``load_recogniser(config)``, and its JSON-able config.

Wire format, both ways: messages of an 8-byte big-endian length, then the payload. Once
its model is loaded, a worker sends ``{"ready": true}``. A job is two messages, a JSON
object ``{"language", "options"}`` then the encoded audio; the worker answers one JSON
object, :meth:`EngineResult.to_dict` or ``{"error": <kind>, "message": ...}``.

A job that runs past the pool's ``job_timeout``, or whose caller gives up
(:meth:`WorkerPool.abort`, e.g. the HTTP client disconnected), kills its worker: the
only way to stop a recogniser mid-file. The next job starts a new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from phaseo_notebook._engines._decode import (
    DEFAULT_MAX_DURATION,
    AudioDecodeError,
    AudioTooLongError,
    EngineResult,
    TranscribeOptions,
    UnsupportedLanguageError,
)
from phaseo_notebook._exceptions import EngineModelError

__all__ = [
    "DEFAULT_JOB_TIMEOUT",
    "EngineCrashedError",
    "EngineTimeoutError",
    "PooledEngine",
    "Recogniser",
    "WorkerPool",
    "WorkerSpec",
    "error_message",
    "read_message",
    "write_message",
]

_HEADER = struct.Struct(">Q")
# The directory that holds the ``phaseo_notebook`` package, so a worker finds the same copy
# even when the caller imported it from a path that is not installed.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
_WORKER_MODULE: Final = "phaseo_notebook._engines._worker_main"
# How long a shutdown lets an idle worker exit by itself before it is killed.
_EXIT_GRACE: Final = 2.0


class EngineCrashedError(RuntimeError):
    """A worker process died while transcribing (killed, out of memory); it is restarted."""


class EngineTimeoutError(TimeoutError):
    """A job ran past the pool's time limit; its worker was stopped (and is restarted).

    Examples
    --------
    >>> str(EngineTimeoutError("transcription took longer than 5 s"))
    'transcription took longer than 5 s'
    """


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker process runs: an engine module and its JSON-able config.

    Parameters
    ----------
    module : str
        A module with ``load_recogniser(config) -> callable(data, language, options)``.
    config : Mapping
        Passed to ``load_recogniser``.

    Examples
    --------
    >>> WorkerSpec("phaseo_notebook._engines._pocketsphinx").to_json()
    '{"module": "phaseo_notebook._engines._pocketsphinx", "config": {}}'
    """

    module: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The spec as one JSON string (a worker's command-line argument)."""
        return json.dumps({"module": self.module, "config": dict(self.config)})


def write_message(stream: IO[bytes], payload: bytes) -> None:
    """Write one length-prefixed message and flush."""
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def read_message(stream: IO[bytes]) -> bytes | None:
    """One message, or None at a clean end of stream."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) != _HEADER.size:
        raise EOFError("truncated message header")
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) != size:
        raise EOFError("truncated message")
    return payload


def error_message(err: BaseException) -> dict[str, Any]:
    """The worker's answer for a failed job: the error's kind, so the parent re-raises it typed.

    Examples
    --------
    >>> error_message(AudioDecodeError("bad"))
    {'error': 'AudioDecodeError', 'message': 'bad'}
    """
    if isinstance(err, AudioTooLongError):
        return {"error": "AudioTooLongError", "message": str(err), "max_duration": err.max_duration}
    for kind in (AudioDecodeError, UnsupportedLanguageError, EngineModelError, ImportError):
        if isinstance(err, kind):
            return {"error": kind.__name__, "message": str(err)}
    return {"error": "Exception", "message": f"{type(err).__name__}: {err}"}


def _result(message: bytes) -> EngineResult:
    body = json.loads(message)
    kind = body.get("error")
    if kind is None:
        return EngineResult.from_dict(body)
    text = body["message"]
    if kind == "AudioTooLongError":
        raise AudioTooLongError(text, float(body["max_duration"]))
    errors: dict[str, type[Exception]] = {
        "AudioDecodeError": AudioDecodeError,
        "UnsupportedLanguageError": UnsupportedLanguageError,
        "EngineModelError": EngineModelError,
        "ImportError": ImportError,
    }
    if kind in errors:
        raise errors[kind](text)
    raise RuntimeError(f"engine worker failed: {text}")


_Job = tuple[bytes, bytes, "concurrent.futures.Future[EngineResult]"]


class WorkerPool:
    """``workers`` long-lived worker processes, started on first use, one job each at a time.

    Parameters
    ----------
    workers : int
        Processes to run at most.
    spec : WorkerSpec
        The engine every worker loads.
    job_timeout : float or None
        Seconds a job may run before its worker is stopped and the job fails with
        :class:`EngineTimeoutError`; ``None`` for no limit.

    Examples
    --------
    >>> spec = WorkerSpec("phaseo_notebook._engines._pocketsphinx")
    >>> pool = WorkerPool(1, spec)  # doctest: +SKIP
    >>> pool.submit(Path("english.wav").read_bytes()).result().text  # doctest: +SKIP
    'one two three'
    >>> pool.shutdown()  # doctest: +SKIP
    """

    def __init__(self, workers: int, spec: WorkerSpec, *, job_timeout: float | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if job_timeout is not None and not job_timeout > 0:
            raise ValueError(f"job_timeout must be positive or None, got {job_timeout!r}")
        self.workers = workers
        self.spec = spec
        self.job_timeout = job_timeout
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._procs: set[subprocess.Popen[bytes]] = set()
        # The worker each running job is on, so a job can be aborted.
        self._running: dict[concurrent.futures.Future[EngineResult], subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and monitoring)."""
        with self._lock:
            return sorted(p.pid for p in self._procs)

    def submit(
        self,
        data: bytes,
        language: str | None = None,
        options: TranscribeOptions | None = None,
    ) -> concurrent.futures.Future[EngineResult]:
        """Queue one clip; the future gets its result or its error."""
        head = json.dumps(
            {"language": language, "options": asdict(options or TranscribeOptions())}
        ).encode()
        future: concurrent.futures.Future[EngineResult] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine worker pool is shut down")
            if len(self._threads) < self.workers:
                # One feeding thread per process, added as demand grows.
                thread = threading.Thread(
                    target=self._feed, name="phaseo-engine-feeder", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._jobs.put((head, data, future))
        return future

    def abort(self, future: concurrent.futures.Future[EngineResult]) -> None:
        """Give up on a job: drop it if queued, stop its worker if running."""
        if future.cancel():
            return
        with self._lock:
            proc = self._running.get(future)
        if proc is not None:
            proc.kill()

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p
        )
        # Nothing in a worker may reach for the network to find a model.
        env["HF_HUB_OFFLINE"] = "1"
        proc = subprocess.Popen(
            [sys.executable, "-m", _WORKER_MODULE, self.spec.to_json()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        with self._lock:
            self._procs.add(proc)
        # Loading the model is not part of any job's time limit.
        assert proc.stdout is not None
        try:
            if read_message(proc.stdout) is None:
                raise EOFError("worker exited while loading its model")
        except BaseException:
            proc.kill()
            self._stop(proc)
            raise
        return proc

    def _stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        with self._lock:
            self._procs.discard(proc)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):  # already broken by a dead worker
                proc.stdin.close()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _feed(self) -> None:
        proc: subprocess.Popen[bytes] | None = None
        try:
            while (job := self._jobs.get()) is not None:
                head, data, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                timer: threading.Timer | None = None
                timed_out = threading.Event()
                try:
                    if proc is not None and proc.poll() is not None:
                        self._stop(proc)  # died between jobs: reap it
                        proc = None
                    if proc is None:
                        proc = self._start()
                    assert proc.stdin is not None and proc.stdout is not None
                    with self._lock:
                        self._running[future] = proc
                    if self.job_timeout is not None:
                        timer = threading.Timer(self.job_timeout, _expire, (proc, timed_out))
                        timer.daemon = True
                        timer.start()
                    write_message(proc.stdin, head)
                    write_message(proc.stdin, data)
                    message = read_message(proc.stdout)
                    if message is None:
                        raise EOFError("worker closed its output")
                except (OSError, EOFError, ValueError) as err:
                    if proc is not None:
                        proc.kill()
                        self._stop(proc)
                    proc = None
                    if timed_out.is_set():
                        future.set_exception(
                            EngineTimeoutError(
                                f"transcription took longer than {self.job_timeout:g} s "
                                "and was stopped"
                            )
                        )
                    else:
                        future.set_exception(
                            EngineCrashedError(f"engine worker process died: {err}")
                        )
                    continue
                finally:
                    if timer is not None:
                        timer.cancel()
                    with self._lock:
                        self._running.pop(future, None)
                try:
                    future.set_result(_result(message))
                except Exception as err:
                    future.set_exception(err)
        finally:
            if proc is not None:
                self._stop(proc, _EXIT_GRACE)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every worker within about ``timeout`` seconds; safe to call twice.

        Jobs still queued fail with :class:`EngineCrashedError`; a job still running
        past the grace period is stopped with its worker.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        # Queued jobs will never run: fail them now rather than keep the caller waiting.
        pending: list[_Job] = []
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._jobs.get_nowait()
                if job is not None:
                    pending.append(job)
        for _, _, future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineCrashedError("the engine worker pool was shut down"))
        for _ in threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftovers = list(self._procs)
        for proc in leftovers:
            proc.kill()
            self._stop(proc)


def _expire(proc: subprocess.Popen[bytes], timed_out: threading.Event) -> None:
    timed_out.set()
    proc.kill()


#: Default time limit of one job in a worker, in seconds (a 2-hour file on Whisper
#: tiny.en takes about 11 minutes of one core).
DEFAULT_JOB_TIMEOUT: Final = 1800.0

Recogniser = Callable[[bytes, "str | None", TranscribeOptions], EngineResult]


class PooledEngine:
    """The shared machinery of engines that run in worker processes.

    :meth:`transcribe` runs in the calling process on one recogniser behind a lock;
    :meth:`atranscribe` sends the job to a pool of ``workers`` processes, started on
    first use, each loading the model once; a cancelled call (the HTTP client went
    away) stops the worker that was running it. Subclasses give the worker spec, the
    in-process loader, and the checks made before any work.

    Parameters
    ----------
    workers : int or None
        Processes in the pool; default ``os.cpu_count()``.
    max_duration : float
        Longest audio accepted, in seconds.
    job_timeout : float or None
        Time limit of one job in a worker.
    """

    name: str = ""

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_duration: float = DEFAULT_MAX_DURATION,
        job_timeout: float | None = DEFAULT_JOB_TIMEOUT,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not max_duration > 0:
            raise ValueError(f"max_duration must be positive, got {max_duration!r}")
        self.workers: int = workers if workers is not None else (os.cpu_count() or 1)
        self.max_duration = float(max_duration)
        self.job_timeout = job_timeout
        self._local: Recogniser | None = None
        self._local_lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()

    # -- what a subclass provides ----------------------------------------------------------

    def worker_spec(self) -> WorkerSpec:
        """What each worker process loads."""
        raise NotImplementedError

    def _load_local(self) -> Recogniser:
        """The in-process recogniser (loaded on the first :meth:`transcribe`)."""
        raise NotImplementedError

    def check_request(self, language: str | None, options: TranscribeOptions | None) -> None:
        """Refuse what the engine cannot do before any work (default: accept all)."""

    # -- the engine interface ----------------------------------------------------------------

    def transcribe(
        self,
        data: bytes,
        *,
        language: str | None = None,
        options: TranscribeOptions | None = None,
    ) -> EngineResult:
        """Transcribe encoded audio in the calling thread (one at a time per engine)."""
        self.check_request(language, options)
        with self._local_lock:
            if self._local is None:
                self._local = self._load_local()
            return self._local(data, language, options or TranscribeOptions())

    async def atranscribe(
        self,
        data: bytes,
        *,
        language: str | None = None,
        options: TranscribeOptions | None = None,
    ) -> EngineResult:
        """Transcribe in a worker process, without blocking the event loop.

        Cancelling the awaiting task stops the worker running the job, so an abandoned
        request frees its core at once.
        """
        self.check_request(language, options)
        pool = self._get_pool()
        future = pool.submit(data, language, options)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            pool.abort(future)
            raise

    def _get_pool(self) -> WorkerPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = WorkerPool(
                    self.workers, self.worker_spec(), job_timeout=self.job_timeout
                )
            return self._pool

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (empty before first use and after close)."""
        with self._pool_lock:
            pool = self._pool
        return [] if pool is None else pool.pids()

    def close(self) -> None:
        """Stop the workers (within seconds) and free the in-process recogniser.

        Safe to call more than once; the engine stays usable (a later call starts
        what it needs again).
        """
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()
        with self._local_lock:
            self._local = None

    def __repr__(self) -> str:
        running = "running" if self._pool is not None else "idle"
        return f"{type(self).__name__}(workers={self.workers}, pool={running})"
