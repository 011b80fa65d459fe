"""phaseo-notebook: a speech-to-text gateway in notebooks and dataframe pipelines.

>>> import pandas as pd, phaseo_notebook as pn
>>> df = pd.DataFrame({"audio": [str(p) for p in pn.sample_paths()]})
>>> out = df.stt.transcribe(col="audio", progress=False)  # doctest: +SKIP

Importing the package registers the ``.stt`` accessor on pandas DataFrames and Series.
"""

from __future__ import annotations

from typing import Any

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
    CacheError,
    ConfigurationError,
    ConflictError,
    EngineModelError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    PermissionDeniedError,
    PhaseoError,
    RateLimitError,
    UnprocessableEntityError,
)
from ._export import label_studio_config, read_label_studio
from ._extras import MissingExtraError
from ._gateway import Faults, GatewayStats, LocalGateway
from ._quality import ScoreResult
from ._samples import load_samples, sample_paths, sample_references
from ._types import ProviderOptions, TranscriptionResult
from ._version import __version__

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
    "ScoreResult",
    "TranscriptionResult",
    "UnprocessableEntityError",
    "__version__",
    "label_studio_config",
    "load_samples",
    "read_label_studio",
    "sample_paths",
    "sample_references",
]


def __getattr__(name: str) -> Any:
    # The widgets module imports ipywidgets and IPython display machinery: load it on use.
    if name == "widgets":
        import importlib

        return importlib.import_module(".widgets", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
