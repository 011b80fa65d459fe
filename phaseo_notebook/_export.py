"""Exports for labeling tools and training sets: Label Studio tasks, JSON Lines, and back.

Label Studio
    :func:`to_label_studio` writes a tasks file for Label Studio's audio transcription
    template (:func:`label_studio_config`): one task per row whose ``data`` holds the audio
    and a ``row_key`` (the DataFrame's index label, or a key column), with the transcript as
    a prediction that annotators correct instead of typing from scratch. A row without a
    transcript (it failed) gets a task without a prediction. Audio goes in as:

    - an ``http(s)`` URL: as is (Label Studio's browser fetches it);
    - a path under ``local_files_root``: ``/data/local-files/?d=<path relative to it>``, for
      Label Studio's local file serving (``LOCAL_FILES_SERVING_ENABLED=true`` and
      ``LOCAL_FILES_DOCUMENT_ROOT`` set to that root);
    - bytes, and local files of at most ``EMBED_MAX_BYTES`` (1 MB: about 30 s of 16 kHz WAV,
      minutes of FLAC or MP3) by default: a ``data:audio/...;base64,`` URI inside the file,
      which Label Studio plays with no setup. The file grows by 4/3 of the audio's size, and
      Label Studio keeps a copy in its database, so ``embed_audio="auto"`` (the default) stops
      at that size; ``embed_audio=True`` embeds every file, ``False`` none;
    - any other path (a larger file, or ``embed_audio=False``): as written, with a warning,
      since Label Studio cannot play it until it is served (``local_files_root``, or upload
      the files and point the tasks at their URLs).

    :func:`read_label_studio` reads Label Studio's JSON export (full ``JSON`` or ``JSON_MIN``)
    into one row per task, and :func:`merge_label_studio` puts the reviewed text back into
    the DataFrame the tasks came from, matched by ``row_key``, as the columns the review
    widget writes: ``f"{text_col}_reviewed"`` and ``review_status`` (``accepted``: the
    annotation kept the prediction; ``corrected``: it changed it; ``skipped``: the
    annotation was cancelled; ``none``: no annotation).

JSON Lines
    :func:`to_jsonl` writes one JSON object per row. Values become JSON-safe: missing values
    (None, NaN, NA, NaT) and non-finite floats become ``null``, numpy scalars plain numbers,
    timestamps ISO 8601 strings, paths strings; ``bytes`` (uploaded audio) become
    ``data:audio/...;base64,`` URIs by default, which ``df.stt.transcribe`` accepts as input,
    so the file is a complete, re-transcribable data set (``audio_bytes="omit"`` drops them
    instead). ``pd.read_json(path, lines=True)`` reads it back.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

from ._audio import is_missing
from ._frames import require_column

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LABEL_STUDIO_CONFIG",
    "label_studio_config",
    "merge_label_studio",
    "read_label_studio",
    "to_jsonl",
    "to_label_studio",
]

log = logging.getLogger("phaseo_notebook")

#: Names of the template's tags: the prediction and the export both refer to them.
FROM_NAME = "transcription"
TO_NAME = "audio"
#: The task ``data`` key that ties a task to its DataFrame row.
ROW_KEY = "row_key"

#: Label Studio labeling config for the tasks :func:`to_label_studio` writes (its "Audio
#: transcription" template): paste it into the project's Settings > Labeling Interface.
LABEL_STUDIO_CONFIG = """\
<View>
  <Audio name="audio" value="$audio" zoom="true" hotkey="ctrl+enter"/>
  <Header value="Correct the transcript"/>
  <TextArea name="transcription" toName="audio" rows="4" editable="true" maxSubmissions="1"/>
</View>
"""

AudioBytes = Literal["data_uri", "omit"]
EmbedAudio = bool | Literal["auto"]

#: Largest local file ``embed_audio="auto"`` puts into a tasks file as a data URI.
EMBED_MAX_BYTES = 1_000_000


def label_studio_config() -> str:
    """The Label Studio labeling config for the tasks that ``df.stt.to_label_studio`` writes.

    Paste it into the project's Settings > Labeling Interface > Code: an audio player and a
    text box prefilled with the transcript (Label Studio's "Audio transcription" template).

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> print(pn.label_studio_config())  # doctest: +ELLIPSIS
    <View>
      <Audio name="audio" value="$audio" .../>
    ...
    """
    return LABEL_STUDIO_CONFIG


# --------------------------------------------------------------------------- values


def _data_uri(data: bytes) -> str:
    from ._audio import mime_for_format, sniff_audio_format

    fmt = sniff_audio_format(data[:32])
    mime = mime_for_format(fmt) if fmt else "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_OMIT = object()


def json_safe(value: Any, *, audio_bytes: AudioBytes = "data_uri") -> Any:
    """``value`` as something ``json.dumps`` writes faithfully (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> json_safe(np.int64(3)), json_safe(float("nan")), json_safe(b"RIFF")[:22]
    (3, None, 'data:application/octet')
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return _OMIT if audio_bytes == "omit" else _data_uri(bytes(value))
    if isinstance(value, str | bool | int) or value is None:
        return value
    if is_missing(value):  # before the datetime test: NaT is a datetime
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {
            str(k): v
            for k, v in ((k, json_safe(v, audio_bytes=audio_bytes)) for k, v in value.items())
            if v is not _OMIT
        }
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:  # numpy and pandas scalars
        return json_safe(item(), audio_bytes=audio_bytes)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays
        value = tolist()
    if isinstance(value, list | tuple | set | frozenset):
        items = (json_safe(v, audio_bytes=audio_bytes) for v in value)
        return [v for v in items if v is not _OMIT]
    isoformat = getattr(value, "isoformat", None)  # pandas Timestamp and Timedelta
    if callable(isoformat):
        return isoformat()
    return str(value)


def _row_key(label: Any) -> int | str:
    """A JSON-stable key for a row label: ints and strings as they are, others as text."""
    label = json_safe(label)
    if isinstance(label, bool) or not isinstance(label, int | str):
        return json.dumps(label, sort_keys=True) if isinstance(label, list | dict) else str(label)
    return label


def _row_keys(df: pd.DataFrame, key_col: str | None) -> list[int | str]:
    if key_col is not None:
        require_column(df, key_col, "key column")
        keys = [_row_key(v) for v in df[key_col].tolist()]
        where = f"key column {key_col!r}"
    else:
        keys = [_row_key(v) for v in df.index.tolist()]
        where = "the DataFrame's index"
    seen: set[int | str] = set()
    for key in keys:
        if key in seen:
            raise ValueError(
                f"{where} has the value {key!r} more than once; tasks are matched back to rows"
                " by it, so it must be unique (pass key_col= or reset_index())"
            )
        seen.add(key)
    return keys


def _write_text_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file in the same directory, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


# --------------------------------------------------------------------------- Label Studio


def _task_audio(
    value: Any, *, root: Path | None, embed: EmbedAudio, row: int, audio_col: str
) -> str | None:
    from ._audio import normalize_audio
    from ._exceptions import AudioInputError

    if is_missing(value):
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return _data_uri(bytes(value))
    if isinstance(value, str) and value.startswith(("data:", "http://", "https://")):
        return value
    try:
        source = normalize_audio(value)
    except AudioInputError as err:
        raise AudioInputError(
            f"audio column {audio_col!r} row {row}: {err}", audio=str(value)[:80]
        ) from err
    if source.kind == "url":
        return source.url
    assert source.path is not None
    if embed is True:
        return _data_uri(source.read())
    if root is not None:
        try:
            relative = source.path.resolve().relative_to(root)
        except ValueError:
            pass
        else:
            return f"/data/local-files/?d={relative.as_posix()}"
    small = source.path.is_file() and source.path.stat().st_size <= EMBED_MAX_BYTES
    if embed == "auto" and small:
        return _data_uri(source.read())
    return None  # the caller writes the path as given, and says Label Studio cannot play it


def to_label_studio(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    audio_col: str = "audio",
    text_col: str = "text",
    key_col: str | None = None,
    data_cols: Sequence[str] = (),
    model_version: str = "phaseo-notebook",
    local_files_root: str | os.PathLike[str] | None = None,
    embed_audio: EmbedAudio = "auto",
) -> Path:
    """Write a Label Studio tasks file, transcripts as predictions; behind ``df.stt.to_label_studio``.

    Parameters
    ----------
    df
        Rows to label.
    path
        The JSON file to write (import it into a project using :func:`label_studio_config`).
    audio_col, text_col
        Columns of audio and of transcripts.
    key_col
        Column of unique row keys; by default the index (which must then be unique).
    data_cols
        More columns to copy into each task's ``data`` (shown in Label Studio's data manager).
    model_version
        Label of the predictions (e.g. the model name).
    local_files_root
        Directory that Label Studio serves as local files; paths under it become
        ``/data/local-files/?d=...`` links.
    embed_audio
        ``"auto"`` (default): local files up to ``EMBED_MAX_BYTES`` (1 MB) go inside the tasks
        file as data URIs, which Label Studio plays as is; ``True``: every local file;
        ``False``: none. Paths neither embedded nor under ``local_files_root`` are written
        as given, with a warning: Label Studio cannot play them.

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> df = pd.DataFrame({"audio": ["https://example.com/a.wav"], "text": ["hello"]})
    >>> p = to_label_studio(df, os.path.join(tempfile.mkdtemp(), "tasks.json"))
    >>> import json; json.loads(p.read_text())[0]["predictions"][0]["result"][0]["value"]
    {'text': ['hello']}
    """
    require_column(df, audio_col, "audio column")
    require_column(df, text_col, "text column")
    extra = [data_cols] if isinstance(data_cols, str) else list(data_cols)
    for col in extra:
        require_column(df, col, "data column")
        if col in (TO_NAME, ROW_KEY):
            raise ValueError(f"data column {col!r} would overwrite the task's own {col!r} field")
    if not isinstance(model_version, str) or not model_version:
        raise ValueError(f"model_version must be a non-empty string, not {model_version!r}")
    root = Path(local_files_root).expanduser().resolve() if local_files_root is not None else None
    if root is not None and not root.is_dir():
        raise ValueError(f"local_files_root {str(root)!r} is not a directory")
    keys = _row_keys(df, key_col)
    audio = df[audio_col].tolist()
    texts = df[text_col].tolist()
    extras = {col: df[col].tolist() for col in extra}
    if embed_audio not in (True, False, "auto"):
        raise ValueError(f"embed_audio must be True, False or 'auto', not {embed_audio!r}")
    tasks: list[dict[str, Any]] = []
    unplayable: list[str] = []
    for i, key in enumerate(keys):
        playable = _task_audio(audio[i], root=root, embed=embed_audio, row=i, audio_col=audio_col)
        if playable is None and not is_missing(audio[i]):
            unplayable.append(str(audio[i]))
        data: dict[str, Any] = {
            TO_NAME: str(audio[i]) if playable is None and not is_missing(audio[i]) else playable,
            ROW_KEY: key,
        }
        for col, values in extras.items():
            value = json_safe(values[i])
            data[str(col)] = None if value is _OMIT else value
        task: dict[str, Any] = {"data": data, "predictions": []}
        text = texts[i]
        if not is_missing(text):
            if not isinstance(text, str):
                raise TypeError(
                    f"text column {text_col!r} row {i} holds {type(text).__name__}, not text"
                )
            task["predictions"].append(
                {
                    "model_version": model_version,
                    "result": [
                        {
                            "from_name": FROM_NAME,
                            "to_name": TO_NAME,
                            "type": "textarea",
                            "value": {"text": [text]},
                        }
                    ],
                }
            )
        tasks.append(task)
    if unplayable:
        import warnings

        why = (
            f"larger than {EMBED_MAX_BYTES:,} bytes"
            if embed_audio == "auto"
            else "not embedded (embed_audio=False)"
        )
        warnings.warn(
            f"{len(unplayable)} task(s) point at local files Label Studio cannot play ({why}),"
            f" e.g. {unplayable[0]!r}: pass local_files_root= (Label Studio's local file"
            " serving) or embed_audio=True",
            UserWarning,
            stacklevel=3,
        )
    target = Path(path).expanduser()
    _write_text_atomic(target, lambda fh: json.dump(tasks, fh, ensure_ascii=False, indent=1))
    return target


def _load_export(source: str | os.PathLike[str] | Iterable[Any]) -> tuple[list[Any], str]:
    if isinstance(source, str | os.PathLike):
        where = str(source)
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Label Studio export {where!r} does not exist")
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"Label Studio export {where!r} is not JSON: {err}") from err
    else:
        where = "the given tasks"
        loaded = list(source)
    if isinstance(loaded, dict):  # a single task exported on its own
        loaded = [loaded]
    if not isinstance(loaded, list):
        raise ValueError(
            f"Label Studio export {where!r} holds a JSON {type(loaded).__name__}, not a list"
            " of tasks (export the project as JSON or JSON_MIN)"
        )
    return loaded, where


def _result_text(results: Any, from_name: str) -> str | None:
    """The text of the first textarea result from ``from_name``, lines joined."""
    if not isinstance(results, list):
        return None
    for item in results:
        if not isinstance(item, dict) or item.get("from_name", from_name) != from_name:
            continue
        value = item.get("value")
        text = value.get("text") if isinstance(value, dict) else None
        if isinstance(text, list):
            return "\n".join(str(t) for t in text)
        if isinstance(text, str):
            return text
    return None


def _annotator(annotation: Mapping[str, Any]) -> str | None:
    who = annotation.get("completed_by", annotation.get("annotator"))
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return None if who is None else str(who)


def _pick_annotation(annotations: Any) -> dict[str, Any] | None:
    """The annotation that counts: a ground-truth one, else the most recently updated."""
    usable = (
        [a for a in annotations if isinstance(a, dict)] if isinstance(annotations, list) else []
    )
    if not usable:
        return None
    truth = [a for a in usable if a.get("ground_truth") is True]
    pool = truth or usable
    # ISO 8601 timestamps of one export sort as text; the last one in the file wins ties.
    return max(enumerate(pool), key=lambda pair: (str(pair[1].get("updated_at") or ""), pair[0]))[1]


def read_label_studio(
    source: str | os.PathLike[str] | Iterable[Any], *, from_name: str = FROM_NAME
) -> pd.DataFrame:
    """Read a Label Studio JSON (or JSON_MIN) export: one row per task.

    Parameters
    ----------
    source
        The export file, or its tasks already loaded.
    from_name
        Name of the TextArea tag holding the transcript (``"transcription"`` in
        :data:`LABEL_STUDIO_CONFIG`).

    Returns
    -------
    pandas.DataFrame
        Columns ``task_id``, ``row_key`` (None for tasks not made by :func:`to_label_studio`),
        ``audio``, ``predicted`` (the first prediction's text), ``reviewed`` (the annotation's
        text), ``status`` (``accepted``, ``corrected``, ``skipped`` or ``none``, as in the
        module docstring) and ``annotator``.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not JSON, or not a list of tasks.

    Examples
    --------
    >>> task = {"id": 7, "data": {"audio": "a.wav", "row_key": 0},
    ...         "annotations": [{"result": [{"from_name": "transcription",
    ...                                      "value": {"text": ["hello"]}}]}]}
    >>> read_label_studio([task]).loc[0, ["row_key", "reviewed", "status"]].tolist()
    [0, 'hello', 'corrected']
    """
    import pandas as pd

    tasks, where = _load_export(source)
    rows: list[dict[str, Any]] = []
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise ValueError(
                f"Label Studio export {where!r}: entry {i} is {type(task).__name__}, not a task"
            )
        if "data" in task or "annotations" in task:
            data = task.get("data") if isinstance(task.get("data"), dict) else {}
            assert isinstance(data, dict)
            predictions = task.get("predictions")
            predicted = None
            if isinstance(predictions, list):
                for prediction in predictions:
                    if isinstance(prediction, dict):
                        predicted = _result_text(prediction.get("result"), from_name)
                        if predicted is not None:
                            break
            annotation = _pick_annotation(task.get("annotations"))
            reviewed = None
            annotator = None
            cancelled = False
            if annotation is not None:
                cancelled = annotation.get("was_cancelled") is True
                reviewed = None if cancelled else _result_text(annotation.get("result"), from_name)
                annotator = _annotator(annotation)
            has_annotation = annotation is not None
        else:
            # JSON_MIN: the data fields and the tags' values side by side in one flat object.
            data = task
            predicted = None
            value = task.get(from_name)
            reviewed = "\n".join(map(str, value)) if isinstance(value, list) else value
            reviewed = reviewed if isinstance(reviewed, str) else None
            annotator = _annotator(task)
            cancelled = False
            has_annotation = reviewed is not None
        if cancelled:
            status = "skipped"
        elif not has_annotation or reviewed is None:
            status = "none"
        elif predicted is not None and reviewed.strip() == predicted.strip():
            status = "accepted"
        else:
            status = "corrected"
        rows.append(
            {
                "task_id": task.get("id"),
                "row_key": data.get(ROW_KEY),
                "audio": data.get(TO_NAME),
                "predicted": predicted,
                "reviewed": reviewed if status in ("accepted", "corrected") else None,
                "status": status,
                "annotator": annotator,
            }
        )
    columns = ["task_id", "row_key", "audio", "predicted", "reviewed", "status", "annotator"]
    table = pd.DataFrame(rows, columns=columns)
    # Keys as they were written: inferring a dtype would turn int keys with a gap into floats.
    table["row_key"] = pd.Series([row["row_key"] for row in rows], dtype=object)
    return table


def merge_label_studio(
    df: pd.DataFrame,
    source: str | os.PathLike[str] | Iterable[Any],
    *,
    text_col: str = "text",
    key_col: str | None = None,
    from_name: str = FROM_NAME,
) -> pd.DataFrame:
    """Put reviewed text from a Label Studio export back into ``df``; behind ``df.stt.from_label_studio``.

    Tasks are matched to rows by the ``row_key`` :func:`to_label_studio` stored (the index
    label, or ``key_col``). In JSON_MIN exports, where the transcript's prediction is not
    included, a reviewed text equal to ``df[text_col]`` counts as accepted.

    Returns
    -------
    pandas.DataFrame
        A copy with ``f"{text_col}_reviewed"`` (text where accepted or corrected),
        ``review_status`` (``none`` for rows with no task in the export) and
        ``review_annotator``.

    Raises
    ------
    ValueError
        No task of the export matches a row (the export is from other data), or two tasks
        name the same row.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"audio": ["a.wav"], "text": ["hello"]})
    >>> task = {"data": {"row_key": 0}, "annotations": [{"result": [
    ...     {"from_name": "transcription", "value": {"text": ["hello"]}}]}]}
    >>> merge_label_studio(df, [task])["review_status"].tolist()
    ['accepted']
    """
    import pandas as pd

    keys = _row_keys(df, key_col)
    position = {key: i for i, key in enumerate(keys)}
    table = read_label_studio(source, from_name=from_name)
    n = len(df)
    reviewed: list[str | None] = [None] * n
    status = ["none"] * n
    annotators: list[str | None] = [None] * n
    matched: set[int] = set()
    unknown = 0
    originals = df[text_col].tolist() if text_col in df.columns else [None] * n
    for record in table.itertuples(index=False):
        key = record.row_key
        i = position.get(_row_key(key)) if not is_missing(key) else None
        if i is None:
            unknown += 1
            continue
        if i in matched:
            raise ValueError(
                f"the export has two tasks for row_key {key!r}; keep one (or export again)"
            )
        matched.add(i)
        row_status = str(record.status)
        text = record.reviewed if isinstance(record.reviewed, str) else None
        if record.predicted is None and text is not None:
            original = originals[i]
            same = isinstance(original, str) and original.strip() == text.strip()
            row_status = "accepted" if same else "corrected"
        reviewed[i] = text
        status[i] = row_status
        annotators[i] = record.annotator if isinstance(record.annotator, str) else None
    if len(table) and not matched:
        raise ValueError(
            f"none of the {len(table)} tasks in the export matches a row of this DataFrame by"
            " row_key; export and import the same rows (and the same key_col)"
        )
    if unknown:
        log.warning("%d task(s) in the Label Studio export match no row and were ignored", unknown)
    out = df.copy()
    out[f"{text_col}_reviewed"] = pd.Series(reviewed, index=df.index, dtype=object)
    out["review_status"] = pd.Series(status, index=df.index, dtype=object)
    out["review_annotator"] = pd.Series(annotators, index=df.index, dtype=object)
    return out


# --------------------------------------------------------------------------- JSON Lines


def to_jsonl(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    audio_bytes: AudioBytes = "data_uri",
    index: bool = False,
) -> Path:
    """Write one JSON object per row; behind ``df.stt.to_jsonl``.

    Parameters
    ----------
    df
        The rows.
    path
        The ``.jsonl`` file to write.
    columns
        Columns to write (default all), in this order.
    audio_bytes
        ``"data_uri"`` (default) writes ``bytes`` values as ``data:audio/...;base64,`` URIs;
        ``"omit"`` leaves those keys out.
    index
        Also write the index label, under ``"index"``.

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> p = to_jsonl(pd.DataFrame({"a": [1, None]}), os.path.join(tempfile.mkdtemp(), "x.jsonl"))
    >>> p.read_text().splitlines()
    ['{"a": 1.0}', '{"a": null}']
    """
    if audio_bytes not in ("data_uri", "omit"):
        raise ValueError(f"audio_bytes must be 'data_uri' or 'omit', not {audio_bytes!r}")
    names = list(df.columns) if columns is None else list(columns)
    if isinstance(columns, str):
        names = [columns]
    for col in names:
        require_column(df, col, "column")
    if index and "index" in names:
        raise ValueError("index=True would overwrite the column named 'index'")
    values = {col: df[col].tolist() for col in names}
    labels = df.index.tolist()

    def write(fh: Any) -> None:
        for i in range(len(df)):
            record: dict[str, Any] = {}
            if index:
                record["index"] = json_safe(labels[i])
            for col in names:
                value = json_safe(values[col][i], audio_bytes=audio_bytes)
                if value is not _OMIT:
                    record[str(col)] = value
            fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False))
            fh.write("\n")

    target = Path(path).expanduser()
    _write_text_atomic(target, write)
    return target
