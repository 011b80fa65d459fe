"""The Parquet cache: keys, atomic parts, management, and two processes sharing a directory."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import phaseo_notebook as pn
from phaseo_notebook._audio import normalize_audio
from phaseo_notebook._cache import (
    CACHE_FORMAT_VERSION,
    CACHE_SCHEMA,
    CacheKeys,
    CacheRecord,
    cache_key,
)
from phaseo_notebook._types import ResultColumns, TranscriptionResult

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


# Bodies as the gateway (or a sloppy or hostile one) may answer them: every field of every
# type a result reads, so both ways of reading stored bodies are held to the same rules.
ODD_BODIES: list[dict[str, object]] = [
    {"provider": "p", "duration": 1.5, "cost_nanos": 1_500_000, "requestId": "r1"},
    {"model": "m", "language": "en", "duration": 2, "cost_cents": 3, "id": "i", "currency": "USD"},
    {"requestId": "", "id": "fallback", "cost_nanos": 0, "cost_cents": 7},
    {"duration": float("nan"), "cost_nanos": float("inf"), "provider": None},
    {"duration": 10**30, "cost_cents": -2.5, "language": ""},
    {"segments": [{"start": 0, "end": 1.5, "text": " hi", "id": 0}, {"start": "x"}, "no"]},
    {"words": [{"start": 0.0, "end": 0.5, "word": "hi"}], "segments": []},
    {"extra": {"nested": [1, {"segments": "not these"}]}, "provider": "é\u2028"},
    {},
]
# Bodies json reads its own way: another type for a field, a number beyond a double,
# a duplicate key, a line break between tokens, an escaped key.
STUBBORN_RAWS = [
    '{"provider": 3, "duration": "1.5", "model": true}',
    '{"duration": 1e400, "cost_nanos": 123456789012345678901234567890}',
    '{"provider": "first", "provider": "second"}',
    '{"provider":\n"p", "duration": 1.0}',
    '{"\\u0073egments": [{"start": 0, "end": 1, "text": "x"}], "language": "fr"}',
    '{"duration": false, "cost_cents": [1]}',
]


def expected_columns(bodies: list[dict[str, object]], texts: list[str]) -> dict[str, list[object]]:
    """What building one TranscriptionResult per body gives, column by column."""
    results = [
        TranscriptionResult.from_body({**body, "text": text})
        for body, text in zip(bodies, texts, strict=True)
    ]
    names = [f.name for f in dataclasses.fields(ResultColumns)]
    return {name: [getattr(r, name) for r in results] for name in names}


def as_dict(columns: ResultColumns) -> dict[str, list[object]]:
    return {f.name: getattr(columns, f.name) for f in dataclasses.fields(columns)}


def same(a: dict[str, list[object]], b: dict[str, list[object]]) -> bool:
    # NaN never appears (it reads as None): plain equality, with types checked too.
    return a == b and all([type(x) for x in a[name]] == [type(y) for y in b[name]] for name in a)


def write_raw_part(directory: Path, keys: list[str], raws: list[str]) -> None:
    """A part whose bodies are exactly ``raws`` (not what json.dumps would write)."""
    n = len(keys)
    table = pa.table(
        {
            "key": keys,
            "identity": keys,
            "model": ["m"] * n,
            "language": [None] * n,
            "provider": [None] * n,
            "text": [f"text of {k}" for k in keys],
            "raw": raws,
            "created": pa.array([0] * n, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        },
        schema=CACHE_SCHEMA,
    )
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / f"part-{uuid.uuid4().hex}.parquet")


def test_result_columns_follow_the_rules_of_one_result_per_body() -> None:
    texts = [f"t{i}" for i in range(len(ODD_BODIES))]
    assert same(
        as_dict(ResultColumns.from_bodies(ODD_BODIES, texts)), expected_columns(ODD_BODIES, texts)
    )


def test_stored_bodies_are_read_as_one_result_per_body_would_read_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = pn.Cache(tmp_path)
    keys = [f"k{i}" for i in range(len(ODD_BODIES))]
    cache.add(
        CacheRecord(key, key, "m", None, None, f"text {key}", dict(body))
        for key, body in zip(keys, ODD_BODIES, strict=True)
    )
    cache.flush()
    # Every body here is plain JSON on one line: read without one json.loads per row.
    monkeypatch.setattr(pn.Cache, "_bodies", lambda *a: pytest.fail("bodies parsed one by one"))
    found, columns = pn.Cache(tmp_path).answers(["absent", *keys])
    assert found.tolist() == list(range(1, len(keys) + 1))
    want = expected_columns(ODD_BODIES, [f"text {key}" for key in keys])
    assert same(as_dict(columns), want)


@pytest.mark.parametrize("stubborn", STUBBORN_RAWS)
def test_a_body_arrow_reads_otherwise_is_read_by_json_with_the_rest(
    tmp_path: Path, stubborn: str
) -> None:
    raws = [json.dumps(body) for body in ODD_BODIES[:3]] + [stubborn]
    keys = [f"k{i}" for i in range(len(raws))]
    write_raw_part(tmp_path, keys, raws)
    found, columns = pn.Cache(tmp_path).answers(keys)
    assert found.tolist() == list(range(len(keys)))
    bodies = [json.loads(raw) for raw in raws]
    assert same(as_dict(columns), expected_columns(bodies, [f"text of {k}" for k in keys]))
    answers = pn.Cache(tmp_path).get_many(keys)
    assert [answers[k].duration for k in keys] == columns.duration


@pytest.mark.parametrize(
    "bad",
    [
        "{not json}",
        '{"provider": "x"} {"provider": "y"}',  # two objects: one line, two records
        '{"provider": "x"}\n{"provider": "y"}',
    ],
)
def test_a_body_that_is_not_one_json_object_is_a_miss_and_a_damaged_row(
    tmp_path: Path, bad: str
) -> None:
    write_raw_part(
        tmp_path, ["first", "bad", "last"], ['{"provider": "p"}', bad, '{"provider": "q"}']
    )
    cache = pn.Cache(tmp_path)
    found, columns = cache.answers(["bad", "first", "last"])
    assert found.tolist() == [1, 2] and columns.provider == ["p", "q"]
    assert sum(cache.damaged_rows.values()) == 1


def test_later_rows_of_a_key_win_across_parts(tmp_path: Path) -> None:
    many = [record(i) for i in range(100)]  # enough keys for a lookup by one join
    first = pn.Cache(tmp_path)
    first.add([*many, record(1, "old")])
    first.flush()
    reader = pn.Cache(tmp_path)
    keys = [r.key for r in many]
    assert reader.answers(keys)[1].text[:3] == ["text 0", "old", "text 2"]
    second = pn.Cache(tmp_path)
    second.add([record(1, "new"), record(2, "new")])
    second.flush()
    # A part written since the last lookup is read, and its rows win, whichever way.
    assert reader.answers(keys)[1].text[:3] == ["text 0", "new", "new"]
    assert reader.answers(keys[:3])[1].text == ["text 0", "new", "new"]
    assert pn.Cache(tmp_path).answers(keys[:3])[1].text == ["text 0", "new", "new"]
    by_dict = [*reader.lookup(keys[:50]).tolist(), *reader.lookup(keys[50:]).tolist()]
    assert reader.lookup(keys).tolist() == by_dict  # one join finds what two dict lookups find


def test_cache_keys_are_the_keys_of_cache_key() -> None:
    keys = CacheKeys("m", '{"only":["a"]}', '{"prompt":"p"}', origin="https://gw:443/v1")
    identities = ["url:https://x/a.wav", "ab" * 32, "url:https://x/\u00e9\ud800.wav"]
    for language in (None, "en"):
        want = [
            cache_key(
                i, "m", language, '{"only":["a"]}', '{"prompt":"p"}', origin="https://gw:443/v1"
            )
            for i in identities
        ]
        assert keys.many(identities, language) == want
        assert [keys.of(i, language) for i in identities] == want
