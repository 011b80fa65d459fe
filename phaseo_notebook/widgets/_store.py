"""The review decisions log: one small Parquet part file per decision, in one directory.

What ``save_to`` holds: a directory (a Parquet dataset, whatever its name, so
``save_to="reviews.parquet"`` is a directory too) of part files, one row per decision made,
in the order made. It is a history: a row skipped then accepted appears twice.
:func:`read_reviews` reads the final state, one row per reviewed item, last decision wins.

Why part files rather than one file rewritten per decision: a decision costs one small write
whatever the number of rows already reviewed, and each part appears under its final name only
through an atomic rename, so a killed kernel loses at most the decision being written and never
damages earlier ones. ``pd.read_parquet(save_to)`` reads the whole log as one table (hidden
temporary names are skipped by Parquet dataset readers).

Every part carries a sequence number; resuming reads all parts and keeps, per row, the decision
with the highest one. Opening a log with many parts merges them into one part first (history
kept), so resuming stays fast after thousands of decisions.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from .._parts import PART_PREFIX, PART_SUFFIX, LocalParts

__all__ = ["DECISION_SCHEMA", "REVIEW_STATUSES", "Decision", "DecisionLog", "read_reviews"]

#: Values of ``review_status``; ``"none"`` means not reviewed yet and is never written.
REVIEW_STATUSES = ("accepted", "corrected", "rejected", "skipped", "none")

DECISION_SCHEMA = pa.schema(
    [
        ("row_key", pa.string()),
        ("position", pa.int64()),
        ("review_status", pa.string()),
        ("text", pa.string()),
        ("original", pa.string()),
        ("audio", pa.string()),
        ("decided_at", pa.timestamp("us", tz="UTC")),
        ("seq", pa.int64()),
    ]
)

#: Parts beyond this many are merged into one when the log is opened.
_COMPACT_AT = 64


@dataclass(frozen=True, slots=True)
class Decision:
    """One review decision about one row.

    Attributes
    ----------
    row_key
        What matches the decision to its row when the log is reopened: ``"audio:<identity>"``
        (the audio's sha256 or ``url:...``, the cache's identity) by default, or ``repr`` of
        the row's index label for a review opened with ``match_on="index"``.
    position
        Row position when decided (for reading the log by eye).
    review_status
        ``"accepted"``, ``"corrected"``, ``"rejected"`` or ``"skipped"``.
    text
        The reviewed transcript (None when rejected or skipped).
    original
        The transcript shown to the reviewer before any edit.
    audio
        A short description of the row's audio input.
    seq
        Order of the decision in the log; the highest wins.
    """

    row_key: str
    position: int
    review_status: str
    text: str | None
    original: str | None
    audio: str
    seq: int
    decided_at: datetime | None = None


class DecisionLog:
    """An append-only directory of Parquet part files, one per review decision.

    Parameters
    ----------
    path
        The directory (created on the first decision). An existing regular file is refused.

    Raises
    ------
    ValueError
        If ``path`` is an existing file, or holds parts that are not a review log.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> log = DecisionLog(tempfile.mkdtemp() + "/reviews.parquet")
    >>> log.append(Decision("0", 0, "accepted", "hello", "hello", "<4 bytes>", seq=log.next_seq))
    >>> pd.read_parquet(log.path)["review_status"].tolist()
    ['accepted']
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(
                f"save_to {str(self.path)!r} is an existing file; the review log is a directory"
                " of Parquet part files (pd.read_parquet reads it): give a new or existing"
                " directory path"
            )
        self._parts_store = LocalParts(self.path)
        self._decisions = self._read_all()
        self.next_seq = max((d.seq for d in self._decisions), default=-1) + 1
        if len(self._parts()) > _COMPACT_AT:
            self._compact()

    def __repr__(self) -> str:
        return f"DecisionLog({str(self.path)!r}, decisions={len(self._decisions)})"

    def _parts(self) -> list[str]:
        return self._parts_store.parts()

    def _read_all(self) -> list[Decision]:
        decisions: list[Decision] = []
        for part in self._parts():
            try:
                table = self._parts_store.read_table(part)
                missing = set(DECISION_SCHEMA.names) - set(table.column_names)
                if missing:
                    raise ValueError(f"no column {', '.join(sorted(missing))}")
                table = table.select(DECISION_SCHEMA.names).cast(DECISION_SCHEMA)
            except (OSError, ValueError, pa.ArrowInvalid) as err:
                raise ValueError(
                    f"save_to {str(self.path)!r} holds {part!r}, which is not a review"
                    f" decision part ({err}); use another directory"
                ) from err
            for row in table.to_pylist():
                decisions.append(
                    Decision(
                        row_key=row["row_key"],
                        position=row["position"],
                        review_status=row["review_status"],
                        text=row["text"],
                        original=row["original"],
                        audio=row["audio"],
                        seq=row["seq"],
                        decided_at=row["decided_at"],
                    )
                )
        return decisions

    def latest(self) -> dict[str, Decision]:
        """The decision in force for each row key: the one with the highest sequence number.

        Examples
        --------
        >>> import tempfile
        >>> log = DecisionLog(tempfile.mkdtemp())
        >>> log.append(Decision("0", 0, "skipped", None, "a", "x", seq=0))
        >>> log.append(Decision("0", 0, "accepted", "a", "a", "x", seq=1))
        >>> log.latest()["0"].review_status
        'accepted'
        """
        out: dict[str, Decision] = {}
        for d in sorted(self._decisions, key=lambda d: d.seq):
            out[d.row_key] = d
        return out

    def last(self) -> Decision | None:
        """The most recent decision, or None for an empty log.

        Examples
        --------
        >>> import tempfile
        >>> DecisionLog(tempfile.mkdtemp()).last() is None
        True
        """
        return max(self._decisions, key=lambda d: d.seq, default=None)

    def append(self, decision: Decision) -> None:
        """Write one decision now, as its own part file (atomic rename).

        Raises
        ------
        OSError
            If the directory cannot be written; the decision is then not recorded.

        Examples
        --------
        >>> import tempfile
        >>> log = DecisionLog(tempfile.mkdtemp())
        >>> log.append(Decision("'a'", 0, "rejected", None, "x", "<9 bytes>", seq=log.next_seq))
        >>> log.next_seq
        1
        """
        stamped = decision
        if decision.decided_at is None:
            stamped = dataclasses.replace(decision, decided_at=datetime.now(UTC))
        table = _to_table([stamped])
        # The sequence number first in the name keeps a directory listing in decision order.
        name = f"{PART_PREFIX}{stamped.seq:010d}-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        self._parts_store.write(table, name + PART_SUFFIX)
        self._decisions.append(stamped)
        self.next_seq = max(self.next_seq, stamped.seq + 1)

    def _compact(self) -> None:
        parts = self._parts()
        merged = _to_table(sorted(self._decisions, key=lambda d: d.seq))
        # The merged part is in place before the old ones go: a crash in between leaves
        # duplicates, which resolve to the same decision by sequence number.
        name = f"{PART_PREFIX}{self.next_seq:010d}-merged-{uuid.uuid4().hex[:8]}{PART_SUFFIX}"
        self._parts_store.write(merged, name)
        for part in parts:
            self._parts_store.remove(part)


def _to_table(decisions: list[Decision]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "row_key": d.row_key,
                "position": d.position,
                "review_status": d.review_status,
                "text": d.text,
                "original": d.original,
                "audio": d.audio,
                "decided_at": d.decided_at,
                "seq": d.seq,
            }
            for d in decisions
        ],
        schema=DECISION_SCHEMA,
    )


def read_reviews(save_to: str | os.PathLike[str]) -> pd.DataFrame:
    """The final state of a review log: one row per reviewed item, its last decision.

    ``pd.read_parquet(save_to)`` reads the whole history (a row decided twice appears twice);
    this keeps, per item, only the decision with the highest sequence number, in the order the
    items were first decided.

    Parameters
    ----------
    save_to
        The directory given to ``pn.widgets.review(..., save_to=...)``.

    Returns
    -------
    pandas.DataFrame
        Columns ``row_key``, ``position``, ``review_status``, ``text``, ``original``,
        ``audio`` (the row's label: file name or input), ``decided_at`` and ``seq``.

    Raises
    ------
    FileNotFoundError
        If ``save_to`` does not exist.
    ValueError
        If it is a file, or holds parts that are not a review log.

    Examples
    --------
    >>> import tempfile
    >>> log = DecisionLog(tempfile.mkdtemp())
    >>> log.append(Decision("'a'", 0, "skipped", None, "hi", "a.wav", seq=0))
    >>> log.append(Decision("'a'", 0, "accepted", "hi", "hi", "a.wav", seq=1))
    >>> read_reviews(log.path)[["audio", "review_status"]].values.tolist()
    [['a.wav', 'accepted']]
    """
    path = Path(save_to).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no review log at {str(path)!r}")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file; a review log is a directory of parts")
    # Read only: opening a DecisionLog could merge parts, and reading must not write.
    store = LocalParts(path)
    parts = store.parts()
    if not parts:
        empty: pd.DataFrame = DECISION_SCHEMA.empty_table().to_pandas()
        return empty
    try:
        tables = [store.read_table(part) for part in parts]
        history = pa.concat_tables(
            [t.select(DECISION_SCHEMA.names).cast(DECISION_SCHEMA) for t in tables]
        ).to_pandas()
    except (OSError, KeyError, ValueError, pa.ArrowInvalid) as err:
        raise ValueError(f"{str(path)!r} is not a review decision log ({err})") from err
    history = history.sort_values("seq", kind="stable")
    first = history.groupby("row_key", sort=False)["seq"].transform("min")
    final = history.assign(_first=first).drop_duplicates("row_key", keep="last")
    out: pd.DataFrame = final.sort_values("_first", kind="stable").drop(columns="_first")
    return out.reset_index(drop=True)
