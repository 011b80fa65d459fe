"""The Parquet cache: keys, atomic parts, management, and two processes sharing a directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._audio import normalize_audio
from phaseo_notebook._cache import CACHE_FORMAT_VERSION, CacheRecord, cache_key

from .conftest import REPO_ROOT, make_wav


def record(i: int, text: str | None = None) -> CacheRecord:
    key = cache_key(f"id{i}", "m", None, None)
    return CacheRecord(
        key, f"id{i}", "m", None, None, text or f"text {i}", {"text": text or f"text {i}"}
    )


def test_key_covers_every_part_of_the_request() -> None:
    base = cache_key("sha", "m", "en", '{"only":["a"]}')
    assert (
        len(
            {
                base,
                cache_key("sha2", "m", "en", '{"only":["a"]}'),
                cache_key("sha", "m2", "en", '{"only":["a"]}'),
                cache_key("sha", "m", "fr", '{"only":["a"]}'),
                cache_key("sha", "m", "en", None),
                cache_key("sha", "m", None, '{"only":["a"]}'),
            }
        )
        == 6
    )
    assert base == cache_key("sha", "m", "en", '{"only":["a"]}')


def test_key_includes_the_format_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = cache_key("sha", "m", None, None)
    monkeypatch.setattr("phaseo_notebook._cache.CACHE_FORMAT_VERSION", CACHE_FORMAT_VERSION + 1)
    assert cache_key("sha", "m", None, None) != before


def test_default_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHASEO_CACHE_DIR", str(tmp_path / "env-cache"))
    assert pn.Cache().path == tmp_path / "env-cache"
    monkeypatch.delenv("PHASEO_CACHE_DIR")
    assert pn.Cache().path == Path.home() / ".cache" / "phaseo-notebook"


def test_flush_is_atomic_and_readable_as_a_table(tmp_path: Path) -> None:
    cache = pn.Cache(tmp_path)
    cache.add([record(i) for i in range(3)])
    assert cache.info()["pending"] == 3 and cache.info()["parts"] == 0
    assert cache.flush() == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    table = pd.read_parquet(tmp_path)
    assert list(table.columns) == [
        "key",
        "identity",
        "model",
        "language",
        "provider",
        "text",
        "raw",
        "created",
    ]
    assert table["text"].tolist() == ["text 0", "text 1", "text 2"]
    assert str(table["created"].dtype).startswith("datetime64")


def test_info_clear_compact(tmp_path: Path) -> None:
    cache = pn.Cache(tmp_path)
    for batch in range(3):
        cache.add([record(i, f"v{batch}") for i in range(batch, batch + 4)])
        cache.flush()
    info = cache.info()
    assert (info["parts"], info["rows"], info["keys"]) == (3, 12, 6)
    stats = cache.compact()
    assert stats == {"parts_before": 3, "parts_after": 1, "rows_before": 12, "rows_after": 6}
    table = pd.read_parquet(tmp_path).set_index("identity")["text"]
    # The newest row per key survives.
    assert table.to_dict() == {
        "id0": "v0",
        "id1": "v1",
        "id2": "v2",
        "id3": "v2",
        "id4": "v2",
        "id5": "v2",
    }
    fresh = pn.Cache(tmp_path)
    assert fresh.get(cache_key("id5", "m", None, None)) == "v2"
    assert fresh.clear() == 1
    assert fresh.info()["rows"] == 0 and fresh.get(cache_key("id5", "m", None, None)) is None


def test_lookup_sees_parts_written_by_another_cache_object(tmp_path: Path) -> None:
    reader, writer = pn.Cache(tmp_path), pn.Cache(tmp_path)
    key = cache_key("id1", "m", None, None)
    assert reader.lookup([key]).tolist() == [-1]
    writer.add([record(1)])
    writer.flush()
    pos = int(reader.lookup([key])[0])
    assert pos >= 0 and reader.text_at(pos) == "text 1"


def test_not_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_text("x")
    with pytest.raises(pn.CacheError, match="not a directory"):
        pn.Cache(file)


WRITER = textwrap.dedent(
    """
    import sys, pandas as pd, phaseo_notebook as pn
    sys.path.insert(0, {root!r})
    from tests.conftest import make_wav
    start, url, key, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    df = pd.DataFrame({{"audio": [make_wav(i) for i in range(start, start + 300)]}})
    out = df.stt.transcribe(col="audio", model="local/fake", concurrency=8, cache=cache,
                            client=pn.Client(api_key=key, base_url=url), progress=False)
    assert out["text_error"].isna().all()
    """
)


def test_two_processes_share_one_directory(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(REPO_ROOT)))
    cache = tmp_path / "shared-cache"
    with pn.LocalGateway(faults=pn.Faults(latency=0.01)) as gw:
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(start), gw.url, gw.api_key or "", str(cache)]
            )
            for start in (0, 150)  # overlapping halves: rows 150..299 are in both
        ]
        assert [p.wait(120) for p in procs] == [0, 0]
        table = pd.read_parquet(cache)
        assert set(table["identity"]) == {
            normalize_audio(make_wav(i)).identity() for i in range(450)
        }
        gw.reset_stats()
        df = pd.DataFrame({"audio": [make_wav(i) for i in range(450)]})
        df.stt.transcribe(
            col="audio", model="local/fake", cache=cache, client=pn.Client(**gw.client_kwargs())
        )
        assert gw.stats().requests == 0
    assert pn.Cache(cache).info()["damaged"] == {}


def test_cache_at_an_fsspec_url(tmp_path: Path) -> None:
    """An object-store style cache (fsspec's in-memory store): the same behaviour as a directory."""
    url = f"memory://phaseo-test-{tmp_path.name}/cache"
    writer, reader = pn.Cache(url), pn.Cache(url)
    assert writer.path == url and reader.info()["rows"] == 0
    for batch in range(2):
        writer.add([record(i, f"v{batch}") for i in range(batch, batch + 3)])
        writer.flush()
    assert reader.get(cache_key("id3", "m", None, None)) == "v1"
    assert reader.info()["parts"] == 2 and reader.info()["keys"] == 4
    table = pd.read_parquet(url)
    assert len(table) == 6 and set(table["identity"]) == {"id0", "id1", "id2", "id3"}
    # A damaged part is skipped and reported, as on disk.
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"/phaseo-test-{tmp_path.name}/cache/part-0-garbage.parquet", b"not parquet")
    assert pn.Cache(url).info()["damaged"].keys() == {"part-0-garbage.parquet"}
    fs.rm_file(f"/phaseo-test-{tmp_path.name}/cache/part-0-garbage.parquet")
    assert writer.compact()["parts_after"] == 1
    assert pn.Cache(url).get(cache_key("id1", "m", None, None)) == "v1"
    assert writer.clear() == 1 and pn.Cache(url).info()["rows"] == 0


def test_transcribe_with_an_fsspec_cache(tmp_path: Path) -> None:
    url = f"memory://phaseo-test-{tmp_path.name}/stt"
    df = pd.DataFrame({"audio": [make_wav(i) for i in range(12)]})
    with pn.LocalGateway() as gw:
        client = pn.Client(**gw.client_kwargs())
        first = df.stt.transcribe(col="audio", model="local/fake", cache=url, client=client)
        assert gw.stats().requests == 12
        again = df.stt.transcribe(col="audio", model="local/fake", cache=url, client=client)
        assert gw.stats().requests == 12
    pd.testing.assert_frame_equal(first, again)


def test_get_many_returns_answers_for_held_keys_only(tmp_path: Path) -> None:
    writer = pn.Cache(tmp_path)
    body = {"text": "ignored", "provider": "p", "duration": 1.5, "cost_cents": 1, "language": "fr"}
    writer.add([CacheRecord("k1", "id1", "m", "fr", None, "stored text", body)])
    writer.add([record(2)])
    writer.flush()
    answers = pn.Cache(tmp_path).get_many(["k1", "absent", record(2).key])
    assert list(answers) == ["k1", record(2).key]
    first = answers["k1"]
    # The stored text column wins over the body's copy; the rest comes from the body.
    assert (first.text, first.provider, first.duration, first.cost, first.language) == (
        "stored text",
        "p",
        1.5,
        0.01,
        "fr",
    )
    assert answers[record(2).key].text == "text 2"


def test_cache_and_review_log_write_parts_the_same_way(tmp_path: Path) -> None:
    from phaseo_notebook._parts import LocalParts
    from phaseo_notebook.widgets._store import Decision, DecisionLog

    writes: list[str] = []
    original = LocalParts.write

    def spy(self: LocalParts, table: object, name: str) -> None:
        writes.append(name)
        original(self, table, name)  # type: ignore[arg-type]

    LocalParts.write = spy  # type: ignore[method-assign]
    try:
        cache = pn.Cache(tmp_path / "cache")
        cache.add([record(1)])
        cache.flush()
        log = DecisionLog(tmp_path / "reviews")
        log.append(Decision("0", 0, "accepted", "a", "a", "x", seq=0))
    finally:
        LocalParts.write = original  # type: ignore[method-assign]
    assert len(writes) == 2 and all(n.startswith("part-") for n in writes)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert len(pd.read_parquet(tmp_path / "reviews")) == 1
