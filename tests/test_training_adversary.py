"""The corpus adversary: gradient reversal is identity forward and -scale backward; a fit with it trains
both outputs, ramps the reversal, and returns (and exports) the label classifier alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorflow")


def test_gradient_reversal_is_identity_forward_and_negated_backward() -> None:
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
    from training.model import adversary_scale

    ramp = [adversary_scale(e, 30, weight=0.5) for e in range(30)]
    assert ramp[0] == 0.0 and all(a < b for a, b in zip(ramp, ramp[1:], strict=False))
    assert 0.49 < ramp[-1] <= 0.5 and ramp[10] > 0.45  # near the weight after the first third


def test_fit_with_corpus_adversary_returns_the_label_classifier() -> None:
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
    from training.cli import main

    wav = tmp_path / "cremad" / "AudioWAV"
    wav.mkdir(parents=True)
    import soundfile as sf

    for name in ("1001_DFA_ANG_XX", "1002_DFA_SAD_XX"):
        sf.write(wav / f"{name}.wav", np.zeros(8000, np.float32), 8000)
    r = CliRunner().invoke(main, ["fit", "--data", f"cremad={tmp_path / 'cremad'}", "--out", str(tmp_path / "o"),
                                  "--corpus-adversary", "0.3", "--quiet"])
    assert r.exit_code == 1 and "--corpus-adversary needs at least two training corpora" in r.output
