"""The notebook cells, driven through their traits and callbacks (no browser).

Uploads use the ipywidgets 8 ``FileUpload.value`` format (a tuple of dicts whose ``content``
is a memoryview); clicks go through ``Button.click()``; keyboard shortcuts arrive as the
custom messages the page sends.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._batch import transcribe_many_sync
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook.widgets._store import DecisionLog

from .conftest import make_wav

WAIT = 60.0


def upload_value(files: dict[str, bytes]) -> tuple[dict[str, Any], ...]:
    """What ipywidgets 8 puts in ``FileUpload.value`` after the reader picks files."""
    return tuple(
        {
            "name": name,
            "type": "audio/wav",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime(2024, 5, 1, tzinfo=UTC),
        }
        for name, content in files.items()
    )


def run_upload(w: pn.widgets.UploadWidget, files: dict[str, bytes]) -> pd.DataFrame:
    w.file_upload.value = upload_value(files)
    w.transcribe_button.click()
    assert w.wait(WAIT), "the transcription run did not finish"
    df: pd.DataFrame = w.df
    return df


def all_states(widget: Any) -> list[dict[str, Any]]:
    """The synced state of a widget and of every widget it contains."""
    states, todo, seen = [], [widget], set()
    while todo:
        w = todo.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        states.append(w.get_state())
        for name in w.keys:
            value = getattr(w, name)
            values = value if isinstance(value, tuple | list) else [value]
            todo.extend(v for v in values if isinstance(v, widgets.Widget))
    return states


# --------------------------------------------------------------------------- upload


def test_upload_transcribes_files_and_reupload_is_a_cache_hit(
    fake_gateway: pn.LocalGateway, tmp_path: Path
) -> None:
    files = {"a.wav": make_wav(11), "b.wav": make_wav(12, seconds=0.2)}
    with pn.Client(**fake_gateway.client_kwargs()) as client:
        w = pn.widgets.upload(model="local/fake", client=client, cache=tmp_path / "cache")
        first = run_upload(w, files)
        assert fake_gateway.stats().requests == 2
        second = run_upload(w, dict(files))

    assert first["name"].tolist() == ["a.wav", "b.wav"]
    assert first["size"].tolist() == [len(files["a.wav"]), len(files["b.wav"])]
    assert first["text"].tolist() == [fake_transcript(b) for b in files.values()]
    assert first["error"].isna().all()
    assert first["duration"].round(2).tolist() == [0.1, 0.2]
    assert first["audio"].tolist() == list(files.values())
    assert not first["cached"].any()
    # The same files again: answered from the cache, nothing more sent.
    assert second["cached"].all()
    assert second["text"].tolist() == first["text"].tolist()
    assert fake_gateway.stats().requests == 2
    assert "2 from the cache" in w.status.value
    assert (w.progress.value, w.progress.max, w.progress.bar_style) == (2, 2, "success")


def test_upload_results_table_has_a_player_and_the_transcript_per_file(tmp_path: Path) -> None:
    wav = make_wav(21)
    w = pn.widgets.upload(model="local/fake", cache=tmp_path / "cache")
    run_upload(w, {"clip <1>.wav": wav})
    header, row = w.results.children[:3], w.results.children[3:]
    assert [h.value for h in header] == ["<b>file</b>", "<b>audio</b>", "<b>transcript</b>"]
    name, player, text = row
    assert "clip &lt;1&gt;.wav" in name.value  # file names are escaped, not rendered as HTML
    assert isinstance(player, widgets.Audio)
    assert (bytes(player.value), player.format, player.autoplay) == (wav, "wav", False)
    assert fake_transcript(wav) in text.value


def test_upload_uses_the_embedded_engine_without_key_or_client(tmp_path: Path) -> None:
    w = pn.widgets.upload(cache=tmp_path / "cache")
    assert w.model_picker.value == "local/whisper-tiny.en"
    w.model_picker.value = "local/fake"
    wav = make_wav(31)
    df = run_upload(w, {"x.wav": wav})
    assert df["text"].tolist() == [fake_transcript(wav)]
    assert w.error is None


def test_upload_shows_per_file_errors_beside_the_good_rows(tmp_path: Path) -> None:
    wav = make_wav(41)
    w = pn.widgets.upload(model="local/fake", cache=False)
    df = run_upload(w, {"notes.wav": b"name,value\n1,2\n", "ok.wav": wav})
    assert df["text"].tolist()[1] == fake_transcript(wav)
    assert df["text"].isna().tolist() == [True, False]
    assert "AudioInputError" in df["error"][0] and "not audio" in df["error"][0]
    bad_text = w.results.children[5]
    assert "not audio" in bad_text.value and "error" in bad_text.value
    assert "1 failed" in w.status.value
    assert w.progress.bar_style == "warning"


def test_upload_run_that_fails_as_a_whole_is_shown_and_the_button_comes_back(
    tmp_path: Path,
) -> None:
    w = pn.widgets.upload(model="openai/whisper-1", cache=False)  # no key, no gateway
    df = run_upload(w, {"a.wav": make_wav(51)})
    assert isinstance(w.error, pn.ConfigurationError)
    assert "ConfigurationError" in w.status.value and "PHASEO_API_KEY" in w.status.value
    assert w.transcribe_button.disabled is False
    assert len(df) == 0


def test_upload_without_files_starts_nothing() -> None:
    w = pn.widgets.upload(model="local/fake", cache=False)
    w.transcribe_button.click()
    assert not w.running and w._run_handle is None
    assert "Choose audio files first" in w.status.value


def test_upload_progress_bar_follows_the_engine(tmp_path: Path) -> None:
    w = pn.widgets.upload(model="local/fake", cache=False)
    seen: list[int] = []
    w.progress.observe(lambda change: seen.append(change["new"]), names="value")
    run_upload(w, {f"{i}.wav": make_wav(60 + i) for i in range(4)})
    assert seen[-1] == 4 and seen == sorted(seen) and len(set(seen)) >= 2
    assert w.progress.description == "4/4"


def test_engine_reports_progress_per_row() -> None:
    calls: list[tuple[int, int]] = []
    inputs = [make_wav(70), make_wav(71), None]
    res = transcribe_many_sync(
        inputs,
        model="local/fake",
        cache=False,
        progress=False,
        on_progress=lambda d, t: calls.append((d, t)),
    )
    assert res.errors == 1
    assert calls[0] == (1, 3)  # the invalid row is counted before anything is sent
    assert calls[-1] == (3, 3)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


#: A limit the local gateway enforces (and teaches by refusing the whole file): a minute of
#: audio then goes as about seven chunks, enough to see progress move between them.
CHUNK_LIMITS = {"local/fake": (None, 10.0)}


def test_upload_progress_moves_per_chunk_of_a_long_file(tmp_path: Path) -> None:
    files = {"meeting.wav": make_wav(5, seconds=60.0), "short.wav": make_wav(6)}
    with (
        pn.LocalGateway(engine="fake", mode="lenient", limits=CHUNK_LIMITS) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        w = pn.widgets.upload(model="local/fake", client=client, cache=tmp_path / "c")
        bars: list[tuple[int, int]] = []
        statuses: list[str] = []
        w.progress.observe(lambda c: bars.append((c["new"], w.progress.max)), names="value")
        w.status.observe(lambda c: statuses.append(c["new"]), names="value")
        df = run_upload(w, files)
    assert df["error"].isna().all() and w.last_result is not None
    chunks = w.last_result.extra["chunks_sent"]
    assert chunks >= 5
    # One step per answered chunk and one for the short file, never past the total, which
    # grew from 2 files to the chunks and the short file once the long file was planned.
    during = bars[:-1]
    assert [value for value, _ in during] == list(range(1, chunks + 2))
    assert all(value <= total for value, total in during)
    assert max(total for _, total in during) == chunks + 1
    assert any(f"2 files in {chunks + 1} parts" in s for s in statuses)
    # The run over, the bar counts files again.
    assert (w.progress.value, w.progress.max, w.progress.description) == (2, 2, "2/2")


@pytest.mark.parametrize("estimate", [None, 2, 40], ids=["planned", "too-few", "too-many"])
def test_engine_progress_counts_chunks_whatever_their_expected_number(
    estimate: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The total starts from the chunks a file's length suggests, grows when the producer
    # makes more, and becomes exact when its plan ends.
    if estimate is not None:
        monkeypatch.setattr("phaseo_notebook._longaudio.chunk_requests", lambda *_: estimate)
    calls: list[tuple[int, int]] = []
    with (
        pn.LocalGateway(engine="fake", mode="lenient", limits=CHUNK_LIMITS) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        res = transcribe_many_sync(
            [make_wav(7, seconds=40.0), make_wav(8)],
            model="local/fake",
            client=client,
            cache=False,
            progress=False,
            on_progress=lambda d, t: calls.append((d, t)),
        )
    chunks = res.extra["chunks_sent"]
    assert res.errors == 0 and chunks >= 4
    assert calls[0] == (0, 2) and calls[-1] == (chunks + 1, chunks + 1)
    assert all(done <= total for done, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and set(done) == set(range(chunks + 2))


def test_upload_cancel_mid_long_file_then_transcribe_sends_only_the_chunks_missing(
    tmp_path: Path,
) -> None:
    wav = make_wav(9, seconds=60.0)
    # Seeded: some requests answer at once, others only after 10 s, so a cancel lands with
    # part of the file answered.
    faults = pn.Faults(slow_rate=0.5, slow_seconds=10.0, seed=0)
    with (
        pn.LocalGateway(engine="fake", mode="lenient", limits=CHUNK_LIMITS, faults=faults) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        w = pn.widgets.upload(model="local/fake", client=client, cache=tmp_path / "c")
        w.file_upload.value = upload_value({"meeting.wav": wav})
        assert w.transcribe()
        deadline = time.monotonic() + WAIT
        while w.progress.value < 2:  # chunks answered move the bar before the file is done
            assert w.running and time.monotonic() < deadline
            time.sleep(0.02)
        assert w.cancel() and w.wait(WAIT) and w.cancelled
        answered = w.progress.value
        cut, shown = w.df, w.results.children[5].value
        gw.set_faults(None)
        totals: list[int] = []
        w.progress.observe(lambda c: totals.append(c["new"]), names="max")
        again = run_upload(w, {"meeting.wav": wav})
        assert w.last_result is not None
        resent = w.last_result.requests
    assert cut["text"].isna().all()
    assert cut["error"][0].startswith("CancelledError: ")
    assert "meeting.wav: not transcribed" in shown
    chunks = max(totals)  # the exact count, once the rerun's plan ended
    assert 2 <= answered < chunks
    assert resent == chunks - answered  # the answered chunks came from the cache
    assert again["error"].isna().all() and again["text"][0]


def test_widget_state_never_holds_the_api_key(tmp_path: Path) -> None:
    with (
        pn.LocalGateway(engine="fake", api_key="sk-widget-secret-123") as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        w = pn.widgets.upload(model="local/fake", client=client, cache=False)
        df = run_upload(w, {"a.wav": make_wav(81)})
    assert df["error"].isna().all()
    blob = json.dumps(all_states(w), default=lambda v: repr(bytes(v)[:16]))
    assert "sk-widget-secret-123" not in blob
    assert "sk-widget-secret-123" not in repr(w)


def test_upload_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="client must be"):
        pn.widgets.upload(client="http://example.com")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model must be"):
        pn.widgets.upload(model="  ")
    with pytest.raises(TypeError, match="cache must be"):
        pn.widgets.upload(cache=3)  # type: ignore[arg-type]


def test_widget_reprs_are_short_and_never_show_audio() -> None:
    w = pn.widgets.upload(model="local/fake", cache=False)
    w.file_upload.value = upload_value({"a.wav": make_wav(90, seconds=1.0)})
    assert repr(w) == "UploadWidget(model='local/fake', chosen=1, rows=0, running=False)"
    rv = pn.widgets.review(
        pd.DataFrame({"audio": [make_wav(91)], "text": ["x"]}), audio_col="audio"
    )
    assert repr(rv) == "ReviewWidget(rows=1, position=0, reviewed=0)"


# --------------------------------------------------------------------------- review


@pytest.fixture
def frame() -> pd.DataFrame:
    """Four rows on a non-default index; row "c" failed transcription."""
    return pd.DataFrame(
        {
            "audio": [make_wav(100 + i) for i in range(4)],
            "text": ["alpha", "bravo", None, "delta"],
            "text_error": [None, None, "APIStatusError: boom", None],
        },
        index=["a", "b", "c", "d"],
    )


def test_review_decisions_fill_reviewed_text_and_status(frame: pd.DataFrame) -> None:
    rv = pn.widgets.review(frame, audio_col="audio")
    assert (rv.position, rv.editor.value) == (0, "alpha")
    assert bytes(rv.player.value) == frame["audio"].iloc[0]
    rv.accept_button.click()  # unchanged -> accepted
    assert (rv.position, rv.editor.value) == (1, "bravo")
    rv.editor.value = "bravo two"
    rv.accept_button.click()  # edited -> corrected
    rv.reject_button.click()
    rv.skip_button.click()
    out = rv.df
    assert out["review_status"].tolist() == ["accepted", "corrected", "rejected", "skipped"]
    assert out["text_reviewed"].tolist() == ["alpha", "bravo two", None, None]
    assert out.index.tolist() == ["a", "b", "c", "d"]
    assert out["text"].tolist() == frame["text"].tolist()  # the input is left alone
    assert "review_status" not in frame.columns
    # A skipped row is seen, not decided: it does not count, and the review is not complete.
    assert (rv.progress.value, rv.progress.description) == (3, "3/4")
    assert rv.reviewed == 3 and rv.skipped == 1 and not rv.complete
    assert "3 of 4 decided, 1 skipped" in rv.counter.value
    assert "All 4 rows decided" not in rv.counter.value
    rv.position = 3
    rv.accept_button.click()
    assert rv.complete and (rv.progress.value, rv.progress.bar_style) == (4, "success")
    assert "All 4 rows decided" in rv.counter.value


def test_review_navigation_and_shortcut_messages(frame: pd.DataFrame) -> None:
    rv = pn.widgets.review(frame, audio_col="audio")
    send = rv.shortcuts._handle_custom_msg
    send({"action": "next", "text": "ignored"}, [])
    send({"action": "next", "text": None}, [])
    assert rv.position == 2
    send({"action": "previous", "text": None}, [])
    assert rv.position == 1
    # Accept carries the text box content as the page saw it at the key press.
    send({"action": "accept", "text": "bravo fixed"}, [])
    send({"action": "delete-everything"}, [])  # unknown actions are ignored
    send("accept", [])  # so are malformed messages
    assert rv.df["review_status"].tolist() == ["none", "corrected", "none", "none"]
    assert rv.df["text_reviewed"]["b"] == "bravo fixed"
    assert rv.shortcuts.bindings == {
        "KeyA": "accept",
        "KeyR": "reject",
        "KeyS": "skip",
        "KeyP": "previous",
        "KeyN": "next",
    }
    assert rv.accept_button.tooltip == "Accept (Alt+A)"
    assert rv._scope in rv._dom_classes and rv.shortcuts.scope == rv._scope


def test_review_filters_only_errors_and_only_unreviewed(frame: pd.DataFrame) -> None:
    rv = pn.widgets.review(frame, audio_col="audio")
    rv.only_errors.value = True
    assert rv.visible() == [2] and rv.position == 2
    assert "boom" in rv.source.value and rv.editor.value == ""
    rv.only_errors.value = False
    rv.position = 0
    rv.accept_button.click()
    rv.only_unreviewed.value = True
    assert rv.visible() == [1, 2, 3]
    rv.position = 3
    rv.skip_button.click()  # nothing unreviewed after row 3: wraps to the first one left
    assert rv.position == 1
    rv.only_errors.value = True
    assert rv.position == 2
    rv.reject_button.click()
    assert rv.visible() == []
    assert rv.accept_button.disabled and "No row to show" in rv.counter.value
    # A decision with nothing shown is refused, not applied to a hidden row.
    with pytest.raises(ValueError, match="no row passes the filters"):
        rv.accept()
    rv.shortcuts._handle_custom_msg({"action": "accept", "text": "x"}, [])
    assert "no row passes the filters" in rv.status.value
    assert rv.df["review_status"].tolist() == ["accepted", "none", "rejected", "skipped"]


def test_review_filters_on_the_needs_review_flag(frame: pd.DataFrame) -> None:
    plain = pn.widgets.review(frame, audio_col="audio")
    assert plain.flag_col is None and plain.only_flagged.layout.display == "none"
    flagged = frame.assign(needs_review=pd.array([False, True, pd.NA, True], dtype="boolean"))
    rv = pn.widgets.review(flagged, audio_col="audio")
    assert rv.flag_col == "needs_review" and rv.only_flagged.layout.display is None
    rv.only_flagged.value = True
    assert rv.visible() == [1, 3] and rv.position == 1
    assert "needs review" in rv.counter.value
    rv.accept_button.click()
    rv.only_unreviewed.value = True
    assert rv.visible() == [3]
    with pytest.raises(KeyError, match="flag_col 'nope'"):
        pn.widgets.review(frame, audio_col="audio", flag_col="nope")


def test_review_saves_each_decision_at_once_and_resumes(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    save_to = tmp_path / "reviews.parquet"
    rv = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    rv.accept_button.click()
    assert pd.read_parquet(save_to)["review_status"].tolist() == ["accepted"]
    rv.editor.value = "bravo two"
    rv.accept_button.click()
    saved = pd.read_parquet(save_to).sort_values("seq")
    sha = [hashlib.sha256(b).hexdigest() for b in frame["audio"]]
    assert saved[["row_key", "review_status", "text", "original"]].values.tolist() == [
        [f"audio:{sha[0]}", "accepted", "alpha", "alpha"],
        [f"audio:{sha[1]}", "corrected", "bravo two", "bravo"],
    ]

    # A new session, the rows in another order under a fresh 0..n-1 index (as a re-upload
    # gives): each decision lands on its own recording.
    shuffled = frame.iloc[[3, 1, 0, 2]].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the log fits this frame: no warning
        again = pn.widgets.review(shuffled, audio_col="audio", save_to=save_to)
    assert again.df["review_status"].tolist() == ["none", "corrected", "accepted", "none"]
    assert again.df["text_reviewed"].tolist() == [None, "bravo two", "alpha", None]
    # It resumes at the first undecided row after the last decision: "b" is at position 1
    # here, so "c" at position 3 (position 2 is done).
    assert again.position == 3 and again.editor.value == ""
    again.position = 1
    assert again.editor.value == "bravo two"  # the reviewed text, not the model's
    again.reject()

    third = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    assert third.df["review_status"].tolist() == ["accepted", "rejected", "none", "none"]
    assert third.position == 2
    assert len(pd.read_parquet(save_to)) == 3  # a log: earlier decisions are kept


def test_review_resume_after_reordered_reupload_of_the_same_files(tmp_path: Path) -> None:
    # The upload cell's frame: bytes, names, a fresh index each time.
    clips = {"english.wav": make_wav(301), "jfk.flac": make_wav(302), "notes.wav": make_wav(303)}
    texts = {"english.wav": "one two three", "jfk.flac": "ask not", "notes.wav": "notes"}

    def uploaded(order: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {"name": order, "audio": [clips[n] for n in order], "text": [texts[n] for n in order]}
        )

    save_to = tmp_path / "reviews"
    rv = pn.widgets.review(uploaded(list(clips)), audio_col="audio", save_to=save_to)
    rv.position = 1
    rv.accept("and so my fellow americans ask not")
    rv.position = 0
    rv.accept()
    again = pn.widgets.review(
        uploaded(["notes.wav", "jfk.flac", "english.wav"]), audio_col="audio", save_to=save_to
    )
    final = again.df.set_index("name")
    assert final.loc["jfk.flac", "text_reviewed"] == "and so my fellow americans ask not"
    assert final.loc["english.wav", "text_reviewed"] == "one two three"
    assert final.loc["notes.wav", "review_status"] == "none"
    # Matching by index label puts decisions on whatever row now has that label: only on
    # request, and with a warning when the model transcripts differ from those reviewed.
    old = pn.widgets.review(
        uploaded(list(clips)), audio_col="audio", save_to=tmp_path / "old", match_on="index"
    )
    old.accept()
    with pytest.warns(UserWarning, match="different model transcript"):
        pn.widgets.review(
            uploaded(["notes.wav", "jfk.flac", "english.wav"]),
            audio_col="audio",
            save_to=tmp_path / "old",
            match_on="index",
        )


def test_review_warns_when_the_saved_log_does_not_fit_the_frame(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    save_to = tmp_path / "log"
    rv = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    rv.accept()
    rv.accept()
    other = frame.assign(audio=[make_wav(400 + i) for i in range(4)])
    with pytest.warns(
        UserWarning, match=r"2 of 2 saved review decision\(s\) .* match no row"
    ) as caught:
        rv2 = pn.widgets.review(other, audio_col="audio", save_to=save_to)
    assert caught[0].filename == __file__  # points at the caller's line
    assert rv2.reviewed == 0 and "match no row" in rv2.status.value
    # A log saved by index label names the way to read it.
    by_index = tmp_path / "by-index"
    pn.widgets.review(frame, audio_col="audio", save_to=by_index, match_on="index").accept()
    with pytest.warns(UserWarning, match="match_on='index'"):
        pn.widgets.review(frame, audio_col="audio", save_to=by_index)
    with pytest.raises(ValueError, match="match_on must be"):
        pn.widgets.review(frame, audio_col="audio", match_on="name")  # type: ignore[arg-type]


def test_review_resume_lands_after_the_last_decision(frame: pd.DataFrame, tmp_path: Path) -> None:
    save_to = tmp_path / "log"
    rv = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    rv.position = 2
    rv.skip()
    resumed = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    assert resumed.position == 3
    resumed.accept()  # the last unreviewed rows are now before the last decision: wrap
    assert pn.widgets.review(frame, audio_col="audio", save_to=save_to).position == 0


def test_review_log_merges_many_parts_when_opened(frame: pd.DataFrame, tmp_path: Path) -> None:
    save_to = tmp_path / "log"
    rv = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    for i in range(70):
        rv.position = i % 4
        rv.accept(f"take {i}")
    assert len(list(save_to.glob("part-*.parquet"))) == 70
    reopened = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    assert len(list(save_to.glob("part-*.parquet"))) == 1
    assert reopened.df["text_reviewed"].tolist() == ["take 68", "take 69", "take 66", "take 67"]
    assert len(pd.read_parquet(save_to)) == 70


def test_review_write_failure_is_shown_and_not_recorded(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    rv = pn.widgets.review(frame, audio_col="audio", save_to=blocker / "log")
    rv.accept_button.click()
    assert "Not done" in rv.status.value
    assert rv.df["review_status"].tolist() == ["none"] * 4 and rv.position == 0


def test_review_plays_paths_and_says_when_it_cannot(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(make_wav(120))
    df = pd.DataFrame({"audio": [str(clip), str(tmp_path / "gone.wav")], "text": ["x", "y"]})
    rv = pn.widgets.review(df, audio_col="audio")
    assert bytes(rv.player.value) == clip.read_bytes() and rv.player.layout.display is None
    assert "clip.wav" in rv.source.value
    rv.next()
    assert rv.player.layout.display == "none"
    assert "cannot play" in rv.source.value and "does not exist" in rv.source.value


def test_review_follows_the_upload_cell(tmp_path: Path) -> None:
    up = pn.widgets.upload(model="local/fake", cache=False)
    wav = make_wav(130)
    run_upload(up, {"take1.wav": wav})
    rv = pn.widgets.review(up.df, audio_col="audio")
    assert "take1.wav" in rv.source.value  # the "name" column labels the row
    assert rv.editor.value == fake_transcript(wav) and bytes(rv.player.value) == wav


def test_review_rejects_bad_arguments(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="audio_col 'clip' is not a column"):
        pn.widgets.review(frame, audio_col="clip")
    with pytest.raises(KeyError, match="text_col 'transcript' is not a column"):
        pn.widgets.review(frame, audio_col="audio", text_col="transcript")
    with pytest.raises(TypeError, match="needs a pandas DataFrame"):
        pn.widgets.review(frame["audio"], audio_col="audio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique index"):
        pn.widgets.review(
            pd.concat([frame, frame]), audio_col="audio", save_to=tmp_path / "x", match_on="index"
        )
    a_file = tmp_path / "reviews.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(a_file)
    with pytest.raises(ValueError, match="is an existing file"):
        pn.widgets.review(frame, audio_col="audio", save_to=a_file)
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(other / "part-0.parquet")
    with pytest.raises(ValueError, match="not a review decision part"):
        DecisionLog(other)
    with pytest.raises(ValueError, match=r"position must be in 0\.\.3"):
        pn.widgets.review(frame, audio_col="audio").position = 4


def test_review_without_anywidget_names_the_extra(
    frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phaseo_notebook.widgets import _shortcuts

    monkeypatch.setitem(sys.modules, "anywidget", None)  # as if it were not installed
    _shortcuts._shortcuts_class.cache_clear()
    try:
        with pytest.raises(pn.MissingExtraError, match=r"pip install 'phaseo-notebook\[widgets\]'"):
            pn.widgets.review(frame, audio_col="audio")
    finally:
        _shortcuts._shortcuts_class.cache_clear()


def test_widgets_public_names() -> None:
    # The linter's order: CONSTANTS, then Classes, then functions, each alphabetical.
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert pn.widgets.__all__ == sorted(pn.widgets.__all__, key=kind)
    assert pn.widgets.upload is pn.widgets._upload.upload
    assert pn.widgets.review is pn.widgets._review.review


# --------------------------------------------------------------------------- issue 15: review


def test_review_keeps_an_undecided_edit_as_a_draft_until_the_row_is_decided(
    frame: pd.DataFrame,
) -> None:
    rv = pn.widgets.review(frame, audio_col="audio")
    # The changes line is there before any edit, so the buttons below it do not move.
    assert "Changes:" in rv.diff.value and ">none<" in rv.diff.value
    send = rv.shortcuts._handle_custom_msg
    # Typed " four", then Alt+N and Alt+P: the page sends its text with each shortcut.
    send({"action": "next", "text": "alpha four"}, [])
    assert rv.position == 1 and rv.editor.value == "bravo"
    send({"action": "previous", "text": "bravo"}, [])
    assert rv.position == 0 and rv.editor.value == "alpha four"
    assert rv.drafts == {0: "alpha four"} and "edited, not saved" in rv.source.value
    assert "<ins>four</ins>" in rv.diff.value and "alpha" in rv.original.value
    assert rv.df["review_status"].tolist() == ["none"] * 4  # a draft is not a decision
    # Edits through the text box itself (buttons, not shortcuts) are kept the same way.
    rv.next()
    rv.editor.value = "bravo two"
    rv.previous()
    rv.next()
    assert rv.editor.value == "bravo two"
    # Deciding uses the draft and drops it; going back shows the decision.
    rv.previous()
    rv.accept()
    assert rv.df["text_reviewed"].tolist()[0] == "alpha four" and 0 not in rv.drafts
    # Reverting an edit by hand leaves no draft behind.
    rv.position = 1
    rv.editor.value = "bravo"
    rv.next()
    assert rv.drafts == {}


def test_review_drops_keystrokes_that_arrive_after_the_row_changed(frame: pd.DataFrame) -> None:
    # Under load the page's last keystrokes on a row can reach the kernel after the shortcut
    # that moved on: they must not land on the next row (as text, draft or decision).
    rv = pn.widgets.review(frame, audio_col="audio")
    typed_on_first = rv.editor.shown["context"]
    edit = rv.editor._handle_custom_msg
    edit({"edit": "alpha fo", "context": typed_on_first}, [])
    assert rv.editor.value == "alpha fo" and "<ins>fo</ins>" in rv.diff.value
    rv.shortcuts._handle_custom_msg(
        {"action": "accept", "text": "alpha four", "context": rv.shortcuts.context}, []
    )
    assert rv.position == 1 and rv.editor.shown["text"] == "bravo"
    edit({"edit": "alpha four", "context": typed_on_first}, [])  # the late keystroke
    assert rv.editor.value == "bravo" and rv.editor.shown["text"] == "bravo"
    rv.skip()
    assert rv.drafts == {} and rv.df["text_reviewed"].tolist()[0] == "alpha four"
    # An edit typed on the row shown is taken, and is not pushed back to the page.
    rv.position = 1
    shown = dict(rv.editor.shown)
    edit({"edit": "bravo two", "context": shown["context"]}, [])
    assert rv.editor.value == "bravo two" and rv.editor.shown == shown
    # Text set from code is shown on the page.
    rv.editor.value = "bravo three"
    assert rv.editor.shown == {"text": "bravo three", "context": shown["context"]}


def test_review_refuses_a_key_pressed_before_the_page_showed_the_row(
    frame: pd.DataFrame,
) -> None:
    rv = pn.widgets.review(frame, audio_col="audio")
    send = rv.shortcuts._handle_custom_msg
    shown = rv.shortcuts.context
    send({"action": "accept", "text": "alpha", "context": shown}, [])
    assert rv.position == 1 and rv.shortcuts.context != shown
    # Alt+A again at once: the page still had row "a"'s text in the box when it was pressed.
    send({"action": "accept", "text": "alpha", "context": shown}, [])
    assert rv.df["review_status"].tolist() == ["accepted", "none", "none", "none"]
    assert "the row changed" in rv.status.value and "Alt+A" in rv.status.value
    send({"action": "next", "text": "alpha", "context": shown}, [])  # no bogus draft either
    assert rv.position == 1 and rv.drafts == {}
    send({"action": "accept", "text": "bravo", "context": rv.shortcuts.context}, [])
    assert rv.df["review_status"].tolist()[:2] == ["accepted", "accepted"]


def test_review_refuses_to_accept_a_failed_row_without_a_transcript(frame: pd.DataFrame) -> None:
    rv = pn.widgets.review(frame, audio_col="audio")
    rv.position = 2  # "c" failed: no transcript
    assert rv.editor.value == "" and "(no transcript)" in rv.original.value
    rv.accept_button.click()
    assert "no transcript" in rv.status.value and "Not done" in rv.status.value
    rv.shortcuts._handle_custom_msg({"action": "accept", "text": "   "}, [])
    assert rv.df["review_status"].tolist()[2] == "none" and rv.position == 2
    with pytest.raises(ValueError, match="type what is said"):
        rv.accept("")
    rv.accept("charlie")  # a typed transcript is a correction
    assert rv.df.loc["c", ["text_reviewed", "review_status"]].tolist() == [
        "charlie",
        "corrected",
    ]
    rv.position = 2
    rv.reject()  # rejecting a failed row needs no text
    assert rv.df.loc["c", "review_status"] == "rejected"


def test_read_reviews_gives_one_row_per_item_last_decision_wins(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    save_to = tmp_path / "reviews.parquet"
    rv = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    rv.skip()  # a
    rv.position = 0
    rv.accept()  # a again
    rv.accept("bravo two")  # b
    assert save_to.is_dir()  # documented: the log is a directory, whatever its name
    assert len(pd.read_parquet(save_to)) == 3  # the history: "a" twice
    final = pn.widgets.read_reviews(save_to)
    assert final[["review_status", "text", "original"]].values.tolist() == [
        ["accepted", "alpha", "alpha"],
        ["corrected", "bravo two", "bravo"],
    ]
    assert list(final.columns) == [
        "row_key",
        "position",
        "review_status",
        "text",
        "original",
        "audio",
        "decided_at",
        "seq",
    ]
    # The final state on disk is the final state in memory.
    decided = rv.df[rv.df["review_status"] != "none"]
    assert decided["review_status"].tolist() == final["review_status"].tolist()
    with pytest.raises(FileNotFoundError, match="no review log"):
        pn.widgets.read_reviews(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(pn.widgets.read_reviews(empty)) == 0


def test_review_shows_one_error_line_and_a_badge(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "name": ["notes.txt"],
            "audio": [b"name,value\n1,2\n"],
            "text": [None],
            "error": ["AudioInputError: audio input <15 bytes>: content is not audio"],
        }
    )
    rv = pn.widgets.review(df, audio_col="audio")
    shown = re.sub(r' title="[^"]*"', "", rv.source.value)  # the text, not the tooltip
    assert shown.count("content is not audio") == 1  # not once as error, once as playback
    assert "notes.txt: content is not audio (cannot play)" in shown
    assert "&lt;15 bytes&gt;" not in shown and "AudioInputError" not in shown
    assert "phaseo-badge-none" in shown and "to review" in shown
    assert rv.player.layout.display == "none"


def test_review_plays_aiff_converted_to_wav(shared_audio: Path) -> None:
    aiff = (shared_audio / "french.aiff").read_bytes()
    rv = pn.widgets.review(pd.DataFrame({"audio": [aiff], "text": ["x"]}), audio_col="audio")
    assert rv.player.format == "wav" and bytes(rv.player.value)[:4] == b"RIFF"
    assert rv.player.layout.display is None


# --------------------------------------------------------------------------- issue 15: upload


def test_upload_model_list_offers_real_models_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHASEO_API_KEY", raising=False)
    monkeypatch.delenv("PHASEO_BASE_URL", raising=False)
    w = pn.widgets.upload(cache=False)
    assert "local/fake" not in w.model_picker.options
    assert {"local/pocketsphinx", "local/whisper-tiny.en"} <= set(w.model_picker.options)
    # With a gateway configured, its catalog (GET /models) joins the offline engines.
    with pn.LocalGateway(engine="fake", models=["openai/whisper-1"]) as gw:
        with pn.Client(**gw.client_kwargs()) as client:
            up = pn.widgets.upload(model="openai/whisper-1", client=client, cache=False)
            deadline = time.monotonic() + WAIT
            while "openai/whisper-1" not in up.model_picker.options:
                assert time.monotonic() < deadline, "the gateway's catalog never arrived"
                time.sleep(0.05)
    assert "local/fake" not in up.model_picker.options  # the gateway serves it; not offered
    assert up.model_picker.options[:2] == ("local/whisper-tiny.en", "local/pocketsphinx")


def test_upload_language_box_is_validated_and_follows_the_model(tmp_path: Path) -> None:
    w = pn.widgets.upload(model="openai/whisper-1", cache=False)
    assert "fr" in w.language_picker.options
    w.file_upload.value = upload_value({"a.wav": make_wav(501)})
    w.language_picker.value = "openai/whisper-1"
    assert w.transcribe() is False and not w.running and w._run_handle is None
    assert "is not a language code" in w.status.value
    w.model_picker.value = "local/pocketsphinx"
    assert w.language_picker.options == ("en",)
    w.language_picker.value = "fr"
    w.transcribe_button.click()
    assert w._run_handle is None and "English only" in w.status.value
    w.model_picker.value = "local/fake"
    w.language_picker.value = "pt-BR"
    w.transcribe_button.click()
    assert w.wait(WAIT) and w.df["error"].isna().all()


def test_upload_shows_the_offline_notice_in_the_cell(
    monkeypatch: pytest.MonkeyPatch, fake_gateway: pn.LocalGateway
) -> None:
    monkeypatch.delenv("PHASEO_API_KEY", raising=False)
    monkeypatch.delenv("PHASEO_BASE_URL", raising=False)
    w = pn.widgets.upload(cache=False)
    assert w.notice.layout.display is None
    assert "Offline" in w.notice.value and "PHASEO_API_KEY" in w.notice.value
    w.model_picker.value = "openai/whisper-1"  # a gateway model: no offline notice
    assert w.notice.layout.display == "none"
    with pn.Client(**fake_gateway.client_kwargs()) as client:
        online = pn.widgets.upload(model="local/fake", client=client, cache=False)
    assert online.notice.layout.display == "none"


def test_upload_shows_errors_as_one_line_with_the_file_name() -> None:
    w = pn.widgets.upload(model="local/fake", cache=False)
    run_upload(w, {"notes.wav": b"name,value\n1,2\n" * 3, "ok.wav": make_wav(502)})
    line = w.results.children[5].value
    assert "notes.wav: content is not audio" in line
    assert "bytes&gt;" not in line.split('">', 1)[1]  # the shown text, not the tooltip
    assert "not audio" in w.results.children[4].value  # no dead player: a reason


def test_upload_clears_stale_results(tmp_path: Path) -> None:
    w = pn.widgets.upload(model="local/fake", cache=False)
    run_upload(w, {"a.wav": make_wav(511)})
    assert len(w.results.children) == 6 and len(w.df) == 1
    # New files chosen: the old grid goes, and the new choice is listed.
    w.file_upload.value = upload_value({"b.wav": make_wav(512), "c.wav": make_wav(513)})
    assert w.results.children == () and len(w.df) == 0
    assert "2 files chosen" in w.chosen.value and "b.wav" in w.chosen.value
    run_upload(w, {"b.wav": make_wav(512)})
    assert len(w.df) == 1
    # A run that fails as a whole leaves no earlier result behind.
    w.model_picker.value = "openai/whisper-1"  # no key, no gateway
    w.transcribe_button.click()
    assert w.wait(WAIT) and isinstance(w.error, pn.ConfigurationError)
    assert w.results.children == () and len(w.df) == 0
    assert w.progress.bar_style == "danger"


def test_upload_clears_the_grid_when_a_run_starts_and_shows_time_left(tmp_path: Path) -> None:
    with pn.LocalGateway(engine="fake", faults=pn.Faults(latency=0.3)) as gw:
        with pn.Client(**gw.client_kwargs()) as client:
            w = pn.widgets.upload(model="local/fake", client=client, cache=False)
            run_upload(w, {"a.wav": make_wav(521)})
            assert len(w.results.children) == 6
            w.file_upload.value = upload_value({f"{i}.wav": make_wav(530 + i) for i in range(3)})
            statuses: list[str] = []
            w.status.observe(lambda c: statuses.append(c["new"]), names="value")
            assert w.transcribe()
            assert w.running and w.results.children == () and len(w.df) == 0
            assert w.progress.bar_style == "info" and "phaseo-running" in w._dom_classes
            assert w.file_upload.disabled  # no new choice while this run's results are due
            assert w.wait(WAIT)
            assert not w.file_upload.disabled
    assert "estimating time left" in statuses[0] and "0 done" in statuses[0]
    assert "phaseo-running" not in w._dom_classes and len(w.df) == 3


def test_upload_cancel_shows_the_finished_rows_and_transcribe_sends_only_the_rest(
    tmp_path: Path,
) -> None:
    files = {f"{i:02}.wav": make_wav(600 + i) for i in range(40)}
    with pn.LocalGateway(engine="fake", faults=pn.Faults(latency=0.5)) as gw:
        with pn.Client(**gw.client_kwargs()) as client:
            w = pn.widgets.upload(model="local/fake", client=client, cache=tmp_path / "c")
            w.file_upload.value = upload_value(files)
            w.transcribe_button.click()
            deadline = time.monotonic() + WAIT
            while w.progress.value == 0:  # some rows finished, many still to go
                assert time.monotonic() < deadline
                time.sleep(0.02)
            started = time.monotonic()
            w.cancel_button.click()
            assert w.wait(WAIT)
            stopped_in = time.monotonic() - started
            sent = gw.stats().requests
            cut = w.df
            assert w.cancelled and w.error is None
            assert "Cancelled" in w.status.value and "kept in the cache" in w.status.value
            assert not w.transcribe_button.disabled and w.cancel_button.disabled
            assert stopped_in < 5
            # Run again: what finished comes from the cache; only the rest is sent.
            again = run_upload(w, files)
            assert w.last_result is not None
            resent = w.last_result.requests

    # The cancelled run's table: every file, the finished ones with their transcripts.
    finished = cut["text"].notna()
    done = int(finished.sum())
    assert cut["name"].tolist() == list(files) and 0 < done < len(files)
    for name, text in zip(cut.loc[finished, "name"], cut.loc[finished, "text"], strict=True):
        assert text == fake_transcript(files[name])
    assert cut.loc[finished, "error"].isna().all()
    assert cut.loc[~finished, "error"].str.startswith("CancelledError: ").all()
    assert cut["audio"].tolist() == list(files.values())
    assert again["cached"].tolist() == finished.tolist()
    assert resent == len(files) - done
    assert again["error"].isna().all() and not w.cancelled
    assert sent < len(files)  # the cancelled run did not go on sending in the background


def test_upload_grid_after_cancel_has_every_file_and_says_which_were_not_transcribed(
    tmp_path: Path,
) -> None:
    files = {f"{i:02}.wav": make_wav(620 + i) for i in range(30)}
    with pn.LocalGateway(engine="fake", faults=pn.Faults(latency=0.5)) as gw:
        with pn.Client(**gw.client_kwargs()) as client:
            w = pn.widgets.upload(model="local/fake", client=client, cache=False)
            w.file_upload.value = upload_value(files)
            assert w.transcribe()
            deadline = time.monotonic() + WAIT
            while w.progress.value == 0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert w.cancel() and w.wait(WAIT) and w.cancelled
    df = w.df
    done = int(df["text"].notna().sum())
    assert 0 < done < len(files)
    assert "Cancelled after" in w.status.value
    assert f"{done} of {len(files)} transcribed" in w.status.value
    cells = w.results.children[3:]
    assert len(cells) == 3 * len(files)
    for (name, wav), name_cell, player, body, text in zip(
        files.items(), cells[0::3], cells[1::3], cells[2::3], df["text"], strict=True
    ):
        assert name in name_cell.value
        assert isinstance(player, widgets.Audio) and bytes(player.value) == wav
        if pd.isna(text):
            assert f"{name}: not transcribed" in body.value and "phaseo-error" in body.value
        else:
            assert fake_transcript(wav) in body.value and "phaseo-transcript" in body.value


def test_upload_cancel_with_the_cache_off_says_nothing_is_kept() -> None:
    files = {f"{i:02}.wav": make_wav(650 + i) for i in range(40)}
    with pn.LocalGateway(engine="fake", faults=pn.Faults(latency=0.5)) as gw:
        with pn.Client(**gw.client_kwargs()) as client:
            w = pn.widgets.upload(model="local/fake", client=client, cache=False)
            w.file_upload.value = upload_value(files)
            assert w.transcribe()
            time.sleep(0.2)
            assert w.cancel()
            assert w.wait(WAIT) and w.cancelled
    assert "the cache is off" in w.status.value and "kept in the cache" not in w.status.value
    assert w.cancel() is False  # nothing left to cancel


def test_upload_interrupt_while_waiting_cancels_the_run(tmp_path: Path) -> None:
    files = {f"{i:02}.wav": make_wav(700 + i) for i in range(40)}
    with pn.LocalGateway(engine="fake", faults=pn.Faults(latency=0.5)) as gw:
        with pn.Client(**gw.client_kwargs()) as client:
            w = pn.widgets.upload(model="local/fake", client=client, cache=tmp_path / "c")
            w.file_upload.value = upload_value(files)
            timer = threading.Timer(0.8, os.kill, args=(os.getpid(), signal.SIGINT))
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                w.transcribe(wait=True)
            timer.join()
            assert not w.running and w.cancelled
            assert gw.stats().requests < len(files)


def test_kernel_interrupt_handler_cancels_runs_started_from_the_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phaseo_notebook.widgets import _upload

    class Kernel:  # what ipykernel keeps: the handler it puts back after each message
        saved_sigint_handler: Any = signal.SIG_IGN

    class Shell:
        kernel = Kernel()

    files = {f"{i:02}.wav": make_wav(800 + i) for i in range(40)}
    with (
        pn.LocalGateway(engine="fake", faults=pn.Faults(latency=0.5)) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        w = pn.widgets.upload(model="local/fake", client=client, cache=tmp_path / "c")
        w.file_upload.value = upload_value(files)
        monkeypatch.setattr("IPython.core.getipython.get_ipython", lambda: Shell())
        assert w.transcribe()
        handler = Shell.kernel.saved_sigint_handler
        assert callable(handler) and handler.phaseo_runs
        time.sleep(0.3)
        handler(signal.SIGINT, None)  # the kernel's interrupt button, kernel idle
        assert w.wait(WAIT) and w.cancelled
    assert not _upload._ACTIVE_RUNS


def test_upload_plays_aiff_converted_to_wav(shared_audio: Path) -> None:
    aiff = (shared_audio / "french.aiff").read_bytes()
    w = pn.widgets.upload(model="local/fake", cache=False)
    run_upload(w, {"french.aiff": aiff})
    player = w.results.children[4]
    assert isinstance(player, widgets.Audio)
    assert player.format == "wav" and bytes(player.value)[:4] == b"RIFF"
    assert w.df["audio"].tolist() == [aiff]  # the data keeps the original bytes


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kernel_interrupt_button_cancels_a_run_started_by_the_cell(tmp_path: Path) -> None:
    # A real ipykernel, idle while the run goes on (as after a click on Transcribe), then
    # interrupted the way JupyterLab's stop button does it.
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:

        def run(code: str) -> str:
            reply = kc.execute_interactive(code, timeout=60, output_hook=lambda _msg: None)
            assert reply["content"]["status"] == "ok", reply["content"]
            return code

        run(
            f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
            "import phaseo_notebook as pn\n"
            "from tests.conftest import make_wav\n"
            "from tests.test_widgets import upload_value\n"
            "gw = pn.LocalGateway(engine='fake', faults=pn.Faults(latency=0.5)).start()\n"
            "client = pn.Client(**gw.client_kwargs())\n"
            f"w = pn.widgets.upload(model='local/fake', client=client, cache={str(tmp_path / 'c')!r})\n"
            "w.file_upload.value = upload_value({f'{i}.wav': make_wav(900 + i) for i in range(60)})\n"
            "assert w.transcribe()"
        )
        time.sleep(1.0)  # the kernel is idle; the run is in progress
        km.interrupt_kernel()
        reply = kc.execute_interactive(
            "assert w.wait(30), 'still running'\n"
            "assert w.cancelled, w.status.value\n"
            "assert gw.stats().requests < 60\n"
            "client.close(); gw.close()",
            timeout=60,
            output_hook=lambda _msg: None,
        )
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_aiff_without_soundfile_says_why_it_cannot_play(
    shared_audio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phaseo_notebook.widgets._upload import playable

    aiff = (shared_audio / "french.aiff").read_bytes()
    monkeypatch.setitem(sys.modules, "soundfile", None)  # as without the [local] extra
    reason = playable(aiff)
    assert isinstance(reason, str) and "AIFF cannot play in the browser" in reason
    assert "phaseo-notebook[local]" in reason
    rv = pn.widgets.review(pd.DataFrame({"audio": [aiff], "text": ["x"]}), audio_col="audio")
    assert rv.player.layout.display == "none" and "AIFF cannot play" in rv.source.value
