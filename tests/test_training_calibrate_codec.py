"""Calibration (temperature, uncertain threshold, ECE), real-codec and channel augmentation, the
speaker-history draw, nEMO and leave-one-corpus-out splits."""

from __future__ import annotations

import numpy as np
import pytest

from models.bundle import Calibration
from training.augment import CODECS, AugmentConfig, augment_example, codec, mix_at_snr, packet_loss, reverb
from training.calibrate import calibrate, ece, fit_temperature, uncertain_threshold
from training.corpora import Item, load_nemo
from training.history import Histories, HistoryConfig, gain_shift
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


def test_packet_loss_reverb_and_babble():
    rng = np.random.default_rng(4)
    y = _speechlike(seed=1)
    lost = packet_loss(y, rate=0.3, rng=rng, sr=SR)
    frames = lost.reshape(-1, 160)
    zero_frames = (np.abs(frames).max(axis=1) == 0).mean()
    assert 0.15 < zero_frames < 0.45
    wet = reverb(y, rt60=0.5, rng=rng, sr=SR)
    assert wet.shape == y.shape and not np.allclose(wet, y)
    # reverberation smears energy into the pause after the speech
    tail = np.concatenate([y, np.zeros(2000, np.float32)])
    assert np.abs(reverb(tail, rt60=0.5, rng=rng, sr=SR)[-1800:-1000]).mean() > 1e-4
    other = _speechlike(seed=2) * 5
    mixed = mix_at_snr(y, other, snr_db=10.0)
    noise = mixed - y
    assert 10 * np.log10(np.mean(y ** 2) / np.mean(noise ** 2)) == pytest.approx(10.0, abs=0.1)


def test_augment_example_reports_gain_and_channel_and_is_seeded():
    cfg = AugmentConfig(p_codec=1.0, p_mulaw=0.0, p_alaw=0.0, p_band=0.0, p_loss=1.0)
    y = _speechlike(seconds=4.0)
    a = augment_example(y, sr=SR, window=3 * SR, rng=np.random.default_rng(5), cfg=cfg)
    b = augment_example(y, sr=SR, window=3 * SR, rng=np.random.default_rng(5), cfg=cfg)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert a[0].shape == (3 * SR,) and -4.0 <= a[1] <= 4.0 and a[2] is True  # coded = narrowband
    clean = augment_example(y, sr=SR, window=3 * SR, rng=np.random.default_rng(5),
                            cfg=AugmentConfig(p_codec=0.0, p_mulaw=0.0, p_alaw=0.0, p_band=0.0))
    assert clean[2] is False


def _items() -> list[Item]:
    out = []
    for s in ("a", "b"):
        for k, label in enumerate(["neutral"] * 6 + ["angry", "sad", "happy", "fearful"]):
            out.append(Item(f"/x/{s}{k}.wav", "c", f"c:{s}", label))
    return out


def test_training_history_is_same_speaker_mostly_neutral_and_never_the_clip_itself():
    items = _items()
    idx = list(range(len(items)))
    clean = np.zeros((len(items), 3))
    clean[:, -1] = 1.0
    clean[:, 0] = idx  # sum column = the clip's own index, so a history's picks can be read back
    hist = Histories(items, idx, clean, clean * 2, HistoryConfig(p_empty=0.0, max_clips=1, p_neutral=0.6))
    rng = np.random.default_rng(6)
    picks = [int(hist.draw(3, narrowband=False, rng=rng)[0]) for _ in range(2000)]
    assert all(0 <= p < 10 and p != 3 for p in picks)  # speaker a, never clip 3 itself
    neutral_share = np.mean([items[p].label == "neutral" for p in picks])
    assert 0.55 < neutral_share < 0.65
    assert hist.draw(3, narrowband=True, rng=rng)[-1] == 2.0  # the narrowband table
    assert HistoryConfig(p_empty=1.0).p_empty == 1.0
    empty = Histories(items, idx, clean, clean, HistoryConfig(p_empty=1.0))
    assert not empty.draw(3, narrowband=False, rng=rng).any()
    blind = hist.label_blind(3, n=4, rng=rng)
    assert blind[-1] == 4.0


def test_gain_shift_equals_recomputing_the_sums():
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, size=(50, 3))
    std = np.array([2.0, 4.0, 8.0])
    sums = np.concatenate([x.sum(0), (x * x).sum(0), [50.0]])[None, :]
    shifted = x + 6.0 / std
    want = np.concatenate([shifted.sum(0), (shifted * shifted).sum(0), [50.0]])
    assert np.allclose(gain_shift(sums, np.array([6.0]), std)[0], want)


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
    from training import cli, evaluate

    assert cli.CONDITIONS == evaluate.CONDITIONS and cli.HISTORIES == evaluate.HISTORIES
