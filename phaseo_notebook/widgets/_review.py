"""The review cell: listen to each row, fix its transcript, accept, reject or skip it.

State lives in Python (one status and one reviewed text per row, the position as a trait);
the page only shows it. With ``save_to`` each decision is written as it is made (see
:mod:`._store`), and opening the same ``save_to`` again restores every decision and resumes
after the last one.
"""

from __future__ import annotations

import html
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
import traitlets

from .._audio import describe_input, is_missing, normalize_audio
from .._exceptions import AudioInputError
from .._frames import OutputColumns, require_column
from ._shortcuts import make_shortcuts
from ._store import Decision, DecisionLog
from ._upload import _PLAYER_FORMAT

__all__ = ["SHORTCUTS", "ReviewWidget", "review"]

#: ``KeyboardEvent.code`` of the key pressed with Alt -> action. Alt combinations never type
#: text in the transcript box, and none of these is bound by JupyterLab outside code editors.
SHORTCUTS = {
    "KeyA": "accept",
    "KeyR": "reject",
    "KeyS": "skip",
    "KeyP": "previous",
    "KeyN": "next",
}
_LABELS = {action: f"Alt+{code[-1]}" for code, action in SHORTCUTS.items()}
_ERROR_STYLE = "color: var(--jp-error-color1, #c00)"


def _text_or_none(value: object) -> str | None:
    return None if is_missing(value) else str(value)


class ReviewWidget(widgets.VBox):  # type: ignore[misc]
    """Walk a DataFrame's rows and record a decision per transcript; see :func:`review`.

    Attributes
    ----------
    position
        The row shown (a position, ``0 .. len(df) - 1``); set it to jump.
    editor, player, accept_button, reject_button, skip_button, previous_button, next_button,
    only_errors, only_unreviewed, only_flagged, counter, progress, status, shortcuts
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
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"review needs a pandas DataFrame, not {type(df).__name__}")
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
        if save_to is not None and not df.index.is_unique:
            raise ValueError(
                "review with save_to needs a unique index to match saved decisions to rows;"
                " call df.reset_index() first"
            )
        self._df = df
        self.text_col = text_col
        self._audio = df[audio_col].tolist()
        self._original = [_text_or_none(v) for v in df[text_col].tolist()]
        errors = df[error_col].tolist() if error_col is not None else [None] * len(df)
        self._errors = [_text_or_none(v) for v in errors]
        # Rows a quality check flagged (df.stt.flag's needs_review); NA counts as not flagged.
        flags = df[flag_col].tolist() if flag_col is not None else [False] * len(df)
        self._flagged = [not is_missing(v) and bool(v) for v in flags]
        self.flag_col = flag_col
        self._keys = [repr(label) for label in df.index.tolist()]
        labels = df[label_col].tolist() if label_col is not None else self._audio
        self._labels = [
            str(v) if label_col is not None and not is_missing(v) else describe_input(a)
            for v, a in zip(labels, self._audio, strict=True)
        ]
        self._status = ["none"] * len(df)
        self._reviewed: list[str | None] = [None] * len(df)
        self._log = DecisionLog(save_to) if save_to is not None else None
        self._build()
        unmatched = self._restore()
        super().__init__(
            children=[
                widgets.HBox([self.counter, self.progress]),
                widgets.HBox([self.only_errors, self.only_unreviewed, self.only_flagged]),
                self.source,
                self.player,
                self.editor,
                widgets.HBox(
                    [
                        self.previous_button,
                        self.accept_button,
                        self.reject_button,
                        self.skip_button,
                        self.next_button,
                    ]
                ),
                self.status,
                self.shortcuts,
            ]
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
        self.editor = widgets.Textarea(
            placeholder="transcript",
            rows=3,
            layout=widgets.Layout(width="100%"),
        )
        self.player = widgets.Audio(
            value=b"", format="wav", autoplay=False, loop=False, controls=True
        )
        self.source = widgets.HTML()
        self.counter = widgets.HTML()
        self.progress = widgets.IntProgress(
            value=0, min=0, max=max(len(self._keys), 1), layout=widgets.Layout(width="240px")
        )
        fit = widgets.Layout(width="auto")
        self.only_errors = widgets.Checkbox(
            value=False, description="only errors", indent=False, layout=fit
        )
        self.only_unreviewed = widgets.Checkbox(
            value=False, description="only unreviewed", indent=False, layout=fit
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
        hint = "Shortcuts (with the cursor in this cell): " + ", ".join(
            f"{label} {action}" for action, label in _LABELS.items()
        )
        self.shortcuts = make_shortcuts(self._scope, SHORTCUTS, hint, self._run_action)

    def _restore(self) -> int:
        """Apply saved decisions; put the position after the last one. Returns unmatched."""
        if self._log is None:
            self._start_position(None)
            return 0
        rows = {key: i for i, key in enumerate(self._keys)}
        unmatched = 0
        for key, decision in self._log.latest().items():
            i = rows.get(key)
            if i is None:
                unmatched += 1
                continue
            self._status[i] = decision.review_status
            self._reviewed[i] = decision.text
        last = self._log.last()
        self._start_position(rows.get(last.row_key) if last is not None else None)
        return unmatched

    def _start_position(self, last_decided: int | None) -> None:
        n = len(self._keys)
        if n == 0:
            return
        after = -1 if last_decided is None else last_decided
        order = [*range(after + 1, n), *range(0, after + 1)]
        target = next((i for i in order if self._status[i] == "none"), last_decided or 0)
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
        """The DataFrame with ``f"{text_col}_reviewed"`` and ``review_status`` added.

        ``review_status`` is ``accepted`` (transcript kept), ``corrected`` (edited, then
        accepted), ``rejected``, ``skipped`` or ``none`` (not reviewed yet); the reviewed text
        is set for accepted and corrected rows only.

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
        """Rows with a decision (any status but ``none``)."""
        return sum(s != "none" for s in self._status)

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
            and (not unreviewed_only or self._status[i] == "none")
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
        """Mark the shown row as skipped (seen, no decision) and move on.

        Examples
        --------
        >>> import pandas as pd
        >>> w = review(pd.DataFrame({"audio": [b"x", b"y"], "text": ["a", "b"]}), audio_col="audio")
        >>> w.skip(); w.position
        1
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

    def _render(self) -> None:
        n = len(self._keys)
        visible = self.visible()
        shown = self.position in visible
        for b in (self.accept_button, self.reject_button, self.skip_button, self.editor):
            b.disabled = not shown
        self.progress.value = self.reviewed
        self.progress.description = f"{self.reviewed}/{n}"
        filters = [
            name
            for name, on in (
                ("errors", self.only_errors.value),
                ("unreviewed", self.only_unreviewed.value),
                ("needs review", self.only_flagged.value),
            )
            if on
        ]
        in_view = f" · {len(visible)} in view (only {' + '.join(filters)})" if filters else ""
        if not shown:
            self.counter.value = f"No row to show{in_view}. {self.reviewed} of {n} reviewed."
            self.source.value = ""
            self.player.layout.display = "none"
            self.editor.value = ""
            return
        i = int(self.position)
        self.counter.value = (
            f"<b>Row {i + 1} of {n}</b> · {self.reviewed} reviewed{in_view}"
            f" · status: <b>{self._status[i]}</b>"
        )
        parts = [f"<b>{html.escape(self._labels[i])}</b>"]
        if self._errors[i] is not None:
            parts.append(
                f'<span style="{_ERROR_STYLE}">{html.escape(self._errors[i] or "")}</span>'
            )
        self._load_audio(i, parts)
        self.source.value = "<br>".join(parts)
        if self._status[i] in ("accepted", "corrected"):
            self.editor.value = self._reviewed[i] or ""
        else:
            self.editor.value = self._original[i] or ""
        self.status.value = ""

    def _load_audio(self, i: int, parts: list[str]) -> None:
        value = self._audio[i]
        try:
            source = normalize_audio(value)
            if source.kind == "url":
                assert source.url is not None
                self.player.format = "url"
                self.player.value = source.url.encode()
            else:
                data = source.read()
                fmt = source.format or "wav"
                self.player.format = _PLAYER_FORMAT.get(fmt, fmt)
                self.player.value = data
            self.player.layout.display = None
        except AudioInputError as err:
            self.player.layout.display = "none"
            parts.append(
                f'<span style="{_ERROR_STYLE}">cannot play: {html.escape(err.reason)}</span>'
            )

    def _say(self, message: str, *, error: bool = False) -> None:
        text = html.escape(message)
        self.status.value = f'<span style="{_ERROR_STYLE}">{text}</span>' if error else text


def review(
    df: pd.DataFrame,
    *,
    audio_col: str,
    text_col: str = "text",
    error_col: str | None = None,
    label_col: str | None = None,
    flag_col: str | None = None,
    save_to: str | os.PathLike[str] | None = None,
) -> ReviewWidget:
    """A review-and-correct cell: one row at a time, listen, fix the transcript, decide.

    Shows an audio player, the transcript in an editable text box, Accept / Reject / Skip and
    Previous / Next buttons (shortcuts Alt+A, Alt+R, Alt+S, Alt+P, Alt+N while the cursor is in
    the cell, so typing in the text box never triggers one), a counter, a progress bar, and
    filters for rows with errors, rows not reviewed yet and rows flagged ``needs_review``.

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
        A directory for the decisions log: every decision is written to it at once as a Parquet
        part file (``pd.read_parquet(save_to)`` reads the log), and opening the same
        ``save_to`` again restores the decisions and resumes after the last one. Needs a
        unique index: rows are matched by index label.

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
        ``save_to`` is an existing file or another kind of directory, or the index is not
        unique while ``save_to`` is given.

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
    )
