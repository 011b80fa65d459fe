"""Start a child process that answers Ctrl-C, whatever the test run inherited.

A process started with SIGINT ignored (a test suite run as ``cmd &`` from a non-interactive
shell sets SIG_IGN, and exec keeps it) never gets Python's KeyboardInterrupt handler: Python
installs it only when SIGINT is at its default at startup. ``subprocess``'s
``restore_signals`` restores SIGPIPE and SIGXFSZ, not SIGINT. So the child is started through
a tiny trampoline that puts SIGINT back to its default and then execs the real command;
unlike ``preexec_fn``, this is safe while the test process runs threads (the local gateway).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

_TRAMPOLINE = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def with_default_sigint(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that it starts with SIGINT at its default disposition.

    Examples
    --------
    >>> with_default_sigint(["/bin/true"])[-1]
    '/bin/true'
    """
    return [sys.executable, "-c", _TRAMPOLINE, *argv]
