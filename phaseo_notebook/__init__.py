"""phaseo-notebook: a speech-to-text gateway in notebooks and dataframe pipelines.

>>> import pandas as pd, phaseo_notebook as pn
>>> df = pd.DataFrame({"audio": [str(p) for p in pn.sample_paths()]})
>>> out = df.stt.transcribe(col="audio", progress=False)  # doctest: +SKIP

Importing the package registers the ``.stt`` accessor on pandas DataFrames and Series. The
local gateway (:class:`LocalGateway`, :class:`Faults`, :class:`GatewayStats`) is imported on
first use, so ``import phaseo_notebook`` does not load the aiohttp server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _accessor as _accessor  # registers df.stt and series.stt
from ._cache import Cache
from ._client import AsyncClient, Client
from ._compare import ModelComparison
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AudioInputError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    CacheError,
    ConfigurationError,
    ConflictError,
    EngineModelError,
    InternalServerError,
    MissingExtraError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    PermissionDeniedError,
    PhaseoError,
    RateLimitError,
    ResponseTooLargeError,
    UnknownModelError,
    UnprocessableEntityError,
)
from ._export import label_studio_config, read_label_studio
from ._samples import load_samples, sample_paths, sample_references
from ._scoring import ScoreResult
from ._types import ProviderOptions, TranscriptionResult
from ._version import __version__

if TYPE_CHECKING:
    from ._gateway import Faults, GatewayStats, LocalGateway

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AudioInputError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "Cache",
    "CacheError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "EngineModelError",
    "Faults",
    "GatewayStats",
    "InternalServerError",
    "LocalGateway",
    "MissingExtraError",
    "ModelComparison",
    "NotFoundError",
    "PayloadTooLargeError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "PhaseoError",
    "ProviderOptions",
    "RateLimitError",
    "ResponseTooLargeError",
    "ScoreResult",
    "TranscriptionResult",
    "UnknownModelError",
    "UnprocessableEntityError",
    "__version__",
    "label_studio_config",
    "load_samples",
    "read_label_studio",
    "sample_paths",
    "sample_references",
]


# Names loaded on first use: the gateway package imports aiohttp's server, which most
# sessions (a remote gateway, or the in-process engine) never need.
_LAZY = {"Faults": "._gateway", "GatewayStats": "._gateway", "LocalGateway": "._gateway"}


def _make_public(obj: Any) -> None:
    """Show ``obj`` as ``phaseo_notebook.X`` in reprs and tracebacks (as httpx does).

    The functions a class defines move with it: doctest finds examples by ``__module__``,
    and would otherwise skip the class where it is written and its methods here.
    """
    home = obj.__module__
    obj.__module__ = __name__
    for attr in vars(obj).values() if isinstance(obj, type) else ():
        for func in (attr, getattr(attr, "__func__", None), getattr(attr, "fget", None)):
            if callable(func) and getattr(func, "__module__", None) == home:
                func.__module__ = __name__


for _name in __all__:
    if not _name.startswith("__") and _name not in _LAZY:
        _make_public(globals()[_name])
del _name


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        _make_public(value)
        globals()[name] = value  # later lookups skip this hook
        return value
    if name == "__test__":
        # doctest searches these too: the examples of the lazy names run without an import.
        return {lazy: __getattr__(lazy) for lazy in _LAZY}
    # The widgets module imports ipywidgets and IPython display machinery: load it on use.
    if name == "widgets":
        return importlib.import_module(".widgets", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "widgets"})
