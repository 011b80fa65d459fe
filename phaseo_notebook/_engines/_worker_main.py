"""The entry point of an engine worker process: ``python -m phaseo_notebook._engines._worker_main SPEC``.

A module of its own, so that neither the pool (:mod:`._workers`) nor an engine module
imports the other to find the child's code: the worker imports the pool's wire format
and the engine named in ``SPEC`` (a :class:`~._workers.WorkerSpec` as JSON), loads that
engine's model once, and answers jobs from stdin until stdin closes or the parent dies.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import threading
import time
from typing import IO, Any

from phaseo_notebook._engines._decode import TranscribeOptions
from phaseo_notebook._engines._workers import (
    Recogniser,
    error_message,
    read_message,
    write_message,
)

__all__ = ["main", "serve"]

# How often a worker checks that its parent is still alive.
_PARENT_POLL_SECONDS = 1.0


def serve(recogniser: Recogniser | BaseException, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer jobs one at a time until stdin closes.

    ``recogniser`` is the loaded engine, or the error its loading raised: every job is
    then answered with that error, so the caller gets the real reason, typed.
    """
    while (head := read_message(stdin)) is not None:
        data = read_message(stdin)
        if data is None:
            return
        request = json.loads(head)
        answer: dict[str, Any]
        try:
            if isinstance(recogniser, BaseException):
                raise recogniser
            options = TranscribeOptions(**request.get("options") or {})
            answer = recogniser(data, request.get("language"), options).to_dict()
        except Exception as err:  # reported to the caller, the worker lives on
            answer = error_message(err)
        write_message(stdout, json.dumps(answer).encode())


def _end_with_parent() -> None:
    """Exit as soon as the parent process is gone, even in the middle of a job."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        # The kernel delivers SIGKILL when the parent dies: no orphan, not even mid-decode.
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="phaseo-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the watch began
        os._exit(1)


def main(argv: list[str]) -> None:
    """Load the engine named by the spec in ``argv[0]`` and serve stdin/stdout."""
    # Ctrl-C in a terminal or a notebook reaches the whole process group; the parent
    # decides what stops, and closes our stdin when it does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    os.environ["HF_HUB_OFFLINE"] = "1"
    spec = json.loads(argv[0])
    recogniser: Recogniser | BaseException
    try:
        module = importlib.import_module(spec["module"])
        recogniser = module.load_recogniser(spec.get("config") or {})
    except Exception as err:
        recogniser = err
    write_message(sys.stdout.buffer, json.dumps({"ready": True}).encode())
    serve(recogniser, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main(sys.argv[1:])
