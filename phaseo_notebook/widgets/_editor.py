"""The review cell's text box: a textarea whose edits name the row they were typed on.

``ipywidgets.Textarea`` syncs its value to the kernel through the model's throttle: at most
one update in flight, later ones buffered until the kernel has answered the previous one.
A key or button that moves to the next row is a separate message that is not held back, so
under load the last keystrokes typed on row 1 can reach the kernel *after* it has moved to
row 2; the kernel applies them to row 2's text and echoes them to the page, and row 2 shows
(and may save) row 1's text. This box sends each edit as a message of its own, immediately,
with the ``context`` the kernel gave with the text it shows; the kernel drops an edit typed
on a context it has since replaced. The text shown is pushed together with its context in
one trait, so the page never pairs a new context with old text.
"""

from __future__ import annotations

import functools
from typing import Any

import traitlets

from .._extras import require

__all__ = ["make_editor"]

_ESM = """
export default {
  render({ model, el }) {
    const box = document.createElement("textarea");
    box.className = "widget-input";
    box.rows = model.get("rows");
    box.placeholder = model.get("placeholder");
    box.disabled = model.get("disabled");
    let context = "";
    function show() {
      const shown = model.get("shown");
      context = shown.context;
      if (box.value !== shown.text) box.value = shown.text;
    }
    show();
    model.on("change:shown", show);
    model.on("change:disabled", () => { box.disabled = model.get("disabled"); });
    model.on("change:placeholder", () => { box.placeholder = model.get("placeholder"); });
    box.addEventListener("input", () => {
      model.send({ edit: box.value, context: context });
    });
    // As ipywidgets' own text boxes do: typed keys stay in the box (JupyterLab's command-mode
    // shortcuts, such as A or D, D, never see them). Alt shortcuts are caught earlier, on
    // the window in the capture phase.
    for (const type of ["keydown", "keypress", "keyup"]) {
      box.addEventListener(type, (event) => event.stopPropagation());
    }
    el.classList.add("widget-textarea");
    el.appendChild(box);
  },
};
"""


@functools.cache
def _editor_class() -> type[Any]:
    anywidget = require("anywidget", "widgets", purpose="The review widget's text box")

    class RowEditor(anywidget.AnyWidget):  # type: ignore[misc,name-defined]
        """A textarea; ``value`` is the kernel's copy of its text, ``shown`` what the page shows."""

        _esm = _ESM
        #: The text the page shows and the context it was shown with, set together.
        shown = traitlets.Dict({"text": "", "context": ""}).tag(sync=True)
        disabled = traitlets.Bool(False).tag(sync=True)
        placeholder = traitlets.Unicode("").tag(sync=True)
        rows = traitlets.Int(3).tag(sync=True)
        #: The text as the kernel knows it: set from code (then shown) or by the page's edits.
        value = traitlets.Unicode("")

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._from_page = False
            self.on_msg(self._receive)

        @traitlets.observe("value")
        def _push(self, change: Any) -> None:
            # Text set from code goes to the page; an edit from the page is already there.
            if not self._from_page:
                self.shown = {"text": change["new"], "context": self.shown["context"]}

        def show(self, text: str, context: str) -> None:
            """Show ``text``; edits typed before the page had it are dropped from now on."""
            self.shown = {"text": text, "context": context}
            self.take(text)

        def take(self, text: str) -> None:
            """Set ``value`` to text the page already shows (not sent back to it)."""
            self._from_page = True
            try:
                self.value = text
            finally:
                self._from_page = False

        def _receive(self, _widget: Any, content: Any, _buffers: Any) -> None:
            # Messages come from the page: accept only the shape this widget sends, and only
            # for the text currently shown.
            if not isinstance(content, dict) or not isinstance(content.get("edit"), str):
                return
            if content.get("context") != self.shown["context"]:
                return
            self.take(content["edit"])

        def __repr__(self) -> str:
            return f"RowEditor(value={self.value!r}, disabled={self.disabled})"

    return RowEditor


def make_editor(*, placeholder: str = "", rows: int = 3) -> Any:
    """A text box whose edits reach the kernel only for the text they were typed on.

    Parameters
    ----------
    placeholder
        Shown while the box is empty.
    rows
        Visible lines.

    Examples
    --------
    >>> box = make_editor(placeholder="type")
    >>> box.show("row one", "0:1")
    >>> box._receive(box, {"edit": "row one!", "context": "0:1"}, [])
    >>> box.show("row two", "1:2")
    >>> box._receive(box, {"edit": "row one!!", "context": "0:1"}, [])  # typed on row one
    >>> box.value
    'row two'
    """
    return _editor_class()(placeholder=placeholder, rows=rows)
