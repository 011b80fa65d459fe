"""Optional dependencies: import them lazily, and say exactly how to install a missing one."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._exceptions import MissingExtraError

__all__ = ["MissingExtraError", "require"]


def require(module: str, extra: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    Examples
    --------
    >>> require("json", "local", purpose="tests").__name__
    'json'
    >>> require("no_such_module_xyz", "dask", purpose="Dask support")
    Traceback (most recent call last):
    ...
    phaseo_notebook.MissingExtraError: Dask support needs the optional dependency 'no_such_module_xyz': pip install 'phaseo-notebook[dask]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{purpose} needs the optional dependency {module.split('.')[0]!r}:"
            f" pip install 'phaseo-notebook[{extra}]'"
        ) from err
