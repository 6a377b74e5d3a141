"""The 3.x models' pretrained ear: Whisper's front end, the pinned weights, the encoder and its export.

Every check has an independent reference: faster-whisper's own feature extractor for the log-mel,
CTranslate2's own encoder (and its transcription of a CREMA-D sentence) for the weights and the numpy
encoder, the numpy encoder for the Keras layers and the exported ONNX graph.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import sysdeps

from models.errors import ParameterError
from models.whisper import log_mel, n_frames
from training import whisper_weights as whisper

TRAIN = "pip install '.[train]'"
DEV = "pip install '.[dev]'"


def _weights_path():
    """The pinned weights' path; absent or wrong, a skip (a failure under SER_REQUIRE_SYSTEM_DEPS=1)."""
    try:
        return whisper.weights_path()
    except whisper.WeightsError as exc:
        sysdeps.missing(f"{exc} ({TRAIN})")


def _voice(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    y = sum(np.sin(2 * np.pi * np.cumsum(f0 * h) / sr) / h for h in range(1, 12))
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    return (0.1 * y * env + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def test_front_end_matches_faster_whisper():
    fw = sysdeps.module("faster_whisper.feature_extractor", DEV)
    y = _voice(3.0, 16000)
    ref = fw.FeatureExtractor(feature_size=80)(y, padding=0)  # (80, frames)
    ours = log_mel(y=y, sr=16000)
    assert ours.shape == (300, 80)
    np.testing.assert_allclose(ours.T, ref[:, :300], atol=1e-4)


def test_front_end_resamples_8k_and_batches():
    y8 = np.stack([_voice(3.0, 8000, seed=s) for s in range(3)])
    out = log_mel(y=y8, sr=8000)
    assert out.shape == (3, n_frames(24000, sr=8000), 80) == (3, 300, 80)
    np.testing.assert_allclose(out[1], log_mel(y=y8[1], sr=8000), atol=1e-5)
    # the clamp: nothing lies more than 8 (log10 units, / 4) below a segment's maximum
    assert (out.max(axis=(1, 2)) - out.min(axis=(1, 2)) <= 2.0 + 1e-6).all()
    with pytest.raises(ParameterError, match="shorter"):
        log_mel(y=np.zeros(50, np.float32), sr=8000)
    with pytest.raises(ParameterError, match="shape"):
        log_mel(y=np.zeros((2, 2, 8000), np.float32), sr=8000)


def test_pinned_weights_are_checked(tmp_path):
    path = _weights_path()
    bad = tmp_path / "model.bin"
    shutil.copyfile(path, bad)
    with open(bad, "r+b") as fh:  # one flipped bit somewhere in the weights
        fh.seek(40_000_000)
        byte = fh.read(1)
        fh.seek(40_000_000)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(whisper.WeightsError, match="sha256"):
        whisper.check(bad)
    with open(bad, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(whisper.WeightsError, match="bytes"):
        whisper.check(bad)


@pytest.fixture(scope="module")
def weights():
    _weights_path()
    return whisper.encoder_weights()


def test_encoder_matches_ctranslate2(weights):
    ct2 = sysdeps.module("ctranslate2", DEV)
    mel = log_mel(y=_voice(2.3, 8000), sr=8000)[None]  # (1, 230, 80): a segment's frames, no 30 s padding
    ours = whisper.encode(mel, weights, blocks=len(weights.blocks), final_norm=True)
    model = ct2.models.Whisper(str(whisper.weights_path().parent), device="cpu", compute_type="float32")
    theirs = np.asarray(model.encode(ct2.StorageView.from_array(np.ascontiguousarray(mel.transpose(0, 2, 1)))))
    assert ours.shape == theirs.shape == (1, 115, 384)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


@pytest.mark.corpus
def test_the_weights_transcribe_a_known_sentence(shared_data):
    fw = sysdeps.module("faster_whisper", DEV)
    from models.audio import decode, to_mono

    y, _ = decode(shared_data / "cremad" / "AudioWAV" / "1001_DFA_NEU_XX.opus", sr=16000)
    model = fw.WhisperModel(str(whisper.weights_path().parent), device="cpu", compute_type="float32")
    segments, _ = model.transcribe(to_mono(y), language="en", beam_size=1)
    text = " ".join(s.text for s in segments).lower()
    assert "forget" in text and "jacket" in text, text  # CREMA-D's DFA: "Don't forget a jacket"


def test_keras_encoder_and_onnx_match_the_reference(weights):
    sysdeps.module("tensorflow", TRAIN)
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    from training.encoder import build_encoder

    mel = np.stack([log_mel(y=_voice(0.5, 8000, seed=s), sr=8000) for s in range(2)])  # (2, 50, 80)
    enc = build_encoder(weights, n_frames=mel.shape[1], blocks=2)
    ref = whisper.encode(mel, weights, blocks=2)
    np.testing.assert_allclose(np.asarray(enc(mel)), ref, atol=1e-4)
    proto, _ = tf2onnx.convert.from_keras(enc, input_signature=[tf.TensorSpec([None, 50, 80], tf.float32,
                                                                              name="features")], opset=17)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"features": mel})[0], ref, atol=1e-4)


def test_reference_would_catch_a_wrong_encoder(weights):
    """The parity check is not vacuous: a Keras stride-2 'same' conv (right padding only) differs."""
    import dataclasses

    mel = log_mel(y=_voice(0.5, 8000), sr=8000)[None]
    ok = whisper.encode(mel, weights, blocks=1)
    shifted = dataclasses.replace(weights, positions=np.roll(weights.positions, 1, axis=0))
    assert np.abs(whisper.encode(mel, shifted, blocks=1) - ok).max() > 0.1
