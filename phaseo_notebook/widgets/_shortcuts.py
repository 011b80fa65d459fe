"""Keyboard shortcuts for a group of widgets: a tiny anywidget that listens for Alt+key.

ipywidgets has no key events. This widget renders a one-line hint and listens for keydown in
the capture phase of the window, so it sees the keys before JupyterLab's own shortcut handling.
It acts only when the key is pressed with Alt (no Ctrl, Meta or Shift) and either focus is
inside the element carrying ``scope`` as a CSS class, or that element's notebook cell is the
selected one (JupyterLab's command mode) and no text box elsewhere has focus: plain typing
never triggers anything, and two review cells on one page do not answer each other's keys.

Chromium's ``<audio controls>`` swallows every key once it has focus, so when a player in the
scope gets focus (a click on play, pause or the timeline) or the reader clicks plain text in
the scope, focus goes back to this widget's element (focusable by script only): "listen, then
Alt+A" works without clicking the text box first. Each shortcut sends
``{"action": name, "text": <the scope's first textarea, if any>, "context": ...}`` to the
kernel; the text travels with the action so an edit made just before the key press cannot be
overtaken by it, and the ``context`` (set by the kernel after each change of what the scope
shows) lets the kernel refuse a key pressed before the page caught up with that change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import traitlets

from .._extras import require

__all__ = ["ShortcutHandler", "make_shortcuts"]

#: Called with the action name and the text of the scope's textarea (None when there is none).
ShortcutHandler = Callable[[str, str | None], None]

_ESM = """
function isEditable(node) {
  if (!(node instanceof Element)) return false;
  return node.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']") !== null;
}

export default {
  render({ model, el }) {
    el.classList.add("phaseo-shortcuts");
    // The cell's focus target: focusable by script only (tabindex -1), so keys sent after
    // a click on the player or on plain text still start inside the cell.
    el.tabIndex = -1;
    el.textContent = model.get("hint");
    model.on("change:hint", () => { el.textContent = model.get("hint"); });
    const scopeOf = () => el.closest("." + model.get("scope"));

    function refocus() {
      // Chromium's <audio controls> keeps every key once focused: take focus back, after
      // the click that gave it has been handled (play/pause still happen).
      setTimeout(() => {
        const active = document.activeElement;
        const root = scopeOf();
        if (!root) return;
        // Focus elsewhere on the page (another cell's editor) is left alone; focus on the
        // body or the notebook around the cell is not.
        if (active && active !== el && !root.contains(active) && !active.contains(root)) return;
        if (active && isEditable(active) && root.contains(active)) return;
        el.focus({ preventScroll: true });
      }, 0);
    }

    function inScope(target) {
      const root = scopeOf();
      return root !== null && target instanceof Node && root.contains(target);
    }

    function mine(event) {
      const root = scopeOf();
      if (!root) return false;
      if (event.target instanceof Node && root.contains(event.target)) return true;
      // JupyterLab command mode: focus is on the notebook, the selected cell is ours.
      const cell = root.closest(".jp-Cell");
      if (!cell || !cell.classList.contains("jp-mod-active")) return false;
      if (isEditable(event.target)) return false;  // typing somewhere else on the page
      return true;
    }

    function onKey(event) {
      if (!event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
      const action = model.get("bindings")[event.code];
      if (!action || !mine(event)) return;
      event.preventDefault();
      event.stopPropagation();
      if (event.repeat) return;
      const box = scopeOf().querySelector("textarea");
      // The context names what the page showed: the kernel refuses a key pressed on a row
      // the page had not finished showing (the text box could still hold the last row's).
      model.send({ action: action, text: box ? box.value : null, context: model.get("context") });
    }

    function onMedia(event) {
      if (inScope(event.target) && event.target instanceof HTMLMediaElement) refocus();
    }

    function onPointer(event) {
      // A click on text, a label or the card's background leaves focus nowhere useful.
      if (!inScope(event.target)) return;
      const t = event.target;
      if (t instanceof HTMLMediaElement) { refocus(); return; }
      if (t instanceof Element && t.closest("button, input, textarea, select, a, label")) return;
      refocus();
    }

    window.addEventListener("keydown", onKey, true);
    for (const type of ["focus", "play", "pause", "seeked", "volumechange"]) {
      window.addEventListener(type, onMedia, true);
    }
    window.addEventListener("mouseup", onPointer, true);
    return () => {
      window.removeEventListener("keydown", onKey, true);
      for (const type of ["focus", "play", "pause", "seeked", "volumechange"]) {
        window.removeEventListener(type, onMedia, true);
      }
      window.removeEventListener("mouseup", onPointer, true);
    };
  },
};
"""

_CSS = """
.phaseo-shortcuts { font-size: 0.85em; opacity: 0.7; padding: 2px 0; outline: none; }
.phaseo-shortcuts:focus { opacity: 0.9; }
"""


@functools.cache
def _shortcuts_class() -> type[Any]:
    anywidget = require("anywidget", "widgets", purpose="Keyboard shortcuts of the review widget")

    class KeyboardShortcuts(anywidget.AnyWidget):  # type: ignore[misc,name-defined]
        """Sends ``{"action", "text"}`` to the kernel for each Alt+key shortcut in its scope."""

        _esm = _ESM
        _css = _CSS
        #: ``KeyboardEvent.code`` -> action name (``{"KeyA": "accept"}``).
        bindings = traitlets.Dict().tag(sync=True)
        #: CSS class of the element whose focus enables the shortcuts.
        scope = traitlets.Unicode("").tag(sync=True)
        hint = traitlets.Unicode("").tag(sync=True)
        #: Set by the kernel after each change of what the scope shows; sent back with keys.
        context = traitlets.Unicode("").tag(sync=True)

        def __repr__(self) -> str:
            return f"KeyboardShortcuts(scope={self.scope!r}, bindings={len(self.bindings)})"

    return KeyboardShortcuts


def make_shortcuts(
    scope: str,
    keys: Mapping[str, str],
    hint: str,
    on_action: ShortcutHandler,
    on_stale: Callable[[str], None] | None = None,
) -> Any:
    """A widget that calls ``on_action(action, text)`` for each shortcut pressed in ``scope``.

    Parameters
    ----------
    scope
        CSS class of the container (add it with ``box.add_class(scope)``).
    keys
        ``KeyboardEvent.code`` of the key pressed with Alt -> action name.
    hint
        The line of text the widget shows.
    on_action
        Called in the kernel with the action name and the text of the scope's first textarea.
    on_stale
        Called instead, with the action name, when the key was pressed while the page still
        showed an earlier ``context`` than the widget's current one (the kernel had changed
        what the scope shows and the page had not caught up): the text sent may belong to
        what was shown before. Without it such keys are ignored.

    Examples
    --------
    >>> seen = []
    >>> w = make_shortcuts("s1", {"KeyA": "accept"}, "Alt+A accept", lambda a, t: seen.append(a))
    >>> w._handle_custom_msg({"action": "accept", "text": "hi"}, [])
    >>> seen
    ['accept']
    """
    widget = _shortcuts_class()(scope=scope, bindings=dict(keys), hint=hint)
    known = set(keys.values())

    def receive(_widget: Any, content: Any, _buffers: Any) -> None:
        # Messages come from the page: accept only the shapes this widget sends.
        if not isinstance(content, dict) or content.get("action") not in known:
            return
        if content.get("context", widget.context) != widget.context:
            if on_stale is not None:
                on_stale(content["action"])
            return
        text = content.get("text")
        on_action(content["action"], text if isinstance(text, str) else None)

    widget.on_msg(receive)
    return widget
