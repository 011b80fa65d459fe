"""Audio inputs: one normalised :class:`AudioSource` per input, checked before anything is sent.

An input may be an http(s) URL, a local path (``str`` or ``os.PathLike``), bytes-like, or a
``data:audio/...;base64,`` URI. Normalising reads at most a small header of a file: the whole
content is read only when the request is about to be sent (:meth:`AudioSource.read`), so a run
over many large files keeps memory bounded.

Measuring audio also lives here: :func:`wav_duration` reads a WAV header's duration (the
engines use it too), and :func:`measure_audio` gives a clip's duration and how many seconds
of it are loud, which the quality flags need. Decoding for loudness uses ``soundfile`` and
``numpy`` (the ``[local]`` extra), imported only when asked for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ._constants import MAX_AUDIO_BYTES, MAX_URL_LENGTH
from ._exceptions import AudioInputError
from ._extras import MissingExtraError, require

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "AudioFacts",
    "AudioKind",
    "AudioSource",
    "coerce_download",
    "describe_input",
    "input_type_name",
    "is_missing",
    "local_audio_bytes",
    "loud_seconds",
    "measure_audio",
    "mime_for_format",
    "normalize_audio",
    "plain_url",
    "sniff_audio_format",
    "url_source",
    "wav_duration",
    "wav_sample_rate",
]

AudioKind = Literal["url", "path", "bytes", "data_uri"]

_HEADER_BYTES = 64
_HASH_CHUNK = 1 << 20
# "scheme:" at the start of a string. A bare path never starts like this on POSIX unless it is
# something like "notes:v2.wav", so only a known scheme or "scheme://" makes it a URL.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_URL_LIKE_SCHEMES = frozenset(
    {"http", "https", "file", "ftp", "ftps", "javascript", "data", "s3", "gs", "gcs", "az", "blob"}
)
# Whitespace (as str.isspace() sees it) and control characters; a URL holds none.
_URL_BAD_CHAR_RE = re.compile(r"[\s\x00-\x1f\x7f]")
# An http(s) URL with an ASCII host name, no user:password@ and a port of at most four
# digits, then no whitespace or control character: every check of _from_url holds for it.
_PLAIN_URL_RE = re.compile(
    r"(?i:https?)://[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]{1,4})?"
    r"(?:[/?#][^\s\x00-\x1f\x7f\ud800-\udfff]*)?"
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_DATA_URI_RE = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)$", re.S)
_MIME_BY_FORMAT = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "aiff": "audio/aiff",
    "mp4": "audio/mp4",
    "webm": "audio/webm",
    "aac": "audio/aac",
    "amr": "audio/amr",
    "caf": "audio/x-caf",
}


def sniff_audio_format(header: bytes) -> str | None:
    """Return the audio container named by the first bytes of a file, or None.

    The extension alone is never trusted: a CSV renamed ``.wav`` is not audio.

    Parameters
    ----------
    header
        The first bytes of the content (32 are enough).

    Returns
    -------
    str or None
        One of ``wav``, ``flac``, ``ogg``, ``mp3``, ``aiff``, ``mp4``, ``webm``, ``aac``,
        ``amr``, ``caf``, or None when the bytes match none of them.

    Examples
    --------
    >>> sniff_audio_format(b"RIFF\\x24\\x00\\x00\\x00WAVEfmt ")
    'wav'
    >>> sniff_audio_format(b"name,value\\n") is None
    True
    """
    h = header
    if len(h) >= 12 and h[:4] in (b"RIFF", b"RIFX", b"RF64") and h[8:12] == b"WAVE":
        return "wav"
    if h[:4] == b"fLaC":
        return "flac"
    if h[:4] == b"OggS":
        return "ogg"
    if len(h) >= 12 and h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if len(h) >= 12 and h[4:8] == b"ftyp":
        return "mp4"
    if h[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if h[:3] == b"ID3":
        return "mp3"
    if h[:5] == b"#!AMR":
        return "amr"
    if h[:4] == b"caff":
        return "caf"
    if len(h) >= 2 and h[0] == 0xFF:
        # ADTS AAC: sync word 0xFFF with layer bits 00; MPEG audio: 0xFFE sync, layer != 00.
        if h[1] & 0xF6 == 0xF0:
            return "aac"
        if h[1] & 0xE0 == 0xE0 and h[1] & 0x06 != 0:
            return "mp3"
    return None


def mime_for_format(fmt: str) -> str:
    """Return the MIME type for a format name returned by :func:`sniff_audio_format`.

    Examples
    --------
    >>> mime_for_format("mp3")
    'audio/mpeg'
    """
    return _MIME_BY_FORMAT.get(fmt, "application/octet-stream")


def describe_input(audio: object, limit: int = 80) -> str:
    """A short printable description of an input for error messages (never raw bytes).

    Examples
    --------
    >>> describe_input("clips/a.wav")
    "'clips/a.wav'"
    >>> describe_input(b"RIFF....")
    '<8 bytes>'
    """
    if isinstance(audio, bytes | bytearray | memoryview):
        return f"<{memoryview(audio).nbytes} bytes>"
    if isinstance(audio, str):
        if audio.startswith("data:"):
            return f"<data URI, {len(audio)} characters>"
        if len(audio) > limit:
            # Keep the end: a long path's file name is what tells rows apart.
            tail = limit // 2
            audio = audio[: limit - 3 - tail] + "..." + audio[-tail:]
        return repr(audio)
    if isinstance(audio, os.PathLike):
        return describe_input(os.fspath(audio), limit)
    text = repr(audio)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({type(audio).__name__})"


@dataclass(frozen=True, slots=True, repr=False)
class AudioSource:
    """One validated audio input.

    Attributes
    ----------
    kind
        ``"url"``, ``"path"``, ``"bytes"`` or ``"data_uri"``.
    label
        A short printable description of the input, for messages.
    url
        The URL, for ``kind == "url"``.
    path
        The file, for ``kind == "path"``.
    data
        The audio bytes, for ``"bytes"`` and ``"data_uri"`` (already decoded).
    format
        The sniffed container (``"wav"``, ...); None for URLs until downloaded.
    size
        Size in bytes where known.
    """

    kind: AudioKind
    label: str
    url: str | None = None
    path: Path | None = None
    data: bytes | None = None
    format: str | None = None
    size: int | None = None

    def __repr__(self) -> str:
        return f"AudioSource(kind={self.kind!r}, input={self.label})"

    @property
    def mime(self) -> str:
        """MIME type of the audio (``application/octet-stream`` when unknown)."""
        return mime_for_format(self.format) if self.format else "application/octet-stream"

    @property
    def filename(self) -> str:
        """A file name with an audio extension, for a multipart ``file`` part."""
        if self.path is not None and self.format and self.path.suffix.lower() == f".{self.format}":
            return self.path.name
        stem = self.path.stem if self.path is not None else "audio"
        return f"{stem or 'audio'}.{self.format or 'wav'}"

    def read(self) -> bytes:
        """Return the audio bytes, reading a file now (not kept afterwards).

        Raises
        ------
        AudioInputError
            If the file changed since it was checked (vanished, became unreadable or too large).
        ValueError
            For a URL, which is not read locally.
        """
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError("a URL source has no local bytes; download it first")
        try:
            with self.path.open("rb") as fh:
                # A file over one upload is sent as chunks, never read whole: refuse it unread.
                _check_size(os.fstat(fh.fileno()).st_size, self.label)
                data = fh.read()
        except FileNotFoundError as err:
            raise AudioInputError("file does not exist", audio=self.label) from err
        except PermissionError as err:
            raise AudioInputError(
                "file cannot be read (permission denied)", audio=self.label
            ) from err
        except OSError as err:
            raise AudioInputError(
                f"file cannot be read ({err.strerror})", audio=self.label
            ) from err
        _check_size(len(data), self.label)
        return data

    def identity(self) -> str:
        """The content identity used for deduplication and cache keys.

        ``"url:" + url`` for URLs (the gateway fetches them, the client never sees the bytes);
        otherwise the sha256 hex digest of the bytes, streamed for files.

        Examples
        --------
        >>> normalize_audio("https://example.com/a.wav").identity()
        'url:https://example.com/a.wav'
        """
        if self.kind == "url":
            assert self.url is not None
            return "url:" + self.url
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        assert self.path is not None
        digest = hashlib.sha256()
        try:
            with self.path.open("rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    digest.update(chunk)
        except OSError as err:
            raise AudioInputError(
                f"file cannot be read ({err.strerror})", audio=self.label
            ) from err
        return digest.hexdigest()


#: Local files and bytes may be larger than one upload: the batch engine sends them as
#: chunks under the model's limits (see ``_longaudio``). This only bounds what is accepted.
MAX_LOCAL_AUDIO_BYTES = 16 * 1000**3


def _check_size(size: int, label: str, limit: int = MAX_AUDIO_BYTES) -> None:
    if size == 0:
        raise AudioInputError("audio is empty (0 bytes)", audio=label)
    if size > limit:
        raise AudioInputError(
            f"audio is {size:,} bytes, over the {limit // 1_000_000} MB limit per file",
            audio=label,
        )


def _require_audio(header: bytes, label: str) -> str:
    fmt = sniff_audio_format(header)
    if fmt is None:
        raise AudioInputError(
            "content is not audio (no WAV, FLAC, OGG, MP3, AIFF, MP4, WebM, AAC or AMR header;"
            f" starts with {header[:8]!r})",
            audio=label,
        )
    return fmt


def is_missing(value: object) -> bool:
    """True for the values pandas uses for "no value": None, NaN, ``pd.NA`` and ``pd.NaT``.

    Examples
    --------
    >>> is_missing(None), is_missing(float("nan")), is_missing("")
    (True, True, False)
    """
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    # pandas.NA and NaT without importing pandas here.
    return type(value).__name__ in {"NAType", "NaTType"}


def normalize_audio(audio: object) -> AudioSource:
    """Validate one audio input and describe what to send.

    Parameters
    ----------
    audio
        An http(s) URL, a local path (``str`` or ``os.PathLike``), bytes-like, or a
        ``data:audio/...;base64,`` URI.

    Returns
    -------
    AudioSource

    Raises
    ------
    AudioInputError
        For a missing value (None/NaN), an unsupported type, a nonexistent, empty, unreadable
        or non-audio file, a directory, audio over 25 MB, a malformed URL, a URL with a
        scheme other than http(s) or with credentials, or a data URI that is not base64 audio.

    Examples
    --------
    >>> normalize_audio("https://example.com/clip.mp3").kind
    'url'
    >>> normalize_audio(None)
    Traceback (most recent call last):
    ...
    phaseo_notebook.AudioInputError: audio input None (NoneType): missing value
    """
    if is_missing(audio):
        raise AudioInputError("missing value", audio=describe_input(audio))
    if isinstance(audio, memoryview) and not audio.c_contiguous:
        # A strided view (every other byte, a column of a 2-D buffer) is not one run of
        # audio bytes; copying it in logical order would send something else.
        raise AudioInputError(
            "a memoryview that is not contiguous is not audio bytes; pass bytes of the"
            " file (for example bytes(view) if the view really holds them in order)",
            audio=describe_input(audio),
        )
    if isinstance(audio, bytes | bytearray | memoryview):
        return _from_bytes(bytes(audio), describe_input(audio))
    if isinstance(audio, os.PathLike):
        fs = os.fspath(audio)
        return _from_path(fs if isinstance(fs, str) else os.fsdecode(fs))
    if isinstance(audio, str):
        text = audio.strip()
        if not text:
            raise AudioInputError("empty string", audio=describe_input(audio))
        if plain_url(text) is not None:
            return url_source(text)
        match = _SCHEME_RE.match(text)
        if match:
            scheme = match.group(1).lower()
            if scheme == "data":
                return _from_data_uri(text)
            if scheme in _URL_LIKE_SCHEMES or text[match.end() : match.end() + 2] == "//":
                return _from_url(text)
        return _from_path(audio)
    raise AudioInputError(
        f"unsupported type {type(audio).__name__}; expected an http(s) URL, a path,"
        " bytes or a data:audio/...;base64, URI",
        audio=describe_input(audio),
    )


def plain_url(text: str) -> str | None:
    """The URL ``text`` names (stripped) when its shape alone passes every URL check, else None.

    An http(s) URL with an ASCII host name, no ``user:password@``, a port of at most four
    digits and no whitespace or control character: :func:`normalize_audio` takes it as
    :func:`url_source` of the stripped text without parsing it. None means "not known
    by its shape": ``normalize_audio`` decides.

    Examples
    --------
    >>> plain_url(" https://example.com/a.wav ")
    'https://example.com/a.wav'
    >>> plain_url("https://user:pw@example.com/a.wav") is None
    True
    """
    if "://" not in text:  # most paths: decided without the regular expression
        return None
    text = text.strip()
    # The shape check instead of urlsplit: a rerun over 100,000 URL rows would otherwise
    # spend most of its planning there.
    if len(text) <= MAX_URL_LENGTH and _PLAIN_URL_RE.fullmatch(text):
        return text
    return None


def url_source(url: str) -> AudioSource:
    """The source of a URL :func:`plain_url` returned.

    Examples
    --------
    >>> url_source("https://example.com/a.wav").identity()
    'url:https://example.com/a.wav'
    """
    return AudioSource(kind="url", label=describe_input(url), url=url)


def _from_bytes(data: bytes, label: str) -> AudioSource:
    _check_size(len(data), label, MAX_LOCAL_AUDIO_BYTES)
    fmt = _require_audio(data[:_HEADER_BYTES], label)
    return AudioSource(kind="bytes", label=label, data=data, format=fmt, size=len(data))


def _from_path(text: str) -> AudioSource:
    label = describe_input(text)
    if "\x00" in text:
        raise AudioInputError("path contains a NUL character", audio=label)
    try:
        path = Path(text).expanduser()
    except (RuntimeError, ValueError) as err:  # "~nosuchuser", or a lone surrogate after "~"
        raise AudioInputError(f"path cannot be used ({err})", audio=label) from err
    try:
        st = path.stat()
    except FileNotFoundError as err:
        raise AudioInputError("file does not exist", audio=label) from err
    except PermissionError as err:
        raise AudioInputError("file cannot be read (permission denied)", audio=label) from err
    except OSError as err:
        raise AudioInputError(f"path cannot be used ({err.strerror or err})", audio=label) from err
    except ValueError as err:  # a lone surrogate, which no file name can hold
        raise AudioInputError(f"path cannot be used ({err})", audio=label) from err
    if stat.S_ISDIR(st.st_mode):
        raise AudioInputError("path is a directory, not an audio file", audio=label)
    _check_size(st.st_size, label, MAX_LOCAL_AUDIO_BYTES)
    try:
        with path.open("rb") as fh:
            header = fh.read(_HEADER_BYTES)
    except PermissionError as err:
        raise AudioInputError("file cannot be read (permission denied)", audio=label) from err
    except OSError as err:
        raise AudioInputError(f"file cannot be read ({err.strerror or err})", audio=label) from err
    fmt = _require_audio(header, label)
    return AudioSource(kind="path", label=label, path=path, format=fmt, size=st.st_size)


def _from_url(text: str) -> AudioSource:
    # Every message about a URL hides its user:password@, whatever else is wrong with it.
    label = describe_input(_strip_userinfo(text))
    if len(text) > MAX_URL_LENGTH:
        raise AudioInputError(f"URL is longer than {MAX_URL_LENGTH} characters", audio=label)
    if _URL_BAD_CHAR_RE.search(text):
        raise AudioInputError("URL contains whitespace or control characters", audio=label)
    if _SURROGATE_RE.search(text):
        # It could be neither sent (UTF-8) nor stored; refused here, before any request.
        raise AudioInputError("URL is not valid Unicode text (a lone surrogate)", audio=label)
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as err:
        # urllib's message quotes the authority, and with it any user:password@.
        reason = str(err) if _strip_userinfo(text) == text else "bad host or port"
        raise AudioInputError(f"malformed URL ({reason})", audio=label) from err
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise AudioInputError(
            f"URL scheme {scheme!r} is not supported; give an http(s) URL or a local path",
            audio=label,
        )
    if not host:
        raise AudioInputError("malformed URL (no host)", audio=label)
    if parts.username is not None or parts.password is not None:
        # The URL would be sent to the gateway and stored in the cache key with its password.
        raise AudioInputError(
            "URL contains credentials (user:password@); use a pre-signed URL instead",
            audio=describe_input(_strip_userinfo(text)),
        )
    try:
        host.encode("idna") if not host.isascii() else None
    except UnicodeError as err:
        raise AudioInputError(
            "malformed URL (host is not a valid domain name)", audio=label
        ) from err
    return AudioSource(kind="url", label=label, url=text)


def _strip_userinfo(url: str) -> str:
    # Up to the last "@" of the authority: a password may itself contain "@".
    return re.sub(r"//[^/?#]*@", "//***@", url, count=1)


def _from_data_uri(text: str) -> AudioSource:
    label = describe_input(text)
    match = _DATA_URI_RE.match(text)
    if not match:
        raise AudioInputError("malformed data URI (no comma)", audio=label)
    mime = match.group("mime").strip().lower()
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    if "base64" not in params:
        raise AudioInputError("data URI is not base64-encoded (';base64,' missing)", audio=label)
    if mime and not (mime.startswith("audio/") or mime == "application/octet-stream"):
        raise AudioInputError(f"data URI has MIME type {mime!r}, not audio/*", audio=label)
    payload = "".join(match.group("payload").split())
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise AudioInputError(f"data URI has invalid base64 ({err})", audio=label) from err
    _check_size(len(data), label)
    fmt = _require_audio(data[:_HEADER_BYTES], label)
    return AudioSource(kind="data_uri", label=label, data=data, format=fmt, size=len(data))


def coerce_download(data: bytes, source: AudioSource) -> AudioSource:
    """Turn the downloaded bytes of a URL source into a bytes source, checking them.

    Examples
    --------
    >>> src = normalize_audio("https://example.com/a.wav")
    >>> coerce_download(b"RIFF\\x00\\x00\\x00\\x00WAVEfmt ", src).format
    'wav'
    """
    _check_size(len(data), source.label)
    return AudioSource(
        kind="bytes",
        label=source.label,
        data=data,
        format=_require_audio(data[:_HEADER_BYTES], source.label),
        size=len(data),
        path=Path(urlsplit(source.url or "").path or "audio"),
    )


def input_type_name(audio: Any) -> str:
    """Name of the input's kind without validating it (for metadata columns)."""
    if isinstance(audio, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(audio, str):
        lowered = audio[:8].lower()
        if lowered.startswith("data:"):
            return "data_uri"
        if lowered.startswith(("http://", "https://")):
            return "url"
        return "path"
    if isinstance(audio, os.PathLike):
        return "path"
    return type(audio).__name__


# --------------------------------------------------------------------------- measurement

# A WAV header that claims more chunks than this is garbage; the bound keeps a hostile
# header from turning the "cheap" duration estimate into a long loop.
_MAX_WAV_CHUNKS = 64
# Loudness is judged per frame of this many seconds.
_FRAME_SECONDS = 0.02


def _wav_fmt(data: bytes) -> tuple[int, int, float | None] | None:
    """``(sample_rate, byte_rate, seconds)`` from a RIFF/WAVE header, else ``None``."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    fmt: tuple[int, int] | None = None
    offset = 12
    for _ in range(_MAX_WAV_CHUNKS):
        if offset + 8 > len(data):
            break
        chunk_id = data[offset : offset + 4]
        size: int = struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                return None
            rate, byte_rate = struct.unpack_from("<II", data, body + 4)
            fmt = (rate, byte_rate)
        elif chunk_id == b"data":
            if fmt is None:
                return None
            seconds = min(size, len(data) - body) / fmt[1] if fmt[1] else None
            return fmt[0], fmt[1], seconds
        # RIFF pads odd-sized chunks to an even boundary.
        offset = body + size + (size & 1)
    return None if fmt is None else (fmt[0], fmt[1], None)


def wav_duration(data: bytes) -> float | None:
    """Return the duration in seconds that a RIFF/WAVE header declares, else ``None``.

    Reads only the header (``fmt `` byte rate and ``data`` chunk size), never the
    samples, so it costs microseconds whatever the file size. A ``data`` size larger
    than the bytes present (streamed WAVs write ``0xFFFFFFFF``) is clipped to what is
    there.

    Parameters
    ----------
    data : bytes
        Any bytes; non-WAV input simply gives ``None``.

    Returns
    -------
    float or None
        Seconds of audio, or ``None`` when ``data`` is not a WAV with a usable header.

    Examples
    --------
    >>> fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)  # PCM, mono, 16 kHz, 16-bit
    >>> head = b"RIFF" + struct.pack("<I", 36 + 32000) + b"WAVEfmt " + struct.pack("<I", 16)
    >>> wav_duration(head + fmt + b"data" + struct.pack("<I", 32000) + bytes(32000))
    1.0
    >>> wav_duration(b"hello") is None
    True
    """
    header = _wav_fmt(data)
    return None if header is None else header[2]


def wav_sample_rate(data: bytes) -> int | None:
    """The sample rate a RIFF/WAVE header declares, else ``None`` (header only).

    Examples
    --------
    >>> fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    >>> wav_sample_rate(b"RIFF\\0\\0\\0\\0WAVEfmt " + struct.pack("<I", 16) + fmt)
    8000
    """
    header = _wav_fmt(data)
    return None if header is None else header[0]


def local_audio_bytes(value: object) -> bytes | None:
    """The bytes of a local input (path, bytes, data URI); None for URLs and invalid inputs.

    Measuring never downloads: fetching a URL is the gateway's job.

    Examples
    --------
    >>> local_audio_bytes(b"RIFF\\x00\\x00\\x00\\x00WAVEfmt ")[:4]
    b'RIFF'
    >>> local_audio_bytes("https://example.com/a.wav") is None, local_audio_bytes(3) is None
    (True, True)
    """
    try:
        source = normalize_audio(value)
        if source.kind == "url":
            return None
        return source.read()
    except (AudioInputError, ValueError, TypeError):
        return None


def loud_seconds(samples: npt.NDArray[np.float32], rate: int, threshold_db: float) -> float:
    """Seconds of 20 ms frames whose RMS level is above ``threshold_db`` (dBFS).

    Parameters
    ----------
    samples
        Mono samples in [-1, 1].
    rate
        Samples per second.
    threshold_db
        The level, in dB relative to full scale, above which a frame counts as sound.

    Examples
    --------
    >>> import numpy as np
    >>> half_loud = np.concatenate([np.zeros(8000), np.full(8000, 0.5)]).astype(np.float32)
    >>> loud_seconds(half_loud, 16000, threshold_db=-40.0)
    0.5
    """
    import numpy as np

    frame = max(1, int(rate * _FRAME_SECONDS))
    usable = (len(samples) // frame) * frame
    if usable == 0:
        return 0.0
    frames = samples[:usable].reshape(-1, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    threshold = 10.0 ** (threshold_db / 20.0)
    return float(np.count_nonzero(rms > threshold)) * frame / rate


@dataclass(frozen=True)
class AudioFacts:
    """What :func:`measure_audio` could learn about a clip; None where it could not.

    Attributes
    ----------
    duration
        Seconds of audio.
    loud_seconds
        Seconds of 20 ms frames above the loudness threshold (see :func:`loud_seconds`).
    """

    duration: float | None
    loud_seconds: float | None


def measure_audio(data: bytes, *, need_energy: bool, threshold_db: float) -> AudioFacts:
    """Duration (from the WAV header when possible) and, if asked, seconds of loud frames.

    Anything that cannot be measured is None rather than an error: a missing ``[local]``
    extra (``soundfile`` for non-WAV audio and for loudness) or audio libsndfile cannot
    read skips the measurement, never the caller's run.

    Parameters
    ----------
    data
        Encoded audio.
    need_energy
        Decode the samples to measure loudness; otherwise only the duration is read.
    threshold_db
        The loudness threshold for :func:`loud_seconds`.

    Examples
    --------
    >>> fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    >>> head = b"RIFF" + struct.pack("<I", 36 + 32000) + b"WAVEfmt " + struct.pack("<I", 16)
    >>> silence = head + fmt + b"data" + struct.pack("<I", 32000) + bytes(32000)
    >>> measure_audio(silence, need_energy=True, threshold_db=-40.0)
    AudioFacts(duration=1.0, loud_seconds=0.0)
    """
    duration = wav_duration(data)
    if not need_energy and duration is not None:
        return AudioFacts(duration, None)
    try:
        soundfile = require("soundfile", "local", purpose="measuring audio")
    except MissingExtraError:
        return AudioFacts(duration, None)
    try:
        if not need_energy:
            info = soundfile.info(io.BytesIO(data))
            return AudioFacts(float(info.frames) / float(info.samplerate), None)
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:  # libsndfile cannot read it: the measurement is skipped, not the run
        return AudioFacts(duration, None)
    if samples.shape[0] == 0 or rate <= 0:
        return AudioFacts(duration, None)
    mono = samples.mean(axis=1)
    return AudioFacts(samples.shape[0] / float(rate), loud_seconds(mono, int(rate), threshold_db))
