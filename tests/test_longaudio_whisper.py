"""Timestamps and long recordings on the Whisper engine: real segment times, chunked WER.

Whisper tiny.en takes about a tenth of real time per core, so the long recording is kept
to 150 s: cut at 60 s, it is three chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._scoring import normalize_text

from ._long_audio import reference_transcript, write_long_recording
from .conftest import SHARED_AUDIO

pytest.importorskip("faster_whisper")

MODEL = "local/whisper-tiny.en"
SECONDS = 150.0
JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def _wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1] / len(ref)


@pytest.fixture(scope="module")
def gateway() -> Iterator[pn.LocalGateway]:
    # One gateway; the 60 s limit is on a second name for the same engine.
    with pn.LocalGateway(
        engine="whisper",
        mode="lenient",
        api_key=None,
        workers=2,
        models={"acme/whisper-60s": "whisper"},
        limits={"acme/whisper-60s": (None, 60.0)},
    ) as gw:
        yield gw


def test_jfk_segment_and_word_times_through_the_accessor_and_the_cache(
    gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    df = pd.DataFrame({"audio": [str(SHARED_AUDIO / "jfk.flac")]})

    def run() -> pd.DataFrame:
        return df.stt.transcribe(
            col="audio",
            model=MODEL,
            client=pn.Client(**gateway.client_kwargs()),
            cache=tmp_path,
            progress=False,
            timestamps="word",
            metadata=True,
        )

    first = run()
    before = gateway.stats().requests
    again = run()
    assert gateway.stats().requests == before and bool(again["text_cached"].iloc[0])
    text = first["text"].iloc[0]
    assert _wer(JFK, text) <= 0.10, text
    segments, words = first["text_segments"].iloc[0], first["text_words"].iloc[0]
    assert segments and words
    for items in (segments, words):
        starts = [item["start"] for item in items]
        assert starts == sorted(starts)
        assert all(0 <= item["start"] <= item["end"] <= 11.0 + 1e-6 for item in items)
    # "country" is said last, near the end of the clip.
    assert normalize_text(words[-1]["word"]) == "country" and words[-1]["end"] > 9.0
    assert again["text_segments"].iloc[0] == segments and again["text_words"].iloc[0] == words


def test_a_long_recording_chunked_scores_within_a_few_points_of_whole(
    gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    audio = write_long_recording(tmp_path / "talk.wav", SECONDS)
    reference = reference_transcript(SECONDS)
    df = pd.DataFrame({"audio": [str(audio)]})
    outs = {}
    for model in (MODEL, "acme/whisper-60s"):
        outs[model] = df.stt.transcribe(
            col="audio",
            model=model,
            client=pn.Client(**gateway.client_kwargs()),
            cache=tmp_path / model.replace("/", "_"),
            progress=False,
            timestamps="segment",
        )
    stats = gateway.stats()
    whole, chunked = outs[MODEL].iloc[0], outs["acme/whisper-60s"].iloc[0]
    assert pd.isna(whole["text_error"]) and pd.isna(chunked["text_error"])
    # The chunked run paid one refusal (the whole file, longer than 60 s), then 3 chunks.
    assert stats.by_status.get(400, 0) == 1
    whole_wer, chunked_wer = _wer(reference, whole["text"]), _wer(reference, chunked["text"])
    assert chunked_wer <= whole_wer + 0.05, (whole_wer, chunked_wer)
    assert chunked_wer <= 0.25
    # Real segment times, shifted: ordered, inside the file, reaching past the last cut.
    segments = chunked["text_segments"]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    assert all(0 <= s["start"] <= s["end"] <= SECONDS + 1e-6 for s in segments)
    assert segments[-1]["end"] > 2 * 60.0 * 0.97
