"""The shortcut for plain URLs accepts only what the full URL checks accept, identically."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from phaseo_notebook._audio import _PLAIN_URL_RE, AudioSource, _from_url, normalize_audio
from phaseo_notebook._exceptions import AudioInputError

_PIECES = st.text(alphabet="aZ09.-_:@/?#[]% \t\x00\x7fé\ud800", max_size=24)


def outcome(fn: object, text: str) -> AudioSource | str:
    try:
        return fn(text)  # type: ignore[operator, no-any-return]
    except AudioInputError as err:
        return f"refused: {err}"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["http://", "https://", "HTTPS://", "http:/"]), _PIECES, _PIECES)
def test_plain_urls_come_out_as_the_full_checks_make_them(
    scheme: str, host: str, rest: str
) -> None:
    text = scheme + host + rest
    if text != text.strip() or not text.strip():
        return  # normalize_audio strips first; _from_url never sees such text
    assert outcome(normalize_audio, text) == outcome(_from_url, text)


def test_the_shortcut_is_taken_for_the_usual_urls() -> None:
    for url in ("https://example.com/clips/a.wav", "http://127.0.0.1:8080/a.mp3?sig=x#t"):
        assert _PLAIN_URL_RE.fullmatch(url)
        assert normalize_audio(url) == _from_url(url)
    for url in ("https://user:pw@example.com/a.wav", "https://example.com:70000/a.wav"):
        assert not _PLAIN_URL_RE.fullmatch(url)


def test_a_url_no_request_could_carry_is_refused_before_sending() -> None:
    refused = outcome(normalize_audio, "https://example.com/clip-\ud800.wav")
    assert isinstance(refused, str) and "not valid Unicode text" in refused
