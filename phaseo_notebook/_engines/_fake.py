"""A deterministic stand-in engine: text from a hash of the audio bytes.

Used by tests and benchmarks of the gateway and everything above it, where a real
recogniser would only add seconds of CPU per request. The transcript depends on the
audio *content* only, so caching and de-duplication above can be checked end to end:
same bytes give the same text, different bytes (almost surely) different text.
"""

from __future__ import annotations

import hashlib

from phaseo_notebook._engines._decode import (
    EngineResult,
    TranscribeOptions,
    check_sample_rate,
    wav_duration,
    wav_sample_rate,
    whole_clip_segments,
)

__all__ = ["FakeEngine", "fake_transcript"]

# Exactly 256 distinct words, so one digest byte picks one word without modulo bias,
# and even a 4-word transcript has 2**32 possible values (collisions are negligible at
# the scale of any test or benchmark).
_WORD_LIST = """
    able acid air apple arm art baby back bag ball band bank base bath bay beach bean bear
    bed bee bell belt bench bird black blue boat body bone book boot bottle box boy bread
    brick bridge brown brush bus butter cake calm camp card care carpet cart cat chain
    chair chalk cheese chest chin city clock cloud coat coffee coin cold comb cook copper
    cord corn cotton cow crab cream cup curtain dance dark day deep desk dinner dog door
    dress drink drum duck dust ear earth east egg engine eye face farm fast field finger
    fire fish flag floor flower fog foot fork fox frame friend frog fruit game garden gate
    glass glove goat gold grass green hair hall hammer hand hat head heart hill home honey
    horse house ice ink iron island jacket jam jelly jump key king kite knee knife lake
    lamp leaf leg lemon letter light lion lip lock map market milk moon morning mountain
    mouse mouth music nail neck needle nest night nose note oil orange oven paint paper
    park pen pencil pepper piano pig pin pipe plane plate pocket pot rain rat river road
    rock roof room root rope rose salt sand school sea seed sheep shelf ship shirt shoe
    silver sister sky snake snow soap sock soup spoon spring star stone street sugar
    summer sun table tail tea teeth ticket tiger toe tooth town toy train tree truck
    umbrella valley van wall watch water wave wheel whistle wind window wing winter wire
    wolf wood wool yard yellow zebra
"""
_WORDS: tuple[str, ...] = tuple(_WORD_LIST.split())

_MIN_WORDS = 4
_MAX_WORDS = 8


def fake_transcript(data: bytes) -> str:
    """Return a deterministic pseudo-transcript of the audio content.

    Between 4 and 8 lowercase English words, chosen by the SHA-256 of ``data``. Pure
    and fast (one hash, no decoding), so it keeps up with benchmarks at hundreds of
    requests per second.

    Parameters
    ----------
    data : bytes
        The audio bytes, in any format (they are never decoded).

    Returns
    -------
    str
        Lowercase words separated by single spaces.

    Examples
    --------
    >>> fake_transcript(b"abc") == fake_transcript(b"abc")
    True
    >>> fake_transcript(b"abc") != fake_transcript(b"abd")
    True
    >>> 4 <= len(fake_transcript(b"abc").split()) <= 8
    True
    """
    digest = hashlib.sha256(data).digest()
    count = _MIN_WORDS + digest[0] % (_MAX_WORDS - _MIN_WORDS + 1)
    return " ".join(_WORDS[byte] for byte in digest[1 : 1 + count])


class FakeEngine:
    """Engine whose transcript is :func:`fake_transcript` of the bytes.

    ``duration`` is read from the header when the bytes are a WAV, else ``None``;
    ``language`` echoes the one asked for, defaulting to ``"en"``; timestamps, when
    asked for, are one segment over the whole clip and no words. A WAV whose header
    declares a sample rate outside 4-384 kHz is refused like every engine refuses it.
    Thread-safe and stateless; :meth:`atranscribe` runs inline because the work is a
    single hash.

    Examples
    --------
    >>> engine = FakeEngine()
    >>> result = engine.transcribe(b"any bytes at all")
    >>> result.text == fake_transcript(b"any bytes at all"), result.language
    (True, 'en')
    """

    name: str = "fake"

    def transcribe(
        self,
        data: bytes,
        *,
        language: str | None = None,
        options: TranscribeOptions | None = None,
    ) -> EngineResult:
        """Return the fake transcript of ``data``.

        Parameters
        ----------
        data : bytes
            The audio bytes.
        language : str or None
            Echoed back as the result's language (default ``"en"``).
        options : TranscribeOptions or None
            Only ``timestamps`` matters: one segment over the whole clip.

        Returns
        -------
        EngineResult

        Raises
        ------
        AudioDecodeError
            For a WAV header with a sample rate outside 4-384 kHz.
        """
        rate = wav_sample_rate(data)
        if rate is not None:
            check_sample_rate(rate)
        text = fake_transcript(data)
        duration = wav_duration(data)
        return EngineResult(
            text,
            duration=duration,
            language=language or "en",
            segments=whole_clip_segments(text, duration, options),
        )

    async def atranscribe(
        self,
        data: bytes,
        *,
        language: str | None = None,
        options: TranscribeOptions | None = None,
    ) -> EngineResult:
        """Async :meth:`transcribe`; inline, since hashing never blocks the loop for long.

        Parameters
        ----------
        data : bytes
            The audio bytes.
        language : str or None
            Echoed back as the result's language (default ``"en"``).
        options : TranscribeOptions or None
            As in :meth:`transcribe`.

        Returns
        -------
        EngineResult
        """
        return self.transcribe(data, language=language, options=options)

    def close(self) -> None:
        """Do nothing: the fake engine holds no resources."""

    def __repr__(self) -> str:
        return "FakeEngine()"
