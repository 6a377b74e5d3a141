from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tinybundle import tiny_onnx, tiny_spec

from models.bundle import load_bundle, write_bundle
from models.errors import BundleError, ParameterError
from models.runtime import EmotionModel


def test_bundle_roundtrip(tiny_bundle_dir):
    bundle = load_bundle(tiny_bundle_dir)
    assert bundle.spec.labels[0] == "neutral" and bundle.spec.n_frames == 297
    assert bundle.spec.model_id == "tiny-test@0.0.1"
    again = load_bundle(tiny_bundle_dir)
    assert again.spec.to_dict() == bundle.spec.to_dict()
    assert bundle.spec.info["provenance"]["note"].startswith("generated")


def test_model_predicts_probabilities(tiny_bundle_dir):
    model = EmotionModel(tiny_bundle_dir)
    model.warmup()
    rng = np.random.default_rng(0)
    probs = model.predict_segments(rng.standard_normal((4, 24000)).astype(np.float32) * 0.1)
    assert probs.shape == (4, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    clip_probs, used = model.predict_clip(rng.standard_normal(8000 * 5).astype(np.float32) * 0.1)
    assert clip_probs.shape == (7,) and used == 2
    with pytest.raises(ParameterError, match="expected"):
        model.predict_segments(np.zeros((1, 100), np.float32))


def _copy(src, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


def test_corrupt_onnx_fails_on_sha(tiny_bundle_dir, tmp_path):
    dst = _copy(tiny_bundle_dir, tmp_path)
    data = bytearray((dst / "model.onnx").read_bytes())
    data[-5] ^= 0xFF
    (dst / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(dst)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("labels"), "lacks the field 'labels'"),
        (lambda d: d["normalisation"].update(mean=[0.0] * 3), "normalisation mean/std"),
        (lambda d: d["normalisation"].update(std=[0.0] * 64), "std > 0"),
        (lambda d: d.update(format=99), "spec format 99"),
        (lambda d: d["features"].update(n_mels=-1), "n_mels=-1"),
        (lambda d: d.update(labels=["a", "a"]), "distinct"),
    ],
)
def test_bad_spec_fails_clearly(tiny_bundle_dir, tmp_path, mutate, message):
    dst = _copy(tiny_bundle_dir, tmp_path)
    data = json.loads((dst / "spec.json").read_text())
    mutate(data)
    (dst / "spec.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        load_bundle(dst)


def test_missing_files_and_bad_json(tiny_bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nope")
    dst = _copy(tiny_bundle_dir, tmp_path)
    (dst / "spec.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(dst)
    (dst / "model.onnx").unlink()
    with pytest.raises(BundleError, match="no model.onnx"):
        load_bundle(dst)


def test_onnx_shape_mismatch_fails_at_load(tmp_path):
    spec = tiny_spec()
    write_bundle(tmp_path, onnx_bytes=tiny_onnx(spec, n_frames=100), spec=spec)
    with pytest.raises(BundleError, match="input shape"):
        EmotionModel(tmp_path)
    labels8 = tiny_spec(labels=("a", "b", "c", "d", "e", "f", "g", "h"))
    write_bundle(tmp_path, onnx_bytes=tiny_onnx(spec), spec=labels8)
    with pytest.raises(BundleError, match="labels"):
        EmotionModel(tmp_path)


def test_packaged_bundle_names_resolve_unless_a_local_directory_has_the_name(tmp_path, monkeypatch):
    from models.bundle import DEFAULT_BUNDLE

    monkeypatch.chdir(tmp_path)
    ens = load_bundle("ensemble")
    assert ens.path == DEFAULT_BUNDLE.parent / "ensemble"
    assert ens.spec.model_id != load_bundle().spec.model_id  # another model, under its own id
    assert ens.spec.info["ensemble"]["members"][0]["onnx_sha256"] == load_bundle("v2").spec.onnx_sha256  # 2.0.0
    spec = tiny_spec()
    write_bundle(tmp_path / "default", onnx_bytes=tiny_onnx(spec), spec=spec)
    assert load_bundle("default").spec.model_id == "tiny-test@0.0.1"  # the local directory wins
    with pytest.raises(BundleError, match="model bundle nothing-here is not a directory"):
        load_bundle("nothing-here")


def test_whisper_bundle_serves_and_round_trips(tmp_path):
    """A format 4 bundle with Whisper features (the 3.x models): 300 frames x 80 bands per 3 s at 8 kHz."""
    spec = tiny_spec(whisper=True, vad="silero")
    bundle = write_bundle(tmp_path / "w", onnx_bytes=tiny_onnx(spec), spec=spec)
    assert bundle.spec.n_frames == 300 and bundle.spec.features.kind == "whisper"
    data = json.loads((tmp_path / "w" / "spec.json").read_text())
    assert data["format"] == 4 and data["onnx"]["input_shape"] == [None, 300, 80]
    model = EmotionModel(tmp_path / "w")
    rng = np.random.default_rng(0)
    segs = rng.standard_normal((3, 24000)).astype(np.float32) * 0.1
    x = model.features(segs)
    from models.whisper import log_mel

    np.testing.assert_allclose(x, log_mel(y=segs, sr=8000), atol=1e-6)  # identity normalisation
    probs = model.predict_segments(segs)
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # a log-mel graph under a whisper spec is refused when the session is made
    wrong = write_bundle(tmp_path / "x", onnx_bytes=tiny_onnx(tiny_spec()), spec=spec)
    with pytest.raises(BundleError, match="input shape"):
        EmotionModel(wrong)


def test_whisper_spec_rejects_what_it_cannot_serve(tmp_path):
    spec = tiny_spec(whisper=True)
    data = spec.to_dict()
    data["features"]["n_mels"] = 64
    with pytest.raises(BundleError, match="n_mels=80"):
        type(spec).from_dict(data)
    data = tiny_spec(speaker=True).to_dict()
    data["features"] = spec.to_dict()["features"]
    data["normalisation"] = spec.to_dict()["normalisation"]
    with pytest.raises(BundleError, match="speaker_stats go with log-mel"):
        type(spec).from_dict(data)
    data = spec.to_dict()
    data["features"]["kind"] = "wav2vec"
    with pytest.raises(BundleError, match="upgrade ser-stream"):
        type(spec).from_dict(data)


def test_older_bundles_still_load():
    """The 2.x log-mel bundles shipped beside 3.x (format 3, speaker statistics) load and classify."""
    for name in ("v2", "ensemble"):
        model = EmotionModel(name)
        assert model.spec.features.kind == "logmel" and model.uses_speaker
        probs = model.predict_segments(np.zeros((1, 24000), np.float32) + 0.01)
        assert probs.shape == (1, 7)
