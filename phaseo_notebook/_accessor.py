"""The ``.stt`` accessors on pandas DataFrames and Series.

Thin and stateless: ``__init__`` keeps the object, methods validate their arguments, hand
the column to the batch engine and turn its per-row outcomes into new columns. No logic of
their own lives here.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd

from ._batch import BatchResult, ErrorsMode, transcribe_many, transcribe_many_sync
from ._cache import Cache
from ._client import AsyncClient, Client
from ._types import ProviderOptions

__all__ = ["SttDataFrameAccessor", "SttSeriesAccessor"]

log = logging.getLogger("phaseo_notebook")

CacheArg = bool | str | os.PathLike[str] | Cache | None


def _require_column(df: pd.DataFrame, col: Any, what: str) -> None:
    if col not in df.columns:
        shown = ", ".join(map(repr, list(df.columns)[:20]))
        raise KeyError(f"{what} {col!r} is not a column of the DataFrame (columns: {shown})")


def _result_columns(result: BatchResult, out_col: str, metadata: bool) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {out_col: result.text, f"{out_col}_error": result.error}
    if metadata:
        columns.update(
            {
                f"{out_col}_cached": result.cached,
                f"{out_col}_provider": result.provider,
                f"{out_col}_duration": result.duration,
                f"{out_col}_cost": result.cost,
                f"{out_col}_latency": result.latency,
                f"{out_col}_request_id": result.request_id,
            }
        )
    return columns


def _assign(df: pd.DataFrame, columns: dict[str, list[Any]]) -> pd.DataFrame:
    out = df.copy()
    for name, values in columns.items():
        # Positional assignment: correct for any index, duplicated or MultiIndex.
        out[name] = pd.Series(values, index=df.index, dtype=_dtype_for(name, values))
    return out


def _dtype_for(name: str, values: list[Any]) -> str | None:
    if name.endswith("_cached"):
        return "bool"
    if name.endswith(("_duration", "_cost", "_latency")):
        return "float64"
    return None


@pd.api.extensions.register_dataframe_accessor("stt")
class SttDataFrameAccessor:
    """``df.stt``: speech-to-text on a DataFrame column.

    Examples
    --------
    >>> import pandas as pd, phaseo_notebook as pn
    >>> df = pd.DataFrame({"audio": [str(p) for p in pn.sample_paths()[:2]]})
    >>> out = df.stt.transcribe(col="audio", model="local/fake", cache=False, progress=False)
    >>> list(out.columns)
    ['audio', 'text', 'text_error']
    """

    def __init__(self, pandas_obj: pd.DataFrame) -> None:
        self._obj = pandas_obj

    def _arguments(
        self, col: str, language: str | None, language_col: str | None, out_col: str
    ) -> tuple[list[Any], list[Any] | None]:
        df = self._obj
        _require_column(df, col, "audio column")
        if language is not None and language_col is not None:
            raise ValueError("give either language= or language_col=, not both")
        if not isinstance(out_col, str) or not out_col:
            raise ValueError(f"out_col must be a non-empty string, not {out_col!r}")
        languages = None
        if language_col is not None:
            _require_column(df, language_col, "language column")
            languages = df[language_col].tolist()
        return df[col].tolist(), languages

    def transcribe(
        self,
        col: str = "audio_url",
        *,
        model: str | None = None,
        language: str | None = None,
        language_col: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
        out_col: str = "text",
        concurrency: int = 16,
        cache: CacheArg = True,
        errors: ErrorsMode = "store",
        progress: bool = True,
        client: Client | AsyncClient | None = None,
        deadline: float | None = None,
        metadata: bool = False,
    ) -> pd.DataFrame:
        """Transcribe the audio in ``col`` and return a new DataFrame with the text.

        Parameters
        ----------
        col
            Column of audio inputs: http(s) URLs, paths, bytes, ``data:audio/...`` URIs, mixed.
        model
            Gateway model; ``local/pocketsphinx`` when no gateway is configured.
        language
            Language of every row; or ``language_col`` names a column of per-row languages.
        provider
            Provider routing options.
        out_col
            Name of the text column; errors go to ``f"{out_col}_error"``.
        concurrency
            Most requests in flight at once.
        cache
            ``True`` (``PHASEO_CACHE_DIR`` or ``~/.cache/phaseo-notebook``), a directory,
            a :class:`Cache`, or ``False``. Reruns send only what is not cached.
        errors
            ``"store"`` (per-row errors in the error column) or ``"raise"``.
        progress
            Show a progress bar.
        client
            A :class:`Client` or :class:`AsyncClient` to use.
        deadline
            Seconds for the whole run; unfinished rows get an error, finished ones are kept.
        metadata
            Also add ``_cached``, ``_provider``, ``_duration``, ``_cost``, ``_latency`` and
            ``_request_id`` columns with the same prefix.

        Returns
        -------
        pandas.DataFrame
            The input's columns and index, plus ``out_col`` (missing where it failed) and
            ``f"{out_col}_error"`` (missing where it worked).

        Examples
        --------
        >>> import pandas as pd, phaseo_notebook as pn
        >>> df = pd.DataFrame({"audio": [str(p) for p in pn.sample_paths()]})
        >>> out = df.stt.transcribe(col="audio", progress=False)  # embedded engine, offline
        """
        inputs, languages = self._arguments(col, language, language_col, out_col)
        result = transcribe_many_sync(
            inputs,
            model=model,
            language=language,
            languages=languages,
            provider=provider,
            concurrency=concurrency,
            cache=cache,
            errors=errors,
            progress=progress,
            client=client,
            deadline=deadline,
        )
        return _assign(self._obj, _result_columns(result, out_col, metadata))

    async def atranscribe(
        self,
        col: str = "audio_url",
        *,
        model: str | None = None,
        language: str | None = None,
        language_col: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
        out_col: str = "text",
        concurrency: int = 16,
        cache: CacheArg = True,
        errors: ErrorsMode = "store",
        progress: bool = True,
        client: Client | AsyncClient | None = None,
        deadline: float | None = None,
        metadata: bool = False,
    ) -> pd.DataFrame:
        """The async twin of :meth:`transcribe`, for code that is already async.

        Examples
        --------
        >>> async def run(df):
        ...     return await df.stt.atranscribe(col="audio", model="local/fake", progress=False)
        """
        inputs, languages = self._arguments(col, language, language_col, out_col)
        result = await transcribe_many(
            inputs,
            model=model,
            language=language,
            languages=languages,
            provider=provider,
            concurrency=concurrency,
            cache=cache,
            errors=errors,
            progress=progress,
            client=client,
            deadline=deadline,
        )
        return _assign(self._obj, _result_columns(result, out_col, metadata))


@pd.api.extensions.register_series_accessor("stt")
class SttSeriesAccessor:
    """``series.stt``: speech-to-text on a Series of audio inputs.

    Examples
    --------
    >>> import pandas as pd, phaseo_notebook as pn
    >>> s = pd.Series([str(p) for p in pn.sample_paths()[:2]])
    >>> texts = s.stt.transcribe(model="local/fake", cache=False, progress=False)
    >>> len(texts) == len(s)
    True
    """

    def __init__(self, pandas_obj: pd.Series) -> None:
        self._obj = pandas_obj

    def transcribe(
        self,
        *,
        model: str | None = None,
        language: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
        concurrency: int = 16,
        cache: CacheArg = True,
        errors: ErrorsMode = "store",
        progress: bool = True,
        client: Client | AsyncClient | None = None,
        deadline: float | None = None,
    ) -> pd.Series:
        """Transcribe every value; returns a Series of text aligned to this one.

        Rows that failed are missing; the DataFrame accessor keeps the error messages.

        Examples
        --------
        >>> import pandas as pd, phaseo_notebook as pn
        >>> pd.Series([None]).stt.transcribe(model="local/fake", progress=False).isna().all()
        np.True_
        """
        result = transcribe_many_sync(
            self._obj.tolist(),
            model=model,
            language=language,
            provider=provider,
            concurrency=concurrency,
            cache=cache,
            errors=errors,
            progress=progress,
            client=client,
            deadline=deadline,
        )
        if result.errors:
            log.warning(
                "%d of %d rows failed; df.stt.transcribe(...) keeps an error column with the reasons",
                result.errors,
                len(result.error),
            )
        return pd.Series(result.text, index=self._obj.index, name="text")
