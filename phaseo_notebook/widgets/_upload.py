"""The upload cell: drop audio files, pick a model and a language, transcribe, listen, read.

A thin front over the batch engine. The Transcribe button starts the run on a background
thread and returns at once: a callback that blocked would hold the kernel's message loop, so
the page could not show the progress bar moving (or anything else) until the end. The engine's
``on_progress`` callback moves the bar, per row and per chunk of a long file; ipykernel
delivers widget updates made from any thread. A cancelled run still shows the files that
finished: the engine fills a result the cell holds, and marks the others as cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import re
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import pandas as pd

from .. import _constants as C
from .._audio import sniff_audio_format
from .._base_client import is_local_model
from .._batch import CANCELLED_ERROR, BatchResult, mark_unfinished, run_request
from .._cache import Cache, resolve_cache
from .._client import AsyncClient, Client, default_model, fetch_catalog, runs_in_process
from .._estimate import Estimate
from .._request import CacheArg, TranscribeRequest

__all__ = ["UploadWidget", "upload"]

#: What the file chooser offers; content is sniffed anyway, so a wrong extension fails clearly.
ACCEPT = "audio/*,.wav,.flac,.mp3,.ogg,.opus,.m4a,.mp4,.webm,.aiff,.aac,.amr"
#: Offered for models that understand many languages (any language code is accepted).
LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "pl", "ru", "zh", "ja", "ko", "ar", "hi")
#: The offline engines a reader can pick (answered in this process when no gateway is set).
OFFLINE_MODELS = ("local/whisper-tiny.en", "local/pocketsphinx")
#: Models that understand English only: the Language box offers "en" alone for them.
ENGLISH_ONLY_MODELS = frozenset({"local/pocketsphinx", "local/whisper-tiny.en"})
#: Test engines of the local gateway: never offered in the Model list.
_INTERNAL_MODELS = frozenset({"local/fake"})
RESULT_COLUMNS = ("name", "size", "duration", "text", "error", "cached", "audio")
#: Container names whose MIME subtype differs from the name (``audio/<format>`` in the page).
_PLAYER_FORMAT = {"mp3": "mpeg", "aiff": "x-aiff"}
#: Containers browsers do not play (Chromium and Firefox have no AIFF decoder).
_UNPLAYABLE = frozenset({"aiff"})
#: A language code: ``en``, ``fra``, ``pt-BR``, ``zh-Hant``, ``es-419`` (BCP 47 shapes).
_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
#: Seconds the gateway's model catalog may take before the Model list goes without it.
_CATALOG_TIMEOUT = 5.0


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


def model_options(catalog: Sequence[str] = ()) -> list[str]:
    """The models the Model list offers: the offline engines, then the gateway's catalog.

    Test engines (``local/fake``) are never offered, even when a gateway lists them.

    Examples
    --------
    >>> model_options(["openai/whisper-1", "local/fake"])
    ['local/whisper-tiny.en', 'local/pocketsphinx', 'openai/whisper-1']
    """
    options: list[str] = []
    for name in (C.LOCAL_DEFAULT_MODEL, *OFFLINE_MODELS, *catalog):
        if name and name not in options and name not in _INTERNAL_MODELS:
            options.append(name)
    # The offline engines first, in their documented order, whatever the default is.
    offline = [m for m in OFFLINE_MODELS if m in options]
    return offline + [m for m in options if m not in offline]


def language_options(model: str) -> list[str]:
    """The language codes offered for ``model``: "en" alone for English-only models.

    Examples
    --------
    >>> language_options("local/pocketsphinx")
    ['en']
    >>> "fr" in language_options("openai/whisper-1")
    True
    """
    return ["en"] if _english_only(model) else list(LANGUAGES)


def _english_only(model: str) -> bool:
    return model in ENGLISH_ONLY_MODELS or model.endswith(".en")


def check_language(value: str, model: str) -> str | None:
    """The language to send (None for "let the engine decide"), or ValueError saying why not.

    Raises
    ------
    ValueError
        For text that is not a language code (a model name typed in the wrong box, say), or
        a language other than English for an English-only model.

    Examples
    --------
    >>> check_language(" pt-BR ", "openai/whisper-1")
    'pt-BR'
    >>> check_language("", "local/pocketsphinx") is None
    True
    >>> check_language("openai/whisper-1", "openai/whisper-1")
    Traceback (most recent call last):
    ...
    ValueError: Language 'openai/whisper-1' is not a language code: use a code such as en, fr or pt-BR, or leave it empty to let the engine decide
    """
    text = value.strip()
    if not text:
        return None
    if not _LANGUAGE_RE.fullmatch(text):
        raise ValueError(
            f"Language {text!r} is not a language code: use a code such as en, fr or pt-BR,"
            " or leave it empty to let the engine decide"
        )
    if _english_only(model) and text.split("-")[0].split("_")[0].lower() != "en":
        raise ValueError(
            f"{model} understands English only: use en or leave Language empty, or pick a"
            " multilingual model"
        )
    return text


def playable(content: bytes) -> tuple[bytes, str] | str:
    """Audio the browser can play as ``(bytes, player format)``, or the reason it cannot.

    AIFF, which browsers do not decode, is converted to WAV with ``soundfile`` (the
    ``[local]`` extra); without it, or for content that is not audio, the reason is returned.

    Examples
    --------
    >>> playable(b"name,value")
    'not audio'
    """
    fmt = sniff_audio_format(content[:64])
    if fmt is None:
        return "not audio"
    if fmt not in _UNPLAYABLE:
        return content, _PLAYER_FORMAT.get(fmt, fmt)
    try:
        import soundfile
    except ImportError:
        return (
            f"{fmt.upper()} cannot play in the browser; install phaseo-notebook[local]"
            " to convert it for playback"
        )
    try:
        data, rate = soundfile.read(io.BytesIO(content), dtype="int16", always_2d=True)
        out = io.BytesIO()
        soundfile.write(out, data, rate, format="WAV", subtype="PCM_16")
    except (RuntimeError, ValueError, TypeError) as err:  # soundfile.LibsndfileError is one
        return f"{fmt.upper()} cannot play in the browser and could not be converted ({err})"
    return out.getvalue(), "wav"


def _player(content: bytes) -> Any:
    audio = playable(content)
    if isinstance(audio, str):
        return widgets.HTML(
            f'<span class="phaseo-muted">{html.escape(audio)}</span>',
            layout=widgets.Layout(width="100%"),
        )
    data, fmt = audio
    return widgets.Audio(
        value=data,
        format=fmt,
        autoplay=False,
        loop=False,
        controls=True,
        layout=widgets.Layout(width="100%", max_width="280px", height="36px"),
    )


def readable_error(name: str, error: str) -> str:
    """One line for a failed file: its name and the reason, without class names or sizes.

    Examples
    --------
    >>> readable_error("notes.wav", "AudioInputError: audio input <37 bytes>: content is not audio")
    'notes.wav: content is not audio'
    >>> readable_error("a.wav", "RateLimitError: slow down (429)")
    'a.wav: rate limited: slow down (429)'
    >>> readable_error("b.wav", "CancelledError: the run was cancelled before this row finished")
    'b.wav: not transcribed: the run was cancelled before this row finished'
    """
    text = " ".join(error.split())
    match = re.match(r"(\w+Error): (.*)", text)
    kind, text = (match.group(1), match.group(2)) if match else ("", text)
    text = re.sub(r"^audio input (<[^>]*>|'[^']*'): ", "", text)
    if kind and kind not in ("AudioInputError", "APIError"):
        # "RateLimitError" -> "rate limited" reads better than a class name.
        words = {
            "RateLimitError": "rate limited",
            "APITimeoutError": "timed out",
            "CancelledError": "not transcribed",
        }
        label = words.get(kind, re.sub(r"(?<!^)(?=[A-Z][a-z])", " ", kind[:-5]).lower())
        text = f"{label}: {text}" if label else text
    return f"{name}: {text}"


def _offline(model: str | None, client: Client | AsyncClient | None) -> bool:
    """Whether a run with ``model`` is answered in this process (no gateway involved)."""
    return runs_in_process(model, client)


def _gateway_catalog(client: Client | AsyncClient | None) -> list[str]:
    """Model names from the gateway's ``GET /models``; empty when offline or unreachable."""
    return [str(m["id"]) for m in fetch_catalog(client, timeout=_CATALOG_TIMEOUT) if m.get("id")]


def estimate_note(estimate: Estimate) -> str:
    """The line the upload cell shows before Transcribe, as HTML.

    Examples
    --------
    >>> from phaseo_notebook._estimate import Estimate, estimate_model
    >>> part = estimate_model([("a", 90.0), ("b", 30.0)], model="openai/whisper-1",
    ...                       cached_keys={"b"}, price_per_minute=0.006)
    >>> estimate_note(Estimate((part,)))
    '<span class="phaseo-muted">Estimate: 1 request (1 cached), 1.5 audio minutes, about 0.009 USD at 0.006 USD/min</span>'
    """
    n = estimate.requests
    parts = [f"{n} request{'s' * (n != 1)} ({estimate.cached} cached)"]
    parts.append(f"{estimate.audio_minutes:.3g} audio minutes")
    cost = estimate.cost
    prices = [m.price_per_minute for m in estimate.models]
    if cost is None:
        parts.append("cost unknown (no price for this model)")
    else:
        price = f" at {prices[0]:.6g} {estimate.currency}/min" if len(prices) == 1 else ""
        parts.append(f"about {cost:.6g} {estimate.currency}{price}")
    return f'<span class="phaseo-muted">Estimate: {html.escape(", ".join(parts))}</span>'


def result_rows(files: Sequence[UploadedFile], result: BatchResult) -> list[dict[str, Any]]:
    """The results table's rows (:data:`RESULT_COLUMNS`): one per file, in upload order.

    Examples
    --------
    >>> res = BatchResult.empty(2)
    >>> res.text[0], res.error[1] = "hello", CANCELLED_ERROR
    >>> files = [UploadedFile("a.wav", 4, b"RIFF"), UploadedFile("b.wav", 4, b"RIFF")]
    >>> [(row["name"], row["text"], row["error"]) for row in result_rows(files, res)]
    [('a.wav', 'hello', None), ('b.wav', None, 'CancelledError: the run was cancelled before this row finished')]
    """
    return [
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


def progress_line(files: int, done: int, total: int, elapsed: float) -> str:
    """The status line while a run goes: work done, time elapsed, and time left.

    ``done`` and ``total`` are the engine's units of work (``on_progress``): a file each,
    except a long file sent as chunks, which counts its chunks; then the line says so.

    Examples
    --------
    >>> progress_line(3, 0, 3, 2.0)
    'Transcribing 3 files: 0 done, 2 s elapsed, estimating time left.'
    >>> progress_line(1, 3, 12, 30.0)
    'Transcribing 1 file in 12 parts: 3 parts done, 30 s elapsed, about 90 s left.'
    """
    if done and total > done:
        eta = f"about {elapsed / done * (total - done):.0f} s left"
    elif total > done:
        eta = "estimating time left"
    else:
        eta = "finishing"
    what = f"{files} file{'s' * (files != 1)}"
    if total != files:
        what, count = f"{what} in {total} parts", f"{done} parts done"
    else:
        count = f"{done} done"
    return f"Transcribing {what}: {count}, {elapsed:.0f} s elapsed, {eta}."


class BatchRun:
    """One batch run on its own event loop in a thread, which can be cancelled from anywhere.

    ``cancel()`` cancels the engine's task: requests in flight stop, and the engine saves
    the rows that finished to the cache before it ends. The run's outcome is ``result``,
    ``error`` or ``cancelled``. With ``partial``, the result the engine fills as rows
    finish (``run_request(..., result=partial)``), a cancelled run still has its finished
    rows there; the others get :data:`~phaseo_notebook._batch.CANCELLED_ERROR`.

    Examples
    --------
    >>> import phaseo_notebook as pn
    >>> request = TranscribeRequest([str(pn.sample_paths()[0])], model="local/fake",
    ...                             cache=False, progress=False)
    >>> run = BatchRun(lambda: run_request(request, inside_loop=False))
    >>> run.start(); run.wait(60)
    True
    >>> run.result.errors, run.cancelled
    (0, False)
    """

    def __init__(
        self,
        make_coro: Callable[[], Coroutine[Any, Any, BatchResult]],
        *,
        partial: BatchResult | None = None,
    ) -> None:
        self._make_coro = make_coro
        self.partial = partial
        self._ready = threading.Event()
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[BatchResult] | None = None
        self._cancel_asked = False
        self.result: BatchResult | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.on_done: Callable[[BatchRun], None] | None = None
        self._thread = threading.Thread(
            target=self._target, name="phaseo-notebook-run", daemon=True
        )

    def start(self) -> None:
        """Start the run in its thread."""
        self._thread.start()

    def _target(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(self._make_coro())
            self._loop, self._task = loop, task
            self._ready.set()
            if self._cancel_asked:
                task.cancel()
            self.result = loop.run_until_complete(task)
        except asyncio.CancelledError:
            self.cancelled = True
            if self.partial is not None:
                # The engine marks its unfinished rows; a run cancelled before the engine
                # began has none of its own to mark.
                mark_unfinished(self.partial, CANCELLED_ERROR)
        except BaseException as err:  # handed to whoever reads the run
            self.error = err
        finally:
            self._ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                try:
                    if self.on_done is not None:
                        self.on_done(self)
                finally:
                    self._done.set()

    def cancel(self) -> None:
        """Ask the run to stop; returns at once (``wait`` for the end)."""
        self._cancel_asked = True
        self._ready.wait(5)
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                loop.call_soon_threadsafe(task.cancel)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the end; True when the run is over."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        """Whether the run has started and not ended."""
        return self._thread.is_alive() and not self._done.is_set()


#: Runs in progress in this process, cancelled by a kernel interrupt while the kernel is idle.
_ACTIVE_RUNS: set[BatchRun] = set()
_RUNS_LOCK = threading.Lock()


def _interrupt_handler(previous: Any) -> Callable[[int, Any], None]:
    def on_interrupt(signum: int, frame: Any) -> None:
        with _RUNS_LOCK:
            runs = list(_ACTIVE_RUNS)
        for run in runs:
            run.cancel()
        if callable(previous):
            previous(signum, frame)

    on_interrupt.phaseo_runs = True  # type: ignore[attr-defined]
    return on_interrupt


def _stop_runs_on_kernel_interrupt() -> None:
    """Make the kernel's interrupt button cancel runs started by the upload cell.

    An idle ipykernel ignores SIGINT, and it puts back the handler that was in place before
    each message it handles, so a handler installed from a button callback would be undone.
    Setting the handler ipykernel will put back makes it stick; it cancels the runs in
    progress, then does what the kernel did before (nothing when idle).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:
        return
    kernel = getattr(get_ipython(), "kernel", None)  # type: ignore[no-untyped-call]
    saved = getattr(kernel, "saved_sigint_handler", None)
    if kernel is None or saved is None or getattr(saved, "phaseo_runs", False):
        return
    kernel.saved_sigint_handler = _interrupt_handler(saved)


def _size_text(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


_UPLOAD_CSS = """
<style>
.phaseo-upload { max-width: 100%; box-sizing: border-box; }
.phaseo-upload .phaseo-controls { flex-wrap: wrap; gap: 6px 10px; align-items: center; }
.phaseo-upload .phaseo-controls > * { margin: 0; }
.phaseo-upload .phaseo-drop { width: 100%; }
.phaseo-upload .phaseo-drop .widget-upload { height: 64px; width: 100%; max-width: 640px; margin: 0; border: 2px dashed var(--jp-border-color1, #999); background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, #222); }
.phaseo-upload .phaseo-drop .widget-upload:hover { border-color: var(--jp-brand-color1, #1976d2); }
.phaseo-upload .widget-button { flex: 0 0 auto; min-width: 7.5em; }
.phaseo-upload .phaseo-run-line { flex-wrap: wrap; align-items: center; gap: 4px 12px; }
.phaseo-upload .phaseo-run-line .widget-html { flex: 1 1 240px; min-width: 0; }
.phaseo-upload .widget-html-content { line-height: 1.4; height: auto; white-space: normal; overflow-wrap: anywhere; }
.phaseo-upload .widget-html { height: auto; min-height: var(--jp-widgets-inline-height, 28px); display: flex; align-items: center; }
.phaseo-upload .phaseo-actions { flex-wrap: nowrap; gap: 6px; }
.phaseo-upload.phaseo-running .progress-bar { background-image: linear-gradient(45deg, rgba(255,255,255,.35) 25%, transparent 25%, transparent 50%, rgba(255,255,255,.35) 50%, rgba(255,255,255,.35) 75%, transparent 75%, transparent); background-size: 1.5em 1.5em; animation: phaseo-stripes 1s linear infinite; min-width: 1.5em; }
@keyframes phaseo-stripes { from { background-position: 1.5em 0; } to { background-position: 0 0; } }
.phaseo-upload .phaseo-results { grid-template-columns: minmax(120px, 1fr) minmax(160px, 280px) minmax(200px, 3fr); }
.phaseo-upload .phaseo-results .widget-html, .phaseo-upload .phaseo-results .widget-html-content { min-width: 0; white-space: normal; overflow-wrap: anywhere; line-height: 1.4; }
.phaseo-upload .phaseo-transcript { white-space: pre-wrap; overflow-wrap: anywhere; }
.phaseo-upload .phaseo-error, .phaseo-review .phaseo-error { color: var(--jp-error-color1, #c00); overflow-wrap: anywhere; }
.phaseo-upload .phaseo-muted { opacity: 0.7; font-size: 0.9em; }
.phaseo-upload .phaseo-chosen { white-space: normal; overflow-wrap: anywhere; }
</style>
"""


class UploadWidget(widgets.VBox):  # type: ignore[misc]
    """Upload audio files and transcribe them; see :func:`upload`.

    Attributes
    ----------
    file_upload, chosen, model_picker, language_picker, transcribe_button, cancel_button,
    progress, status, notice, results
        The parts of the cell, for driving it from code.
    cost_estimate
        What the chosen files would cost with a paid (non-local) model, shown before
        Transcribe (see :func:`estimate_note`); empty for offline and local models.
    error
        The exception that stopped the last run as a whole (bad key, unknown model), or None.
    cancelled
        Whether the last run was cancelled (Cancel button or kernel interrupt).
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
        self._run_handle: BatchRun | None = None
        self._ticker: threading.Thread | None = None
        self._started = 0.0
        # The engine's units of work (``on_progress``): files, and chunks of long files.
        self._done_units = 0
        self._total_units = 0
        self._files = 0
        # Guards the status line between the ticker, the engine's thread and the run's end.
        self._status_lock = threading.Lock()
        self._ticking = False
        self.error: BaseException | None = None
        self.cancelled = False
        self.last_result: BatchResult | None = None

        chosen = _default_model(model, client)
        self.file_upload = widgets.FileUpload(
            accept=ACCEPT,
            multiple=True,
            description="drop audio files here",
            icon="upload",
            tooltip="Drop audio files here, or click to choose them",
        )
        self.chosen = widgets.HTML(
            '<span class="phaseo-muted">No files chosen yet.</span>',
            layout=widgets.Layout(width="100%"),
        )
        self.chosen.add_class("phaseo-chosen")
        self.cost_estimate = widgets.HTML("", layout=widgets.Layout(display="none"))
        self._estimates = 0  # the newest estimate wins over slower earlier ones
        self.model_picker = widgets.Combobox(
            value=chosen,
            options=model_options(),
            placeholder="model, e.g. openai/whisper-1",
            description="Model",
            ensure_option=False,
            layout=widgets.Layout(width="300px", max_width="100%"),
        )
        self.language_picker = widgets.Combobox(
            value=language or "",
            options=language_options(chosen),
            placeholder="auto",
            description="Language",
            ensure_option=False,
            layout=widgets.Layout(width="200px", max_width="100%"),
        )
        self.transcribe_button = widgets.Button(
            description="Transcribe",
            button_style="primary",
            icon="play",
            tooltip="Transcribe the chosen files",
        )
        self.cancel_button = widgets.Button(
            description="Cancel",
            icon="stop",
            disabled=True,
            tooltip="Stop the run; files already transcribed are kept in the cache",
        )
        self.progress = widgets.IntProgress(
            value=0,
            min=0,
            max=1,
            description="0/0",
            layout=widgets.Layout(width="300px", max_width="100%"),
        )
        self.status = widgets.HTML("Choose audio files, then press Transcribe.")
        self.notice = widgets.HTML("", layout=widgets.Layout(display="none"))
        self.results = widgets.GridBox(
            layout=widgets.Layout(grid_gap="4px 12px", align_items="center", width="100%")
        )
        self.results.add_class("phaseo-results")
        self.transcribe_button.on_click(lambda _button: self.transcribe())
        self.cancel_button.on_click(lambda _button: self.cancel())
        self.file_upload.observe(self._on_files, names="value")
        self.model_picker.observe(self._on_model, names="value")
        drop = widgets.Box([self.file_upload])
        drop.add_class("phaseo-drop")
        # Transcribe and Cancel wrap together, so Cancel never lands alone on a line.
        actions = widgets.HBox([self.transcribe_button, self.cancel_button])
        actions.add_class("phaseo-actions")
        controls = widgets.HBox(
            [self.model_picker, self.language_picker, actions],
            layout=widgets.Layout(width="100%"),
        )
        controls.add_class("phaseo-controls")
        run_line = widgets.HBox([self.progress, self.status], layout=widgets.Layout(width="100%"))
        run_line.add_class("phaseo-run-line")
        super().__init__(
            children=[
                widgets.HTML(_UPLOAD_CSS, layout=widgets.Layout(display="none")),
                drop,
                self.chosen,
                self.cost_estimate,
                controls,
                run_line,
                self.notice,
                self.results,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("phaseo-upload")
        self._show_notice(chosen)
        threading.Thread(
            target=self._load_catalog, name="phaseo-notebook-models", daemon=True
        ).start()

    def __repr__(self) -> str:
        return (
            f"UploadWidget(model={self.model_picker.value!r}, chosen={len(self.file_upload.value)},"
            f" rows={len(self._rows)}, running={self.running})"
        )

    @property
    def running(self) -> bool:
        """Whether a transcription run is in progress."""
        return self._run_handle is not None and self._run_handle.running

    @property
    def df(self) -> pd.DataFrame:
        """The last run's results: one row per file.

        Columns ``name``, ``size`` (bytes), ``duration`` (seconds, where the gateway reports
        it), ``text``, ``error``, ``cached`` (served from the cache) and ``audio`` (the bytes,
        so ``pn.widgets.review(w.df, audio_col="audio")`` can follow). After a cancelled run,
        the files that finished have their text and the others the error
        ``CancelledError: ...``. Empty while a run is in progress, after new files are
        chosen, and after a run that failed as a whole.

        Examples
        --------
        >>> w = upload(model="local/fake", cache=False)
        >>> list(w.df.columns)
        ['name', 'size', 'duration', 'text', 'error', 'cached', 'audio']
        """
        frame = pd.DataFrame(self._rows, columns=list(RESULT_COLUMNS))
        return frame.astype({"size": "int64", "duration": "float64", "cached": "bool"})

    # ------------------------------------------------------------------ reactions

    def _on_files(self, _change: Any) -> None:
        # Results of earlier files must not read as the results of the new choice.
        try:
            files = uploaded_files(self.file_upload.value)
        except TypeError:
            files = []
        if not self.running:
            self._clear_results()
            self.progress.bar_style = ""
            self.progress.value = 0
            self.progress.max = max(len(files), 1)
            self.progress.description = f"0/{len(files)}"
        if files:
            items = ", ".join(
                f"<b>{html.escape(f.name)}</b> <span class='phaseo-muted'>"
                f"({_size_text(f.size)})</span>"
                for f in files
            )
            count = f"{len(files)} file{'s' * (len(files) != 1)} chosen"
            self.chosen.value = f"{count}: {items}"
            if not self.running:
                self._say("Press Transcribe to start.")
        else:
            self.chosen.value = '<span class="phaseo-muted">No files chosen yet.</span>'
        self._refresh_estimate()

    def _on_model(self, change: Any) -> None:
        model = str(change["new"]).strip()
        self.language_picker.options = language_options(model)
        self._show_notice(model)
        self._refresh_estimate()

    def _refresh_estimate(self) -> None:
        """Estimate the chosen files' cost with a paid model, off the page's thread."""
        self._estimates += 1
        model = self.model_picker.value.strip() or _default_model(None, self._client)
        try:
            files = uploaded_files(self.file_upload.value)
        except TypeError:
            files = []
        if not files or not model or is_local_model(model) or _offline(model, self._client):
            self.cost_estimate.value = ""
            self.cost_estimate.layout.display = "none"
            return
        threading.Thread(
            target=self._estimate,
            args=(self._estimates, model, [f.content for f in files]),
            name="phaseo-notebook-estimate",
            daemon=True,
        ).start()

    def _estimate(self, generation: int, model: str, contents: list[bytes]) -> None:
        from .._run_estimate import estimate_request

        try:
            request = TranscribeRequest(
                contents,
                model=model,
                cache=self._cache if self._cache is not None else False,
                client=self._client,
            )
            note = estimate_note(estimate_request(request))
        except Exception:  # an estimate is advice: a missing key or bad file shows nothing
            note = ""
        if generation == self._estimates:
            self.cost_estimate.value = note
            self.cost_estimate.layout.display = None if note else "none"

    def _show_notice(self, model: str) -> None:
        if model and _offline(model, self._client):
            self.notice.value = (
                f'<span class="phaseo-muted">Offline: no API key or base URL set, so {html.escape(model)}'
                f" runs in this process. Set {C.ENV_API_KEY} to use the gateway.</span>"
            )
            self.notice.layout.display = None
        else:
            self.notice.value = ""
            self.notice.layout.display = "none"

    def _load_catalog(self) -> None:
        names = _gateway_catalog(self._client)
        if names:
            self.model_picker.options = model_options(names)

    def _clear_results(self) -> None:
        self._rows = []
        self.results.children = []

    # ------------------------------------------------------------------ runs

    def transcribe(self, *, wait: bool = False) -> bool:
        """Transcribe the chosen files (what the Transcribe button does).

        Parameters
        ----------
        wait
            Block until the run is over (the button does not: the page stays live). A
            KeyboardInterrupt while waiting cancels the run, then is raised again.

        Returns
        -------
        bool
            False when nothing was started: no files chosen, an invalid language, or a run
            already in progress.

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
            try:
                language = check_language(
                    self.language_picker.value, model or _default_model(None, self._client)
                )
            except ValueError as err:
                self._say(f"Not started: {err}", error=True)
                return False
            self.error = None
            self.cancelled = False
            self.last_result = None
            self._clear_results()
            self._show_notice(model or "")
            self.transcribe_button.disabled = True
            # New files chosen mid-run would make this run's results look like theirs.
            self.file_upload.disabled = True
            self.cancel_button.disabled = False
            self._ticking = True
            self.progress.max = len(files)
            self.progress.value = 0
            self.progress.description = f"0/{len(files)}"
            self.progress.bar_style = "info"
            self.add_class("phaseo-running")
            self._started = time.monotonic()
            self._done_units = 0
            self._total_units = self._files = len(files)
            run = start_upload_run(
                [f.content for f in files],
                model=model,
                language=language,
                cache=self._cache if self._cache is not None else False,
                client=self._client,
                on_progress=self._on_progress,
            )
            run.on_done = lambda finished: self._finish(finished, files)
            self._run_handle = run
            self._tick()
            run.start()
            _stop_runs_on_kernel_interrupt()
            self._ticker = threading.Thread(
                target=self._tick_until_done, args=(run,), name="phaseo-notebook-eta", daemon=True
            )
            self._ticker.start()
        if wait:
            try:
                self.wait()
            except KeyboardInterrupt:
                self.cancel()
                run.wait(60)
                raise
        return True

    def cancel(self) -> bool:
        """Stop the run in progress (what the Cancel button does); finished files stay cached.

        Returns
        -------
        bool
            False when no run was in progress.

        Examples
        --------
        >>> upload(model="local/fake", cache=False).cancel()
        False
        """
        run = self._run_handle
        if run is None or not run.running:
            return False
        self.cancel_button.disabled = True
        with self._status_lock:
            self._ticking = False
            self._say("Cancelling: stopping requests in flight, keeping what finished...")
        run.cancel()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current run to end; True if none is running any more.

        Examples
        --------
        >>> upload(model="local/fake", cache=False).wait(0.1)
        True
        """
        run = self._run_handle
        if run is not None:
            # Short waits, so a KeyboardInterrupt reaches this thread promptly.
            deadline = None if timeout is None else time.monotonic() + timeout
            while not run.wait(0.1):
                if deadline is not None and time.monotonic() >= deadline:
                    break
            if self._ticker is not None:
                self._ticker.join(1.0)
        return not self.running

    def _on_progress(self, done: int, total: int) -> None:
        self._done_units = done
        self._total_units = total
        # The total first: the engine's done never exceeds its total, so the value fits.
        self.progress.max = max(total, 1)
        self.progress.value = done
        self._tick()

    def _tick(self) -> None:
        done, total = self._done_units, self._total_units
        line = progress_line(self._files, done, total, time.monotonic() - self._started)
        # Under the lock: a tick from another thread must not overwrite the final message.
        with self._status_lock:
            if not self._ticking:
                return
            self.progress.description = f"{done}/{total}"
            self._say(line)

    def _tick_until_done(self, run: BatchRun) -> None:
        while not run.wait(1.0):
            self._tick()

    def _finish(self, run: BatchRun, files: list[UploadedFile]) -> None:
        with _RUNS_LOCK:
            _ACTIVE_RUNS.discard(run)
        elapsed = time.monotonic() - self._started
        with self._status_lock:
            self._ticking = False
        self.remove_class("phaseo-running")
        try:
            if run.cancelled:
                self.cancelled = True
                self.progress.bar_style = "warning"
                partial = run.partial if run.partial is not None else BatchResult.empty(len(files))
                mark_unfinished(partial, CANCELLED_ERROR)  # nothing left to mark if the run did
                self.last_result = partial
                self._rows = result_rows(files, partial)
                self._render()
                done = sum(text is not None for text in partial.text)
                if self._cache is not None:
                    kept = (
                        " and are kept in the cache; press Transcribe to finish the rest"
                        " (finished files come from the cache)."
                    )
                else:
                    kept = "; the cache is off (cache=False), so Transcribe sends them again."
                self._say(
                    f"Cancelled after {elapsed:.1f} s: {done} of {len(files)} transcribed{kept}"
                )
                return
            if run.error is not None or run.result is None:
                err = run.error or RuntimeError("the run ended without a result")
                self.error = err
                self.progress.bar_style = "danger"
                self._say(f"Run failed: {type(err).__name__}: {err}", error=True)
                return
            result = run.result
            self.last_result = result
            self._rows = result_rows(files, result)
            self._render()
            # Files now, not units: a long file's chunks are done with it.
            self.progress.max = max(len(files), 1)
            self.progress.value = len(files)
            self.progress.description = f"{len(files)}/{len(files)}"
            self.progress.bar_style = "warning" if result.errors else "success"
            self._say(
                f"{len(files)} file{'s' * (len(files) != 1)}: {len(files) - result.errors}"
                f" transcribed ({sum(result.cached)} from the cache), {result.errors} failed,"
                f" {elapsed:.1f} s."
            )
        finally:
            self.transcribe_button.disabled = False
            self.file_upload.disabled = False
            self.cancel_button.disabled = True

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
                line = readable_error(row["name"], row["error"])
                body = (
                    f'<span class="phaseo-error" title="{html.escape(row["error"])}">'
                    f"{html.escape(line)}</span>"
                )
            else:
                body = f'<span class="phaseo-transcript">{html.escape(row["text"] or "")}</span>'
            cells.append(widgets.HTML(body, layout=widgets.Layout(min_width="0")))
        self.results.children = cells

    def _say(self, message: str, *, error: bool = False) -> None:
        text = html.escape(message)
        self.status.value = f'<span class="phaseo-error">{text}</span>' if error else text


def start_upload_run(
    inputs: list[bytes],
    *,
    model: str | None,
    language: str | None,
    cache: Cache | bool,
    client: Client | AsyncClient | None,
    on_progress: Callable[[int, int], None],
) -> BatchRun:
    """A cancellable batch run of ``inputs`` (not started), registered for kernel interrupts.

    The one place the upload cell talks to the batch engine: ``run_request`` on a loop of
    the run's own, so the run's task can be cancelled from the Cancel button's thread or
    from the interrupt handler. The engine fills the run's ``partial`` result as files
    finish, so a cancelled run still shows them.

    Examples
    --------
    >>> run = start_upload_run([b"RIFF"], model="local/fake", language=None, cache=False,
    ...                        client=None, on_progress=lambda d, t: None)
    >>> run.running
    False
    """
    request = TranscribeRequest(
        inputs,
        model=model,
        language=language,
        cache=cache,
        client=client,
        progress=False,
        on_progress=on_progress,
    )
    partial = BatchResult.empty(len(inputs))
    run = BatchRun(lambda: run_request(request, inside_loop=False, result=partial), partial=partial)
    with _RUNS_LOCK:
        _ACTIVE_RUNS.add(run)
    return run


def upload(
    *,
    model: str | None = None,
    language: str | None = None,
    client: Client | AsyncClient | None = None,
    cache: CacheArg = True,
) -> UploadWidget:
    """An upload-and-transcribe cell: files in, a table of players and transcripts out.

    Shows a drop zone for audio files (several at once) with the chosen files listed,
    model and language pickers, Transcribe and Cancel buttons, a progress bar with the time
    left, and a results table with an audio player and the transcript (or the error, one
    line with the file name) of each file. Cancel, or the kernel's interrupt, stops a run:
    the files already transcribed stay in the table (and in the cache, so Transcribe then
    sends only the others, which are shown as not transcribed). The Model list offers the
    offline engines and, with a gateway configured, the gateway's catalog; the Language box
    takes a language code (``en``, ``pt-BR``) or stays empty. Transcription goes through
    the batch engine, so uploading the same file again is answered from the cache. With no
    API key and no gateway configured, ``local/*`` models run in this process (offline).

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
