"""The upload cell: drop audio files, pick a model and a language, transcribe, listen, read.

A thin front over the batch engine. The Transcribe button starts the run on a background
thread and returns at once: a callback that blocked would hold the kernel's message loop, so
the page could not show the progress bar moving (or anything else) until the end. The engine's
``on_progress`` callback moves the bar; ipykernel delivers widget updates made from any thread.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import pandas as pd

from .. import _constants as C
from .._audio import sniff_audio_format
from .._batch import BatchResult, run_request_sync
from .._cache import resolve_cache
from .._client import AsyncClient, Client, default_model
from .._request import CacheArg, TranscribeRequest

__all__ = ["UploadWidget", "upload"]

#: What the file chooser offers; content is sniffed anyway, so a wrong extension fails clearly.
ACCEPT = "audio/*,.wav,.flac,.mp3,.ogg,.opus,.m4a,.mp4,.webm,.aiff,.aac,.amr"
LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "ru", "zh", "ja", "ko", "ar", "hi")
RESULT_COLUMNS = ("name", "size", "duration", "text", "error", "cached", "audio")
#: Container names whose MIME subtype differs from the name (``audio/<format>`` in the page).
_PLAYER_FORMAT = {"mp3": "mpeg", "aiff": "x-aiff"}


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One file as received from the page."""

    name: str
    size: int
    content: bytes


def uploaded_files(value: Sequence[Any]) -> list[UploadedFile]:
    """Files from an ipywidgets 8 ``FileUpload.value`` (a tuple of dicts).

    Raises
    ------
    TypeError
        If an entry is not a dict with ``name`` and ``content``.

    Examples
    --------
    >>> uploaded_files(({"name": "a.wav", "size": 4, "content": memoryview(b"RIFF")},))
    [UploadedFile(name='a.wav', size=4, content=b'RIFF')]
    """
    files = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or "content" not in entry or "name" not in entry:
            raise TypeError(
                f"upload entry {i} is {type(entry).__name__}, not a dict with 'name' and"
                " 'content' (the ipywidgets 8 FileUpload value format)"
            )
        content = bytes(entry["content"])
        files.append(UploadedFile(name=str(entry["name"]), size=len(content), content=content))
    return files


def _default_model(model: str | None, client: Client | AsyncClient | None) -> str:
    if model is not None:
        return model
    # With a gateway configured there is no sensible default: the reader picks one.
    return default_model(client) or ""


def _model_options(chosen: str) -> list[str]:
    options = [C.LOCAL_DEFAULT_MODEL, "local/fake", "openai/whisper-1"]
    if chosen and chosen not in options:
        options.insert(0, chosen)
    return options


def _player(content: bytes) -> Any:
    fmt = sniff_audio_format(content[:64])
    if fmt is None:
        return widgets.HTML("<i>not audio</i>", layout=widgets.Layout(width="280px"))
    return widgets.Audio(
        value=content,
        format=_PLAYER_FORMAT.get(fmt, fmt),
        autoplay=False,
        loop=False,
        controls=True,
        layout=widgets.Layout(width="280px", height="36px"),
    )


def _size_text(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


class UploadWidget(widgets.VBox):  # type: ignore[misc]
    """Upload audio files and transcribe them; see :func:`upload`.

    Attributes
    ----------
    file_upload, model_picker, language_picker, transcribe_button, progress, status, results
        The parts of the cell, for driving it from code.
    error
        The exception that stopped the last run as a whole (bad key, unknown model), or None.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        language: str | None = None,
        client: Client | AsyncClient | None = None,
        cache: CacheArg = True,
    ) -> None:
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ValueError(f"model must be a non-empty string or None, not {model!r}")
        if language is not None and (not isinstance(language, str) or not language.strip()):
            raise ValueError(f"language must be a non-empty string or None, not {language!r}")
        if client is not None and not isinstance(client, Client | AsyncClient):
            raise TypeError(
                "client must be a phaseo_notebook Client or AsyncClient, not"
                f" {type(client).__name__}"
            )
        # The client (and so any API key) stays a plain attribute: never a synced trait.
        self._client = client
        self._cache = resolve_cache(cache)
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.last_result: BatchResult | None = None

        chosen = _default_model(model, client)
        self.file_upload = widgets.FileUpload(
            accept=ACCEPT, multiple=True, description="Audio files", icon="upload"
        )
        self.model_picker = widgets.Combobox(
            value=chosen,
            options=_model_options(chosen),
            placeholder="gateway model, e.g. openai/whisper-1",
            description="Model",
            ensure_option=False,
            layout=widgets.Layout(width="300px"),
        )
        self.language_picker = widgets.Combobox(
            value=language or "",
            options=list(LANGUAGES),
            placeholder="auto",
            description="Language",
            ensure_option=False,
            layout=widgets.Layout(width="200px"),
        )
        self.transcribe_button = widgets.Button(
            description="Transcribe",
            button_style="primary",
            icon="play",
            tooltip="Transcribe the chosen files",
        )
        self.progress = widgets.IntProgress(
            value=0, min=0, max=1, description="0/0", layout=widgets.Layout(width="300px")
        )
        self.status = widgets.HTML("Choose audio files, then press Transcribe.")
        self.results = widgets.GridBox(
            layout=widgets.Layout(
                grid_template_columns="minmax(160px, 1fr) 290px minmax(240px, 3fr)",
                grid_gap="4px 12px",
                align_items="center",
            )
        )
        self.transcribe_button.on_click(lambda _button: self.transcribe())
        super().__init__(
            children=[
                widgets.HBox(
                    [
                        self.file_upload,
                        self.model_picker,
                        self.language_picker,
                        self.transcribe_button,
                    ]
                ),
                widgets.HBox([self.progress, self.status]),
                self.results,
            ]
        )
        self.add_class("phaseo-upload")

    def __repr__(self) -> str:
        return (
            f"UploadWidget(model={self.model_picker.value!r}, chosen={len(self.file_upload.value)},"
            f" rows={len(self._rows)}, running={self.running})"
        )

    @property
    def running(self) -> bool:
        """Whether a transcription run is in progress."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def df(self) -> pd.DataFrame:
        """The last run's results: one row per file.

        Columns ``name``, ``size`` (bytes), ``duration`` (seconds, where the gateway reports
        it), ``text``, ``error``, ``cached`` (served from the cache) and ``audio`` (the bytes,
        so ``pn.widgets.review(w.df, audio_col="audio")`` can follow).

        Examples
        --------
        >>> w = upload(model="local/fake", cache=False)
        >>> list(w.df.columns)
        ['name', 'size', 'duration', 'text', 'error', 'cached', 'audio']
        """
        frame = pd.DataFrame(self._rows, columns=list(RESULT_COLUMNS))
        return frame.astype({"size": "int64", "duration": "float64", "cached": "bool"})

    def transcribe(self, *, wait: bool = False) -> bool:
        """Transcribe the chosen files (what the Transcribe button does).

        Parameters
        ----------
        wait
            Block until the run is over (the button does not: the page stays live).

        Returns
        -------
        bool
            False when nothing was started: no files chosen, or a run already in progress.

        Examples
        --------
        >>> w = upload(model="local/fake", cache=False)
        >>> w.transcribe()  # no files chosen yet
        False
        """
        with self._lock:
            if self.running:
                self._say("A run is already in progress.")
                return False
            try:
                files = uploaded_files(self.file_upload.value)
            except TypeError as err:
                self._say(str(err), error=True)
                return False
            if not files:
                self._say("Choose audio files first.")
                return False
            model = self.model_picker.value.strip() or None
            language = self.language_picker.value.strip() or None
            self.error = None
            self.transcribe_button.disabled = True
            self.progress.max = len(files)
            self.progress.value = 0
            self.progress.description = f"0/{len(files)}"
            self.progress.bar_style = ""
            self._say(f"Transcribing {len(files)} file{'s' * (len(files) != 1)}...")
            self._thread = threading.Thread(
                target=self._run,
                args=(files, model, language),
                name="phaseo-notebook-upload",
                daemon=True,
            )
            self._thread.start()
        if wait:
            self.wait()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current run to end; True if none is running any more.

        Examples
        --------
        >>> upload(model="local/fake", cache=False).wait(0.1)
        True
        """
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.progress.description = f"{done}/{total}"

    def _run(self, files: list[UploadedFile], model: str | None, language: str | None) -> None:
        try:
            self._transcribe(files, model, language)
        finally:
            self.transcribe_button.disabled = False

    def _transcribe(
        self, files: list[UploadedFile], model: str | None, language: str | None
    ) -> None:
        started = time.monotonic()
        try:
            request = TranscribeRequest(
                [f.content for f in files],
                model=model,
                language=language,
                cache=self._cache if self._cache is not None else False,
                client=self._client,
                progress=False,
                on_progress=self._on_progress,
            )
            result = run_request_sync(request)
        except Exception as err:  # shown in the cell: a thread's traceback would be lost
            self.error = err
            self.progress.bar_style = "danger"
            self._say(f"{type(err).__name__}: {err}", error=True)
            return
        self.last_result = result
        self._rows = [
            {
                "name": f.name,
                "size": f.size,
                "duration": result.duration[i],
                "text": result.text[i],
                "error": result.error[i],
                "cached": result.cached[i],
                "audio": f.content,
            }
            for i, f in enumerate(files)
        ]
        self._render()
        self.progress.bar_style = "warning" if result.errors else "success"
        self._say(
            f"{len(files)} file{'s' * (len(files) != 1)}: {len(files) - result.errors} transcribed"
            f" ({sum(result.cached)} from the cache), {result.errors} failed,"
            f" {time.monotonic() - started:.1f} s."
        )

    def _render(self) -> None:
        cells: list[Any] = [
            widgets.HTML("<b>file</b>"),
            widgets.HTML("<b>audio</b>"),
            widgets.HTML("<b>transcript</b>"),
        ]
        for row in self._rows:
            details = [_size_text(row["size"])]
            if row["duration"] is not None:
                details.append(f"{row['duration']:.1f} s")
            if row["cached"]:
                details.append("cached")
            cells.append(
                widgets.HTML(
                    f"<b>{html.escape(row['name'])}</b><br>"
                    f"<small>{html.escape(' · '.join(details))}</small>"
                )
            )
            cells.append(_player(row["audio"]))
            if row["error"] is not None:
                body = f'<span style="color: var(--jp-error-color1, #c00)">{html.escape(row["error"])}</span>'
            else:
                body = f'<span class="phaseo-transcript">{html.escape(row["text"] or "")}</span>'
            cells.append(widgets.HTML(body))
        self.results.children = cells

    def _say(self, message: str, *, error: bool = False) -> None:
        text = html.escape(message)
        self.status.value = (
            f'<span style="color: var(--jp-error-color1, #c00)">{text}</span>' if error else text
        )


def upload(
    *,
    model: str | None = None,
    language: str | None = None,
    client: Client | AsyncClient | None = None,
    cache: CacheArg = True,
) -> UploadWidget:
    """An upload-and-transcribe cell: files in, a table of players and transcripts out.

    Shows a file upload control (several files at once), model and language pickers, a
    Transcribe button, a progress bar, and a results table with an audio player and the
    transcript (or the error) of each file. Transcription goes through the batch engine, so
    uploading the same file again is answered from the cache. With no API key and no gateway
    configured, ``local/*`` models run in this process (offline).

    Parameters
    ----------
    model
        The model to start with (the reader can change it); ``local/pocketsphinx`` when no
        gateway is configured.
    language
        The language to start with; empty means the engine decides.
    client
        A :class:`~phaseo_notebook.Client` or :class:`~phaseo_notebook.AsyncClient`; by
        default one from the environment.
    cache
        ``True`` (default directory), a directory, a :class:`~phaseo_notebook.Cache`, or False.

    Returns
    -------
    UploadWidget
        Display it (last expression of a cell); ``.df`` holds the results.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> w = pn.widgets.upload(model="local/pocketsphinx")
    >>> w  # doctest: +SKIP
    """
    return UploadWidget(model=model, language=language, client=client, cache=cache)
