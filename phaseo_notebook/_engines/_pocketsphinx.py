"""Offline English speech recognition with CMU PocketSphinx.

The acoustic model, language model and dictionary are the en-us ones shipped inside
the ``pocketsphinx`` wheel (``pocketsphinx.get_model_path()``, which honours
``POCKETSPHINX_PATH``); nothing is downloaded.

Two facts about the binding shape this module:

- ``Decoder.process_raw`` holds the GIL for the whole utterance (two threads with two
  decoders take twice as long as one), so threads give no parallelism. The sync path
  therefore shares one decoder behind a lock, and the async path runs in a pool of
  worker *processes*, each holding its own decoder.
- A decoder carries noise and cepstral-mean estimates from one utterance to the next,
  so the same audio could give a different transcript depending on what was decoded
  before. :func:`_recognise` resets the feature extraction before every utterance,
  which makes the output a pure function of the audio (the cache above relies on it).

Language: the model is English. Any requested language is accepted, the audio is
decoded with the English model, and the result reports ``language="en"``, the
language actually used, so quality checks upstream can notice a mismatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from phaseo_notebook._engines._decode import (
    DEFAULT_MAX_DURATION,
    LOCAL_EXTRA_INSTALL,
    EngineResult,
    Segment,
    TranscribeOptions,
    Word,
    decode_to_pcm16k,
    whole_clip_segments,
)
from phaseo_notebook._engines._workers import (
    DEFAULT_JOB_TIMEOUT,
    PooledEngine,
    Recogniser,
    WorkerSpec,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["MODEL_LANGUAGE", "PocketSphinxEngine", "load_recogniser"]

#: The language of the bundled model, reported as the result's language.
MODEL_LANGUAGE = "en"
# Feature frames per second of the en-us model (its "frate"): segment frames -> seconds.
_FRAMES_PER_SECOND = 100.0


def _new_decoder() -> Any:
    """Create a decoder on the bundled en-us model (about 0.3 s and 30 MB each)."""
    try:
        import pocketsphinx
    except ImportError as err:
        raise ImportError(
            f"the pocketsphinx engine needs the pocketsphinx package: {LOCAL_EXTRA_INSTALL}"
        ) from err
    # The default config already points at the model inside the wheel; only its
    # per-utterance INFO logging on stderr is unwanted.
    return pocketsphinx.Decoder(loglevel="FATAL")


def _is_filler(token: str) -> bool:
    # Fillers ("<sil>", "[NOISE]", "++garbage++") are not words of the transcript.
    return not token or token[0] in "<[+"


def _normalise(hypstr: str) -> str:
    """Lowercase, single-spaced words without fillers or pronunciation variants."""
    # Alternate pronunciations are spelled "word(2)" in the dictionary.
    return " ".join(
        token.split("(", 1)[0].lower() for token in hypstr.split() if not _is_filler(token)
    )


def _recognise(decoder: Any, pcm: npt.NDArray[np.int16]) -> str:
    """Decode one utterance of 16 kHz int16 PCM with ``decoder``."""
    decoder.reinit_feat()
    decoder.start_utt()
    # full_utt: the whole file is known up front, so normalise over all of it rather
    # than with the live running estimate (more accurate and order-independent).
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return "" if hyp is None else _normalise(hyp.hypstr)


def _words(decoder: Any) -> tuple[Word, ...]:
    """Word times of the last utterance, from the decoder's segmentation (free)."""
    return tuple(
        Word(
            seg.start_frame / _FRAMES_PER_SECOND,
            (seg.end_frame + 1) / _FRAMES_PER_SECOND,
            seg.word.split("(", 1)[0].lower(),
        )
        for seg in decoder.seg()
        if not _is_filler(seg.word)
    )


def _transcribe_with(
    decoder: Any,
    data: bytes,
    options: TranscribeOptions | None = None,
    max_duration: float = DEFAULT_MAX_DURATION,
) -> EngineResult:
    """Decode ``data`` and recognise it with ``decoder``; timestamps when asked for.

    The model has no finer timing than words: ``segments`` is one segment over the
    whole clip, ``words`` comes from the decoder's segmentation.
    """
    pcm, duration = decode_to_pcm16k(data, max_duration=max_duration)
    text = _recognise(decoder, pcm)
    segments: tuple[Segment, ...] | None = whole_clip_segments(text, duration, options)
    words = _words(decoder) if options is not None and options.timestamps == "word" else None
    return EngineResult(
        text, duration=duration, language=MODEL_LANGUAGE, segments=segments, words=words
    )


def load_recogniser(config: dict[str, Any]) -> Recogniser:
    """Load a decoder once; return the function a worker calls for each job.

    Parameters
    ----------
    config : dict
        ``{"max_duration": seconds}`` (optional).
    """
    decoder = _new_decoder()
    max_duration = float(config.get("max_duration", DEFAULT_MAX_DURATION))

    def recognise(data: bytes, language: str | None, options: TranscribeOptions) -> EngineResult:
        return _transcribe_with(decoder, data, options, max_duration)

    return recognise


class PocketSphinxEngine(PooledEngine):
    """Real offline English transcription with the model bundled in ``pocketsphinx``.

    :meth:`transcribe` decodes in the calling process, on one decoder shared behind a
    lock (the binding holds the GIL, so more decoders would not run in parallel).
    :meth:`atranscribe` sends the work to a pool of ``workers`` spawned processes,
    created on first use, so many files keep every core busy while the event loop
    stays free. Both give the same text for the same bytes.

    Parameters
    ----------
    workers : int or None
        Processes in the :meth:`atranscribe` pool; default ``os.cpu_count()``.
    max_duration : float
        Longest audio accepted, in seconds (default 2 hours).
    job_timeout : float or None
        Time limit of one job in a worker, in seconds (default 30 minutes).

    Raises
    ------
    ValueError
        If ``workers`` is less than 1.

    Notes
    -----
    Calling :meth:`transcribe` from a thread next to an event loop stalls that loop for
    the whole decode (about real time): use :meth:`atranscribe` there. The workers are
    fresh interpreters fed through pipes (:mod:`._workers`), so a plain script needs no
    ``if __name__ == "__main__":`` guard. :meth:`close` shuts the pool down; a later
    call starts a new one.

    Examples
    --------
    >>> engine = PocketSphinxEngine(workers=2)  # doctest: +SKIP
    >>> engine.transcribe(Path("english.wav").read_bytes()).text  # doctest: +SKIP
    'one two three'
    >>> engine.close()  # doctest: +SKIP
    """

    name: str = "pocketsphinx"

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_duration: float = DEFAULT_MAX_DURATION,
        job_timeout: float | None = DEFAULT_JOB_TIMEOUT,
    ) -> None:
        super().__init__(workers, max_duration=max_duration, job_timeout=job_timeout)

    def worker_spec(self) -> WorkerSpec:
        """Each worker loads the bundled en-us model."""
        return WorkerSpec(__name__, {"max_duration": self.max_duration})

    def _load_local(self) -> Recogniser:
        return load_recogniser({"max_duration": self.max_duration})
