"""Keyboard shortcuts for a group of widgets: a tiny anywidget that listens for Alt+key.

ipywidgets has no key events. This widget renders a one-line hint and listens for keydown in
the capture phase of the window, so it sees the keys before JupyterLab's own shortcut handling.
It acts only when the key is pressed with Alt (no Ctrl, Meta or Shift) and focus is inside the
element carrying ``scope`` as a CSS class: plain typing in a text box never triggers anything,
and two review cells on one page do not answer each other's keys. Each shortcut sends
``{"action": name, "text": <the scope's first textarea, if any>}`` to the kernel; the text
travels with the action so an edit made just before the key press cannot be overtaken by it.
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
export default {
  render({ model, el }) {
    el.classList.add("phaseo-shortcuts");
    el.textContent = model.get("hint");
    model.on("change:hint", () => { el.textContent = model.get("hint"); });
    function onKey(event) {
      if (!event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
      const action = model.get("bindings")[event.code];
      if (!action) return;
      const root = el.closest("." + model.get("scope"));
      if (!root || !(event.target instanceof Node) || !root.contains(event.target)) return;
      event.preventDefault();
      event.stopPropagation();
      if (event.repeat) return;
      const box = root.querySelector("textarea");
      model.send({ action: action, text: box ? box.value : null });
    }
    window.addEventListener("keydown", onKey, true);
    return () => window.removeEventListener("keydown", onKey, true);
  },
};
"""

_CSS = """
.phaseo-shortcuts { font-size: 0.85em; opacity: 0.7; padding: 2px 0; }
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

        def __repr__(self) -> str:
            return f"KeyboardShortcuts(scope={self.scope!r}, bindings={len(self.bindings)})"

    return KeyboardShortcuts


def make_shortcuts(
    scope: str, keys: Mapping[str, str], hint: str, on_action: ShortcutHandler
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
        text = content.get("text")
        on_action(content["action"], text if isinstance(text, str) else None)

    widget.on_msg(receive)
    return widget
