"""The notebook cells, driven through their traits and callbacks (no browser).

Uploads use the ipywidgets 8 ``FileUpload.value`` format (a tuple of dicts whose ``content``
is a memoryview); clicks go through ``Button.click()``; keyboard shortcuts arrive as the
custom messages the page sends.
"""

from __future__ import annotations

import json
import sys
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
    assert not w.running and w._thread is None
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
    assert (rv.progress.value, rv.progress.description) == (4, "4/4")


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
    assert saved[["row_key", "review_status", "text", "original"]].values.tolist() == [
        ["'a'", "accepted", "alpha", "alpha"],
        ["'b'", "corrected", "bravo two", "bravo"],
    ]

    # A new session on the same log, with the rows in another order: matched by index label.
    again = pn.widgets.review(frame.iloc[::-1], audio_col="audio", save_to=save_to)
    assert again.df.loc[["a", "b", "c", "d"], "review_status"].tolist() == [
        "accepted",
        "corrected",
        "none",
        "none",
    ]
    assert again.df.loc["b", "text_reviewed"] == "bravo two"
    # It resumes at the first unreviewed row after the last decision: "b" is at position 2
    # here and "a" after it is done, so it wraps to "d" at position 0.
    assert again.position == 0 and again.editor.value == "delta"
    again.position = 2
    assert again.editor.value == "bravo two"  # the reviewed text, not the model's
    again.reject()

    third = pn.widgets.review(frame, audio_col="audio", save_to=save_to)
    assert third.df["review_status"].tolist() == ["accepted", "rejected", "none", "none"]
    assert third.position == 2
    assert len(pd.read_parquet(save_to)) == 3  # a log: earlier decisions are kept


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
        pn.widgets.review(pd.concat([frame, frame]), audio_col="audio", save_to=tmp_path / "x")
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
