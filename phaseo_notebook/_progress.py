"""One progress bar for the whole package, over ``tqdm.auto``.

Bars are off when asked (``progress=False``), when ``PHASEO_NO_PROGRESS`` is set to anything
but ``0``/``false``, and when output goes neither to a terminal nor to a notebook (a log file
of a scheduled job should not fill with carriage returns).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ._constants import ENV_NO_PROGRESS

__all__ = ["ProgressBar", "progress_enabled"]


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def progress_enabled(progress: bool | None = True) -> bool:
    """Whether a bar should be shown.

    Examples
    --------
    >>> progress_enabled(False)
    False
    """
    if progress is False:
        return False
    if os.environ.get(ENV_NO_PROGRESS, "").strip().lower() not in ("", "0", "false", "no"):
        return False
    if _in_notebook():
        return True
    try:
        return sys.stdout.isatty() or sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """Done/total, cache hits, errors and the current request rate.

    A disabled bar costs nothing and still counts, so callers need no branches.

    Besides rows, the bar counts *units* of work, what ``on_update`` reports: a row is one
    unit, except a long file sent as chunks, which counts one unit per chunk instead. The
    units in all start as the rows and grow when a file turns out to need chunks
    (:meth:`add_units`); answered chunks move them before their file's row is done
    (:meth:`advance`). A 2-hour file is then a bar that moves every chunk, not one that
    sits at 0 until the file is stitched.

    Parameters
    ----------
    total
        Rows to do.
    enabled
        Show a bar (see :func:`progress_enabled`).
    desc
        Label in front of the bar.
    on_update
        Called with ``(units done, units in all)`` after every change, shown or not (a
        widget's own bar). Without long files, units are rows.

    Examples
    --------
    >>> seen = []
    >>> bar = ProgressBar(3, enabled=False, on_update=lambda d, t: seen.append((d, t)))
    >>> bar.update(2, cached=1)
    >>> bar.done, bar.cached
    (2, 1)
    >>> bar.add_units(4 - 1)  # the third row is a long file: 4 chunks instead of 1 unit
    >>> bar.advance(4)
    >>> bar.update(1, units=0)  # its row, stitched from the chunks already counted
    >>> seen
    [(2, 3), (2, 6), (6, 6), (6, 6)]
    >>> bar.close()
    """

    # The postfix is a formatted string; refreshing it on every completion at 600 rows/s would
    # cost more than the bookkeeping it reports.
    _POSTFIX_EVERY = 0.25

    def __init__(
        self,
        total: int,
        *,
        enabled: bool,
        desc: str = "transcribe",
        on_update: Callable[[int, int], None] | None = None,
    ) -> None:
        self.total = total
        self._on_update = on_update
        self.done = 0
        self.units = total
        """Units of work in all (see the class docstring); grows with long files."""
        self.units_done = 0
        self.cached = 0
        self.errors = 0
        self.sent = 0
        self.spent: float | None = None
        """Sum of the costs answers reported (None until one does)."""
        self.budget: float | None = None
        """The run's budget, shown beside the spend."""
        self._start = time.monotonic()
        self._last_postfix = 0.0
        self._bar: Any = None
        if enabled and total > 0:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="row", dynamic_ncols=True, leave=True)

    def update(
        self,
        n: int = 1,
        *,
        cached: int = 0,
        errors: int = 0,
        sent: int = 0,
        units: int | None = None,
    ) -> None:
        """Count ``n`` finished rows, of which ``cached`` came from the cache and ``errors`` failed.

        ``units`` are the units of work they finish, ``n`` unless told (a long file's row
        finishes only the chunk units :meth:`advance` did not count).
        """
        self.done += n
        self.cached += cached
        self.errors += errors
        self.sent += sent
        self.units_done += n if units is None else units
        self._report()
        if self._bar is None:
            return
        self._bar.update(n)
        now = time.monotonic()
        if now - self._last_postfix >= self._POSTFIX_EVERY or self.done >= self.total:
            self._last_postfix = now
            self._bar.set_postfix_str(self.postfix(now), refresh=False)

    def add_units(self, units: int) -> None:
        """The run's work changed by ``units`` (more when a file turns out to need chunks;
        fewer when its plan ends under the estimate). Moves only the units, not the rows."""
        self.units += units
        self._report()

    def advance(self, units: int = 1) -> None:
        """Count ``units`` of work done that finish no row (a long file's answered chunk)."""
        self.units_done += units
        self._report()

    def _report(self) -> None:
        if self._on_update is not None:
            self._on_update(self.units_done, self.units)

    def partial(self, rows: float) -> None:
        """Move the bar by a fraction of a row (a long file's answered chunk), counting nothing.

        The row is counted by :meth:`update` when it finishes; take back what was shown
        with a negative ``rows`` first.
        """
        if self._bar is not None:
            self._bar.update(rows)

    def add_cost(self, cost: float) -> None:
        """Count a cost an answer reported (shown from the next refresh).

        Examples
        --------
        >>> bar = ProgressBar(1, enabled=False)
        >>> bar.budget = 0.5
        >>> bar.add_cost(0.0002)
        >>> bar.postfix(now=bar._start + 1.0)
        'cached=0 errors=0 req/s=0.0 spent=0.0002/0.5 USD'
        """
        self.spent = (self.spent or 0.0) + cost

    def postfix(self, now: float | None = None) -> str:
        """The text after the bar: cache hits, errors, requests per second, and spend."""
        elapsed = max((now or time.monotonic()) - self._start, 1e-9)
        text = f"cached={self.cached} errors={self.errors} req/s={self.sent / elapsed:.1f}"
        if self.spent is not None:
            of = f"/{self.budget:.6g}" if self.budget is not None else ""
            text += f" spent={self.spent:.6g}{of} USD"
        return text

    def close(self) -> None:
        """Finish the bar (safe to call twice)."""
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.close()
            self._bar = None
