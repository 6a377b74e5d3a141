"""Speaker-disjoint seeded split; augmentation shape/finiteness and train-only use; metrics."""

from __future__ import annotations

import numpy as np
import pytest

from training import augment
from training.corpora import Item
from training.metrics import scores, uar
from training.split import assign, random_split, speaker_split


def _items() -> list[Item]:
    items = []
    for spk in range(1001, 1031):
        for lab in ("angry", "sad"):
            items.append(Item(f"/x/{spk}_{lab}.wav", "cremad", f"cremad:{spk}", lab))
    for actor in range(1, 21):
        items.append(Item(f"/r/{actor}.wav", "ravdess", f"ravdess:{actor:02d}", "happy"))
    for spk in ("DC", "JE", "JK"):
        items.append(Item(f"/s/{spk}.wav", "savee", f"savee:{spk}", "sad"))
    for spk in ("OAF", "YAF"):
        items.append(Item(f"/t/{spk}.wav", "tess", f"tess:{spk}", "angry"))
    return items


def test_split_is_speaker_disjoint_seeded_and_follows_protocol() -> None:
    items = _items()
    a, b, c = speaker_split(items, seed=7), speaker_split(items, seed=7), speaker_split(items, seed=8)
    assert a == b and a != c
    sets = {k: set(v) for k, v in a.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert set().union(*sets.values()) == {i.speaker for i in items}
    test = a["test"]
    assert sum(s.startswith("cremad:") for s in test) == 15
    assert sum(s.startswith("cremad:") for s in a["val"]) == 8
    rav_test = [int(s.split(":")[1]) for s in test if s.startswith("ravdess:")]
    assert len(rav_test) == 4 and sum(x % 2 for x in rav_test) == 2  # 2 male (odd), 2 female (even)
    rav_val = [int(s.split(":")[1]) for s in a["val"] if s.startswith("ravdess:")]
    assert len(rav_val) == 2 and sum(x % 2 for x in rav_val) == 1
    assert sum(s.startswith("savee:") for s in test) == 1
    assert {"tess:OAF", "tess:YAF"} <= sets["train"]
    parts = assign(items, a)
    for part, idx in parts.items():
        assert {items[i].speaker for i in idx} <= sets[part]
    assert sum(len(v) for v in parts.values()) == len(items)


def test_small_corpus_keeps_training_speakers() -> None:
    items = [Item(f"/x/{s}.wav", "cremad", f"cremad:{s}", "sad") for s in range(1001, 1007)]
    split = speaker_split(items, seed=0)
    assert len(split["test"]) == 1 and len(split["val"]) == 1 and len(split["train"]) == 4


def test_random_split_covers_everything() -> None:
    parts = random_split(100, seed=1)
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(100))
    assert len(parts["test"]) == 20


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augment_clip_shape_and_finite(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in (4000, 24000, 40000):
        y = (0.3 * rng.standard_normal(n)).astype(np.float32)
        out = augment.augment_clip(y, sr=8000, window=24000, rng=rng)
        assert out.shape == (24000,) and out.dtype == np.float32 and np.isfinite(out).all()
        assert np.abs(out).max() <= 1.0


def test_augment_is_seeded() -> None:
    y = np.sin(np.arange(30000) / 7).astype(np.float32) * 0.5
    a = augment.augment_clip(y, sr=8000, window=24000, rng=np.random.default_rng(3))
    b = augment.augment_clip(y, sr=8000, window=24000, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_companding_and_channel() -> None:
    y = np.linspace(-1, 1, 8001, dtype=np.float32)
    for fn in (augment.mu_law, augment.a_law):
        z = fn(y)
        assert z.shape == y.shape and np.isfinite(z).all()
        assert np.max(np.abs(z - y)) < 0.05  # 8-bit companding: small error
        assert len(np.unique(z)) <= 256
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    tel = augment.telephone(tone, sr=16000)
    assert tel.shape == tone.shape and np.isfinite(tel).all()
    low = (0.5 * np.sin(2 * np.pi * 60 * np.arange(8000) / 8000)).astype(np.float32)
    assert np.std(augment.band_limit(low, sr=8000)[2000:]) < 0.05 * np.std(low)  # hum removed


def test_crop_or_pad_and_speed() -> None:
    y = np.arange(100, dtype=np.float32)
    assert augment.crop_or_pad(y, window=50, rng=None).tolist() == list(range(50))
    padded = augment.crop_or_pad(y, window=150, rng=np.random.default_rng(0))
    assert padded[:100].tolist() == y.tolist() and not padded[100:].any()
    assert abs(len(augment.speed(np.zeros(10000, np.float32), factor=1.1)) - 10000 / 1.1) < 5


def test_spec_augment_masks_in_place() -> None:
    x = np.ones((4, 297, 64), dtype=np.float32)
    augment.spec_augment(x, rng=np.random.default_rng(0), p=1.0)
    assert x.shape == (4, 297, 64) and (x == 0).any() and np.isfinite(x).all()


def test_augmentation_only_in_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation features come from the serving path untouched: augmentation is never called there."""
    from models.bundle import Spec  # noqa: F401
    from training import train
    from training.data import WaveStore

    calls = []
    monkeypatch.setattr(train, "augment_example",
                        lambda *a, **k: calls.append(1) or (np.zeros(24000, np.float32), 0.0, False))
    clips = [np.round(np.sin(np.arange(n) / 5) * 8000).astype(np.int16) for n in (20000, 30000)]
    offsets = np.array([0, 20000, 50000])
    store = WaveStore(np.concatenate(clips), offsets)
    items = [Item("a", "cremad", "cremad:1", "sad"), Item("b", "cremad", "cremad:2", "angry")]
    spec = train.base_spec(("sad", "angry"), np.zeros(64), np.ones(64), name="t", version="0")
    val = train.ClipSet(store, [0, 1], items, spec, spec.norm_mean, spec.norm_std)
    assert calls == [] and val.x is not None and val.x.shape[1:] == (297, 64)
    cfg = train.FitConfig(labels=("sad", "angry"), epoch_size=8, batch_size=8)
    x, y, picked = train.epoch_data(store, items, [0, 1], np.array([0.5, 0.5]), spec, spec.norm_mean, spec.norm_std,
                            cfg, np.random.default_rng(0))
    assert len(calls) == 8 and x.shape == (8, 297, 64) and set(y) <= {0, 1}
    assert set(picked) <= {0, 1} and all(items[i].label == spec.labels[k] for i, k in zip(picked, y, strict=True))


def test_metrics() -> None:
    labels = ("a", "b", "c")
    sc = scores(["a", "a", "b", "b"], ["a", "b", "b", "c"], labels)
    assert sc["uar"] == pytest.approx(0.5) and sc["wa"] == pytest.approx(0.5)
    assert sc["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert set(sc["recall"]) == {"a", "b"}  # c absent from the truth: not averaged
    assert uar(np.array([0, 0, 1]), np.array([0, 1, 1]), 3) == pytest.approx(0.75)


def test_sampling_weights_balance_labels_and_corpora() -> None:
    from training.schedule import cosine_lr
    from training.train import sampling_weights

    items = ([Item(f"c{i}", "cremad", "cremad:1", "angry") for i in range(90)]
             + [Item(f"r{i}", "ravdess", "ravdess:01", "angry") for i in range(10)]
             + [Item(f"t{i}", "tess", "tess:OAF", "surprised") for i in range(40)]
             + [Item(f"s{i}", "savee", "savee:DC", "surprised") for i in range(5)])
    w = sampling_weights(items, list(range(len(items))), corpus_share="equal")
    np.testing.assert_array_equal(w, sampling_weights(items, list(range(len(items)))))  # the default
    assert w.sum() == pytest.approx(1.0)
    assert w[:100].sum() == pytest.approx(0.5)  # each label the same total weight
    assert w[:90].sum() == pytest.approx(w[90:100].sum())  # corpora share a label equally
    assert w[100:140].sum() == pytest.approx(w[140:].sum() * 0.5)  # TESS gets half a share
    assert cosine_lr(1e-3, 0, 10) == pytest.approx(1e-3) and cosine_lr(1e-3, 9, 10) == pytest.approx(2e-5)


def test_sampling_weights_by_speaker_count() -> None:
    from training.train import sampling_weights

    items = ([Item(f"c{i}", "cremad", f"cremad:{1001 + i % 16}", "angry") for i in range(64)]  # 16 speakers
             + [Item(f"r{i}", "ravdess", f"ravdess:{i % 4:02d}", "angry") for i in range(8)]  # 4 speakers
             + [Item(f"t{i}", "tess", "tess:OAF", "angry") for i in range(40)]  # 1 speaker, half weight
             + [Item(f"s{i}", "savee", "savee:DC", "sad") for i in range(5)])
    w = sampling_weights(items, list(range(len(items))), corpus_share="sqrt-speakers")
    cremad, ravdess, tess = w[:64].sum(), w[64:72].sum(), w[72:112].sum()
    assert w.sum() == pytest.approx(1.0) and w[112:].sum() == pytest.approx(0.5)  # labels still balanced
    assert cremad / ravdess == pytest.approx(2.0) and ravdess / tess == pytest.approx(4.0)  # sqrt 16 : 4, 2 : 0.5
    assert np.allclose(w[:64], w[0])  # clips of one corpus and label are equally likely
    with pytest.raises(ValueError, match="corpus_share must be one of"):
        sampling_weights(items, [0], corpus_share="speakers")


def test_early_stopping_keeps_the_best_of_the_second_half() -> None:
    from training.schedule import EarlyStopping

    stopper = EarlyStopping(epochs=20, patience=3)
    improved = [stopper.update(e, s) for e, s in enumerate([0.3, 0.9, 0.4, 0.4, 0.4, 0.4, 0.4], start=1)]
    assert improved == [False] * 7  # the first half (epochs 1-10) is neither kept nor counted
    assert not stopper.stop and stopper.since == 0 and stopper.best_epoch == -1
    assert [stopper.update(e, 0.5 if e == 11 else 0.45) for e in range(10, 15)] == [False, True, False, False, False]
    assert stopper.best == 0.5 and stopper.best_epoch == 11 and stopper.stop  # epochs 12, 13, 14 counted
    again = EarlyStopping(epochs=20, patience=3)
    for epoch, score in [(11, 0.5), (12, 0.4), (13, 0.6), (14, 0.59), (15, 0.6)]:
        again.update(epoch, score)
    assert again.best_epoch == 13 and again.since == 2 and not again.stop
    assert EarlyStopping(epochs=1, patience=1).update(1, 0.1)  # a 1-epoch run keeps its only epoch


def test_weight_average_starts_late_and_decays() -> None:
    from training.schedule import WeightAverage

    avg = WeightAverage(decay=0.5, start=3)
    ones = [np.ones((2, 2), np.float32), np.ones(3, np.float32)]
    assert not avg.update(1, ones) and not avg.update(2, ones) and avg.weights == []  # before start
    assert not avg.update(3, [w * 4 for w in ones])  # one epoch in: nothing to compare yet
    assert avg.update(4, [w * 0 for w in ones])  # 0.5 * 4 + 0.5 * 0
    assert avg.update(5, [w * 2 for w in ones])  # 0.5 * 2 + 0.5 * 2
    assert [w.shape for w in avg.weights] == [(2, 2), (3,)]
    np.testing.assert_allclose(avg.weights[0], 2.0)
    np.testing.assert_allclose(avg.weights[1], 2.0)
    assert ones[0][0, 0] == 1.0  # the caller's arrays are not modified
    assert not WeightAverage(decay=0.0, start=1).update(5, ones)  # decay 0 switches averaging off
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(decay=1.0, start=1)
