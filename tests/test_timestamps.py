"""Timestamps, prompt and temperature end to end: wire form, parsing, columns, cache, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._audio import normalize_audio
from phaseo_notebook._base_client import build_multipart, granularities_field
from phaseo_notebook._types import TranscriptionResult

from ._verbose_server import verbose_server
from .conftest import make_wav

ROOT = Path(__file__).resolve().parents[1]


def test_wire_form_asks_for_verbose_json_and_granularities() -> None:
    src = normalize_audio(make_wav(1))
    parts = build_multipart(
        src,
        model="m",
        language=None,
        provider=None,
        mode="file",
        data=make_wav(1),
        timestamps="word",
        prompt="Kenobi",
        temperature=0.2,
    )
    fields = {name: value[1] for name, value in parts if name != "file"}
    assert fields["response_format"] == "verbose_json"
    assert json.loads(fields["timestamp_granularities"]) == ["segment", "word"]
    assert fields["prompt"] == "Kenobi" and fields["temperature"] == "0.2"
    assert granularities_field("segment") == "segment"
    # Nothing is asked for when no option is set.
    plain = build_multipart(
        src, model="m", language=None, provider=None, mode="file", data=make_wav(1)
    )
    assert {name for name, _ in plain} == {"model", "file"}


def test_result_keeps_only_well_formed_segments_and_words() -> None:
    body = {
        "text": "hi",
        "segments": [
            {"start": 0, "end": 1.5, "text": " hi", "avg_logprob": -0.1},
            {"start": None, "end": 1, "text": "x"},
            {"start": 1, "end": 2, "text": 5},
            [],
        ],
        "words": [{"start": 0.1, "end": 0.4, "word": "hi"}, {"start": True, "end": 1, "word": "x"}],
    }
    result = TranscriptionResult.from_body(body)
    assert result.segments == [{"start": 0.0, "end": 1.5, "text": " hi"}]
    assert result.words == [{"start": 0.1, "end": 0.4, "word": "hi"}]
    assert result.raw is body
    assert TranscriptionResult.from_body({"text": "x", "segments": "no"}).segments is None


def test_local_gateway_receives_the_options(wav_bytes: bytes, tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [wav_bytes]})
    with pn.LocalGateway(engine="fake", mode="live") as gw:
        out = df.stt.transcribe(
            col="audio",
            model="local/fake",
            client=pn.Client(**gw.client_kwargs()),
            cache=tmp_path / "cache",
            progress=False,
            timestamps="word",
            prompt="A glossary: Kenobi.",
            temperature=0.0,
        )
        fields = gw.stats().recent[-1]["fields"]
    assert out["text_error"].isna().all()
    assert fields["response_format"] == "verbose_json"
    assert json.loads(fields["timestamp_granularities"]) == ["segment", "word"]
    assert fields["prompt"] == "A glossary: Kenobi." and float(fields["temperature"]) == 0.0
    # The fake engine answers one segment over the whole 0.1 s clip, and no words.
    (segments,) = out["text_segments"]
    assert segments == [{"start": 0.0, "end": pytest.approx(0.1), "text": out["text"].iloc[0]}]
    assert out["text_words"].tolist() == [[]]


def test_columns_from_a_verbose_answer_and_again_from_the_cache(
    wav_bytes: bytes, tmp_path: Path
) -> None:
    df = pd.DataFrame({"audio": [wav_bytes, make_wav(2)]})
    cache = tmp_path / "cache"
    with verbose_server() as server:

        def run(**options: object) -> pd.DataFrame:
            client = pn.Client(base_url=server.url, api_key="k")
            return df.stt.transcribe(
                col="audio",
                model="acme/asr",
                client=client,
                cache=cache,
                progress=False,
                **options,  # type: ignore[arg-type]
            )

        first = run(timestamps="word")
        assert len(server.requests) == 2
        again = run(timestamps="word")
        assert len(server.requests) == 2  # every row from the cache
        segments_only = run(timestamps="segment")
        assert len(server.requests) == 4  # another option, another cache key
        prompted = run(timestamps="segment", prompt="p")
        assert len(server.requests) == 6
        plain = run()
        assert len(server.requests) == 8
    expected_segments = [
        {"start": 0.0, "end": 1.25, "text": " Ask not"},
        {"start": 1.25, "end": 2.5, "text": " what your country"},
    ]
    expected_words = [
        {"start": 0.0, "end": 0.5, "word": "Ask"},
        {"start": 0.5, "end": 1.25, "word": "not"},
    ]
    for out in (first, again):
        assert out["text_segments"].tolist() == [expected_segments] * 2
        assert out["text_words"].tolist() == [expected_words] * 2
    assert segments_only["text_segments"].tolist() == [expected_segments] * 2
    assert "text_words" not in segments_only.columns
    assert prompted["text_segments"].tolist() == [expected_segments] * 2
    assert "text_segments" not in plain.columns
    assert server.requests[-1].get("response_format") is None


def test_series_and_async_fronts_take_the_options(wav_bytes: bytes) -> None:
    import asyncio

    with verbose_server() as server:
        client = pn.Client(base_url=server.url, api_key="k")
        frame = pd.Series([wav_bytes], index=[7]).stt.transcribe(
            model="acme/asr",
            client=client,
            cache=False,
            progress=False,
            timestamps="segment",
            temperature=0.5,
        )
        assert isinstance(frame, pd.DataFrame)
        assert list(frame.columns) == ["text", "text_segments"] and list(frame.index) == [7]
        assert server.requests[-1]["temperature"] == ["0.5"]

        async def run() -> pd.DataFrame:
            async with pn.AsyncClient(base_url=server.url, api_key="k") as aclient:
                return await pd.DataFrame({"a": [wav_bytes]}).stt.atranscribe(
                    col="a",
                    model="acme/asr",
                    client=aclient,
                    cache=False,
                    progress=False,
                    timestamps="word",
                    out_col="t",
                )

        out = asyncio.run(run())
    assert len(out["t_words"].iloc[0]) == 2 and len(out["t_segments"].iloc[0]) == 2


def test_cli_timestamps_and_subtitles(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "talk.wav").write_bytes(make_wav(3))
    out_csv, subs = tmp_path / "out.csv", tmp_path / "subs"
    with verbose_server() as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "phaseo_notebook",
                "transcribe",
                str(audio),
                "--model",
                "acme/asr",
                "--timestamps",
                "segment",
                "--subtitles",
                str(subs),
                "--out",
                str(out_csv),
                "--no-progress",
                "--prompt",
                "Talk.",
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            env={
                **__import__("os").environ,
                "PYTHONPATH": str(ROOT),
                "PHASEO_BASE_URL": server.url,
                "PHASEO_API_KEY": "k",
            },
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr
        assert server.requests[-1]["prompt"] == ["Talk."]
    table = pd.read_csv(out_csv)
    assert json.loads(table["text_segments"][0])[1]["text"] == " what your country"
    srt = (subs / "talk.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,250\nAsk not")
    assert "00:00:01,250 --> 00:00:02,500" in srt


def test_cli_subtitles_need_timestamps(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "phaseo_notebook",
            "transcribe",
            str(tmp_path),
            "--subtitles",
            str(tmp_path / "s"),
        ],
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "--timestamps" in proc.stderr


@pytest.mark.parametrize("fmt", ["srt", "vtt", "json"])
def test_accessor_writes_subtitle_files(tmp_path: Path, fmt: str) -> None:
    df = pd.DataFrame(
        {
            "audio": ["a/talk.wav", "b/talk.mp3", "gone.wav"],
            "text": ["hi there", "again", None],
            "text_segments": [
                [{"start": 0.0, "end": 1.0, "text": "hi there"}],
                [{"start": 61.5, "end": 62.0, "text": "again"}],
                None,
            ],
        }
    )
    writer = {"srt": df.stt.to_srt, "vtt": df.stt.to_vtt}.get(fmt)
    if writer is not None:
        paths = writer(tmp_path, audio_col="audio")
    else:
        paths = df.stt.to_subtitles(tmp_path, audio_col="audio", fmt="json")
    assert [p.name for p in paths] == [f"talk.{fmt}", f"talk-2.{fmt}", f"gone.{fmt}"]
    second = paths[1].read_text()
    if fmt == "json":
        assert json.loads(second)["segments"][0]["start"] == 61.5
    else:
        sep = "," if fmt == "srt" else "."
        assert f"00:01:01{sep}500 --> 00:01:02{sep}000" in second
    with pytest.raises(KeyError, match="segments column"):
        df.drop(columns="text_segments").stt.to_srt(tmp_path, audio_col="audio")
