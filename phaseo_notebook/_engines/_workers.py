"""A pool of PocketSphinx worker processes fed through pipes.

Why not ``concurrent.futures.ProcessPoolExecutor``: its "spawn" workers re-import the
user's main module, so a plain script without an ``if __name__ == "__main__":`` guard
runs itself again in every worker (and ``python -`` fails outright); "fork" is unsafe in a
process that runs event loops in threads. These workers are fresh interpreters running
``python -m phaseo_notebook._engines._workers``: they import nothing of the caller's.

Wire format, both ways: an 8-byte big-endian length, then the payload. The parent sends
encoded audio; the worker answers a JSON object, ``{"text", "duration", "language"}`` or
``{"error": "AudioDecodeError" | "Exception", "message": ...}``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from phaseo_notebook._engines._decode import AudioDecodeError, EngineResult

__all__ = ["EngineCrashedError", "WorkerPool"]

_HEADER = struct.Struct(">Q")
# The directory that holds the ``phaseo_notebook`` package, so a worker finds the same copy
# even when the caller imported it from a path that is not installed.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class EngineCrashedError(RuntimeError):
    """A worker process died while transcribing (killed, out of memory); it is restarted."""


def _write(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read(stream: IO[bytes]) -> bytes | None:
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


def _answer(decoder: Any, data: bytes) -> dict[str, Any]:
    from phaseo_notebook._engines._pocketsphinx import _transcribe_with

    try:
        result = _transcribe_with(decoder, data)
    except AudioDecodeError as err:
        return {"error": "AudioDecodeError", "message": str(err)}
    except Exception as err:  # reported to the caller, the worker lives on
        return {"error": "Exception", "message": f"{type(err).__name__}: {err}"}
    return {"text": result.text, "duration": result.duration, "language": result.language}


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The worker's loop: one decoder, one request at a time, until stdin closes."""
    from phaseo_notebook._engines._pocketsphinx import _new_decoder

    decoder = _new_decoder()
    while (data := _read(stdin)) is not None:
        _write(stdout, json.dumps(_answer(decoder, data)).encode())


def _result(message: bytes) -> EngineResult:
    body = json.loads(message)
    if "error" in body:
        if body["error"] == "AudioDecodeError":
            raise AudioDecodeError(body["message"])
        raise RuntimeError(f"pocketsphinx worker failed: {body['message']}")
    return EngineResult(body["text"], duration=body["duration"], language=body["language"])


class WorkerPool:
    """``workers`` long-lived worker processes, started on first use, one job each at a time.

    Parameters
    ----------
    workers
        Processes to run at most.

    Examples
    --------
    >>> pool = WorkerPool(1)  # doctest: +SKIP
    >>> pool.submit(Path("english.wav").read_bytes()).result().text  # doctest: +SKIP
    'one two three'
    >>> pool.shutdown()  # doctest: +SKIP
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._jobs: queue.SimpleQueue[tuple[bytes, concurrent.futures.Future[EngineResult]] | None]
        self._jobs = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, data: bytes) -> concurrent.futures.Future[EngineResult]:
        """Queue one clip; the future gets its result or its error."""
        future: concurrent.futures.Future[EngineResult] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the pocketsphinx worker pool is shut down")
            if len(self._threads) < self.workers:
                # One feeding thread per process, added as demand grows.
                thread = threading.Thread(
                    target=self._feed, name="phaseo-pocketsphinx-feeder", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._jobs.put((data, future))
        return future

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "phaseo_notebook._engines._workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        with self._lock:
            self._procs.add(proc)
        return proc

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):  # already broken by a dead worker
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _feed(self) -> None:
        proc: subprocess.Popen[bytes] | None = None
        try:
            while (job := self._jobs.get()) is not None:
                data, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if proc is None or proc.poll() is not None:
                        proc = self._start()
                    assert proc.stdin is not None and proc.stdout is not None
                    _write(proc.stdin, data)
                    message = _read(proc.stdout)
                    if message is None:
                        raise EOFError("worker closed its output")
                except (OSError, EOFError, ValueError) as err:
                    if proc is not None:
                        proc.kill()
                        self._stop(proc)
                    proc = None
                    future.set_exception(
                        EngineCrashedError(f"pocketsphinx worker process died: {err}")
                    )
                    continue
                try:
                    future.set_result(_result(message))
                except Exception as err:
                    future.set_exception(err)
        finally:
            if proc is not None:
                self._stop(proc)

    def shutdown(self) -> None:
        """Stop every worker after the jobs already queued; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(timeout=30)
        with self._lock:
            leftovers = list(self._procs)
        for proc in leftovers:
            proc.kill()
            self._stop(proc)


if __name__ == "__main__":
    # Ctrl-C in a terminal or a notebook reaches the whole process group; the parent
    # decides what stops, and closes our stdin when it does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)
