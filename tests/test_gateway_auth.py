"""ser-gateway's pure parts: signature checks (Genesys's published AudioHook worked example, Twilio's
scheme), the track aligner, media choice, mu-law decoding."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import sysdeps

from gateway.audiohook import choose_media, duration_s
from gateway.auth import SignatureError, audiohook_verify, bearer_ok, twilio_ok, twilio_signature, twilio_url
from gateway.tracks import Aligner, GapError
from models.audio import decode_raw, ulaw_decode

# Genesys AudioHook protocol documentation, "Example 1" (developer.genesys.cloud, AudioHook security).
DOC_API_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
DOC_SECRET = base64.b64decode("TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=")
DOC_HEADERS = {
    "host": "audiohook.example.com",
    "audiohook-organization-id": "d7934305-0972-4844-938e-9060eef73d05",
    "audiohook-session-id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "audiohook-correlation-id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "x-api-key": DOC_API_KEY,
    "signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
    "signature-input": ('sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
                        '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
                        'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430'),
}
DOC_TARGET = "/api/v1/voicebiometrics/ws"
DOC_NOW = 1641013205.0


def verify(headers: dict[str, str], *, target: str = DOC_TARGET, now: float = DOC_NOW,
           secret: bytes = DOC_SECRET) -> None:
    audiohook_verify(api_key=DOC_API_KEY, secret=secret, headers=headers, request_target=target,
                     authority=headers["host"], now=now)


def test_audiohook_worked_example_verifies() -> None:
    verify(DOC_HEADERS)  # the expected sig1 of Genesys's example, reproduced from its inputs


@pytest.mark.parametrize("change", [
    {"audiohook-session-id": "30b0e395-84d3-4570-ac13-9a62d8f514c1"},
    {"host": "evil.example.com"},
    {"signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh5=:"},
    {"x-api-key": "another-key"},
    {"signature": ""},
    {"signature-input": DOC_HEADERS["signature-input"].replace(' "x-api-key"', "")},
    {"signature-input": DOC_HEADERS["signature-input"].replace("hmac-sha256", "rsa-pss-sha512")},
])
def test_audiohook_tampered_requests_are_refused(change: dict[str, str]) -> None:
    with pytest.raises(SignatureError):
        verify({**DOC_HEADERS, **change})


def test_audiohook_other_target_secret_and_stale_or_future_times_are_refused() -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        verify(DOC_HEADERS, target="/audiohook")
    with pytest.raises(SignatureError, match="does not verify"):
        verify(DOC_HEADERS, secret=b"another secret")
    with pytest.raises(SignatureError, match="not fresh"):
        verify(DOC_HEADERS, now=DOC_NOW + 3600)
    with pytest.raises(SignatureError, match="not fresh"):
        verify(DOC_HEADERS, now=DOC_NOW - 3600)


def test_twilio_signature_covers_scheme_host_path_and_query() -> None:
    token = "12345"
    url = twilio_url(host="ser.example.com", path="/twilio", query="a=1")
    assert url == "wss://ser.example.com/twilio?a=1"
    sig = twilio_signature(token, url)
    assert twilio_ok(token, url=url, signature=sig)
    assert not twilio_ok(token, url=url.replace("a=1", "a=2"), signature=sig)
    assert not twilio_ok(token, url="wss://other.example.com/twilio?a=1", signature=sig)
    assert not twilio_ok("54321", url=url, signature=sig)
    assert not twilio_ok(token, url=url, signature=None)


@pytest.mark.parametrize("url", ["wss://ser.example.com/twilio", "wss://ser.example.com/twilio?a=1&b=x%20y",
                                 "wss://ser.example.com:8443/base/twilio?call=CA123"])
def test_twilio_signature_agrees_with_twilios_own_validator(url: str) -> None:
    """An independent known answer: the ``twilio`` package's RequestValidator (Twilio's reference code,
    a [dev] dependency) signs a request to the same URL with no POST parameters, as a WebSocket upgrade
    is, and accepts exactly the signatures our gateway accepts."""
    request_validator = sysdeps.module("twilio.request_validator", "pip install .[dev]")
    validator = request_validator.RequestValidator("0123456789abcdef0123456789abcdef")
    theirs = validator.compute_signature(url, {})
    assert twilio_signature("0123456789abcdef0123456789abcdef", url) == theirs
    assert twilio_ok("0123456789abcdef0123456789abcdef", url=url, signature=theirs)
    ours = twilio_signature("0123456789abcdef0123456789abcdef", url)
    assert validator.validate(url, {}, ours)
    assert not validator.validate(url, {}, twilio_signature("another token", url))


def test_bearer() -> None:
    assert bearer_ok("tok", "Bearer tok") and bearer_ok("tok", "bearer tok")
    assert not bearer_ok("tok", "Bearer tok2") and not bearer_ok("tok", None) and not bearer_ok("tok", "Basic tok")


def test_ulaw_decoding_matches_libsndfile() -> None:
    data = bytes(range(256))
    y, _ = decode_raw(data, sr=8000, channels=1, encoding="mulaw")
    np.testing.assert_array_equal(ulaw_decode(data), y[0])


def test_aligner_fills_gaps_drops_late_and_duplicate_chunks_and_fills_a_lagging_track() -> None:
    a = Aligner(2, max_lag=400, max_gap=10_000)
    ones = np.ones(160, dtype=np.float32)
    a.add(0, 0, ones)
    a.add(1, 0, 2 * ones)
    a.add(0, 0, 9 * ones)  # a duplicate: dropped
    a.add(0, 320, ones)  # frame 160..320 missing on track 0: silence
    a.add(1, 160, 2 * ones)
    a.add(1, 320, 2 * ones)
    a.add(1, 100, 5 * ones)  # late, overlapping what is written: dropped
    block = a.take()
    assert block is not None and block.shape == (2, 480)
    assert (block[0, :160] == 1).all() and (block[0, 160:320] == 0).all() and (block[0, 320:] == 1).all()
    assert (block[1] == 2).all()
    assert a.dropped == 160 + 160 and a.filled == 160
    a.add(0, 480, np.ones(1000, dtype=np.float32))  # track 1 falls behind by more than max_lag
    block = a.take()
    assert block is not None and block.shape == (2, 600) and (block[1] == 0).all()
    a.add(1, 500, ones)  # arrives after its time was filled: dropped, time does not shift
    assert a.take() is None
    last = a.take(final=True)
    assert last is not None and last.shape == (2, 400)
    with pytest.raises(GapError):
        a.add(0, 10**7, ones)


def test_media_choice_and_durations() -> None:
    stereo = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
    mono_int = {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}
    mono_ext = {**mono_int, "channels": ["external"]}
    assert choose_media([mono_int, stereo, mono_ext]) == stereo
    assert choose_media([mono_int, mono_ext]) == mono_ext
    assert choose_media([mono_int]) == mono_int
    assert choose_media([{**stereo, "format": "L16"}, {**stereo, "rate": 16000}]) is None
    assert choose_media("nonsense") is None
    assert duration_s("PT1.5S") == 1.5 and duration_s("PT1M2S") == 62.0


def test_replay_guard_refuses_repeats_until_expiry_and_is_bounded() -> None:
    from gateway.auth import ReplayGuard
    from gateway.settings import SIGNATURE_SKEW_S

    g = ReplayGuard(capacity=2)
    assert g.admit("sig-a", until=1000.0, now=900.0) is None
    assert g.admit("sig-a", until=1000.0, now=950.0) is not None  # a replay
    assert g.admit("sig-b", until=1100.0, now=950.0) is None
    assert "too many" in (g.admit("sig-c", until=1100.0, now=960.0) or "")  # full: refused, not evicted
    later = 1000.0 + SIGNATURE_SKEW_S + 1  # sig-a has expired (and would be refused as stale anyway)
    assert g.admit("sig-c", until=1200.0, now=later) is None and len(g) == 2
    assert "too many" in (g.admit("sig-a", until=1300.0, now=later) or "")  # sig-b and sig-c are still live
