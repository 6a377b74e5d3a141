"""Noise that real lines have: SNR against active speech, the conditions, the training augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from training.lines import NOISES, active_level, at_snr, condition, line_augment, noise

SR = 8000


def _half_silent(seed: int = 0) -> np.ndarray:
    """2 s of a loud tone burst, then 2 s of silence: active level = the burst's power."""
    t = np.arange(2 * SR) / SR
    burst = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return np.concatenate([burst, np.zeros(2 * SR, np.float32)])


def test_active_level_ignores_pauses():
    y = _half_silent()
    assert active_level(y, sr=SR) == pytest.approx(0.045, rel=0.02)  # 0.3**2 / 2, not half of it
    assert active_level(y, sr=SR) > 1.9 * float(np.mean(y * y))


@pytest.mark.parametrize("kind", NOISES)
def test_snr_is_measured_against_active_speech(kind):
    y = _half_silent()
    rng = np.random.default_rng(1)
    babble = [np.random.default_rng(s).standard_normal(SR * 3).astype(np.float32) * 0.1 for s in range(5)]
    n = noise(kind, len(y), sr=SR, rng=rng, babble=babble)
    z = at_snr(y, n, snr_db=10.0, sr=SR)
    added = z - y
    snr = 10 * np.log10(active_level(y, sr=SR) / np.mean(added * added))
    assert snr == pytest.approx(10.0, abs=0.3)


def test_conditions_are_deterministic_and_scaled():
    y = _half_silent()
    a = condition(y, name="white10", sr=SR, seed=5)
    np.testing.assert_array_equal(a, condition(y, name="white10", sr=SR, seed=5))
    assert not np.array_equal(a, condition(y, name="white10", sr=SR, seed=6))
    quiet = condition(y, name="white20", sr=SR, seed=5) - y
    loud = a - y
    assert 10 * np.log10(np.mean(loud**2) / np.mean(quiet**2)) == pytest.approx(10.0, abs=0.3)
    np.testing.assert_array_equal(condition(y, name="clean", sr=SR, seed=0), y)
    with pytest.raises(ValueError, match="unknown condition"):
        condition(y, name="white5", sr=SR, seed=0)


def test_line_augment_draws_realistic_floors():
    y = _half_silent()
    descs = [line_augment(y, sr=SR, rng=np.random.default_rng(s))[1] for s in range(200)]
    noisy = [d for d in descs if any(k in d for k in NOISES)]
    assert 0.75 < len(noisy) / len(descs) < 0.95  # p_noise 0.85
    snrs = [float("".join(ch for ch in d.split("+")[1] if ch.isdigit())) for d in noisy]
    assert min(snrs) < 5 and max(snrs) > 25  # 0-30 dB
    out, _ = line_augment(y, sr=SR, rng=np.random.default_rng(0))
    assert out.shape == y.shape and out.dtype == np.float32 and np.abs(out).max() <= 1.0
