"""Named constants: defaults, limits and the retry policy, in one place."""

from __future__ import annotations

import httpx

DEFAULT_BASE_URL = "https://api.phaseo.app/v1"
TRANSCRIPTIONS_PATH = "/audio/transcriptions"

#: The model used when none is given and no gateway is configured.
LOCAL_DEFAULT_MODEL = "local/whisper-tiny.en"
#: Models that the embedded engine answers in-process.
LOCAL_MODEL_PREFIX = "local/"

ENV_API_KEY = "PHASEO_API_KEY"
ENV_BASE_URL = "PHASEO_BASE_URL"
ENV_CACHE_DIR = "PHASEO_CACHE_DIR"
ENV_NO_PROGRESS = "PHASEO_NO_PROGRESS"

#: Transcription of a long clip can take a while upstream; connecting should not.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
DEFAULT_MAX_RETRIES = 3

# Retry policy (exponential backoff with full jitter).
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
#: A server asking for a longer pause than this is not obeyed blindly: a stuck run is worse.
MAX_RETRY_AFTER = 60.0
RETRYABLE_STATUS_CODES = frozenset({408, 409, 429, 500, 502, 503, 504})

# Input limits (the live gateway's per-file limit for most models).
MAX_AUDIO_BYTES = 25 * 1000 * 1000
MAX_URL_LENGTH = 8192
#: The most bytes of one answer the client reads (as sent, before any decompression);
#: a transcript, even with word timestamps for hours of audio, is far smaller.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: Files up to this size are read and hashed inline; larger ones in worker threads. A small
#: file reads in microseconds from the page cache, less than the hand-off to a thread and
#: back costs (measured: about 0.05 ms of CPU per file of 8 KB).
INLINE_READ_BYTES = 256 * 1024

#: Extensions the live gateway accepts for a `file` part.
AUDIO_EXTENSIONS = frozenset(
    {"aac", "flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "opus", "wav", "webm", "aiff"}
)
