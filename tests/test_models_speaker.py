"""Per-speaker statistics (models.speaker): voiced frames, causal running sums, warm-up and prior,
the payload encoding, and the bundle/runtime contract around them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tinybundle import tiny_onnx, tiny_spec

from models.bundle import Calibration, load_bundle, write_bundle
from models.errors import BundleError, ParameterError
from models.features import FeatureParams
from models.runtime import EmotionModel
from models.speaker import (
    ChannelStats,
    SpeakerParams,
    SpeakerTracker,
    decode_vectors,
    encode_vectors,
    frame_sums,
    prior_vector,
    stats_vector,
    voiced_frames,
)

F = FeatureParams()
SR = 8000
WINDOW = 3 * SR


def _params(n0: float = 100.0, f: int = 4) -> SpeakerParams:
    return SpeakerParams(prior_mean=(1.0,) * f, prior_std=(2.0,) * f, prior_frames=n0)


def _burst(seed: int, *, level: float = 0.3, start_s: float = 0.5, end_s: float = 2.0) -> np.ndarray:
    """Seeded speech-like burst (noise with a 4 Hz envelope) in silence, one 3 s segment."""
    rng = np.random.default_rng(seed)
    y = np.zeros(WINDOW, dtype=np.float32)
    a, b = int(start_s * SR), int(end_s * SR)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * np.arange(b - a) / SR)
    y[a:b] = (rng.standard_normal(b - a) * env * level).astype(np.float32)
    return y


def test_voiced_frames_follow_speech_not_silence_or_padding():
    y = _burst(0)
    mask = voiced_frames(segments=y[None, :], features=F)[0]
    centre = (np.arange(len(mask)) * F.hop_length + F.n_fft / 2) / SR
    assert mask[(centre > 0.6) & (centre < 1.9)].all()
    assert not mask[(centre < 0.45) | (centre > 2.05)].any()
    # quiet speech (-26 dB) is still voiced: the gate is relative to the segment's loudest frame
    quiet = voiced_frames(segments=_burst(0, level=0.015)[None, :], features=F)[0]
    assert quiet.sum() == pytest.approx(mask.sum(), abs=3)
    # frames that reach into the zero padding of a short last segment never count
    padded = voiced_frames(segments=y[None, :], features=F, valid=np.array([int(1.0 * SR)]))[0]
    ends = np.arange(len(mask)) * F.hop_length + F.n_fft
    assert not padded[ends > SR].any() and padded[ends <= SR].sum() == mask[ends <= SR].sum()
    # digital silence has no voiced frame at all (the absolute floor)
    assert not voiced_frames(segments=np.zeros((1, WINDOW), np.float32), features=F).any()


def test_stats_start_at_the_prior_and_warm_up_with_voiced_frames():
    p = _params(n0=100.0)
    v0 = prior_vector(p)
    assert np.allclose(v0[:4], 1.0) and np.allclose(v0[4:8], 2.0) and v0[-1] == 0.0
    x = np.full((1, 300, 4), 5.0, dtype=np.float32)
    for n_voiced, weight in ((100, 0.5), (300, 0.75)):
        mask = np.zeros((1, 300), dtype=bool)
        mask[0, :n_voiced] = True
        v = stats_vector(frame_sums(x, mask)[0], p)
        assert v[-1] == pytest.approx(weight)
        assert v[0] == pytest.approx(weight * 5.0 + (1 - weight) * 1.0, rel=1e-5)  # blended mean
    with pytest.raises(ParameterError, match="expected 9"):
        stats_vector(np.zeros(5), p)


def test_channel_stats_are_causal_and_order_matters():
    p = _params(n0=50.0)
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 1.0, size=(3, 40, 4)).astype(np.float32)
    mask = np.ones((3, 40), dtype=bool)
    whole = ChannelStats(p).update(x, mask)
    stepwise = ChannelStats(p)
    for i in range(3):  # one segment at a time gives the same vectors as a batch
        assert np.allclose(stepwise.update(x[i : i + 1], mask[i : i + 1])[0], whole[i], atol=1e-6)
    # the i-th vector holds segments <= i only: changing a later segment leaves it unchanged
    x2 = x.copy()
    x2[2] += 10.0
    again = ChannelStats(p).update(x2, mask)
    assert np.allclose(again[:2], whole[:2]) and not np.allclose(again[2], whole[2])
    assert stepwise.frames == 120.0 and np.allclose(stepwise.vector(), whole[-1], atol=1e-6)


def test_payload_encoding_round_trip_and_rejects_bad_text():
    v = np.random.default_rng(2).standard_normal((3, 129)).astype(np.float32)
    assert np.array_equal(decode_vectors(encode_vectors(v), k=3, size=129), v)
    with pytest.raises(ValueError, match="expected 2064"):
        decode_vectors(encode_vectors(v), k=4, size=129)
    with pytest.raises(ValueError, match="base64"):
        decode_vectors("not base64!", k=1, size=129)
    with pytest.raises(ValueError, match="non-finite"):
        decode_vectors(encode_vectors(np.full((1, 2), np.nan, np.float32)), k=1, size=2)


@pytest.fixture(scope="module")
def speaker_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("spk")
    spec = tiny_spec(speaker=True, calibration=Calibration(temperature=2.0, uncertain_below=0.3))
    write_bundle(path, onnx_bytes=tiny_onnx(spec), spec=spec)
    return path


def test_tracker_keeps_channels_apart_and_model_uses_the_vectors(speaker_bundle):
    model = EmotionModel(speaker_bundle)
    assert model.uses_speaker and model.uncertain_below == 0.3
    tracker = SpeakerTracker(model.spec)
    loud, soft = _burst(3, level=0.4)[None, :], _burst(4, level=0.01)[None, :]
    a1 = tracker.update("agent", loud)
    c1 = tracker.update("customer", soft)
    a2 = tracker.update("agent", loud)
    assert not np.allclose(a1, c1)  # each channel is its own speaker
    assert a2[0, -1] > a1[0, -1] > 0  # the agent's weight grows with what the agent said
    x = model.features(loud)
    with_prior = model.predict_features(x)  # no history: the prior
    assert np.allclose(with_prior, model.predict_features(x, prior_vector(model.spec.speaker)[None, :]))
    assert not np.allclose(with_prior, model.predict_features(x, a2))
    raw = model.predict_features(x, a2, calibrated=False)
    assert np.allclose(model.predict_features(x, a2), Calibration(temperature=2.0).apply(raw), atol=1e-6)
    with pytest.raises(ParameterError, match="speaker vectors have shape"):
        model.predict_features(x, a2[:, :10])


def test_spec_format_1_bundles_still_load_and_mismatches_fail(speaker_bundle, tiny_bundle_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle_dir, old)
    data = json.loads((old / "spec.json").read_text())
    data["format"] = 1  # a 1.2.0-era spec: no speaker_stats, no calibration
    (old / "spec.json").write_text(json.dumps(data))
    model = EmotionModel(old)
    assert not model.uses_speaker and model.uncertain_below == 0.0
    y = _burst(5)
    assert model.predict_clip(y, history=np.ones(129))[0].shape == (7,)  # history is ignored
    # a spec that declares speaker statistics for a graph without the input fails loudly
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_bundle_dir, wrong)
    data = json.loads((speaker_bundle / "spec.json").read_text())
    data["onnx"]["sha256"] = load_bundle(wrong).spec.onnx_sha256
    (wrong / "spec.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="no input 'speaker'"):
        EmotionModel(wrong)
    # ... and a two-input graph whose spec does not declare them, too
    plain = tmp_path / "plain"
    shutil.copytree(speaker_bundle, plain)
    data = json.loads((plain / "spec.json").read_text())
    del data["speaker_stats"]
    (plain / "spec.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="declares only 'features'"):
        EmotionModel(plain)
    data["format"] = 99
    (plain / "spec.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="upgrade ser-stream"):
        load_bundle(plain)


def test_predict_clip_adds_the_clip_to_its_history(speaker_bundle):
    model = EmotionModel(speaker_bundle)
    y = _burst(6, level=0.2)
    alone, _ = model.predict_clip(y)
    hist = model.clip_sums(_burst(7, level=0.05))
    with_hist, _ = model.predict_clip(y, history=hist)
    assert not np.allclose(alone, with_hist)
    assert model.clip_sums(y)[-1] > 0
