"""The client against the project's own local gateway over 127.0.0.1, in strict and live modes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import pytest

import phaseo_notebook as pn
from phaseo_notebook._engines import fake_transcript

from .conftest import make_wav


def test_strict_mode_fields_and_bearer_arrive(wav_bytes: bytes) -> None:
    with pn.LocalGateway(mode="strict") as gw, pn.Client(**gw.client_kwargs()) as client:
        result = client.transcribe(
            wav_bytes, model="local/fake", language="en", provider={"only": ["local"]}
        )
        stats = gw.stats()
    assert result.text == fake_transcript(wav_bytes)
    assert result.provider == "local" and result.request_id
    (record,) = stats.recent
    assert record["authorization"] == "Bearer"
    assert record["file"] is None
    fields = record["fields"]
    assert fields["model"] == "local/fake" and fields["language"] == "en"
    assert fields["provider"] == '{"only":["local"]}'
    assert fields["audio_b64"] == len(base64.b64encode(wav_bytes))
    assert stats.audio_counts == {hashlib.sha256(wav_bytes).hexdigest(): 1}


def test_strict_mode_url_goes_as_audio_url(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(make_wav(5))
    with (
        pn.LocalGateway(mode="strict", files_dir=tmp_path) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        url = gw.file_url("a.wav")
        result = client.transcribe(url, model="local/fake")
        stats = gw.stats()
    assert result.text == fake_transcript(make_wav(5))
    assert stats.recent[-1]["fields"]["audio_url"] == url
    assert stats.audio_counts == {"url:" + url: 1}


def test_live_mode_falls_back_to_file_part_and_keeps_it(tmp_path: Path, wav_file: Path) -> None:
    (tmp_path / "b.wav").write_bytes(make_wav(6))
    with (
        pn.LocalGateway(mode="live", files_dir=tmp_path) as gw,
        pn.Client(**gw.client_kwargs()) as client,
    ):
        first = client.transcribe(wav_file, model="local/fake")
        assert client.upload_mode == "file"
        second = client.transcribe(gw.file_url("b.wav"), model="local/fake")
        stats = gw.stats()
    assert first.text == fake_transcript(wav_file.read_bytes())
    assert second.text == fake_transcript(make_wav(6))
    # One rejected contract-style request, then every request carries a file part.
    assert stats.by_status == {400: 1, 200: 2}
    rejected, accepted, url_upload = stats.recent
    assert rejected["file"] is None and "audio_b64" in rejected["fields"]
    assert accepted["file"]["filename"] == "clip.wav"
    assert accepted["file"]["content_type"] == "audio/wav"
    assert url_upload["file"]["filename"] == "b.wav" and "audio_url" not in url_upload["fields"]


def test_retries_are_counted_by_the_gateway(
    wav_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("phaseo_notebook._client.time.sleep", lambda s: None)
    faults = pn.Faults(fail_status=503, fail_first=2)
    with pn.LocalGateway(faults=faults) as gw, pn.Client(**gw.client_kwargs()) as client:
        assert client.transcribe(wav_bytes, model="local/fake").text == fake_transcript(wav_bytes)
        assert gw.stats().by_status == {503: 2, 200: 1}
        gw.set_faults(pn.Faults(fail_status=429, fail_first=10))
        gw.reset_stats()
        with pytest.raises(pn.RateLimitError) as info:
            client.transcribe(wav_bytes, model="local/fake")
        assert gw.stats().requests == 1 + client.max_retries
    assert info.value.code == "key_limit_exceeded"


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [
        (400, pn.BadRequestError, "validation_error"),
        (402, pn.PaymentRequiredError, "insufficient_funds"),
        (403, pn.PermissionDeniedError, "guardrail_blocked"),
        (409, pn.ConflictError, "not_ready"),
        (413, pn.PayloadTooLargeError, "payload_too_large"),
        (429, pn.RateLimitError, "key_limit_exceeded"),
        (500, pn.InternalServerError, "gateway_error"),
        (502, pn.InternalServerError, "upstream_error"),
        (503, pn.InternalServerError, None),
    ],
)
def test_each_error_class_from_a_real_answer(
    status: int, cls: type[pn.APIStatusError], code: str | None, wav_bytes: bytes
) -> None:
    faults = pn.Faults(fail_status=status, fail_first=1)
    with (
        pn.LocalGateway(faults=faults) as gw,
        pn.Client(**gw.client_kwargs(), max_retries=0) as client,
        pytest.raises(cls) as info,
    ):
        client.transcribe(wav_bytes, model="local/fake")
    err = info.value
    assert err.status_code == status and err.request_id
    if code is not None:
        assert err.code == code
    assert err.description


def test_real_401_unknown_model_and_oversize(wav_bytes: bytes) -> None:
    with pn.LocalGateway() as gw:
        with pn.Client(api_key="wrong-key", base_url=gw.url) as bad:
            with pytest.raises(pn.AuthenticationError) as info:
                bad.transcribe(wav_bytes, model="local/fake")
            assert info.value.code == "unauthorised" and "wrong-key" not in str(info.value)
        with pn.Client(**gw.client_kwargs()) as client:
            with pytest.raises(pn.BadRequestError) as info2:
                client.transcribe(wav_bytes, model="no/such-model")
            assert info2.value.code == "unsupported_model_or_endpoint"
        assert gw.stats().by_status == {401: 1, 400: 1}


def test_dropped_connections_and_slow_answers_are_typed(wav_bytes: bytes) -> None:
    with pn.LocalGateway(faults=pn.Faults(drop_rate=1.0)) as gw:
        with pn.Client(**gw.client_kwargs(), max_retries=0) as client:
            with pytest.raises(pn.APIConnectionError):
                client.transcribe(wav_bytes, model="local/fake")
        gw.set_faults(pn.Faults(slow_rate=1.0, slow_seconds=5))
        with pn.Client(**gw.client_kwargs(), max_retries=0, timeout=0.3) as client:
            with pytest.raises(pn.APITimeoutError):
                client.transcribe(wav_bytes, model="local/fake")


async def test_async_client_over_aiohttp_transport(wav_bytes: bytes) -> None:
    with pn.LocalGateway(mode="live", faults=pn.Faults(fail_status=502, fail_first=1)) as gw:
        async with pn.AsyncClient(**gw.client_kwargs()) as client:
            results = await asyncio.gather(
                *(client.transcribe(make_wav(i), model="local/fake") for i in range(20))
            )
        stats = gw.stats()
    assert [r.text for r in results] == [fake_transcript(make_wav(i)) for i in range(20)]
    assert stats.by_status[200] == 20
    assert client.upload_mode == "file"


async def test_async_client_drop_and_timeout_are_typed(wav_bytes: bytes) -> None:
    with pn.LocalGateway(faults=pn.Faults(drop_rate=1.0)) as gw:
        async with pn.AsyncClient(**gw.client_kwargs(), max_retries=0) as client:
            with pytest.raises(pn.APIConnectionError):
                await client.transcribe(wav_bytes, model="local/fake")
        gw.set_faults(pn.Faults(slow_rate=1.0, slow_seconds=5))
        async with pn.AsyncClient(**gw.client_kwargs(), max_retries=0, timeout=0.3) as client:
            with pytest.raises(pn.APITimeoutError):
                await client.transcribe(wav_bytes, model="local/fake")


def test_pocketsphinx_through_the_gateway(shared_audio: Path) -> None:
    pytest.importorskip("pocketsphinx")
    with pn.LocalGateway(engine="pocketsphinx") as gw, pn.Client(**gw.client_kwargs()) as client:
        result = client.transcribe(shared_audio / "english.wav", model="local/pocketsphinx")
    assert result.text == "one two three"
    assert result.duration == pytest.approx(2.7, abs=0.1)


def test_embedded_default_runs_in_process_with_a_notice(
    shared_audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("faster_whisper")
    import phaseo_notebook._base_client as B

    B._notice_shown = False
    with pn.Client() as client:
        result = client.transcribe(shared_audio / "english.wav")
    assert result.text == "One, two, three." and result.model == "local/whisper-tiny.en"
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "offline" in notice[0]


def test_local_model_with_a_key_still_runs_embedded(wav_bytes: bytes) -> None:
    with pn.Client(api_key="sk-remote") as client:
        assert client.transcribe(wav_bytes, model="local/fake").text == fake_transcript(wav_bytes)
