"""df.stt.transcribe against the local gateway over real HTTP: the batch engine end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._batch import (
    CANCELLED_ERROR,
    AimdPolicy,
    BatchResult,
    TranscribeRequest,
    run_request,
    transcribe_many_sync,
)
from phaseo_notebook._engines import fake_transcript

from ._sigint import with_default_sigint
from .conftest import REPO_ROOT, make_wav


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    """A folder of distinct small WAV files, also served by the gateway at /files/."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(60):
        (folder / f"c{i}.wav").write_bytes(make_wav(100 + i))
    (folder / "broken.wav").write_text("this is not audio")
    return folder


def mixed_frame(gw: pn.LocalGateway, clips: Path) -> tuple[pd.DataFrame, list[str | None], int]:
    """500 rows: URLs, paths, bytes, duplicates, None and broken files, on a shuffled index.

    Returns the frame, the expected text per row (None for rows that must fail) and the
    number of distinct valid inputs.
    """
    values: list[object] = []
    expected: list[str | None] = []
    distinct: set[str] = set()
    for i in range(500):
        kind = i % 10
        if kind in (0, 1):  # URL served by the gateway
            n = i % 20
            values.append(gw.file_url(f"c{n}.wav"))
            expected.append(fake_transcript(make_wav(100 + n)))
            distinct.add(f"url{n}")
        elif kind in (2, 3, 4):  # path (str or Path)
            n = 20 + i % 25
            path = clips / f"c{n}.wav"
            values.append(path if kind == 4 else str(path))
            expected.append(fake_transcript(make_wav(100 + n)))
            distinct.add(f"content{n}")
        elif kind in (5, 6):  # bytes; some equal to a file's content (same identity)
            n = 40 + i % 30
            values.append(make_wav(100 + n))
            expected.append(fake_transcript(make_wav(100 + n)))
            distinct.add(f"content{n}")
        elif kind == 7:
            values.append(None)
            expected.append(None)
        elif kind == 8:
            values.append(str(clips / "broken.wav"))
            expected.append(None)
        else:
            values.append(str(clips / "missing.wav"))
            expected.append(None)
    index = pd.Index([f"row-{(i * 7919) % 1000}" for i in range(500)], name="clip_id")
    df = pd.DataFrame({"audio": values, "speaker": [i % 3 for i in range(500)]}, index=index)
    return df, expected, len(distinct)


def test_mixed_500_rows(clips: Path, tmp_path: Path) -> None:
    with pn.LocalGateway(files_dir=clips, faults=pn.Faults(latency=0.05)) as gw:
        df, expected, distinct = mixed_frame(gw, clips)
        client = pn.Client(**gw.client_kwargs())
        out = df.stt.transcribe(
            col="audio", model="local/fake", concurrency=16, cache=tmp_path / "cache", client=client
        )
        stats = gw.stats()
    # Input columns and index unchanged, two columns added.
    assert out.index.equals(df.index) and out.index.name == "clip_id"
    assert list(out.columns) == ["audio", "speaker", "text", "text_error"]
    pd.testing.assert_frame_equal(out[["audio", "speaker"]], df)
    for text, error, want in zip(out["text"], out["text_error"], expected, strict=True):
        if want is None:
            assert pd.isna(text) and isinstance(error, str) and error.startswith("AudioInputError")
        else:
            assert text == want and pd.isna(error)
    errors = out["text_error"].dropna()
    assert errors.str.contains("missing value").sum() == 50
    assert errors.str.contains("not audio").sum() == 50
    assert errors.str.contains("does not exist").sum() == 50
    # Each distinct valid input sent once; the gateway saw exactly `concurrency` at once.
    assert stats.requests == distinct
    assert all(n == 1 for n in stats.audio_counts.values())
    assert stats.max_in_flight == 16


def test_rerun_sends_nothing_and_changes_resend(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(40)]})
    cache = tmp_path / "cache"
    with pn.LocalGateway(models={"openai/whisper-1": "fake"}) as gw:
        kw = {"col": "audio", "cache": cache, "client": pn.Client(**gw.client_kwargs())}
        first = df.stt.transcribe(model="local/fake", **kw)
        assert gw.stats().requests == 40
        gw.reset_stats()
        again = df.stt.transcribe(model="local/fake", metadata=True, **kw)
        assert gw.stats().requests == 0
        assert again["text_cached"].all()
        pd.testing.assert_series_equal(first["text"], again["text"])
        df.stt.transcribe(model="openai/whisper-1", **kw)
        assert gw.stats().requests == 40
        df.stt.transcribe(model="local/fake", language="en", **kw)
        assert gw.stats().requests == 80
        df.stt.transcribe(model="local/fake", language="en", provider={"only": ["x"]}, **kw)
        assert gw.stats().requests == 120
        df.stt.transcribe(model="local/fake", language="en", **kw)
        assert gw.stats().requests == 120
    table = pd.read_parquet(cache)
    assert {"key", "model", "language", "text", "raw", "created"} <= set(table.columns)
    assert len(table) == 160 and table["key"].is_unique
    assert json.loads(table["raw"].iloc[0])["text"] == table["text"].iloc[0]


def test_cache_false_always_sends(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(5)]})
    with pn.LocalGateway() as gw:
        client = pn.Client(**gw.client_kwargs())
        df.stt.transcribe(col="audio", model="local/fake", cache=False, client=client)
        df.stt.transcribe(col="audio", model="local/fake", cache=False, client=client)
        assert gw.stats().requests == 10


def test_transient_failures_do_not_fail_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("phaseo_notebook._constants.INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr("phaseo_notebook._constants.MAX_RETRY_DELAY", 0.05)
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(300)]})
    faults = pn.Faults(error_rate=0.2, latency=0.01, seed=3)
    with pn.LocalGateway(faults=faults) as gw:
        out = df.stt.transcribe(
            col="audio", model="local/fake", cache=tmp_path, client=pn.Client(**gw.client_kwargs())
        )
        stats = gw.stats()
    assert out["text_error"].isna().all()
    assert out["text"].tolist() == [fake_transcript(make_wav(i)) for i in range(300)]
    assert sum(v for k, v in stats.by_status.items() if k != 200) > 20
    assert stats.by_status[200] == 300


def test_401_stops_the_run_early(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(400)]})
    with pn.LocalGateway(faults=pn.Faults(latency=0.02)) as gw:
        client = pn.Client(api_key="not-the-key", base_url=gw.url)
        with pytest.raises(pn.AuthenticationError):
            df.stt.transcribe(
                col="audio", model="local/fake", concurrency=8, client=client, cache=tmp_path
            )
        assert gw.stats().requests <= 8


def test_402_after_some_success_keeps_finished_rows(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(200)]})
    with pn.LocalGateway(faults=pn.Faults(latency=0.01)) as gw:
        client = pn.Client(**gw.client_kwargs())
        df.iloc[:50].stt.transcribe(col="audio", model="local/fake", client=client, cache=tmp_path)
        gw.set_faults(pn.Faults(fail_status=402, fail_first=10_000))
        gw.reset_stats()
        with pytest.raises(pn.PaymentRequiredError):
            df.stt.transcribe(
                col="audio", model="local/fake", concurrency=4, client=client, cache=tmp_path
            )
        assert gw.stats().requests <= 4
    assert len(pd.read_parquet(tmp_path)) == 50


def test_errors_raise_raises_first_error(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(1), None]})
    with pytest.raises(pn.AudioInputError, match="missing value"):
        df.stt.transcribe(col="audio", model="local/fake", errors="raise", cache=tmp_path)
    with pn.LocalGateway(faults=pn.Faults(fail_status=400, fail_first=1)) as gw:
        one = pd.DataFrame({"audio": [make_wav(1)]})
        with pytest.raises(pn.BadRequestError):
            one.stt.transcribe(
                col="audio",
                model="local/fake",
                errors="raise",
                cache=False,
                client=pn.Client(**gw.client_kwargs()),
            )


def test_permanent_errors_are_per_row_without_resends(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(3)]})
    with pn.LocalGateway(faults=pn.Faults(fail_status=413, fail_first=1)) as gw:
        out = df.stt.transcribe(
            col="audio",
            model="local/fake",
            concurrency=1,
            cache=False,
            client=pn.Client(**gw.client_kwargs()),
        )
        assert gw.stats().requests == 3
    assert out["text_error"].notna().sum() == 1
    assert out["text_error"].dropna().iloc[0].startswith("PayloadTooLargeError")


def test_indexes_duplicated_and_multiindex() -> None:
    values = [make_wav(1), make_wav(2), make_wav(1)]
    for index in (
        pd.Index([5, 5, 5]),
        pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)], names=["spk", "take"]),
        pd.RangeIndex(10, 13),
    ):
        df = pd.DataFrame({"audio": values}, index=index)
        out = df.stt.transcribe(col="audio", model="local/fake", cache=False)
        assert out.index.equals(index)
        assert out["text"].tolist() == [fake_transcript(v) for v in values]


def test_language_col_and_series_accessor(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(1)] * 3, "lang": ["en", "fr", None]})
    with pn.LocalGateway() as gw:
        client = pn.Client(**gw.client_kwargs())
        out = df.stt.transcribe(
            col="audio", model="local/fake", language_col="lang", client=client, cache=False
        )
        langs = sorted(str(r["fields"].get("language")) for r in gw.stats().recent)
        assert langs == ["None", "en", "fr"]
        s = pd.Series([make_wav(3), None], index=["x", "y"], name="clip")
        texts = s.stt.transcribe(model="local/fake", client=client, cache=False)
    assert out["text_error"].isna().all()
    assert texts.index.tolist() == ["x", "y"] and texts.name == "text"
    assert texts["x"] == fake_transcript(make_wav(3)) and pd.isna(texts["y"])


def test_clear_argument_errors() -> None:
    df = pd.DataFrame({"audio": [make_wav(1)]})
    with pytest.raises(KeyError, match="'audo' is not a column"):
        df.stt.transcribe(col="audo")
    with pytest.raises(ValueError, match="concurrency"):
        df.stt.transcribe(col="audio", concurrency=0)
    with pytest.raises(ValueError, match="errors"):
        df.stt.transcribe(col="audio", errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(pn.ConfigurationError, match="PHASEO_API_KEY"):
        df.stt.transcribe(col="audio", model="openai/whisper-1")


def test_sync_call_inside_a_running_event_loop() -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(5)]})

    async def notebook_cell() -> pd.DataFrame:
        return df.stt.transcribe(col="audio", model="local/fake", cache=False)

    out = asyncio.run(notebook_cell())
    assert out["text"].tolist() == [fake_transcript(make_wav(i)) for i in range(5)]


async def test_async_twin(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(5)]})
    with pn.LocalGateway() as gw:
        async with pn.AsyncClient(**gw.client_kwargs()) as client:
            out = await df.stt.atranscribe(
                col="audio", model="local/fake", client=client, cache=tmp_path
            )
        assert gw.stats().requests == 5
    assert out["text"].tolist() == [fake_transcript(make_wav(i)) for i in range(5)]


def test_deadline_keeps_finished_rows(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(40)]})
    with pn.LocalGateway(faults=pn.Faults(latency=0.2)) as gw:
        t0 = time.monotonic()
        out = df.stt.transcribe(
            col="audio",
            model="local/fake",
            concurrency=4,
            deadline=0.9,
            client=pn.Client(**gw.client_kwargs()),
            cache=tmp_path,
        )
        assert time.monotonic() - t0 < 3
    done = out["text"].notna().sum()
    assert 4 <= done < 40
    assert out["text_error"].dropna().str.contains("deadline").all()
    assert len(pd.read_parquet(tmp_path)) == done


async def test_cancelled_run_leaves_its_finished_rows_in_the_result_it_was_given(
    tmp_path: Path,
) -> None:
    inputs = [make_wav(i) for i in range(40)]
    with pn.LocalGateway(faults=pn.Faults(latency=0.3)) as gw:
        async with pn.AsyncClient(**gw.client_kwargs()) as client:
            request = TranscribeRequest(
                inputs,
                model="local/fake",
                client=client,
                concurrency=4,
                cache=tmp_path,
                progress=False,
            )
            partial = BatchResult.empty(len(inputs))
            task = asyncio.create_task(run_request(request, result=partial))
            while partial.text.count(None) == len(inputs):  # wait for finished rows
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    done = [r for r, text in enumerate(partial.text) if text is not None]
    assert 0 < len(done) < len(inputs)
    assert all(partial.text[r] == fake_transcript(inputs[r]) for r in done)
    assert all(partial.error[r] is None for r in done)
    rest = [partial.error[r] for r in range(len(inputs)) if r not in done]
    assert rest == [CANCELLED_ERROR] * (len(inputs) - len(done))
    assert len(pd.read_parquet(tmp_path)) == len(done)  # and saved, as the rows say
    with pytest.raises(ValueError, match="result has 2 rows for 40 inputs"):
        await run_request(request, result=BatchResult.empty(2))


def test_adaptive_limit_lowers_in_flight_under_429(tmp_path: Path) -> None:
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(200)]})
    faults = pn.Faults(error_rate=0.3, error_statuses=(429,), latency=0.02, seed=1)
    with pn.LocalGateway(faults=faults) as gw:
        res = transcribe_many_sync(
            df["audio"].tolist(),
            model="local/fake",
            concurrency=32,
            cache=False,
            progress=False,
            client=pn.Client(**gw.client_kwargs(), max_retries=1),
        )
    assert res.errors == 0
    assert res.extra["min_limit"] < 32


def test_aimd_policy_decisions() -> None:
    p = AimdPolicy(ceiling=10)
    assert p.capacity == 10
    assert p.on_congestion(0.0) and p.capacity == 5
    assert not p.on_congestion(0.5)  # one burst counts once
    assert p.on_congestion(2.0) and p.capacity == 2
    for _ in range(100):
        p.on_success()
    assert p.capacity == 10  # climbs back, never above the ceiling
    low = AimdPolicy(ceiling=4, floor=1)
    for t in range(10):
        low.on_congestion(float(t * 2))
    assert low.capacity == 1


def test_progress_bar_counts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from phaseo_notebook import _progress

    monkeypatch.delenv("PHASEO_NO_PROGRESS")
    monkeypatch.setattr(_progress, "progress_enabled", lambda progress=True: progress is not False)
    monkeypatch.setattr("phaseo_notebook._batch.progress_enabled", _progress.progress_enabled)
    df = pd.DataFrame({"audio": [make_wav(1), make_wav(1), None]})
    df.stt.transcribe(col="audio", model="local/fake", cache=False)
    err = capsys.readouterr().err
    assert "3/3" in err and "errors=1" in err and "req/s=" in err
    df.stt.transcribe(col="audio", model="local/fake", cache=False, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_switches() -> None:
    from phaseo_notebook._progress import progress_enabled

    assert progress_enabled(False) is False
    assert progress_enabled(True) is False  # PHASEO_NO_PROGRESS=1 in the test environment


# ----------------------------------------------------------------- crashes and Ctrl-C

RUNNER = textwrap.dedent(
    """
    import sys, time, pandas as pd, phaseo_notebook as pn
    sys.path.insert(0, {root!r})
    from tests.conftest import make_wav
    n, url, key, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    df = pd.DataFrame({{"audio": [make_wav(i) for i in range(n)]}})
    print("start", flush=True)
    try:
        df.stt.transcribe(col="audio", model="local/fake", concurrency=8, cache=cache,
                          client=pn.Client(api_key=key, base_url=url), progress=False)
    except KeyboardInterrupt:
        # When the call gave the interrupt back, on the machine-wide clock the test reads.
        print("interrupted", time.monotonic(), flush=True)
        raise
    print("done", flush=True)
    """
)


def _start_runner(
    gw: pn.LocalGateway, n: int, cache: Path, tmp_path: Path
) -> subprocess.Popen[str]:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(root=str(REPO_ROOT)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ctrl-C must reach the child even when this test run was started with SIGINT ignored.
    proc = subprocess.Popen(
        with_default_sigint(
            [sys.executable, str(script), str(n), gw.url, gw.api_key or "", str(cache)]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    return proc


def _wait_for_answers(gw: pn.LocalGateway, count: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while gw.stats().by_status.get(200, 0) < count:
        assert time.monotonic() < end, "the run did not progress"
        time.sleep(0.05)


def test_sigkill_then_rerun_resends_little(tmp_path: Path) -> None:
    n, cache = 1500, tmp_path / "cache"
    with pn.LocalGateway(faults=pn.Faults(latency=0.05)) as gw:
        proc = _start_runner(gw, n, cache, tmp_path)
        _wait_for_answers(gw, 500)
        proc.kill()
        proc.wait(10)
        answered = gw.stats().by_status[200]
        cached = len(pd.read_parquet(cache))
        gw.reset_stats()
        out = pd.DataFrame({"audio": [make_wav(i) for i in range(n)]}).stt.transcribe(
            col="audio", model="local/fake", cache=cache, client=pn.Client(**gw.client_kwargs())
        )
        resent = gw.stats().requests
    assert out["text_error"].isna().all()
    assert resent == n - cached
    # Lost paid work: answered before the kill but not in the cache. At most the requests in
    # flight (8) plus one flush interval (2 s at ~160 requests/s with 8 in flight, 50 ms each).
    lost = answered - cached
    assert 0 <= lost <= 8 + 2.0 * (8 / 0.05) * 1.25


def test_ctrl_c_cancels_promptly_and_saves_finished_rows(tmp_path: Path) -> None:
    n, cache = 2000, tmp_path / "cache"
    with pn.LocalGateway(faults=pn.Faults(latency=0.05)) as gw:
        proc = _start_runner(gw, n, cache, tmp_path)
        _wait_for_answers(gw, 200)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
        # From the signal to the call's return inside the child: the interpreter's exit
        # afterwards is not the cancel, and takes seconds of its own on a loaded machine.
        marks = [line.split()[1] for line in stdout.splitlines() if line.startswith("interrupted ")]
        assert marks, stdout
        stopped_in = float(marks[0]) - t0
        answered = gw.stats().by_status[200]
        time.sleep(0.2)
        in_flight_after = gw.stats().in_flight
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
    assert stopped_in < 5
    assert in_flight_after == 0
    cached = len(pd.read_parquet(cache))
    # Every answered row is saved except those answered after the cancel reached them.
    assert answered - 8 <= cached <= answered


def test_notebook_executed_with_nbclient(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
            "import pandas as pd, phaseo_notebook as pn\n"
            "from tests.conftest import make_wav\n"
            "from phaseo_notebook._engines import fake_transcript"
        ),
        nbformat.v4.new_code_cell(
            "with pn.LocalGateway() as gw:\n"
            "    df = pd.DataFrame({'audio': [make_wav(i) for i in range(20)]})\n"
            "    out = df.stt.transcribe(col='audio', model='local/fake', cache=False,\n"
            "                            client=pn.Client(**gw.client_kwargs()))\n"
            "assert out['text'].tolist() == [fake_transcript(make_wav(i)) for i in range(20)]\n"
            "print('rows', out['text'].notna().sum())"
        ),
    ]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream")
    assert "rows 20" in printed
