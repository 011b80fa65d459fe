"""The fault suite: long runs against the local gateway while it fails in every way it can.

Every test talks to a real :class:`pn.LocalGateway` on 127.0.0.1 whose fault injection
makes a share of requests fail: error statuses, dropped connections, answers slower than
the client's timeout, truncated and non-JSON bodies. The client's backoff is shortened so
a run of thousands of requests stays within seconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook import _constants as C
from phaseo_notebook._base_client import call_origin
from phaseo_notebook._batch import transcribe_many_sync
from phaseo_notebook._cache import cache_key
from phaseo_notebook._engines import fake_transcript

from .conftest import make_wav

#: Client timeout; the slow fault answers long after it.
CLIENT_TIMEOUT = 0.5
SLOW_SECONDS = 10.0

#: 30% of requests fail transiently, spread over every kind of transient failure.
TRANSIENT_FAULTS = pn.Faults(
    latency=0.002,
    error_rate=0.14,
    error_statuses=(429, 500, 502, 503),
    drop_rate=0.04,
    slow_rate=0.04,
    slow_seconds=SLOW_SECONDS,
    truncated_rate=0.04,
    non_json_rate=0.04,
    seed=7,
)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff in milliseconds instead of seconds: the retry decisions stay the same."""
    monkeypatch.setattr(C, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(C, "MAX_RETRY_DELAY", 0.05)


def clips(n: int, offset: int = 0) -> list[bytes]:
    """``n`` distinct short WAVs (20 ms each keeps 2,000 of them cheap to build and send)."""
    return [make_wav(offset + i, seconds=0.02) for i in range(n)]


def expected_key(audio: bytes, gateway_url: str, model: str = "local/fake") -> str:
    origin = call_origin(gateway_url)
    return cache_key(hashlib.sha256(audio).hexdigest(), model, None, None, origin=origin)


def test_2000_rows_with_30_percent_transient_faults_all_succeed_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audio = clips(1800)
    # 200 repeats of earlier clips: one request and one cache row per distinct input.
    values = audio + audio[:200]
    df = pd.DataFrame({"audio": values})
    cache = tmp_path / "cache"
    with pn.LocalGateway(faults=TRANSIENT_FAULTS) as gw:
        client = pn.Client(**gw.client_kwargs(), timeout=CLIENT_TIMEOUT)
        t0 = time.monotonic()
        with caplog.at_level(logging.DEBUG, logger="phaseo_notebook"):
            out = df.stt.transcribe(
                col="audio", model="local/fake", concurrency=32, cache=cache, client=client
            )
        elapsed = time.monotonic() - t0
        stats = gw.stats()
        gw.set_faults(None)
        gw.reset_stats()
        again = df.stt.transcribe(
            col="audio", model="local/fake", cache=cache, client=client, metadata=True
        )
        resent = gw.stats().requests

    # Every row transcribed, with the text of its own content.
    assert out["text_error"].isna().all(), out["text_error"].dropna().head().tolist()
    assert out["text"].tolist() == [fake_transcript(v) for v in values]
    # Each distinct input is in the cache exactly once, under its own key.
    table = pd.read_parquet(cache)
    assert table["key"].is_unique
    assert len(table) == len(audio)
    assert set(table["key"]) == {expected_key(a, client.base_url) for a in audio}
    # The faults really happened, in every kind, and each was retried.
    retried = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    for reason in (
        "RateLimitError: gateway answered 429",
        "InternalServerError: gateway answered 500",
        "InternalServerError: gateway answered 502 upstream_error",
        "InternalServerError: gateway answered 503",
        "non-JSON error body (text/html)",  # the proxy's HTML 502
        "APIConnectionError",  # dropped connection
        "APITimeoutError",  # slower than the client's timeout
        "APIResponseError",  # truncated JSON
    ):
        assert sum(reason in m for m in retried) >= 5, reason
    assert stats.dropped >= 20
    failed = sum(n for status, n in stats.by_status.items() if status != 200)
    assert failed >= 0.1 * len(audio)
    # Rerun: everything from the cache, nothing sent, nothing paid twice.
    assert resent == 0
    assert again["text_cached"].all()
    assert again["text"].tolist() == out["text"].tolist()
    # No hang: the slow answers cost one client timeout each, not SLOW_SECONDS.
    assert elapsed < 90, f"2,000 rows under faults took {elapsed:.1f} s"


def test_permanent_failures_are_per_row_errors_without_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audio = clips(300, offset=5000)
    faults = pn.Faults(error_rate=0.2, error_statuses=(400, 413), latency=0.002, seed=11)
    with pn.LocalGateway(faults=faults) as gw:
        client = pn.Client(**gw.client_kwargs())
        with caplog.at_level(logging.DEBUG, logger="phaseo_notebook"):
            res = transcribe_many_sync(
                audio, model="local/fake", concurrency=16, cache=tmp_path, client=client
            )
        stats = gw.stats()
    permanent = stats.by_status.get(400, 0) + stats.by_status.get(413, 0)
    assert permanent >= 30
    # One request per row: a 400 or 413 is never sent again, by the client or the batch.
    assert stats.requests == len(audio)
    assert not [r for r in caplog.records if r.getMessage().startswith("retrying")]
    assert res.errors == permanent
    kinds = {e.split(":")[0] for e in res.error if e is not None}
    assert kinds == {"BadRequestError", "PayloadTooLargeError"}
    for value, text, error in zip(audio, res.text, res.error, strict=True):
        assert (text is None) != (error is None)
        if text is not None:
            assert text == fake_transcript(value)
    # Only the successes are cached; the failed rows are sent again on the next run.
    assert len(pd.read_parquet(tmp_path)) == len(audio) - permanent


def test_permanent_and_transient_mixed_each_row_ends_once(tmp_path: Path) -> None:
    audio = clips(300, offset=7000)
    faults = pn.Faults(error_rate=0.2, error_statuses=(400, 413, 429, 503), drop_rate=0.1, seed=5)
    with pn.LocalGateway(faults=faults) as gw:
        res = transcribe_many_sync(
            audio,
            model="local/fake",
            concurrency=16,
            cache=tmp_path,
            client=pn.Client(**gw.client_kwargs()),
        )
        stats = gw.stats()
    permanent = stats.by_status.get(400, 0) + stats.by_status.get(413, 0)
    transient = stats.by_status.get(429, 0) + stats.by_status.get(503, 0) + stats.dropped
    assert permanent > 0 and transient > 0
    # Each transient failure costs exactly one more request; a permanent one ends its row.
    assert stats.requests == len(audio) + transient
    assert res.errors == permanent
    assert all(e.startswith(("BadRequestError", "PayloadTooLargeError")) for e in res.error if e)


@pytest.mark.parametrize(
    ("status", "error"), [(401, pn.AuthenticationError), (402, pn.PaymentRequiredError)]
)
def test_401_or_402_mid_run_stops_within_one_request_per_worker(
    tmp_path: Path, status: int, error: type[pn.APIStatusError]
) -> None:
    audio = clips(1500, offset=9000)
    cache = tmp_path / "cache"
    concurrency = 8
    faults = pn.Faults(latency=0.01, error_rate=0.1, drop_rate=0.05, seed=3)
    with pn.LocalGateway(faults=faults) as gw:
        client = pn.Client(**gw.client_kwargs(), timeout=CLIENT_TIMEOUT)
        raised: list[BaseException] = []

        def run() -> None:
            try:
                transcribe_many_sync(
                    audio,
                    model="local/fake",
                    concurrency=concurrency,
                    cache=cache,
                    client=client,
                    progress=False,
                )
            except BaseException as err:  # handed to the test thread
                raised.append(err)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        while gw.stats().by_status.get(200, 0) < 200:
            assert time.monotonic() < deadline and thread.is_alive(), "the run did not progress"
            time.sleep(0.02)
        # The key is revoked or the account runs dry in the middle of the run: from now on
        # every request that arrives gets `status`, and only those do.
        gw.set_faults(pn.Faults(fail_status=status, fail_first=10**9))
        thread.join(30)
        assert not thread.is_alive(), "the run did not stop"
        while gw.stats().in_flight:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = gw.stats().by_status.get(status, 0)
        saved = len(pd.read_parquet(cache))
        gw.set_faults(None)
        gw.reset_stats()
        rest = transcribe_many_sync(
            audio, model="local/fake", cache=cache, client=client, progress=False
        )
        resent = gw.stats().requests

    assert len(raised) == 1 and isinstance(raised[0], error)
    # Each worker sends at most one more request after the gateway starts refusing.
    assert 1 <= refused <= concurrency
    # Finished rows were saved before the error surfaced; the rerun sends only the rest.
    assert saved >= 150
    assert rest.errors == 0 and rest.text == [fake_transcript(a) for a in audio]
    assert resent == len(audio) - saved
