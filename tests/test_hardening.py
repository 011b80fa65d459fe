"""Paid results survive, keys never leak, the cache is checked: each promise pinned here.

Every test runs against the project's own local gateway on 127.0.0.1, or a small hostile
server on 127.0.0.1 where the local gateway is too well-behaved to show the fault.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import phaseo_notebook as pn
from phaseo_notebook._batch import transcribe_many_sync
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._parts import LocalParts

from .conftest import REPO_ROOT, make_wav

# --------------------------------------------------------------------------- 1. cache writes


class _FullDisk(LocalParts):
    """A part store on a full disk: every write fails as the OS says it then."""

    def write(self, table: pa.Table, name: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cannot write to cache" in r.getMessage()]


def test_full_disk_warns_once_and_returns_every_paid_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = pn.Cache(tmp_path / "cache")
    cache._store = _FullDisk(tmp_path / "cache")
    clips = [make_wav(i) for i in range(30)]
    with pn.LocalGateway(engine="fake") as gw, caplog.at_level(logging.WARNING):
        # A short flush interval: periodic flushes fail during the run, not only the last.
        res = transcribe_many_sync(
            clips,
            model="local/fake",
            cache=cache,
            client=pn.Client(**gw.client_kwargs()),
            progress=False,
            flush_interval=0.01,
        )
        sent = gw.stats().requests
    assert res.text == [fake_transcript(c) for c in clips]
    assert res.requests == sent == 30
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1
    assert str(tmp_path / "cache") in warnings[0] and "No space left on device" in warnings[0]
    assert cache.write_error is not None and cache.pending == 0


def test_cache_dir_under_a_file_is_found_before_sending_and_the_run_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache's parent should be")
    where = blocker / "cache"
    clips = [make_wav(100 + i) for i in range(5)]
    with pn.LocalGateway(engine="fake") as gw, caplog.at_level(logging.WARNING):
        res = transcribe_many_sync(
            clips,
            model="local/fake",
            cache=where,
            client=pn.Client(**gw.client_kwargs()),
            progress=False,
        )
    assert res.text == [fake_transcript(c) for c in clips]
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and str(where) in warnings[0] and "Not a directory" in warnings[0]
    # The warning came before the first request: it is the first record of the run.
    assert caplog.records[0].getMessage() == warnings[0]


def test_cli_writes_its_output_when_the_cache_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    clips = []
    for i in range(3):
        path = tmp_path / f"c{i}.wav"
        path.write_bytes(make_wav(200 + i))
        clips.append(path)
    table = tmp_path / "in.csv"
    pd.DataFrame({"audio": [str(p) for p in clips]}).to_csv(table, index=False)
    out = tmp_path / "out.csv"
    with pn.LocalGateway(engine="fake", models={"a/model": "fake"}) as gw:
        assert gw.api_key is not None
        env = {**os.environ, "PHASEO_API_KEY": gw.api_key, "PHASEO_BASE_URL": gw.url}
        env["PYTHONPATH"] = str(REPO_ROOT)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "phaseo_notebook", "transcribe", str(table)),
                *("--model", "a/model", "--out", str(out), "--cache-dir", str(blocker / "c")),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(out)["text"].tolist() == [fake_transcript(p.read_bytes()) for p in clips]
    assert result.stderr.count("cannot write to cache directory") == 1
    assert "Not a directory" in result.stderr


def test_a_cache_that_cannot_be_read_is_reported_before_anything_is_sent(tmp_path: Path) -> None:
    where = tmp_path / "cache"
    where.write_text("a file, not a cache directory")
    with pn.LocalGateway(engine="fake") as gw:
        with pytest.raises(pn.CacheError, match="not a directory"):
            transcribe_many_sync(
                [make_wav(1)],
                model="local/fake",
                cache=where,
                client=pn.Client(**gw.client_kwargs()),
                progress=False,
            )
        assert gw.stats().requests == 0


# --------------------------------------------------------------------------- 8. unknown model


def test_unknown_model_stops_the_run_and_names_the_available_models() -> None:
    clips = [make_wav(300 + i) for i in range(200)]
    with pn.LocalGateway(engine="fake", models={"a/model": "fake"}) as gw:
        with pytest.raises(pn.UnknownModelError) as info:
            transcribe_many_sync(
                clips,
                model="openai/whisper-nope",
                cache=False,
                concurrency=4,
                client=pn.Client(**gw.client_kwargs()),
                progress=False,
            )
        sent = gw.stats().requests
    # Only the requests already in flight when the first answer came back.
    assert sent <= 8
    assert "a/model" in info.value.available_models
    assert isinstance(info.value, pn.BadRequestError) and "a/model" in str(info.value)


class _HostileServer:
    """A small aiohttp server on 127.0.0.1 whose routes a test chooses."""

    def __init__(self, routes: list[Any]) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self._web = web
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.hits: dict[str, int] = {}
        self._routes = routes
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _serve(self) -> None:
        web = self._web
        app = web.Application(client_max_size=1 << 30)

        @web.middleware
        async def count(request: Any, handler: Any) -> Any:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
            return await handler(request)

        app.middlewares.append(count)
        app.add_routes(self._routes)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> _HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_unknown_model_without_a_list_takes_the_names_from_the_catalog() -> None:
    from aiohttp import web

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {"error": "unsupported_model_or_endpoint", "description": "no such model"}, status=400
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "openai/whisper-1"}, {"id": "x/y"}]})

    routes = [web.post("/v1/audio/transcriptions", refuse), web.get("/v1/models", models)]
    with _HostileServer(routes) as server:
        with pytest.raises(pn.UnknownModelError) as info:
            transcribe_many_sync(
                [make_wav(400 + i) for i in range(50)],
                model="openai/whisper-2",
                cache=False,
                concurrency=2,
                client=pn.Client(api_key="sk-test-unknown-model", base_url=server.url),
                progress=False,
            )
        assert server.hits["/v1/audio/transcriptions"] <= 4
    assert info.value.available_models == ("openai/whisper-1", "x/y")
    assert "the gateway serves: openai/whisper-1, x/y" in str(info.value)


def test_cli_unknown_model_exits_2_naming_the_models(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(30):
        (folder / f"c{i}.wav").write_bytes(make_wav(500 + i))
    with pn.LocalGateway(engine="fake", models={"a/model": "fake"}) as gw:
        assert gw.api_key is not None
        env = {**os.environ, "PHASEO_API_KEY": gw.api_key, "PHASEO_BASE_URL": gw.url}
        env["PYTHONPATH"] = str(REPO_ROOT)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "phaseo_notebook", "transcribe", str(folder)),
                *("--model", "local/whisper", "--concurrency", "2", "--no-cache"),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )
        sent = gw.stats().requests
    assert result.returncode == 2, result.stderr
    assert "UnknownModelError" in result.stderr and "a/model" in result.stderr
    assert sent <= 4


# --------------------------------------------------------------------------- 5. key leaks

SECRET = "sk-live/0123456789abcdefXYZ"


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def _echoing_routes(status: int) -> list[Any]:
    """Routes of a gateway that echoes the bearer key everywhere it can, escaped in JSON."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        await request.read()
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        slashed = key.replace("/", "\\/")
        if status == 200:
            body = f'{{"text": "hi", "id": "{_escaped(key)}", "debug": "{slashed}"}}'
        else:
            body = (
                f'{{"error": "unauthorised", "description": "bad key {_escaped(key)}",'
                f' "detail": "{slashed}"}}'
            )
        headers = {
            "x-request-id": key,
            "x-generation-id": f"gen-{key}",
            "x-debug-auth": f"Bearer {key}",
        }
        return web.Response(
            status=status, text=body, content_type="application/json", headers=headers
        )

    return [web.post("/v1/audio/transcriptions", echo)]


def _no_key_in(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text) and _escaped(SECRET) not in str(text)
        assert SECRET.replace("/", "\\/") not in str(text)


def test_a_key_echoed_in_headers_and_escaped_json_never_reaches_a_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with _HostileServer(_echoing_routes(200)) as server, caplog.at_level(logging.DEBUG):
        with pn.Client(api_key=SECRET, base_url=server.url) as client:
            one = client.transcribe(make_wav(1), model="a/model")
        res = transcribe_many_sync(
            [make_wav(2), make_wav(3)],
            model="a/model",
            cache=False,
            client=pn.Client(api_key=SECRET, base_url=server.url),
            progress=False,
        )
    assert one.text == "hi" and res.text == ["hi", "hi"]
    assert one.request_id is not None and "[redacted API key]" in one.request_id
    _no_key_in(one.request_id, one.raw, res.request_id)
    # The sync client's httpcore DEBUG records print raw response headers.
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("httpcore")]
    assert any("x-request-id" in m for m in logged)
    _no_key_in(*logged)


def test_a_key_echoed_in_an_error_stays_out_of_messages_tracebacks_and_the_cli(
    tmp_path: Path,
) -> None:
    import traceback

    with _HostileServer(_echoing_routes(401)) as server:
        with pn.Client(api_key=SECRET, base_url=server.url) as client:
            with pytest.raises(pn.AuthenticationError) as info:
                client.transcribe(make_wav(1), model="a/model")
        err = info.value
        assert err.request_id is not None and "[redacted API key]" in err.description
        _no_key_in(str(err), err.body, err.request_id, repr(err))
        _no_key_in("".join(traceback.format_exception(err)))

        clip = tmp_path / "clips"
        clip.mkdir()
        (clip / "c.wav").write_bytes(make_wav(4))
        env = {**os.environ, "PHASEO_API_KEY": SECRET, "PHASEO_BASE_URL": server.url}
        env["PYTHONPATH"] = str(REPO_ROOT)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "phaseo_notebook", "transcribe", str(clip)),
                *("--no-cache", "--model", "a/model"),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2 and "AuthenticationError" in result.stderr
    _no_key_in(result.stderr, result.stdout)


def test_a_key_echoed_by_the_gateway_stays_out_of_notebook_outputs() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    with _HostileServer(_echoing_routes(401)) as server:
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell(
                f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
                "import pandas as pd, phaseo_notebook as pn\n"
                "from tests.conftest import make_wav\n"
                f"client = pn.Client(api_key={SECRET!r}, base_url={server.url!r})"
            ),
            nbformat.v4.new_code_cell(
                "df = pd.DataFrame({'audio': [make_wav(i) for i in range(3)]})\n"
                "df.stt.transcribe(col='audio', model='a/model', cache=False, client=client)"
            ),
        ]
        runner = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True)
        runner.execute()
    outputs = nb.cells[1].outputs
    assert any(o.output_type == "error" and o.ename == "AuthenticationError" for o in outputs)
    _no_key_in(json.dumps([o for cell in nb.cells for o in cell.outputs]))


# --------------------------------------------------------------------------- 7. key origin


def test_the_same_model_name_at_another_gateway_is_not_served_from_the_cache(
    tmp_path: Path,
) -> None:
    from phaseo_notebook._batch import request_cache_key

    cache = tmp_path / "cache"
    clips = [make_wav(600 + i) for i in range(4)]
    name = "openai/whisper-1"
    with pn.LocalGateway(engine="fake", models={name: "fake"}) as fake:
        client = pn.Client(**fake.client_kwargs())
        first = transcribe_many_sync(clips, model=name, cache=cache, client=client, progress=False)
        call = client.prepare(name)
        port = fake.port
    assert first.requests == 4
    # The key helper that Dask splits a run with gives the keys the run stored.
    stored = set(pd.read_parquet(cache)["key"])
    assert stored == {request_cache_key(c, None, call) for c in clips}
    with pn.LocalGateway(engine="fake", models={name: "fake"}) as other:
        again = transcribe_many_sync(
            clips,
            model=name,
            cache=cache,
            client=pn.Client(**other.client_kwargs()),
            progress=False,
        )
        assert other.stats().requests == 4
    assert again.cache_hits == 0 and not any(again.cached)
    assert call.origin == f"http://127.0.0.1:{port}/v1"
    embedded = pn.Client().prepare("local/fake")
    assert embedded.origin == "embedded:"


# --------------------------------------------------------------------------- 6. cache checks


def _plant(cache: Path, name: str, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    cache.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, cache / name, compression="zstd")


def test_planted_rows_are_skipped_reported_and_sent_again(tmp_path: Path) -> None:
    from phaseo_notebook._batch import request_cache_key

    cache = tmp_path / "cache"
    clips = [make_wav(700 + i) for i in range(5)]
    with pn.LocalGateway(engine="fake") as gw:
        client = pn.Client(**gw.client_kwargs())
        call = client.prepare("local/fake")
        keys = [request_cache_key(c, None, call) for c in clips]
        n = len(keys)
        # Rows with a null body, a body that is an int's text or bad JSON, a null text;
        # one good row; and a part whose text column holds ints.
        _plant(
            cache,
            "part-1-planted.parquet",
            pa.table(
                {
                    "key": keys[:4],
                    "text": ["null raw", "int raw", "bad json", None],
                    "raw": [None, "7", '{"text": oops}', '{"text": "t"}'],
                }
            ),
        )
        _plant(
            cache,
            "part-2-int-text.parquet",
            pa.table({"key": keys[4:], "text": [42] * (n - 4), "raw": ['{"a": 1}'] * (n - 4)}),
        )
        res = transcribe_many_sync(
            clips, model="local/fake", cache=cache, client=client, progress=False
        )
        sent = gw.stats().requests
    # Nothing planted was served: every row was sent and got its real transcript.
    assert res.text == [fake_transcript(c) for c in clips]
    assert sent == 5 and not any(res.cached)
    info = pn.Cache(cache).info()
    assert info["damaged_rows"]["part-1-planted.parquet"] == 4
    assert "not strings" in info["damaged"]["part-2-int-text.parquet"]
    shown = subprocess.run(
        [sys.executable, "-m", "phaseo_notebook", "cache", "info", "--dir", str(cache)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    assert "damaged rows: part-1-planted.parquet: 4 skipped" in shown.stdout


def test_a_tiny_part_claiming_millions_of_rows_is_refused_from_its_footer(
    tmp_path: Path,
) -> None:
    import time

    import numpy as np
    import pyarrow.parquet as pq

    cache = tmp_path / "cache"
    cache.mkdir()
    rows = 20_000_000
    # One repeated value per column: Parquet's dictionary encoding packs 20 M rows small.
    zeros = pa.array(np.zeros(rows, dtype=np.int32))
    column = pa.DictionaryArray.from_arrays(zeros, pa.array(["{}"]))
    # Without the stored Arrow schema the columns read back as plain strings.
    pq.write_table(
        pa.table({"key": column, "text": column, "raw": column}),
        cache / "part-0-bomb.parquet",
        compression="zstd",
        store_schema=False,
    )
    del column, zeros
    assert (cache / "part-0-bomb.parquet").stat().st_size < 2_000_000
    clips = [make_wav(800 + i) for i in range(5)]
    with pn.LocalGateway(engine="fake") as gw:
        t0 = time.monotonic()
        res = transcribe_many_sync(
            clips,
            model="local/fake",
            cache=cache,
            client=pn.Client(**gw.client_kwargs()),
            progress=False,
        )
        elapsed = time.monotonic() - t0
    assert res.errors == 0 and res.requests == 5
    assert elapsed < 10
    reason = pn.Cache(cache).info()["damaged"]["part-0-bomb.parquet"]
    assert "20000000 rows" in reason


# --------------------------------------------------------------------------- 9. smaller items


def test_a_strided_memoryview_is_a_row_error_not_a_batch_abort() -> None:
    import numpy as np

    good = make_wav(900)
    doubled = np.frombuffer(make_wav(901) * 2, dtype=np.uint8)
    strided = memoryview(doubled)[::2]
    assert not strided.c_contiguous
    with pn.LocalGateway(engine="fake") as gw:
        res = transcribe_many_sync(
            [good, strided, memoryview(good)],
            model="local/fake",
            cache=False,
            client=pn.Client(**gw.client_kwargs()),
            progress=False,
        )
        sent = gw.stats().requests
    assert res.text[0] == res.text[2] == fake_transcript(good)
    assert res.error[1] is not None and res.error[1].startswith("AudioInputError")
    assert "not contiguous" in res.error[1]
    assert sent == 1  # the same bytes twice are one request; the strided row sent nothing


def _flood_routes() -> list[Any]:
    """A gateway that answers a transcription with an endless JSON body."""
    from aiohttp import web

    async def flood(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"text": "')
        chunk = b"a" * (1 << 20)
        try:
            for _ in range(1024):  # a gigabyte, unless the client hangs up first
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    return [web.post("/v1/audio/transcriptions", flood)]


def test_an_endless_answer_stops_at_the_cap_in_both_clients() -> None:
    import asyncio
    import resource

    async def send_async(url: str) -> None:
        async with pn.AsyncClient(api_key="sk-test-flood-0000", base_url=url) as client:
            await client.transcribe(make_wav(1), model="a/model")

    with _HostileServer(_flood_routes()) as server:
        with pn.Client(api_key="sk-test-flood-0000", base_url=server.url) as client:
            with pytest.raises(pn.ResponseTooLargeError, match="64 MiB") as sync_err:
                client.transcribe(make_wav(1), model="a/model")
        with pytest.raises(pn.ResponseTooLargeError, match="64 MiB"):
            asyncio.run(send_async(server.url))
        # Not retried: the same request would get the same answer.
        assert server.hits["/v1/audio/transcriptions"] == 2
    assert sync_err.value.status_code == 200
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak_mb < 1500, f"peak RSS {peak_mb:.0f} MB"
