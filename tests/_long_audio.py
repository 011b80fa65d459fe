"""Long recordings made at test time: real speech looped with pauses, written in blocks.

The speech is the shared recordings (english.wav, jfk.flac) and espeak-ng sentences, at
22.05 kHz mono; pauses hold faint noise, as a room does, never digital silence. Written
as a stream, so a 2-hour file never exists in memory, here or in the code under test.
Run as a script (``python tests/_long_audio.py OUT SECONDS``) it writes one file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

RATE = 22_050
SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
SENTENCES = (
    "The committee will now review the budget for the coming year.",
    "Please remember to submit your reports before Friday afternoon.",
    "We measured the temperature every hour during the experiment.",
    "The train to the coast leaves from platform nine at noon.",
    "Our results suggest that the new method is both faster and cheaper.",
    "Thank you all for joining the meeting today.",
)
#: Noise level in pauses (int16 units): about 50 dB below the speech.
NOISE_STD = 20.0


def _load(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != RATE:
        from math import gcd

        g = gcd(rate, RATE)
        mono = resample_poly(mono, RATE // g, rate // g).astype(np.float32)
    peak = float(np.max(np.abs(mono))) or 1.0
    return (mono / peak * 0.7 * 32767).astype(np.int16)


def speech_pieces(workdir: Path) -> list[np.ndarray]:
    """Utterances at :data:`RATE`: the shared recordings plus espeak-ng sentences."""
    pieces = [_load(SHARED_AUDIO / "english.wav"), _load(SHARED_AUDIO / "jfk.flac")]
    espeak = shutil.which("espeak-ng")
    if espeak is not None:
        for n, text in enumerate(SENTENCES):
            out = workdir / f"sentence-{n}.wav"
            subprocess.run([espeak, "-w", str(out), text], check=True, capture_output=True)
            pieces.append(_load(out))
    return pieces


def _trim(piece: np.ndarray) -> np.ndarray:
    """Without its leading and trailing near-silence, so pauses are where we put them."""
    loud = np.flatnonzero(np.abs(piece.astype(np.int32)) > 300)
    return piece[loud[0] : loud[-1] + 1] if loud.size else piece


def utterances(pieces: list[np.ndarray], seconds: float, seed: int = 0) -> Iterator[np.ndarray]:
    """Speech and pauses (0.4-1.2 s of faint noise), in blocks, ``seconds`` long in all."""
    for _index, _whole, block in _script(pieces, seconds, seed):
        yield block


def _script(
    pieces: list[np.ndarray], seconds: float, seed: int
) -> Iterator[tuple[int, bool, np.ndarray]]:
    """``(piece index, whole piece written, block)`` for each block of :func:`utterances`."""
    rng = np.random.default_rng(seed)
    trimmed = [_trim(p) for p in pieces]
    total = int(seconds * RATE)
    written = 0
    while written < total:
        index = int(rng.integers(len(trimmed)))
        piece = trimmed[index]
        pause = int(rng.uniform(0.4, 1.2) * RATE)
        block = np.concatenate([piece, np.zeros(pause, dtype=np.int16)]).astype(np.float32)
        block += rng.normal(0.0, NOISE_STD, block.size).astype(np.float32)
        out = np.clip(block, -32768, 32767).astype(np.int16)[: total - written]
        written += out.size
        yield index, out.size >= piece.size, out


#: What each piece of :func:`speech_pieces` says, in the same order.
PIECE_TEXTS = (
    "one two three",
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country.",
    *SENTENCES,
)


def reference_transcript(seconds: float, *, seed: int = 0) -> str:
    """What a recording of :func:`write_long_recording` says, its pieces in order.

    A piece the end of the recording cuts off is left out (the transcript of half an
    utterance is not known).
    """
    with tempfile.TemporaryDirectory() as tmp:
        pieces = speech_pieces(Path(tmp))
    return " ".join(
        PIECE_TEXTS[index] for index, whole, _ in _script(pieces, seconds, seed) if whole
    )


def write_long_recording(path: Path, seconds: float, *, seed: int = 0) -> Path:
    """Write ``seconds`` of looped speech to ``path`` (format from the suffix), streaming."""
    with tempfile.TemporaryDirectory() as tmp:
        pieces = speech_pieces(Path(tmp))
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as out:
        for block in utterances(pieces, seconds, seed):
            out.write(block)
    return path


if __name__ == "__main__":
    write_long_recording(Path(sys.argv[1]), float(sys.argv[2]))
