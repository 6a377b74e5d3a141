"""Calibration (temperature, uncertain threshold, ECE), real codecs, nEMO and leave-one-corpus-out splits."""

from __future__ import annotations

import numpy as np
import pytest

from models.bundle import Calibration
from training.augment import CODECS, codec
from training.calibrate import calibrate, ece, fit_temperature, uncertain_threshold
from training.corpora import Item, load_nemo
from training.split import speaker_split

SR = 8000


def _overconfident(n: int = 4000, t_true: float = 2.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), reported as softmax(t_true * z): over-confident by t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.2, size=(n, 5))
    p_true = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p_true])
    shown = np.exp(t_true * z)
    return (shown / shown.sum(axis=1, keepdims=True)).astype(np.float32), y


def test_temperature_scaling_recovers_the_overconfidence_and_lowers_ece():
    probs, y = _overconfident()
    t = fit_temperature(probs, y)
    assert t == pytest.approx(2.5, rel=0.1)
    cal, summary = calibrate(probs, y)
    assert summary["val_ece_after"] < 0.03 < summary["val_ece_before"]
    assert cal.temperature == t
    assert np.allclose(Calibration(temperature=1.0).apply(probs), probs)
    assert np.allclose(cal.apply(probs).sum(axis=1), 1.0, atol=1e-5)
    assert (cal.apply(probs).argmax(axis=1) == probs.argmax(axis=1)).all()  # ranking unchanged


def test_uncertain_threshold_meets_the_stated_precision():
    probs, y = _overconfident(seed=1)
    p = Calibration(temperature=fit_temperature(probs, y)).apply(probs)
    c = uncertain_threshold(p, y, precision=0.7)
    conf, right = p.max(axis=1), p.argmax(axis=1) == y
    assert 0 < c < 1
    assert right[conf >= c].mean() >= 0.7
    below = conf < c
    assert right[below].mean() < 0.7  # the flagged ones really are worse
    assert uncertain_threshold(p, y, precision=0.0) == 0.0  # nothing needs flagging


def test_ece_of_a_perfectly_calibrated_set_is_small_and_of_a_wrong_one_large():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 1.0, 20000)
    right = rng.random(20000) < conf
    probs = np.stack([conf, 1 - conf], axis=1)
    y = np.where(right, 0, 1)
    assert ece(probs, y) < 0.02
    assert ece(probs, np.ones_like(y)) > 0.3  # label 1 always: right only where conf < 0.5


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 12))
    return (0.1 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + 0.003 * rng.standard_normal(len(t))
            ).astype(np.float32)


@pytest.mark.parametrize("name", list(CODECS))
def test_real_codecs_keep_length_and_shape_but_change_the_signal(name):
    y = _speechlike()
    z = codec(y, name=name, sr=SR)
    assert z.shape == y.shape and z.dtype == np.float32 and np.isfinite(z).all()
    # lossy: the waveform changes, but the band energies (what the model sees) survive
    assert not np.allclose(z, y, atol=1e-3)
    spec_y = np.abs(np.fft.rfft(y)) ** 2
    spec_z = np.abs(np.fft.rfft(z)) ** 2
    bands = np.array_split(np.arange(len(spec_y)), 16)
    ey = np.log10([spec_y[b].sum() + 1e-9 for b in bands][:12])
    ez = np.log10([spec_z[b].sum() + 1e-9 for b in bands][:12])
    assert np.corrcoef(ey, ez)[0, 1] > 0.9
    with pytest.raises(ValueError, match="codec must be one of"):
        codec(y, name="amr")


def test_nemo_loader_and_leave_one_corpus_out(tmp_path):
    for name in ("EB0_anger_1", "EB0_neutral_2", "KD0_sadness_10", "MK0_happiness_3", "XX_bad"):
        (tmp_path / f"{name}.opus").write_bytes(b"")
    res = load_nemo(tmp_path)
    assert sorted((i.speaker, i.label) for i in res.items) == [
        ("nemo:EB0", "angry"), ("nemo:EB0", "neutral"), ("nemo:KD0", "sad"), ("nemo:MK0", "happy")]
    assert len(res.skipped) == 1
    items = [Item(f"/c/{s}_{k}", "cremad", f"cremad:{s}", "sad") for s in range(1001, 1031) for k in range(2)]
    items += [Item(f"/n/{s}_{k}", "nemo", f"nemo:{s}", "sad") for s in ("A0", "B0", "C0", "D0") for k in range(2)]
    base = speaker_split(items, seed=3)
    loco = speaker_split(items, seed=3, hold_out=("nemo",))
    assert {s for s in loco["test"] if s.startswith("nemo")} == {"nemo:A0", "nemo:B0", "nemo:C0", "nemo:D0"}
    assert not any(s.startswith("nemo") for s in loco["train"] + loco["val"])
    keep = [s for s in base["test"] if s.startswith("cremad")]
    assert keep == [s for s in loco["test"] if s.startswith("cremad")]  # other corpora unchanged


def test_cli_choices_match_the_evaluator():
    from training import cli_bundle as cli
    from training import evaluate

    assert cli.CONDITIONS == evaluate.CONDITIONS and cli.HISTORIES == evaluate.HISTORIES
