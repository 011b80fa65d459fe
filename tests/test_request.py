"""The run request and the frames module: every front's arguments are checked in one place."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest

import phaseo_notebook as pn
from phaseo_notebook._base_client import EMBEDDED_ORIGIN, ClientSettings, PreparedCall
from phaseo_notebook._batch import request_cache_key, run_request_sync
from phaseo_notebook._cache import cache_key
from phaseo_notebook._engines import fake_transcript
from phaseo_notebook._frames import OutputColumns, frame_inputs
from phaseo_notebook._request import TranscribeRequest

from .conftest import make_wav


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"concurrency": 0}, ValueError, "concurrency"),
        ({"concurrency": True}, ValueError, "concurrency"),
        ({"errors": "ignore"}, ValueError, "errors"),
        ({"deadline": -1}, ValueError, "deadline"),
        ({"deadline": float("inf")}, ValueError, "deadline"),
        ({"languages": ["en", "fr"]}, ValueError, "languages"),
        ({"out_col": ""}, ValueError, "out_col"),
        ({"timestamps": "sentence"}, ValueError, "timestamps"),
        ({"temperature": 2}, ValueError, "temperature"),
        ({"prompt": b"bytes"}, ValueError, "prompt"),
        ({"prompt": "bad \ud800"}, pn.ConfigurationError, "prompt"),
        ({"client": object()}, TypeError, "client"),
    ],
)
def test_request_refuses_bad_arguments_naming_them(
    arguments: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        TranscribeRequest(["https://x/a.wav"], **arguments)  # type: ignore[arg-type]


def test_request_is_frozen_and_travels_with_client_settings() -> None:
    settings = pn.Client(api_key="sk-test-secret-123").settings
    request = TranscribeRequest(["https://x/a.wav"], model="m", client=settings, cache=False)
    with pytest.raises(AttributeError):
        request.model = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(request)) == request
    assert isinstance(request.client, ClientSettings)
    part = request.with_inputs(["https://x/b.wav"], ["en"])
    assert (part.inputs, part.languages, part.model) == (["https://x/b.wav"], ["en"], "m")


def test_new_options_reach_the_wire_and_the_cache_key(tmp_path: Path) -> None:
    wav = make_wav(1)
    with pn.LocalGateway() as gw:
        kwargs = gw.client_kwargs()
        with pn.Client(**kwargs) as client:
            base = TranscribeRequest([wav], model="local/fake", client=client, cache=tmp_path)
            first = run_request_sync(base)
            again = run_request_sync(base)
            prompted = run_request_sync(
                TranscribeRequest(
                    [wav], model="local/fake", client=client, cache=tmp_path, prompt="hello"
                )
            )
        assert gw.stats().requests == 2  # the prompt makes another request, not a cache hit
    assert first.text == [fake_transcript(wav)] and again.cached == [True]
    assert prompted.cached == [False]


def test_request_cache_key_is_the_key_the_engine_and_the_cache_use(tmp_path: Path) -> None:
    wav = make_wav(2)
    path = tmp_path / "clip.wav"
    path.write_bytes(wav)
    # What a run of local/fake with no gateway configured prepares: answered in-process.
    call = PreparedCall(model="local/fake", route="embedded", origin=EMBEDDED_ORIGIN)
    import hashlib

    identity = hashlib.sha256(wav).hexdigest()
    expected = cache_key(identity, "local/fake", None, None, origin=EMBEDDED_ORIGIN)
    # The same bytes behind a path and in memory share one key.
    assert request_cache_key(str(path), None, call) == expected
    assert request_cache_key(wav, None, call) == expected
    assert request_cache_key(wav, " en ", call) == cache_key(
        identity, "local/fake", "en", None, origin=EMBEDDED_ORIGIN
    )
    assert request_cache_key(str(tmp_path / "missing.wav"), None, call) is None
    assert request_cache_key(wav, 5, call) is None
    cache = pn.Cache(tmp_path / "cache")
    pd.DataFrame({"audio": [str(path)]}).stt.transcribe(
        col="audio", model="local/fake", cache=cache, progress=False
    )
    assert list(cache.get_many([expected])) == [expected]


def test_frames_check_columns_and_name_outputs() -> None:
    df = pd.DataFrame({"audio": ["https://x/a.wav"], "lang": ["en"]})
    with pytest.raises(KeyError, match="audio column 'nope' is not a column of the DataFrame"):
        frame_inputs(df, "nope", None, None)
    with pytest.raises(ValueError, match="either language= or language_col="):
        frame_inputs(df, "audio", "en", "lang")
    with pytest.raises(KeyError, match="language column 'l' is not a column"):
        frame_inputs(df, "audio", None, "l")
    assert frame_inputs(df, "audio", None, "lang") == (["https://x/a.wav"], ["en"])
    cols = OutputColumns("asr", metadata=True)
    assert cols.names() == [
        "asr",
        "asr_error",
        "asr_cached",
        "asr_provider",
        "asr_duration",
        "asr_cost",
        "asr_latency",
        "asr_request_id",
        "asr_language",
    ]
    assert (cols.of("segments"), cols.of("words")) == ("asr_segments", "asr_words")
    assert OutputColumns("text").names() == ["text", "text_error"]
