"""The review cell: listen to each row, fix its transcript, accept, reject or skip it.

State lives in Python (one status and one reviewed text per row, the position as a trait);
the page only shows it. With ``save_to`` each decision is written as it is made (see
:mod:`._store`), and opening the same ``save_to`` again restores every decision and resumes
after the last one. Saved decisions are matched to rows by the audio's identity (the sha256
of its bytes, or its URL: the identity the cache uses), so re-uploading the same files in
another order puts each decision back on its own recording.
"""

from __future__ import annotations

import difflib
import hashlib
import html
import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import ipywidgets as widgets
import pandas as pd
import traitlets

from .._audio import describe_input, is_missing, normalize_audio
from .._exceptions import AudioInputError
from .._frames import OutputColumns, require_column
from ._editor import make_editor
from ._shortcuts import make_shortcuts
from ._store import Decision, DecisionLog
from ._upload import playable, readable_error

__all__ = ["DECIDED", "SHORTCUTS", "ReviewWidget", "review"]

#: ``KeyboardEvent.code`` of the key pressed with Alt -> action. Alt combinations never type
#: text in the transcript box, and none of these is bound by JupyterLab outside code editors.
SHORTCUTS = {
    "KeyA": "accept",
    "KeyR": "reject",
    "KeyS": "skip",
    "KeyP": "previous",
    "KeyN": "next",
}
#: Statuses that settle a row. ``skipped`` means "seen, come back later": not decided.
DECIDED = frozenset({"accepted", "corrected", "rejected"})
MatchOn = Literal["audio", "index"]
_LABELS = {action: f"Alt+{code[-1]}" for code, action in SHORTCUTS.items()}
_BADGES = {
    "none": ("to review", "phaseo-badge-none"),
    "skipped": ("skipped", "phaseo-badge-skipped"),
    "accepted": ("accepted", "phaseo-badge-accepted"),
    "corrected": ("corrected", "phaseo-badge-corrected"),
    "rejected": ("rejected", "phaseo-badge-rejected"),
}

_REVIEW_CSS = """
<style>
.phaseo-review { max-width: 100%; box-sizing: border-box; }
.phaseo-review .phaseo-card { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 6px; padding: 10px 12px; margin: 4px 0; background: var(--jp-layout-color1, #fff); box-sizing: border-box; width: 100%; min-width: 0; }
.phaseo-review .widget-html, .phaseo-review .widget-html-content { min-width: 0; white-space: normal; overflow-wrap: anywhere; line-height: 1.45; }
.phaseo-review .phaseo-head { display: flex; flex-wrap: wrap; gap: 4px 10px; align-items: baseline; }
.phaseo-review .phaseo-name { font-weight: 600; overflow-wrap: anywhere; }
.phaseo-review .phaseo-badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 0.85em; font-weight: 600; color: #fff; white-space: nowrap; }
.phaseo-review .phaseo-badge-none { background: #6b7280; }
.phaseo-review .phaseo-badge-skipped { background: #b45309; }
.phaseo-review .phaseo-badge-accepted { background: #15803d; }
.phaseo-review .phaseo-badge-corrected { background: #1d4ed8; }
.phaseo-review .phaseo-badge-rejected { background: #b91c1c; }
.phaseo-review .phaseo-badge-draft { background: #7c3aed; }
.phaseo-review .phaseo-badge-done { background: #15803d; }
.phaseo-review .phaseo-pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 8px 12px; width: 100%; box-sizing: border-box; }
.phaseo-review .phaseo-pair > * { min-width: 0; width: auto; margin: 0; }
.phaseo-review .phaseo-label { font-size: 0.85em; opacity: 0.75; margin-bottom: 2px; }
.phaseo-review .phaseo-original { white-space: pre-wrap; overflow-wrap: anywhere; padding: 4px 6px; border-radius: 4px; background: var(--jp-layout-color2, #f3f3f3); }
.phaseo-review .phaseo-diff { white-space: pre-wrap; overflow-wrap: anywhere; }
.phaseo-review .phaseo-diff del { background: rgba(220, 38, 38, 0.18); text-decoration: line-through; }
.phaseo-review .phaseo-diff ins { background: rgba(22, 163, 74, 0.22); text-decoration: none; }
.phaseo-review .phaseo-editor { width: 100%; margin: 0; }
.phaseo-review .phaseo-editor textarea { width: 100%; box-sizing: border-box; resize: vertical; }
.phaseo-review .phaseo-buttons { display: flex; flex-wrap: wrap; gap: 6px 16px; justify-content: space-between; }
.phaseo-review .phaseo-group { display: flex; flex-wrap: wrap; gap: 6px; }
.phaseo-review .phaseo-buttons .widget-button { flex: 0 0 auto; width: auto; min-width: 8.5em; margin: 0; white-space: nowrap; }
.phaseo-review .phaseo-filters { flex-wrap: wrap; gap: 0 12px; }
.phaseo-review .phaseo-top { flex-wrap: wrap; align-items: center; gap: 4px 12px; }
.phaseo-review .phaseo-error { color: var(--jp-error-color1, #c00); }
.phaseo-review .phaseo-muted { opacity: 0.7; }
.phaseo-review audio { max-width: 100%; }
</style>
"""


def _text_or_none(value: object) -> str | None:
    return None if is_missing(value) else str(value)


def word_diff(before: str, after: str) -> str:
    """HTML of the changes from ``before`` to ``after``, word by word (``<del>``/``<ins>``).

    Examples
    --------
    >>> word_diff("one two three", "one 2 three")
    'one <del>two</del> <ins>2</ins> three'
    """
    a, b = before.split(), after.split()
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{html.escape(' '.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{html.escape(' '.join(b[j1:j2]))}</ins>")
    return " ".join(out)


def audio_keys(audio: list[object], labels: list[object]) -> list[str]:
    """Keys matching saved decisions to rows by audio identity (as the cache identifies audio).

    ``"audio:<sha256 or url:...>"``; the second copy of the same audio gets ``"#2"``, and so
    on, so repeated clips keep their order. Audio that cannot be read (a missing file) falls
    back to its index label, ``"index:<repr>"``.

    Examples
    --------
    >>> keys = audio_keys([b"RIFF1", b"RIFF1", None], ["a", "b", "c"])
    >>> [k.split(":")[0] for k in keys], keys[1].endswith("#2"), keys[2]
    (['audio', 'audio', 'index'], True, "index:'c'")
    """
    keys: list[str] = []
    seen: dict[str, int] = {}
    for value, label in zip(audio, labels, strict=True):
        try:
            if isinstance(value, bytes | bytearray | memoryview):
                # Bytes that are not audio (an uploaded text file) still have an identity.
                identity = hashlib.sha256(value).hexdigest()
            else:
                identity = normalize_audio(value).identity()
        except (AudioInputError, TypeError, ValueError):
            keys.append(f"index:{label!r}")
            continue
        seen[identity] = seen.get(identity, 0) + 1
        n = seen[identity]
        keys.append(f"audio:{identity}" + (f"#{n}" if n > 1 else ""))
    return keys


class ReviewWidget(widgets.VBox):  # type: ignore[misc]
    """Walk a DataFrame's rows and record a decision per transcript; see :func:`review`.

    Attributes
    ----------
    position
        The row shown (a position, ``0 .. len(df) - 1``); set it to jump.
    editor, original, diff, player, accept_button, reject_button, skip_button,
    previous_button, next_button, only_errors, only_unreviewed, only_flagged, counter,
    progress, source, status, shortcuts
        The parts of the cell, for driving it from code (``only_flagged`` is hidden when
        there is no flag column).
    """

    position = traitlets.Int(0)

    def __init__(
        self,
        df: pd.DataFrame,
        *,
        audio_col: str,
        text_col: str = "text",
        error_col: str | None = None,
        label_col: str | None = None,
        flag_col: str | None = None,
        save_to: str | os.PathLike[str] | None = None,
        match_on: MatchOn = "audio",
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"review needs a pandas DataFrame, not {type(df).__name__}")
        if match_on not in ("audio", "index"):
            raise ValueError(f"match_on must be 'audio' or 'index', not {match_on!r}")
        require_column(df, audio_col, "audio_col")
        require_column(df, text_col, "text_col")
        if error_col is None:
            own_error = OutputColumns(text_col).error
            error_col = next((c for c in (own_error, "error") if c in df.columns), None)
        else:
            require_column(df, error_col, "error_col")
        if label_col is None:
            label_col = "name" if "name" in df.columns and audio_col != "name" else None
        else:
            require_column(df, label_col, "label_col")
        if flag_col is None:
            flag_col = "needs_review" if "needs_review" in df.columns else None
        else:
            require_column(df, flag_col, "flag_col")
        if save_to is not None and match_on == "index" and not df.index.is_unique:
            raise ValueError(
                "review with save_to and match_on='index' needs a unique index to match saved"
                " decisions to rows; call df.reset_index() first"
            )
        self._df = df
        self.text_col = text_col
        self.match_on: MatchOn = match_on
        self._audio = df[audio_col].tolist()
        self._original = [_text_or_none(v) for v in df[text_col].tolist()]
        errors = df[error_col].tolist() if error_col is not None else [None] * len(df)
        self._errors = [_text_or_none(v) for v in errors]
        # Rows a quality check flagged (df.stt.flag's needs_review); NA counts as not flagged.
        flags = df[flag_col].tolist() if flag_col is not None else [False] * len(df)
        self._flagged = [not is_missing(v) and bool(v) for v in flags]
        self.flag_col = flag_col
        index_labels = df.index.tolist()
        if save_to is not None and match_on == "audio":
            self._keys = audio_keys(self._audio, index_labels)
        else:
            self._keys = [repr(label) for label in index_labels]
        labels = df[label_col].tolist() if label_col is not None else self._audio
        self._labels = [
            str(v) if label_col is not None and not is_missing(v) else describe_input(a)
            for v, a in zip(labels, self._audio, strict=True)
        ]
        self._status = ["none"] * len(df)
        self._reviewed: list[str | None] = [None] * len(df)
        # Edits not decided yet, per row: moving away and back shows them again.
        self._drafts: dict[int, str] = {}
        self._shown_row: int | None = None
        self._shown_text = ""
        self._log = DecisionLog(save_to) if save_to is not None else None
        self._build()
        unmatched = self._restore()
        super().__init__(
            children=[
                widgets.HTML(_REVIEW_CSS, layout=widgets.Layout(display="none")),
                self._top,
                self._filters,
                self._card,
                self.status,
                self.shortcuts,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("phaseo-review")
        self.add_class(self._scope)
        self._render()
        if unmatched:
            self._say(f"{unmatched} saved decision(s) match no row of this DataFrame.")

    # ------------------------------------------------------------------ building

    def _build(self) -> None:
        def button(action: str, text: str, style: str, icon: str) -> Any:
            b = widgets.Button(
                description=f"{text} ({_LABELS[action]})",
                tooltip=f"{text} ({_LABELS[action]})",
                button_style=style,
                icon=icon,
            )
            b.on_click(lambda _b: self._run_action(action, None))
            return b

        self.accept_button = button("accept", "Accept", "success", "check")
        self.reject_button = button("reject", "Reject", "danger", "times")
        self.skip_button = button("skip", "Skip", "", "forward")
        self.previous_button = button("previous", "Previous", "", "arrow-left")
        self.next_button = button("next", "Next", "", "arrow-right")
        self.editor = make_editor(placeholder="type the transcript", rows=3)
        self.editor.layout.width = "100%"
        self.editor.add_class("phaseo-editor")
        self.editor.observe(self._on_edit, names="value")
        self.original = widgets.HTML()
        self.diff = widgets.HTML()
        self.player = widgets.Audio(
            value=b"", format="wav", autoplay=False, loop=False, controls=True
        )
        self.source = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.counter = widgets.HTML()
        self.progress = widgets.IntProgress(
            value=0,
            min=0,
            max=max(len(self._keys), 1),
            layout=widgets.Layout(width="240px", max_width="100%"),
        )
        fit = widgets.Layout(width="auto")
        self.only_errors = widgets.Checkbox(
            value=False, description="only errors", indent=False, layout=fit
        )
        self.only_unreviewed = widgets.Checkbox(
            value=False, description="only undecided", indent=False, layout=fit
        )
        self.only_flagged = widgets.Checkbox(
            value=False,
            description="only needs review",
            indent=False,
            layout=widgets.Layout(
                width="auto", display=None if self.flag_col is not None else "none"
            ),
        )
        self.only_errors.observe(self._on_filter, names="value")
        self.only_unreviewed.observe(self._on_filter, names="value")
        self.only_flagged.observe(self._on_filter, names="value")
        self.status = widgets.HTML()
        self._scope = f"phaseo-review-{uuid.uuid4().hex[:12]}"
        hint = "Shortcuts while this cell is selected: " + ", ".join(
            f"{label} {action}" for action, label in _LABELS.items()
        )
        self.shortcuts = make_shortcuts(
            self._scope, SHORTCUTS, hint, self._run_action, on_stale=self._on_stale_key
        )
        self._renders = 0

        self._top = widgets.HBox([self.counter, self.progress])
        self._top.add_class("phaseo-top")
        self._filters = widgets.HBox([self.only_errors, self.only_unreviewed, self.only_flagged])
        self._filters.add_class("phaseo-filters")
        left = widgets.VBox(
            [widgets.HTML('<div class="phaseo-label">Model transcript</div>'), self.original]
        )
        right = widgets.VBox(
            [widgets.HTML('<div class="phaseo-label">Your transcript</div>'), self.editor]
        )
        pair = widgets.Box([left, right])
        pair.add_class("phaseo-pair")
        decide = widgets.Box([self.accept_button, self.reject_button, self.skip_button])
        decide.add_class("phaseo-group")
        move = widgets.Box([self.previous_button, self.next_button])
        move.add_class("phaseo-group")
        # Decisions and moves wrap as two groups: no button ends up alone on a line.
        buttons = widgets.Box([decide, move])
        buttons.add_class("phaseo-buttons")
        self._card = widgets.VBox([self.source, self.player, pair, self.diff, buttons])
        self._card.add_class("phaseo-card")

    def _restore(self) -> int:
        """Apply saved decisions; put the position after the last one. Returns unmatched."""
        if self._log is None:
            self._start_position(None)
            return 0
        rows = {key: i for i, key in enumerate(self._keys)}
        latest = self._log.latest()
        unmatched = 0
        changed_text = 0
        for key, decision in latest.items():
            i = rows.get(key)
            if i is None:
                unmatched += 1
                continue
            if decision.original != self._original[i]:
                changed_text += 1
            self._status[i] = decision.review_status
            self._reviewed[i] = decision.text
        self._warn_misfit(latest, unmatched, changed_text)
        last = self._log.last()
        self._start_position(rows.get(last.row_key) if last is not None else None)
        return unmatched

    def _warn_misfit(self, latest: dict[str, Decision], unmatched: int, changed: int) -> None:
        """Warn when the saved log does not fit this frame (decisions that would be lost or
        land on a row whose model transcript differs from the one reviewed)."""
        path = self._log.path if self._log is not None else None
        if unmatched:
            by_index = sum(not k.startswith(("audio:", "index:")) for k in latest)
            hint = (
                " They were saved matching rows by index label: pass match_on='index' to"
                " read them that way (only right if the rows are in the same order)."
                if self.match_on == "audio" and by_index
                else " Is this the frame they were made on?"
            )
            warnings.warn(
                f"{unmatched} of {len(latest)} saved review decision(s) in {str(path)!r} match"
                f" no row of this DataFrame (matching on {self.match_on}); they are kept in"
                f" the log but not shown.{hint}",
                UserWarning,
                stacklevel=5,
            )
        if changed:
            warnings.warn(
                f"{changed} saved review decision(s) in {str(path)!r} were made on a different"
                f" model transcript than the matching row now has (matching on"
                f" {self.match_on}); check those rows"
                + (" or match on the audio (match_on='audio')" if self.match_on == "index" else ""),
                UserWarning,
                stacklevel=5,
            )

    def _start_position(self, last_decided: int | None) -> None:
        n = len(self._keys)
        if n == 0:
            return
        after = -1 if last_decided is None else last_decided
        order = [*range(after + 1, n), *range(0, after + 1)]
        target = next(
            (i for i in order if self._status[i] == "none"),
            next((i for i in order if self._status[i] not in DECIDED), last_decided or 0),
        )
        self.set_trait("position", target)

    def __repr__(self) -> str:
        where = f", save_to={str(self._log.path)!r}" if self._log is not None else ""
        return (
            f"ReviewWidget(rows={len(self._keys)}, position={self.position},"
            f" reviewed={self.reviewed}{where})"
        )

    # ------------------------------------------------------------------ state

    @property
    def df(self) -> pd.DataFrame:
        """The final state: ``df`` with ``f"{text_col}_reviewed"`` and ``review_status`` added.

        ``review_status`` is ``accepted`` (transcript kept), ``corrected`` (edited, then
        accepted), ``rejected``, ``skipped`` (seen, not decided) or ``none`` (not seen); the
        reviewed text is set for accepted and corrected rows only. One row per input row,
        whatever the number of decisions made on it (the log on disk keeps them all;
        :func:`read_reviews` reads its final state).

        Examples
        --------
        >>> import pandas as pd
        >>> w = review(pd.DataFrame({"audio": [b"x"], "text": ["hi"]}), audio_col="audio")
        >>> w.accept()
        >>> w.df[["text_reviewed", "review_status"]].values.tolist()
        [['hi', 'accepted']]
        """
        out = self._df.copy()
        out[f"{self.text_col}_reviewed"] = pd.Series(self._reviewed, index=out.index, dtype=object)
        out["review_status"] = pd.Series(self._status, index=out.index, dtype=object)
        return out

    @property
    def reviewed(self) -> int:
        """Rows decided: accepted, corrected or rejected (skipped rows do not count)."""
        return sum(s in DECIDED for s in self._status)

    @property
    def skipped(self) -> int:
        """Rows skipped and not decided since."""
        return sum(s == "skipped" for s in self._status)

    @property
    def complete(self) -> bool:
        """Whether every row is decided (accepted, corrected or rejected).

        Examples
        --------
        >>> import pandas as pd
        >>> w = review(pd.DataFrame({"audio": [b"x"], "text": ["hi"]}), audio_col="audio")
        >>> w.skip(); w.complete
        False
        >>> w.accept(); w.complete
        True
        """
        return bool(self._keys) and self.reviewed == len(self._keys)

    @property
    def save_to(self) -> Path | None:
        """The decisions directory, or None."""
        return self._log.path if self._log is not None else None

    def visible(self) -> list[int]:
        """Positions of the rows that pass the filters, in order.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"audio": [b"x", b"y"], "text": ["a", None]})
        >>> w = review(df, audio_col="audio")
        >>> w.only_errors.value = True
        >>> w.visible()
        [1]
        """
        errors_only = self.only_errors.value
        unreviewed_only = self.only_unreviewed.value
        flagged_only = self.only_flagged.value
        return [
            i
            for i in range(len(self._keys))
            if (not errors_only or self._is_error(i))
            and (not unreviewed_only or self._status[i] not in DECIDED)
            and (not flagged_only or self._flagged[i])
        ]

    def _is_error(self, i: int) -> bool:
        return self._errors[i] is not None or self._original[i] is None

    # ------------------------------------------------------------------ decisions

    def accept(self, text: str | None = None) -> None:
        """Accept the shown row: ``corrected`` if the text was edited, else ``accepted``.

        Parameters
        ----------
        text
            The reviewed transcript; by default what the text box holds.

        Raises
        ------
        ValueError
            For a row that failed transcription while the transcript is empty: type the
            transcript, or reject the row.

        Examples
        --------
        >>> import pandas as pd
        >>> w = review(pd.DataFrame({"audio": [b"x"], "text": ["helo"]}), audio_col="audio")
        >>> w.accept("hello")
        >>> w.df["review_status"].tolist()
        ['corrected']
        """
        value = self.editor.value if text is None else text
        i = self._current()
        if not value.strip() and self._is_error(i):
            raise ValueError(
                "this row has no transcript (transcription failed): type what is said, then"
                " accept, or reject the row"
            )
        status = "accepted" if value == (self._original[i] or "") else "corrected"
        self._decide(i, status, value)

    def reject(self) -> None:
        """Reject the shown row (the transcript is wrong and not fixable here).

        Examples
        --------
        >>> import pandas as pd
        >>> w = review(pd.DataFrame({"audio": [b"x"], "text": ["?"]}), audio_col="audio")
        >>> w.reject(); w.df["review_status"].tolist()
        ['rejected']
        """
        self._decide(self._current(), "rejected", None)

    def skip(self) -> None:
        """Mark the shown row as skipped (seen, left undecided) and move on.

        A skipped row does not count as reviewed; an edit made on it is kept as a draft.

        Examples
        --------
        >>> import pandas as pd
        >>> w = review(pd.DataFrame({"audio": [b"x", b"y"], "text": ["a", "b"]}), audio_col="audio")
        >>> w.skip(); w.position, w.reviewed
        (1, 0)
        """
        self._decide(self._current(), "skipped", None)

    def next(self) -> None:
        """Show the next row that passes the filters (stays put at the end).

        Examples
        --------
        >>> import pandas as pd
        >>> w = review(pd.DataFrame({"audio": [b"x", b"y"], "text": ["a", "b"]}), audio_col="audio")
        >>> w.next(); w.position
        1
        """
        later = [i for i in self.visible() if i > self.position]
        if later:
            self.position = later[0]
        else:
            self._say("This is the last row in view.")

    def previous(self) -> None:
        """Show the previous row that passes the filters (stays put at the start).

        Examples
        --------
        >>> import pandas as pd
        >>> w = review(pd.DataFrame({"audio": [b"x", b"y"], "text": ["a", "b"]}), audio_col="audio")
        >>> w.next(); w.previous(); w.position
        0
        """
        earlier = [i for i in self.visible() if i < self.position]
        if earlier:
            self.position = earlier[-1]
        else:
            self._say("This is the first row in view.")

    def _current(self) -> int:
        if self.position not in self.visible():
            raise ValueError("no row to decide on: no row passes the filters")
        return int(self.position)

    def _decide(self, i: int, status: str, text: str | None) -> None:
        if self._log is not None:
            # Written before the state changes: a decision shown as made is a decision saved.
            self._log.append(
                Decision(
                    row_key=self._keys[i],
                    position=i,
                    review_status=status,
                    text=text,
                    original=self._original[i],
                    audio=self._labels[i],
                    seq=self._log.next_seq,
                )
            )
        self._status[i] = status
        self._reviewed[i] = text
        if status == "skipped":
            self._keep_draft()
        else:
            self._drafts.pop(i, None)
        # The row's text box now shows the decision, not an edit to keep.
        self._shown_row = None
        visible = self.visible()
        later = [j for j in visible if j > i]
        pending = [j for j in visible if self._status[j] == "none"]
        target = later[0] if later else (pending[0] if pending else i)
        if target == self.position:
            self._render()
        else:
            self.position = target

    def _run_action(self, action: str, text: str | None) -> None:
        """A button or shortcut: errors go to the status line, not to a lost traceback."""
        if text is not None and action in ("next", "previous", "skip") and not self.editor.disabled:
            # The page's text at the key press: an edit typed just before is not lost.
            self.editor.take(text)
        actions: dict[str, Callable[[], None]] = {
            "accept": lambda: self.accept(text),
            "reject": self.reject,
            "skip": self.skip,
            "next": self.next,
            "previous": self.previous,
        }
        try:
            actions[action]()
        except (OSError, ValueError) as err:
            self._say(f"Not done: {err}", error=True)

    def _on_stale_key(self, action: str) -> None:
        self._say(
            f"Not done: the row changed as {_LABELS.get(action, action)} was pressed; press it"
            " again on the row now shown.",
            error=True,
        )

    def _show_text(self, text: str) -> None:
        """Put ``text`` in the box under a new context (edits typed before it are dropped)."""
        self._renders += 1
        context = f"{self.position}:{self._renders}"
        self.editor.show(text, context)
        # After the text box: the page applies updates in order, so a key sent with this
        # context was pressed with this row's text in the box.
        self.shortcuts.context = context

    def _keep_draft(self) -> None:
        row = self._shown_row
        if row is None:
            return
        if self.editor.value != self._shown_text:
            self._drafts[row] = self.editor.value
        else:
            self._drafts.pop(row, None)

    @property
    def drafts(self) -> dict[int, str]:
        """Edits not decided yet, by row position (a copy)."""
        return dict(self._drafts)

    # ------------------------------------------------------------------ display

    def _on_filter(self, _change: Any) -> None:
        visible = self.visible()
        if self.position in visible:
            self._render()
            return
        later = [i for i in visible if i > self.position]
        target = later[0] if later else (visible[0] if visible else self.position)
        if target == self.position:
            self._render()
        else:
            self.position = target

    @traitlets.validate("position")
    def _check_position(self, proposal: Any) -> int:
        value = int(proposal["value"])
        n = len(self._keys)
        if n and not 0 <= value < n:
            raise ValueError(f"position must be in 0..{n - 1}, not {value}")
        return value

    @traitlets.observe("position")
    def _on_position(self, _change: Any) -> None:
        self._render()

    def _on_edit(self, _change: Any) -> None:
        i = self._shown_row
        if i is None:
            return
        self._show_diff(i, self.editor.value)

    def _show_diff(self, i: int, text: str) -> None:
        # The line is always there, so the buttons below do not move on the first edit.
        original = self._original[i] or ""
        if text == original:
            changes = '<span class="phaseo-muted">none</span>'
        elif not text.strip():
            changes = '<span class="phaseo-muted">the transcript is empty</span>'
        else:
            changes = word_diff(original, text)
        self.diff.value = (
            f'<div class="phaseo-diff"><span class="phaseo-label">Changes: </span>{changes}</div>'
        )

    def _render(self) -> None:
        self._keep_draft()
        n = len(self._keys)
        visible = self.visible()
        shown = self.position in visible
        for b in (self.accept_button, self.reject_button, self.skip_button, self.editor):
            b.disabled = not shown
        self.progress.value = self.reviewed
        self.progress.description = f"{self.reviewed}/{n}"
        self.progress.bar_style = "success" if self.complete else ""
        filters = [
            name
            for name, on in (
                ("errors", self.only_errors.value),
                ("undecided", self.only_unreviewed.value),
                ("needs review", self.only_flagged.value),
            )
            if on
        ]
        in_view = f" · {len(visible)} in view (only {' + '.join(filters)})" if filters else ""
        tally = f"{self.reviewed} of {n} decided"
        if self.skipped:
            tally += f", {self.skipped} skipped"
        if self.complete:
            tally = f'<span class="phaseo-badge phaseo-badge-done">All {n} rows decided</span>'
        if not shown:
            self._shown_row = None
            self.source.value = ""
            self.original.value = ""
            self.diff.value = ""
            self.player.layout.display = "none"
            self._show_text("")
            self.counter.value = f"No row to show{in_view}. {tally}."
            return
        i = int(self.position)
        label, badge_class = _BADGES.get(self._status[i], (self._status[i], "phaseo-badge-none"))
        head = [
            f'<span class="phaseo-name">{html.escape(self._labels[i])}</span>',
            f'<span class="phaseo-badge {badge_class}">{html.escape(label)}</span>',
        ]
        if i in self._drafts:
            head.append('<span class="phaseo-badge phaseo-badge-draft">edited, not saved</span>')
        lines = [f'<div class="phaseo-head">{"".join(head)}</div>']
        problem = self._load_audio(i)
        error = self._errors[i]
        if error is not None:
            # One line for the row's failure; the player's own trouble is the same story.
            extra = " (cannot play)" if problem is not None else ""
            lines.append(
                f'<div class="phaseo-error" title="{html.escape(error)}">'
                f"{html.escape(readable_error(self._labels[i], error))}{extra}</div>"
            )
        elif problem is not None:
            lines.append(f'<div class="phaseo-error">cannot play: {html.escape(problem)}</div>')
        self.source.value = "".join(lines)
        original = self._original[i]
        self.original.value = (
            f'<div class="phaseo-original">{html.escape(original)}</div>'
            if original is not None
            else '<div class="phaseo-original phaseo-muted">(no transcript)</div>'
        )
        if self._status[i] in ("accepted", "corrected"):
            baseline = self._reviewed[i] or ""
        else:
            baseline = original or ""
        text = self._drafts.get(i, baseline)
        self._shown_row = None  # showing the text is not an edit
        self._show_text(text)
        self._shown_row, self._shown_text = i, baseline
        self._show_diff(i, text)
        self.status.value = ""
        # Last: once the page shows "Row i", the row's text and context are there too.
        self.counter.value = f"<b>Row {i + 1} of {n}</b> · {tally}{in_view}"

    def _load_audio(self, i: int) -> str | None:
        """Put row ``i``'s audio in the player; returns why it cannot play, or None."""
        value = self._audio[i]
        try:
            source = normalize_audio(value)
            if source.kind == "url":
                assert source.url is not None
                self.player.format = "url"
                self.player.value = source.url.encode()
                self.player.layout.display = None
                return None
            audio = playable(source.read())
        except AudioInputError as err:
            self.player.layout.display = "none"
            return err.reason
        if isinstance(audio, str):
            self.player.layout.display = "none"
            return audio
        self.player.format = audio[1]
        self.player.value = audio[0]
        self.player.layout.display = None
        return None

    def _say(self, message: str, *, error: bool = False) -> None:
        text = html.escape(message)
        self.status.value = f'<span class="phaseo-error">{text}</span>' if error else text


def review(
    df: pd.DataFrame,
    *,
    audio_col: str,
    text_col: str = "text",
    error_col: str | None = None,
    label_col: str | None = None,
    flag_col: str | None = None,
    save_to: str | os.PathLike[str] | None = None,
    match_on: MatchOn = "audio",
) -> ReviewWidget:
    """A review-and-correct cell: one row at a time, listen, fix the transcript, decide.

    Shows one card per row: its name and status badge, an audio player, the model's
    transcript beside an editable copy with the changes as a word diff, and Accept / Reject /
    Skip and Previous / Next buttons (shortcuts Alt+A, Alt+R, Alt+S, Alt+P, Alt+N whenever the
    cell is selected, also right after using the player; plain typing never triggers one).
    Above the card: a counter, a progress bar of decided rows, and filters for rows with
    errors, rows not decided yet and rows flagged ``needs_review``. Edits made on a row and
    left without a decision are kept as drafts until the row is decided. A row that failed
    transcription cannot be accepted with an empty transcript. Skipped rows are not decided;
    the counter says "All N rows decided" when every row is accepted, corrected or rejected.

    Parameters
    ----------
    df
        The rows to review, e.g. the output of ``df.stt.transcribe(...)`` or of the upload cell.
    audio_col
        Column of audio (paths, bytes, URLs, data URIs) to play.
    text_col
        Column of model transcripts.
    error_col
        Column of per-row errors for the "only errors" filter; by default
        ``f"{text_col}_error"`` or ``"error"`` when present. Rows with no transcript count as
        errors too.
    label_col
        Column that names each row above its player; by default ``"name"`` when present (as
        in the upload cell's ``.df``), else the audio input itself (a path, a URL, a size).
    flag_col
        Boolean column for the "only needs review" filter; by default ``"needs_review"``
        (added by ``df.stt.flag()``) when present. Without one the filter is hidden.
    save_to
        A directory for the decision log (created if needed; a name such as
        ``"reviews.parquet"`` is a directory too, like any Parquet dataset): every decision is
        written to it at once as a small Parquet part file, so it holds the history, one row
        per decision (``pd.read_parquet(save_to)`` reads it all, a row decided twice appears
        twice). :func:`read_reviews` reads the final state, one row per reviewed item, last
        decision wins. Opening the same ``save_to`` again restores the decisions and resumes
        after the last one.
    match_on
        How saved decisions find their rows again: ``"audio"`` (default) by the audio's
        identity, the sha256 of its bytes or its URL, as the cache identifies audio, so the
        rows may come back in any order or with a new index; ``"index"`` by index label
        (needs a unique index; right only if the labels still name the same recordings). A
        :class:`UserWarning` says when saved decisions match no row, or were made on a
        different model transcript than the row now has.

    Returns
    -------
    ReviewWidget
        Display it; ``.df`` returns ``df`` with ``f"{text_col}_reviewed"`` and
        ``review_status`` added.

    Raises
    ------
    KeyError
        A named column is missing.
    ValueError
        ``save_to`` is an existing file or another kind of directory, ``match_on`` is not
        ``"audio"`` or ``"index"``, or the index is not unique with ``match_on="index"``.

    Examples
    --------
    >>> import pandas as pd, phaseo_notebook as pn
    >>> df = pd.DataFrame({"audio": [str(p) for p in pn.sample_paths()[:2]], "text": ["a", "b"]})
    >>> w = pn.widgets.review(df, audio_col="audio")
    >>> w.accept(); w.df["review_status"].tolist()
    ['accepted', 'none']
    """
    return ReviewWidget(
        df,
        audio_col=audio_col,
        text_col=text_col,
        error_col=error_col,
        label_col=label_col,
        flag_col=flag_col,
        save_to=save_to,
        match_on=match_on,
    )
