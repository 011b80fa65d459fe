"""The ``.stt`` accessors on pandas DataFrames and Series.

Thin and stateless: ``__init__`` keeps the object, methods validate their arguments, hand
the column to the batch engine and turn its per-row outcomes into new columns. No logic of
their own lives here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from ._batch import run_request, run_request_sync
from ._client import AsyncClient, Client
from ._frames import frame_request, with_outputs
from ._request import CacheArg, ErrorsMode, TranscribeRequest
from ._types import ProviderOptions

if TYPE_CHECKING:
    from ._compare import ModelComparison
    from ._estimate import Estimate
    from ._scoring import ScoreResult

__all__ = ["SttDataFrameAccessor", "SttSeriesAccessor"]

log = logging.getLogger("phaseo_notebook")


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
        budget: float | None = None,
        prices: Mapping[str, float] | None = None,
    ) -> pd.DataFrame:
        """Transcribe the audio in ``col`` and return a new DataFrame with the text.

        Parameters
        ----------
        col
            Column of audio inputs: http(s) URLs, paths, bytes, ``data:audio/...`` URIs, mixed.
        model
            Gateway model; ``local/whisper-tiny.en`` when no gateway is configured.
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
            Also add ``_cached``, ``_provider``, ``_duration``, ``_cost``, ``_latency``,
            ``_request_id`` and ``_language`` (as the gateway reports it) columns with the
            same prefix.
        budget
            The most this run may spend, in USD. A request is sent only while what is spent,
            what is in flight and its own estimate fit; the rows not sent get an error
            beginning ``BudgetExceededError:`` (with ``errors="raise"`` it is raised, after
            the finished rows are cached, so a rerun with a larger budget continues).
        prices
            ``{model: USD per minute}``, over the gateway's catalog and the built-in table;
            with no price anywhere, the cost is learnt from the first answer.

        Returns
        -------
        pandas.DataFrame
            The input's columns and index, plus ``out_col`` (missing where it failed) and
            ``f"{out_col}_error"`` (missing where it worked). ``attrs["stt"]`` holds the run
            summary: ``spent``, ``requests``, ``audio_minutes``, ``cache_hits``, ``budget``,
            ... (see :mod:`phaseo_notebook._frames`).

        Examples
        --------
        >>> import pandas as pd, phaseo_notebook as pn
        >>> df = pd.DataFrame({"audio": [str(p) for p in pn.sample_paths()]})
        >>> out = df.stt.transcribe(col="audio", progress=False)  # embedded engine, offline
        """
        request = frame_request(
            self._obj,
            col,
            model=model,
            language=language,
            language_col=language_col,
            provider=provider,
            out_col=out_col,
            concurrency=concurrency,
            cache=cache,
            errors=errors,
            progress=progress,
            client=client,
            deadline=deadline,
            metadata=metadata,
            budget=budget,
            prices=prices,
        )
        return with_outputs(self._obj, request, run_request_sync(request))

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
        budget: float | None = None,
        prices: Mapping[str, float] | None = None,
    ) -> pd.DataFrame:
        """The async twin of :meth:`transcribe`, for code that is already async.

        Examples
        --------
        >>> async def run(df):
        ...     return await df.stt.atranscribe(col="audio", model="local/fake", progress=False)
        """
        request = frame_request(
            self._obj,
            col,
            model=model,
            language=language,
            language_col=language_col,
            provider=provider,
            out_col=out_col,
            concurrency=concurrency,
            cache=cache,
            errors=errors,
            progress=progress,
            client=client,
            deadline=deadline,
            metadata=metadata,
            budget=budget,
            prices=prices,
        )
        return with_outputs(self._obj, request, await run_request(request))

    def estimate(
        self,
        col: str = "audio_url",
        *,
        model: str | None = None,
        language: str | None = None,
        language_col: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
        prices: Mapping[str, float] | None = None,
        cache: CacheArg = True,
        client: Client | AsyncClient | None = None,
    ) -> Estimate:
        """What :meth:`transcribe` with these arguments would send and cost; sends nothing.

        Requests are counted after dedupe and the cache; audio lengths come from file
        headers (URLs are not fetched: their length is unknown and counted at the mean);
        the price from ``prices``, else the gateway's catalog (its one call), else the
        built-in table. ``cost`` is ``None`` when no price is known.

        Returns
        -------
        Estimate
            ``requests``, ``cached``, ``audio_seconds`` / ``audio_minutes``,
            ``unknown_durations``, ``cost``, ``currency``; shown as a table per model.

        Examples
        --------
        >>> import pandas as pd, phaseo_notebook as pn
        >>> df = pd.DataFrame({"audio": [str(p) for p in pn.sample_paths()]})
        >>> df.stt.estimate(col="audio", model="local/fake", cache=False).cost
        0.0
        """
        from ._run_estimate import estimate_request

        request = frame_request(
            self._obj,
            col,
            model=model,
            language=language,
            language_col=language_col,
            provider=provider,
            cache=cache,
            client=client,
            prices=prices,
        )
        return estimate_request(request)

    # -- quality, comparison and exports: thin fronts over _scoring, _flags, _compare and _export --

    def score(
        self,
        ref: str = "reference",
        hyp: str = "text",
        *,
        normalize: bool = True,
    ) -> ScoreResult:
        """Word and character error rates of ``hyp`` against ``ref``, per row and overall.

        Parameters
        ----------
        ref
            Column of reference transcripts.
        hyp
            Column of transcripts to score.
        normalize
            Compare normalised text (case folded, punctuation removed, CJK characters split;
            see :func:`phaseo_notebook._scoring.normalize_for_scoring`); ``False`` compares the text
            as written, only collapsing whitespace.

        Returns
        -------
        ScoreResult
            ``.df`` is a copy with float columns ``wer`` and ``cer`` (NaN for rows without a
            reference or a transcript); ``.wer`` and ``.cer`` are the corpus rates (total
            errors over total reference words/characters).

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"reference": ["the cat sat"], "text": ["The cat sat down."]})
        >>> res = df.stt.score()
        >>> round(res.wer, 4), res.df["wer"].round(4).tolist()
        (0.3333, [0.3333])
        """
        from ._scoring import score_frame

        return score_frame(self._obj, ref=ref, hyp=hyp, normalize=normalize)

    def flag(
        self,
        audio_col: str | None = None,
        text_col: str = "text",
        *,
        language: str | None = None,
        language_col: str | None = None,
        min_rate: float = 0.5,
        max_rate: float = 7.0,
        energy_db: float = -40.0,
    ) -> pd.DataFrame:
        """Flag rows a human should review; adds ``flag_*``, ``needs_review``, ``review_reasons``.

        Works best on ``df.stt.transcribe(..., metadata=True)`` output, whose
        ``text_duration``, ``text_language`` and ``text_error`` columns it reads; without a
        duration, WAV headers (and other formats with the ``[local]`` extra) give it.

        Parameters
        ----------
        audio_col
            Column of audio, read for duration and loudness (URLs are never downloaded).
        text_col
            Column of transcripts.
        language, language_col
            The language asked for (all rows, or a column of per-row languages).
        min_rate, max_rate
            Plausible speech rate in words per second.
        energy_db
            Loudness (dBFS) above which empty text counts as missed speech.

        Returns
        -------
        pandas.DataFrame
            A copy with ``flag_error``, ``flag_empty``, ``flag_short``, ``flag_long``,
            ``flag_language`` (nullable booleans, NA where not checkable),
            ``needs_review`` and ``review_reasons``.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"text": ["bonjour"], "text_language": ["en"]})
        >>> df.stt.flag(language="fr")["review_reasons"].tolist()
        ['language']
        """
        from ._flags import flag_rows

        return flag_rows(
            self._obj,
            audio_col=audio_col,
            text_col=text_col,
            language=language,
            language_col=language_col,
            min_rate=min_rate,
            max_rate=max_rate,
            energy_db=energy_db,
        )

    def compare(
        self,
        col: str = "audio_url",
        *,
        models: Sequence[str],
        reference: str | None = None,
        language: str | None = None,
        language_col: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
        concurrency: int = 16,
        cache: CacheArg = True,
        errors: ErrorsMode = "store",
        progress: bool = True,
        client: Client | AsyncClient | None = None,
        deadline: float | None = None,
        normalize: bool = True,
        budget: float | None = None,
        prices: Mapping[str, float] | None = None,
    ) -> ModelComparison:
        """Transcribe ``col`` with each model and compare them (shared cache and concurrency).

        Parameters
        ----------
        col
            Column of audio inputs.
        models
            Model names, in the order of the table.
        reference
            Column of reference transcripts, for WER/CER; omit when there is none.
        normalize
            Normalise text before scoring (see :meth:`score`).
        language, language_col, provider, concurrency, cache, errors, progress, client, deadline
            As for :meth:`transcribe` (``deadline`` applies to each model's run).
        budget, prices
            As for :meth:`transcribe`; ``budget`` applies to each model's run, and rows a
            model's run did not send for it count among that model's ``errors``.

        Returns
        -------
        ModelComparison
            ``.table`` (one row per model: rows done, errors, WER/CER, mean latency, total
            cost), ``.per_row`` (long format), ``.wide(value)`` and ``.plot()`` (a matplotlib
            Figure of WER and cost per model).

        Examples
        --------
        >>> import phaseo_notebook as pn
        >>> df = pn.load_samples()
        >>> cmp = df.stt.compare("audio", models=["local/pocketsphinx", "local/fake"],
        ...                      reference="reference", progress=False)  # doctest: +SKIP
        >>> cmp.table[["model", "wer"]]  # doctest: +SKIP
        """
        from ._compare import compare_models

        return compare_models(
            self._obj,
            col,
            models=models,
            reference=reference,
            language=language,
            language_col=language_col,
            provider=provider,
            concurrency=concurrency,
            cache=cache,
            errors=errors,
            progress=progress,
            client=client,
            deadline=deadline,
            normalize=normalize,
            budget=budget,
            prices=prices,
        )

    def to_label_studio(
        self,
        path: str | os.PathLike[str],
        audio_col: str = "audio",
        text_col: str = "text",
        *,
        key_col: str | None = None,
        data_cols: Sequence[str] = (),
        model_version: str = "phaseo-notebook",
        local_files_root: str | os.PathLike[str] | None = None,
        embed_audio: bool = False,
    ) -> Path:
        """Write Label Studio tasks (audio transcription template), transcripts as predictions.

        Import the file into a project whose labeling interface is
        ``pn.label_studio_config()``; annotators correct the predicted text. Each task's
        ``data.row_key`` is the row's index label (or ``key_col``), which
        :meth:`from_label_studio` uses to bring the reviewed text back.

        Parameters
        ----------
        path
            The JSON file to write.
        audio_col, text_col
            Columns of audio and of transcripts (rows without text get no prediction).
        key_col
            Column of unique row keys instead of the index.
        data_cols
            More columns to show in Label Studio, copied into each task's ``data``.
        model_version
            Label of the predictions, e.g. the model name.
        local_files_root
            Directory Label Studio serves as local files: paths under it become
            ``/data/local-files/?d=...`` links.
        embed_audio
            Put local audio files into the tasks file as data URIs (bytes always are).

        Returns
        -------
        pathlib.Path
            The file written.

        Examples
        --------
        >>> import pandas as pd, tempfile, os
        >>> df = pd.DataFrame({"audio": ["https://example.com/a.wav"], "text": ["hello"]})
        >>> path = df.stt.to_label_studio(os.path.join(tempfile.mkdtemp(), "tasks.json"))
        """
        from ._export import to_label_studio

        return to_label_studio(
            self._obj,
            path,
            audio_col=audio_col,
            text_col=text_col,
            key_col=key_col,
            data_cols=data_cols,
            model_version=model_version,
            local_files_root=local_files_root,
            embed_audio=embed_audio,
        )

    def from_label_studio(
        self,
        export: str | os.PathLike[str] | Iterable[Any],
        text_col: str = "text",
        *,
        key_col: str | None = None,
        from_name: str = "transcription",
    ) -> pd.DataFrame:
        """Merge reviewed transcripts from a Label Studio JSON export back into this DataFrame.

        Parameters
        ----------
        export
            The file Label Studio exported (JSON or JSON_MIN), or its tasks already loaded.
        text_col
            The transcript column the tasks were made from.
        key_col
            The key column given to :meth:`to_label_studio`, if any.
        from_name
            Name of the TextArea tag in the labeling config.

        Returns
        -------
        pandas.DataFrame
            A copy with ``f"{text_col}_reviewed"``, ``review_status`` (``accepted``,
            ``corrected``, ``skipped`` or ``none``: the review widget's vocabulary) and
            ``review_annotator``.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"audio": ["a.wav"], "text": ["helo"]})
        >>> task = {"data": {"row_key": 0}, "predictions": [], "annotations": [{"result": [
        ...     {"from_name": "transcription", "value": {"text": ["hello"]}}]}]}
        >>> df.stt.from_label_studio([task])[["text_reviewed", "review_status"]].values.tolist()
        [['hello', 'corrected']]
        """
        from ._export import merge_label_studio

        return merge_label_studio(
            self._obj, export, text_col=text_col, key_col=key_col, from_name=from_name
        )

    def to_jsonl(
        self,
        path: str | os.PathLike[str],
        *,
        columns: Sequence[str] | None = None,
        audio_bytes: Literal["data_uri", "omit"] = "data_uri",
        index: bool = False,
    ) -> Path:
        """Write one JSON object per row (a training or hand-off file).

        Values are made JSON-safe (missing -> ``null``, timestamps -> ISO 8601); ``bytes``
        audio becomes ``data:audio/...;base64,`` URIs (which ``df.stt.transcribe`` accepts
        back), or is left out with ``audio_bytes="omit"``. Read it with
        ``pd.read_json(path, lines=True)``.

        Parameters
        ----------
        path
            The file to write.
        columns
            Columns to write, in order (default all).
        audio_bytes
            ``"data_uri"`` or ``"omit"``.
        index
            Also write the index label as ``"index"``.

        Returns
        -------
        pathlib.Path
            The file written.

        Examples
        --------
        >>> import pandas as pd, tempfile, os
        >>> df = pd.DataFrame({"audio": ["a.wav"], "text": ["hello"]})
        >>> p = df.stt.to_jsonl(os.path.join(tempfile.mkdtemp(), "train.jsonl"))
        >>> p.read_text()
        '{"audio": "a.wav", "text": "hello"}\\n'
        """
        from ._export import to_jsonl

        return to_jsonl(self._obj, path, columns=columns, audio_bytes=audio_bytes, index=index)


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
        budget: float | None = None,
        prices: Mapping[str, float] | None = None,
    ) -> pd.Series:
        """Transcribe every value; returns a Series of text aligned to this one.

        Rows that failed are missing; the DataFrame accessor keeps the error messages.
        ``budget`` and ``prices`` are those of ``df.stt.transcribe``; the run summary is
        in the result's ``attrs["stt"]``.

        Examples
        --------
        >>> import pandas as pd, phaseo_notebook as pn
        >>> pd.Series([None]).stt.transcribe(model="local/fake", progress=False).isna().all()
        np.True_
        """
        request = TranscribeRequest(
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
            budget=budget,
            prices=prices,
        )
        result = run_request_sync(request)
        if result.errors:
            log.warning(
                "%d of %d rows failed; df.stt.transcribe(...) keeps an error column with the reasons",
                result.errors,
                len(result.error),
            )
        out = pd.Series(result.text, index=self._obj.index, name="text")
        out.attrs["stt"] = dict(result.summary)
        return out

    def estimate(
        self,
        *,
        model: str | None = None,
        language: str | None = None,
        provider: ProviderOptions | dict[str, Any] | None = None,
        prices: Mapping[str, float] | None = None,
        cache: CacheArg = True,
        client: Client | AsyncClient | None = None,
    ) -> Estimate:
        """What :meth:`transcribe` would send and cost; sends nothing (see ``df.stt.estimate``).

        Examples
        --------
        >>> import pandas as pd, phaseo_notebook as pn
        >>> s = pd.Series([str(p) for p in pn.sample_paths()[:1]] * 2)
        >>> s.stt.estimate(model="local/fake", cache=False).requests
        1
        """
        from ._run_estimate import estimate_request

        request = TranscribeRequest(
            self._obj.tolist(),
            model=model,
            language=language,
            provider=provider,
            prices=prices,
            cache=cache,
            client=client,
        )
        return estimate_request(request)
