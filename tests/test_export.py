"""Exports: Label Studio tasks and their round trip through an export, and JSON Lines."""

from __future__ import annotations

import base64
import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._accessor import SttDataFrameAccessor
from phaseo_notebook._engines import fake_transcript

from .conftest import make_wav


def stt(df: pd.DataFrame) -> SttDataFrameAccessor:
    """``df.stt``, typed: the stubs read an unknown attribute as a column."""
    return cast(SttDataFrameAccessor, df.stt)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- Label Studio


def test_tasks_match_the_audio_transcription_template(tmp_path: Path) -> None:
    wav = make_wav(1)
    df = pd.DataFrame(
        {
            "audio": ["https://example.com/a.wav", wav, "https://example.com/c.wav"],
            "text": ["hello there", "good morning", None],
            "speaker": ["ann", np.nan, "bob"],
        },
        index=["a", "b", "c"],
    )
    path = stt(df).to_label_studio(
        tmp_path / "tasks.json", data_cols=["speaker"], model_version="openai/whisper-1"
    )
    tasks = load(path)
    assert tasks[0] == {
        "data": {"audio": "https://example.com/a.wav", "row_key": "a", "speaker": "ann"},
        "predictions": [
            {
                "model_version": "openai/whisper-1",
                "result": [
                    {
                        "from_name": "transcription",
                        "to_name": "audio",
                        "type": "textarea",
                        "value": {"text": ["hello there"]},
                    }
                ],
            }
        ],
    }
    # Bytes travel inside the file, as a data URI of the right type; NaN becomes null.
    audio = tasks[1]["data"]["audio"]
    assert audio.startswith("data:audio/wav;base64,")
    assert base64.b64decode(audio.split(",", 1)[1]) == wav
    assert tasks[1]["data"]["speaker"] is None
    # A failed row is still a task, with nothing predicted.
    assert tasks[2]["predictions"] == []

    # The tasks and the labeling config name the same tags and data key.
    config = ET.fromstring(pn.label_studio_config())
    audio_tag = config.find("Audio")
    textarea = config.find("TextArea")
    assert audio_tag is not None and textarea is not None
    result = tasks[0]["predictions"][0]["result"][0]
    assert textarea.get("name") == result["from_name"]
    assert textarea.get("toName") == audio_tag.get("name") == result["to_name"]
    assert audio_tag.get("value") == "$audio"


def test_local_files_are_linked_or_embedded(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "a.wav"
    inside.write_bytes(make_wav(2))
    outside = tmp_path / "b.wav"
    outside.write_bytes(make_wav(3))
    df = pd.DataFrame({"audio": [str(inside), str(outside)], "text": ["x", "y"]})

    with pytest.warns(UserWarning, match=r"1 task\(s\) point at local files Label Studio cannot"):
        linked = load(
            stt(df).to_label_studio(tmp_path / "t1.json", local_files_root=root, embed_audio=False)
        )
    assert linked[0]["data"]["audio"] == "/data/local-files/?d=sub/a.wav"
    assert linked[1]["data"]["audio"] == str(outside)  # not under the root: as written

    embedded = load(stt(df).to_label_studio(tmp_path / "t2.json", embed_audio=True))
    uri = embedded[1]["data"]["audio"]
    assert base64.b64decode(uri.split(",", 1)[1]) == make_wav(3)


def test_by_default_small_local_files_are_embedded_so_label_studio_plays_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phaseo_notebook import _export

    small = tmp_path / "small.wav"
    small.write_bytes(make_wav(4, seconds=0.5))
    big = tmp_path / "big.wav"
    big.write_bytes(make_wav(5, seconds=1.0))
    # The limit sits between the two files, so the test needs no megabytes of audio.
    monkeypatch.setattr(_export, "EMBED_MAX_BYTES", small.stat().st_size)
    df = pd.DataFrame({"audio": [str(small), str(big)], "text": ["x", "y"]})
    with pytest.warns(UserWarning, match=r"1 task\(s\).*larger than .* bytes.*'.*big\.wav'"):
        tasks = load(stt(df).to_label_studio(tmp_path / "t.json"))
    uri = tasks[0]["data"]["audio"]
    assert uri.startswith("data:audio/wav;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == small.read_bytes()
    assert tasks[1]["data"]["audio"] == str(big)
    # The same larger file under a served root becomes a local-files link, with no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        served = load(stt(df).to_label_studio(tmp_path / "t2.json", local_files_root=tmp_path))
    assert served[1]["data"]["audio"] == "/data/local-files/?d=big.wav"
    assert served[0]["data"]["audio"] == "/data/local-files/?d=small.wav"
    with pytest.raises(ValueError, match="embed_audio"):
        stt(df).to_label_studio(tmp_path / "t3.json", embed_audio="yes")  # type: ignore[arg-type]


def test_label_studio_rejects_bad_arguments(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": ["https://x/a.wav", "https://x/b.wav"], "text": ["a", "b"]})
    with pytest.raises(KeyError, match="text column 'txt'"):
        stt(df).to_label_studio(tmp_path / "t.json", text_col="txt")
    with pytest.raises(ValueError, match="more than once"):
        stt(df.set_axis([0, 0])).to_label_studio(tmp_path / "t.json")
    with pytest.raises(ValueError, match="overwrite"):
        stt(df).to_label_studio(tmp_path / "t.json", data_cols=["audio"])
    with pytest.raises(ValueError, match="not a directory"):
        stt(df).to_label_studio(tmp_path / "t.json", local_files_root=tmp_path / "none")
    with pytest.raises(pn.AudioInputError, match="row 0"):
        stt(pd.DataFrame({"audio": ["/no/such.wav"], "text": ["a"]})).to_label_studio(
            tmp_path / "t.json"
        )
    assert not (tmp_path / "t.json").exists()


def annotate(task: dict[str, Any], task_id: int, *annotations: dict[str, Any]) -> dict[str, Any]:
    """A task as Label Studio exports it (JSON format): ids, annotations, metadata."""
    predictions = [
        {"id": 100 + task_id, "model_version": p["model_version"], "result": p["result"]}
        for p in task["predictions"]
    ]
    return {
        "id": task_id,
        "data": task["data"],
        "annotations": list(annotations),
        "predictions": predictions,
        "file_upload": "tasks.json",
        "drafts": [],
        "meta": {},
        "created_at": "2026-01-05T10:00:00.000000Z",
        "updated_at": "2026-01-05T10:30:00.000000Z",
        "inner_id": task_id,
        "total_annotations": len(annotations),
        "cancelled_annotations": sum(a["was_cancelled"] for a in annotations),
        "project": 3,
    }


def annotation(
    text: str | None,
    *,
    updated: str = "2026-01-05T10:10:00.000000Z",
    cancelled: bool = False,
    truth: bool = False,
    who: int = 1,
) -> dict[str, Any]:
    result = []
    if text is not None:
        result.append(
            {
                "value": {"text": text.split("\n")},
                "id": "aB3dE",
                "from_name": "transcription",
                "to_name": "audio",
                "type": "textarea",
                "origin": "manual",
            }
        )
    return {
        "id": 1000 + who,
        "completed_by": who,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": truth,
        "created_at": updated,
        "updated_at": updated,
        "lead_time": 12.5,
        "result_count": 0,
    }


def test_round_trip_through_a_label_studio_export(tmp_path: Path) -> None:
    clips = [make_wav(i) for i in range(6)]
    df = pd.DataFrame({"audio": clips}, index=[f"clip-{i}" for i in range(6)])
    out = stt(df).transcribe(col="audio", model="local/fake", progress=False)
    texts = [fake_transcript(c) for c in clips]
    assert out["text"].tolist() == texts
    tasks = load(stt(out).to_label_studio(tmp_path / "tasks.json", model_version="local/fake"))

    export = [
        # kept the prediction as it was
        annotate(tasks[0], 1, annotation(texts[0])),
        # corrected; an earlier annotation by someone else is superseded by the later one
        annotate(
            tasks[1],
            2,
            annotation("first try", updated="2026-01-05T10:01:00Z", who=2),
            annotation("the corrected text", updated="2026-01-05T10:20:00Z", who=3),
        ),
        # skipped by the annotator
        annotate(tasks[2], 3, annotation(None, cancelled=True)),
        # never annotated
        annotate(tasks[3], 4),
        # a ground-truth annotation wins over a later one; multi-line text is kept
        annotate(
            tasks[4],
            5,
            annotation("line one\nline two", truth=True, updated="2026-01-05T10:05:00Z"),
            annotation("later", updated="2026-01-05T11:00:00Z", who=4),
        ),
        # tasks[5] is not in the export at all
    ]
    export_path = tmp_path / "project-3-at-2026-01-05.json"
    export_path.write_text(json.dumps(export), encoding="utf-8")

    merged = stt(out).from_label_studio(export_path)
    assert list(merged.index) == list(out.index)
    assert merged["review_status"].tolist() == [
        "accepted",
        "corrected",
        "skipped",
        "none",
        "corrected",
        "none",
    ]
    assert merged["text_reviewed"].tolist() == [
        texts[0],
        "the corrected text",
        None,
        None,
        "line one\nline two",
        None,
    ]
    assert merged["review_annotator"].tolist()[:2] == ["1", "3"]
    assert merged["text"].tolist() == texts  # the model's text is kept beside the review

    table = pn.read_label_studio(export_path)
    assert table["task_id"].tolist() == [1, 2, 3, 4, 5]
    assert table["row_key"].tolist() == [f"clip-{i}" for i in range(5)]
    assert table["predicted"].tolist() == texts[:5]


def test_round_trip_with_a_key_column_and_json_min(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"audio": ["https://x/a.wav", "https://x/b.wav"], "text": ["yes", "no"], "uid": [7, 9]}
    )
    tasks = load(stt(df).to_label_studio(tmp_path / "tasks.json", key_col="uid"))
    assert [t["data"]["row_key"] for t in tasks] == [7, 9]
    # JSON_MIN: one flat object per annotated task, the tag's value under its name.
    export = [
        {"id": 2, "audio": "https://x/b.wav", "row_key": 9, "transcription": "now", "annotator": 5},
        {"id": 1, "audio": "https://x/a.wav", "row_key": 7, "transcription": "yes", "annotator": 5},
        # a task added in Label Studio by hand: no row to go back to
        {"id": 3, "audio": "https://x/c.wav", "transcription": "extra"},
    ]
    merged = stt(df).from_label_studio(export, key_col="uid")
    assert merged["review_status"].tolist() == ["accepted", "corrected"]
    assert merged["text_reviewed"].tolist() == ["yes", "now"]


def test_label_studio_import_rejects_bad_exports(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": ["https://x/a.wav"], "text": ["a"]})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        stt(df).from_label_studio(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="is not JSON"):
        stt(df).from_label_studio(bad)
    bad.write_text("42", encoding="utf-8")
    with pytest.raises(ValueError, match="not a list of tasks"):
        stt(df).from_label_studio(bad)
    other = [{"data": {"row_key": "elsewhere"}, "annotations": []}]
    with pytest.raises(ValueError, match="matches a row"):
        stt(df).from_label_studio(other)
    twice = [{"data": {"row_key": 0}, "annotations": []}] * 2
    with pytest.raises(ValueError, match="two tasks"):
        stt(df).from_label_studio(twice)


# --------------------------------------------------------------------------- JSON Lines


def test_jsonl_values_are_json_safe(tmp_path: Path) -> None:
    wav = make_wav(4)
    df = pd.DataFrame(
        {
            "audio": [wav, "https://x/b.wav"],
            "text": ["hi", None],
            "n": np.array([1, 2], dtype=np.int64),
            "score": [0.5, float("nan")],
            "when": pd.Series([pd.Timestamp("2026-01-05T10:00:00"), pd.NaT]),
            "ok": [True, False],
        }
    )
    path = stt(df).to_jsonl(tmp_path / "rows.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["audio"].startswith("data:audio/wav;base64,")
    assert first["n"] == 1 and first["ok"] is True
    assert first["when"] == "2026-01-05T10:00:00"
    assert second == {
        "audio": "https://x/b.wav",
        "text": None,
        "n": 2,
        "score": None,
        "when": None,
        "ok": False,
    }
    omitted = stt(df).to_jsonl(tmp_path / "o.jsonl", audio_bytes="omit", columns=["text", "audio"])
    assert [json.loads(line) for line in omitted.read_text().splitlines()] == [
        {"text": "hi"},
        {"text": None, "audio": "https://x/b.wav"},
    ]
    indexed = stt(df.set_axis(["r1", "r2"])).to_jsonl(
        tmp_path / "i.jsonl", columns=["text"], index=True
    )
    assert json.loads(indexed.read_text().splitlines()[0]) == {"index": "r1", "text": "hi"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.jsonl", "o.jsonl", "rows.jsonl"]


def test_jsonl_round_trip_is_a_re_transcribable_data_set(tmp_path: Path) -> None:
    clips = [make_wav(10), make_wav(11)]
    df = pd.DataFrame({"audio": clips})
    out = stt(df).transcribe(col="audio", model="local/fake", progress=False)
    path = stt(out).to_jsonl(tmp_path / "train.jsonl")
    back = pd.read_json(path, lines=True)
    assert list(back.columns) == ["audio", "text", "text_error"]
    assert back["text"].tolist() == out["text"].tolist()
    # The data URIs are the same audio: transcribing them again is answered from the cache.
    again = stt(back).transcribe(col="audio", model="local/fake", progress=False, metadata=True)
    assert again["text"].tolist() == out["text"].tolist()
    assert again["text_cached"].all()


def test_jsonl_rejects_bad_arguments(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1], "index": [2]})
    with pytest.raises(ValueError, match="audio_bytes"):
        stt(df).to_jsonl(tmp_path / "x.jsonl", audio_bytes="base64")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="'b' is not a column"):
        stt(df).to_jsonl(tmp_path / "x.jsonl", columns=["b"])
    with pytest.raises(ValueError, match="index=True"):
        stt(df).to_jsonl(tmp_path / "x.jsonl", index=True)
    assert not (tmp_path / "x.jsonl").exists()
