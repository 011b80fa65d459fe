"""Long recordings in the batch engine: a row over a model's limits becomes chunk jobs.

The batch engine hands this module the jobs it is about to send (:meth:`LongAudio.split`).
A job whose audio is local (a path, bytes, a data URI) and over the model's limits
(:meth:`~._limits.LimitBook.limits_for`: bytes, and seconds where the model has a
seconds limit, read from the header) is taken out and becomes a *long file*; every other
job is sent as it is, as before. While the run sends, one producer per long file (at most
:data:`ACTIVE_FILES` at once) decodes the file block by block and cuts it into FLAC chunks
(:func:`~._chunking.aplan_chunks`, off the event loop), and puts each chunk into the run's
own queue as an ordinary job: chunks of every file share the run's workers, in-flight
limit, retries and progress bar with the short rows. A producer makes its next chunk only
when the chunks already made but not answered fit :data:`BUFFER_BYTES` (and the run's
concurrency), so memory holds a few chunks, never a file.

On the progress bar's units of work (:class:`~._progress.ProgressBar`), a long file counts
one unit per chunk: as many as :func:`~._chunking.chunk_requests` expects from its length
when it is planned, more if the producer makes more, and the exact count when its plan
ends. Each answered chunk moves the units at once, so a 2-hour file is not stuck at 0
until it is stitched.

Each chunk has its own cache key: the file's identity, the chunk's span and encoding
(:meth:`~._chunking.Chunk.identity`), model, language, provider and options. A chunk the
cache holds is not sent, so a run killed mid-file re-sends only the chunks not answered
(and not yet flushed). When every chunk is answered, the row's result is stitched
(:func:`~._stitch.stitch`: texts in order, segment and word times shifted by each chunk's
start) and stored under the file's own key as well, so a rerun of a finished file is
answered from the cache without decoding it.

Refusals
--------
A 413 (with ``max_bytes``) or a 400 saying the audio is longer than N seconds, for a whole
file or for a chunk, is handed to :meth:`~._limits.LimitBook.record_refusal`: the limit is
learned (and saved to ``limits.json`` beside the cache, per gateway origin), and the file
is planned again under it and sent without the user doing anything. A model pays at most
``max_refusals`` (2) such refusals a run; after that a refusal is the row's error.

``chain_prompt``
----------------
With ``chain_prompt=True`` each chunk's ``prompt`` is the run's prompt followed by the
previous chunk's text (:func:`~._stitch.chained_prompt`), as OpenAI advises for split
audio: spelling and names stay consistent across cuts. The price is order: a file's next
chunk can only be sent once the one before is answered, so one file's chunks go one at a
time. Off by default.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from ._audio import AudioSource
from ._base_client import options_json
from ._cache import Cache, cache_key
from ._chunking import Chunk, _Planner, aplan_chunks, chunk_requests, needs_chunking
from ._duration import audio_seconds
from ._exceptions import APIStatusError, AudioInputError
from ._limits import LIMITS_FILE_NAME, LimitBook, ModelLimits, learn_from_refusal
from ._stitch import ChunkTranscript, chained_prompt, stitch
from ._types import TranscriptionResult

if TYPE_CHECKING:
    from ._base_client import PreparedCall
    from ._batch import BatchResult, _Job
    from ._progress import ProgressBar

__all__ = [
    "ACTIVE_FILES",
    "BUFFER_BYTES",
    "ChunkRef",
    "LongAudio",
    "is_limit_refusal",
    "limit_book_for",
]

log = logging.getLogger("phaseo_notebook")

#: Long files decoded at once: each holds up to one chunk of samples while it plans.
ACTIVE_FILES: Final = 2
#: Encoded chunks made but not yet answered, in bytes (at least one chunk is always allowed).
#: Sending one chunk costs about five times its size (the FLAC, its base64 form, the
#: multipart body), so 32 MB lets one 20 MB chunk (25 MB limits) wait while the next is cut:
#: a 2-hour file then peaks under 500 MB. Short chunks (tight limits) still fill the run's
#: concurrency.
BUFFER_BYTES: Final = 32 * 1000 * 1000
_LOCAL_KINDS: Final = frozenset({"path", "bytes", "data_uri"})

MakeJob = Callable[[str, str, AudioSource, "PreparedCall", "ChunkRef"], "_Job"]


def is_limit_refusal(err: BaseException) -> bool:
    """Whether an error is a refusal of the audio's size or length (413, or a stated limit).

    Examples
    --------
    >>> from phaseo_notebook._exceptions import BadRequestError
    >>> is_limit_refusal(BadRequestError("x", status_code=400,
    ...     body={"description": "audio is longer than 600 seconds"}))
    True
    """
    if not isinstance(err, APIStatusError):
        return False
    if err.status_code == 413:
        return True
    return learn_from_refusal(err.status_code, _body(err)) is not None


def _body(err: APIStatusError) -> Any:
    body = err.body
    if isinstance(body, dict):
        return body
    return err.description or str(err)


def limit_book_for(store: Cache | None, base_url: str) -> LimitBook:
    """The run's :class:`LimitBook`: saved in ``<cache dir>/limits.json`` for a local cache,
    scoped by the gateway's origin (``scheme://host:port``).

    Examples
    --------
    >>> limit_book_for(None, "https://api.example.com/v1").scope
    'https://api.example.com'
    """
    parts = urlsplit(base_url)
    scope = f"{parts.scheme}://{parts.netloc}" if parts.netloc else base_url
    path = None
    if store is not None and not isinstance(store.path, str):
        path = os.path.join(store.path, LIMITS_FILE_NAME)
    return LimitBook(path=path, scope=scope)


@dataclass(eq=False)
class _File:
    """One long file being sent as chunks."""

    job: _Job
    limits: ModelLimits
    seconds: float | None
    generation: int = 0
    answers: dict[int, tuple[float, float, TranscriptionResult]] = field(default_factory=dict)
    total: int | None = None  # chunks in the plan, once planning has ended
    finished: bool = False
    task: asyncio.Task[None] | None = None
    waiting: dict[int, asyncio.Future[str | None]] = field(default_factory=dict)
    shown: float = 0.0  # rows of progress shown for answered chunks
    #: Units of the run's work this file holds (its rows until it is planned, then its
    #: chunks), chunk units counted done, and those counted before the current plan.
    units: int = field(init=False)
    counted: int = 0
    base: int = 0

    def __post_init__(self) -> None:
        self.units = len(self.job.rows)


@dataclass(frozen=True, slots=True, eq=False)
class ChunkRef:
    """What a chunk job carries (``_Job.part``): its file, plan generation, index and span."""

    file: _File
    generation: int
    index: int
    start: float
    end: float
    size: int


class LongAudio:
    """The long files of one run: planning, producing chunk jobs, and stitching rows.

    Parameters
    ----------
    book
        The run's limits (:func:`limit_book_for`).
    store
        The run's cache, or None.
    result
        The run's per-row outcomes, filled when a file is stitched or fails.
    make_job
        Builds the engine's job for a chunk: ``(key, identity, source, call, ref)``.
    chain_prompt
        Pass the previous chunk's text as the ``prompt`` (see the module docstring).
    concurrency
        The run's concurrency: at most this many (plus one) chunks wait at a time.
    """

    def __init__(
        self,
        book: LimitBook,
        store: Cache | None,
        result: BatchResult,
        make_job: MakeJob,
        *,
        chain_prompt: bool = False,
        concurrency: int = 16,
    ) -> None:
        self.book = book
        self.store = store
        self.result = result
        self.make_job = make_job
        self.chain_prompt = chain_prompt
        self.max_buffered = concurrency + 1
        self.files: list[_File] = []
        self.chunks_sent = 0
        self._enqueue: Callable[[_Job], None] | None = None
        self._settle: Callable[[], None] | None = None
        self._add_unit: Callable[[], None] = lambda: None
        self._bar: ProgressBar | None = None
        self._active = asyncio.Semaphore(ACTIVE_FILES)
        self._room = asyncio.Condition()
        self._buffered_bytes = 0
        self._buffered = 0
        self._pending_start: list[_File] = []
        self._learned_models: set[str] = set()

    # -- planning ----------------------------------------------------------------------

    async def split(self, todo: deque[_Job]) -> None:
        """Take the jobs that must be chunked out of ``todo`` (in place).

        Sizes are compared at once; headers are read (in a worker thread) only for a model
        with a seconds limit, or for a file over the bytes limit (for its duration, which
        drives the progress bar).
        """
        if not todo:
            return
        limits = self.book.limits_for(todo[0].call.model)  # one model per run
        checks = [
            job
            for job in todo
            if job.source.kind in _LOCAL_KINDS
            and (
                limits.max_seconds is not None
                or (limits.max_bytes is not None and (job.source.size or 0) > limits.max_bytes)
            )
        ]
        if not checks:
            return
        verdicts = await asyncio.to_thread(lambda: [self._check(job, limits) for job in checks])
        long = {id(job): info for job, info in zip(checks, verdicts, strict=True) if info}
        keep: deque[_Job] = deque()
        for job in todo:
            info = long.get(id(job))
            if info is None:
                keep.append(job)
            else:
                self._pending_start.append(_File(job, info[0], info[1]))
        todo.clear()
        todo.extend(keep)
        self.files.extend(self._pending_start)

    @staticmethod
    def _check(job: _Job, limits: ModelLimits) -> tuple[ModelLimits, float | None] | None:
        size = job.source.size or 0
        seconds = audio_seconds(job.source)
        if not needs_chunking(size, seconds, limits):
            return None
        return limits, seconds

    @property
    def pending(self) -> int:
        """Long files planned but not started: each is one unit of the run's work."""
        return len(self._pending_start)

    # -- sending -----------------------------------------------------------------------

    def start(
        self,
        enqueue: Callable[[_Job], None],
        add_unit: Callable[[], None],
        settle: Callable[[], None],
        bar: ProgressBar,
    ) -> None:
        """Start a producer for every planned file; the engine counted each as one unit.

        ``enqueue`` puts a job on the run's queue and counts it as a unit of work;
        ``add_unit`` counts one more unit (a file refused whole, now sent as chunks);
        ``settle`` marks one unit (a finished or failed file) done.
        """
        self._enqueue, self._add_unit, self._settle, self._bar = enqueue, add_unit, settle, bar
        files, self._pending_start = self._pending_start, []
        for f in files:
            self._launch(f)

    def _launch(self, f: _File) -> None:
        _pin_mmap_threshold()
        # Chunks answered under an earlier plan were real work: they stay counted, and
        # this plan's expected chunks come on top.
        f.base = f.counted
        self._hold_units(f, f.base + chunk_requests(f.seconds, f.job.source.size, f.limits))
        f.task = asyncio.create_task(self._produce(f, f.generation))

    def _hold_units(self, f: _File, units: int) -> None:
        """Make ``f`` hold ``units`` of the progress bar's total."""
        if self._bar is not None and units != f.units:
            self._bar.add_units(units - f.units)
        f.units = units

    async def _produce(self, f: _File, generation: int) -> None:
        src = f.job.source
        audio: str | os.PathLike[str] | bytes = src.path if src.path is not None else src.data  # type: ignore[assignment]
        previous: str | None = None
        index = 0
        try:
            async with self._active:
                async for chunk in aplan_chunks(audio, f.limits):
                    if f.generation != generation or f.finished:
                        return
                    previous = await self._one_chunk(f, generation, chunk, previous)
                    if f.generation != generation or f.finished:
                        return
                    index += 1
        except asyncio.CancelledError:
            raise
        except (AudioInputError, ValueError, OSError) as err:
            if f.generation == generation:
                self._fail(f, f"{type(err).__name__}: {err}")
            return
        if f.generation == generation and not f.finished:
            f.total = index
            self._hold_units(f, f.base + index)
            self._maybe_finish(f)

    async def _one_chunk(
        self, f: _File, generation: int, chunk: Chunk, previous: str | None
    ) -> str | None:
        if f.base + chunk.index + 1 > f.units:  # more chunks than expected: the work grows
            self._hold_units(f, f.base + chunk.index + 1)
        call = f.job.call
        if self.chain_prompt:
            prompt = chained_prompt(previous, call.prompt)
            call = dataclasses.replace(
                call,
                prompt=prompt,
                options_json=options_json(call.timestamps, prompt, call.temperature),
            )
        identity = chunk.identity(f.job.identity)
        key = cache_key(
            identity,
            call.model,
            call.language,
            call.provider_json,
            call.options_json,
            origin=call.origin,
        )
        if self.store is not None:
            cached = self.store.get_many([key]).get(key)
            if cached is not None:
                self._record(f, chunk.index, chunk.start, chunk.end, cached)
                return cached.text
        await self._reserve(len(chunk.data))
        ref = ChunkRef(f, generation, chunk.index, chunk.start, chunk.end, len(chunk.data))
        label = f"{f.job.source.label} [{chunk.start:.1f}-{chunk.end:.1f} s]"
        source = AudioSource(
            kind="bytes", label=label, data=chunk.data, format="flac", size=len(chunk.data)
        )
        waiter: asyncio.Future[str | None] | None = None
        if self.chain_prompt:
            waiter = f.waiting[chunk.index] = asyncio.get_running_loop().create_future()
        assert self._enqueue is not None
        self.chunks_sent += 1
        self._enqueue(self.make_job(key, identity, source, call, ref))
        if waiter is None:
            return None
        return await waiter

    async def _reserve(self, size: int) -> None:
        async with self._room:
            await self._room.wait_for(
                lambda: (
                    self._buffered == 0
                    or (
                        self._buffered < self.max_buffered
                        and self._buffered_bytes + size <= BUFFER_BYTES
                    )
                )
            )
            self._buffered += 1
            self._buffered_bytes += size

    def _release(self, ref: ChunkRef) -> None:
        self._buffered -= 1
        self._buffered_bytes -= ref.size

        async def wake() -> None:
            async with self._room:
                self._room.notify_all()

        asyncio.get_running_loop().create_task(wake())

    # -- outcomes ------------------------------------------------------------------------

    def on_answer(self, job: _Job, outcome: TranscriptionResult) -> None:
        """A chunk was answered: cache it, count it, and finish its file when complete."""
        ref: ChunkRef = job.part
        self._release(ref)
        f = ref.file
        if self.store is not None:
            self.store.add([job.record(outcome.text, outcome.raw)])
        if ref.generation != f.generation or f.finished:
            return
        self._record(f, ref.index, ref.start, ref.end, outcome)
        self._maybe_finish(f)

    def on_refusal(self, job: _Job, err: APIStatusError) -> bool:
        """A refusal of a whole file or a chunk: learn the limit and plan the file again.

        Returns True when the file will be sent again as chunks (the engine then counts the
        job as done and records no error); False leaves the error to the engine.
        """
        ref: ChunkRef | None = job.part
        if ref is None and job.source.kind not in _LOCAL_KINDS:
            return False
        sent = ref.size if ref is not None else job.source.size
        current = self.book.limits_for(job.call.model)
        seconds = ref.end - ref.start if ref is not None else audio_seconds(job.source)
        if not current.admits(sent or 0, seconds):
            # Sent under limits the run has tightened since (another row's refusal taught
            # them while this one was in flight): plan it again, and count nothing.
            return self._replan(job, current)
        taught = learn_from_refusal(err.status_code, _body(err))
        if taught is None and err.status_code == 413 and sent is not None and sent > 1:
            taught = ModelLimits(max_bytes=sent - 1)
        if taught is None or not _plannable(self.book.limits_for(job.call.model).tighten(taught)):
            # A limit no chunk can fit (a 413 for a clip of a few KB): the row's own error,
            # and nothing learned that would make every later row a long file.
            return False
        verdict = self.book.record_refusal(
            job.call.model, err.status_code, _body(err), sent_bytes=sent
        )
        if not verdict.rechunk:
            return False
        log.info(
            "%s: refused (%s); planning it again as chunks under %s",
            job.source.label if ref is None else ref.file.job.source.label,
            err.status_code,
            verdict.limits,
        )
        return self._replan(job, verdict.limits)

    async def reroute(self, job: _Job) -> bool:
        """Before a whole file is sent: True when limits learned in this run say it must be
        chunked (it then became a long file, one more unit; the engine settles the job)."""
        model = job.call.model
        if job.source.kind not in _LOCAL_KINDS or model not in self._learned_models:
            return False
        limits = self.book.limits_for(model)
        seconds = None
        if limits.max_seconds is not None:
            seconds = await asyncio.to_thread(audio_seconds, job.source)
        if not needs_chunking(job.source.size or 0, seconds, limits):
            return False
        self._replan(job, limits, seconds)
        return True

    def _replan(self, job: _Job, limits: ModelLimits, seconds: float | None = None) -> bool:
        self._learned_models.add(job.call.model)
        ref: ChunkRef | None = job.part
        if ref is None:
            # A whole file: it becomes a long file, one more unit of the run's work.
            f = _File(job, limits, seconds if seconds is not None else audio_seconds(job.source))
            self.files.append(f)
            self._add_unit()
            self._launch(f)
            return True
        self._release(ref)
        f = ref.file
        if f.finished or ref.generation != f.generation:
            return True
        f.generation += 1
        f.limits = limits
        f.answers.clear()
        f.total = None
        self._resolve_waiters(f, None)
        if f.task is not None:
            f.task.cancel()
        self._launch(f)
        return True

    def on_failure(self, job: _Job, text: str) -> None:
        """A chunk failed for good: its file's rows get the error."""
        ref: ChunkRef = job.part
        self._release(ref)
        if ref.generation == ref.file.generation:
            self._fail(ref.file, text)

    def _record(
        self, f: _File, index: int, start: float, end: float, tr: TranscriptionResult
    ) -> None:
        f.answers[index] = (start, end, tr)
        waiter = f.waiting.pop(index, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(tr.text)
        f.counted += 1
        if self._bar is not None:
            self._bar.advance(1)
        if self._bar is not None and f.seconds:
            step = len(f.job.rows) * (end - start) / f.seconds
            step = min(step, max(0.0, len(f.job.rows) * 0.99 - f.shown))
            if step > 0:
                f.shown += step
                self._bar.partial(step)

    def _resolve_waiters(self, f: _File, value: str | None) -> None:
        for waiter in f.waiting.values():
            if not waiter.done():
                waiter.set_result(value)
        f.waiting.clear()

    def _maybe_finish(self, f: _File) -> None:
        if f.finished or f.total is None or len(f.answers) < f.total:
            return
        f.finished = True
        parts = [f.answers[i] for i in range(f.total)]
        timed = f.job.call.timestamps is not None
        stitched = stitch(
            ChunkTranscript(start, end, tr.text, tr.segments, tr.words) for start, end, tr in parts
        )
        first = parts[0][2] if parts else None
        raw: dict[str, Any] = {"text": stitched.text, "duration": stitched.duration}
        for name in ("model", "provider", "language"):
            value = first.raw.get(name) if first is not None else None
            if isinstance(value, str):
                raw[name] = value
        nanos = [tr.raw.get("cost_nanos") for _, _, tr in parts]
        if parts and all(isinstance(n, int | float) and not isinstance(n, bool) for n in nanos):
            raw["cost_nanos"] = sum(nanos)
            currency = first.raw.get("currency") if first is not None else None
            if isinstance(currency, str):
                raw["currency"] = currency
        if timed:
            raw["segments"] = stitched.segments
            if stitched.words is not None:
                raw["words"] = stitched.words
        raw["chunks"] = [[round(s, 3), round(e, 3)] for s, e, _ in parts]
        answer = TranscriptionResult.from_body(raw)
        job = f.job
        from ._batch import _fill

        _fill(self.result, job.rows, answer, latency=None)
        if self.store is not None:
            self.store.add([job.record(answer.text, raw)])
        self._finish_unit(f, errors=0)

    def _fail(self, f: _File, text: str) -> None:
        if f.finished:
            return
        f.finished = True
        for r in f.job.rows:
            self.result.error[r] = text
        self._resolve_waiters(f, None)
        self._finish_unit(f, errors=len(f.job.rows))

    def _finish_unit(self, f: _File, errors: int) -> None:
        if self._bar is not None:
            if f.shown:
                self._bar.partial(-f.shown)
            # The chunks answered are counted already; a failed file's others are done too.
            self._bar.update(len(f.job.rows), errors=errors, units=max(0, f.units - f.counted))
        assert self._settle is not None
        self._settle()

    async def aclose(self) -> None:
        """Stop every producer (the run ended, or was cancelled)."""
        tasks = [f.task for f in self.files if f.task is not None and not f.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


_M_MMAP_THRESHOLD: Final = -3
_MMAP_THRESHOLD_BYTES: Final = 1 << 20
_malloc_pinned = False


def _pin_mmap_threshold() -> None:
    """Keep glibc from holding on to freed chunk buffers (Linux only; once per process).

    glibc serves blocks over its mmap threshold with their own mappings, returned to the
    system on free, but raises the threshold to the size of each such block freed (up to
    32 MB). After the first 20 MB chunk is freed, the next chunks' buffers (samples, FLAC,
    the upload) come from the heap instead, where freed space fragments: measured on a
    2-hour file, resident memory grew by 40-60 MB a chunk. Setting the threshold
    explicitly turns the adjustment off, so memory follows the chunks in flight.
    """
    global _malloc_pinned
    if _malloc_pinned or not sys.platform.startswith("linux"):
        return
    _malloc_pinned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        pass


def _plannable(limits: ModelLimits) -> bool:
    try:
        _Planner(limits).max_samples()
    except ValueError:
        return False
    return True
