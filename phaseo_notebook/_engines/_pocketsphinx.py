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

import asyncio
import os
import threading
from typing import TYPE_CHECKING, Any

from phaseo_notebook._engines._decode import (
    LOCAL_EXTRA_INSTALL,
    EngineResult,
    decode_to_pcm16k,
)
from phaseo_notebook._engines._workers import WorkerPool

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["MODEL_LANGUAGE", "PocketSphinxEngine"]

#: The language of the bundled model, reported as the result's language.
MODEL_LANGUAGE = "en"


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


def _normalise(hypstr: str) -> str:
    """Lowercase, single-spaced words without fillers or pronunciation variants."""
    words = []
    for token in hypstr.split():
        # Fillers ("<sil>", "[NOISE]", "++garbage++") are not words of the transcript.
        if token[0] in "<[+":
            continue
        # Alternate pronunciations are spelled "word(2)" in the dictionary.
        words.append(token.split("(", 1)[0].lower())
    return " ".join(words)


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


def _transcribe_with(decoder: Any, data: bytes) -> EngineResult:
    pcm, duration = decode_to_pcm16k(data)
    return EngineResult(_recognise(decoder, pcm), duration=duration, language=MODEL_LANGUAGE)


class PocketSphinxEngine:
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

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers: int = workers if workers is not None else (os.cpu_count() or 1)
        self._decoder: Any = None
        self._decoder_lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()

    def transcribe(self, data: bytes, *, language: str | None = None) -> EngineResult:
        """Transcribe encoded audio in the calling thread.

        Parameters
        ----------
        data : bytes
            An audio file in any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF...).
        language : str or None
            Accepted for the common interface; decoding always uses the English model
            and the result reports ``"en"``.

        Returns
        -------
        EngineResult
            Lowercase text (``""`` for silence), the audio's duration and ``"en"``.

        Raises
        ------
        AudioDecodeError
            If ``data`` is not decodable audio.
        """
        # Decode outside the lock: only the recogniser is shared.
        pcm, duration = decode_to_pcm16k(data)
        with self._decoder_lock:
            if self._decoder is None:
                self._decoder = _new_decoder()
            text = _recognise(self._decoder, pcm)
        return EngineResult(text, duration=duration, language=MODEL_LANGUAGE)

    async def atranscribe(self, data: bytes, *, language: str | None = None) -> EngineResult:
        """Transcribe encoded audio in a worker process, without blocking the loop.

        The first call starts the pool (each worker loads its own model, about a
        second); later calls only pay for the decode.

        Parameters
        ----------
        data : bytes
            An audio file in any format libsndfile reads.
        language : str or None
            As in :meth:`transcribe`.

        Returns
        -------
        EngineResult

        Raises
        ------
        AudioDecodeError
            If ``data`` is not decodable audio.
        EngineCrashedError
            If the worker died (e.g. killed for memory); the next call starts a new one.
        """
        return await asyncio.wrap_future(self._get_pool().submit(data))

    def _get_pool(self) -> WorkerPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = WorkerPool(self.workers)
            return self._pool

    def close(self) -> None:
        """Shut down the worker pool and free the in-process decoder.

        Safe to call more than once; the engine stays usable (a later call starts
        what it needs again).
        """
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()
        with self._decoder_lock:
            self._decoder = None

    def __repr__(self) -> str:
        running = "running" if self._pool is not None else "idle"
        return f"PocketSphinxEngine(workers={self.workers}, pool={running})"
