from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest

from models.errors import ParameterError
from models.features import FeatureParams, SegmentParams, VadParams, logmel, segment, voiced

GOLDEN = Path(__file__).parent / "data" / "golden_logmel.npy"


def golden_signal() -> np.ndarray:
    """1 s at 8 kHz: a chirp plus seeded noise (regenerate the golden file with this)."""
    rng = np.random.default_rng(1234)
    t = np.arange(8000) / 8000
    return (0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.02 * rng.standard_normal(8000)).astype(np.float32)


def test_logmel_shape_and_librosa_agreement():
    p = FeatureParams()
    y = golden_signal()
    got = logmel(y=y, sr=8000, params=p)
    assert got.shape == (1 + (8000 - p.n_fft) // p.hop_length, p.n_mels) == (97, 64)
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=8000, n_fft=p.n_fft, hop_length=p.hop_length, center=False,
                                       n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax),
        amin=p.amin, top_db=None,
    ).T
    assert np.abs(got - ref).max() < 1e-3


def test_logmel_matches_committed_golden_array():
    got = logmel(y=golden_signal(), sr=8000, params=FeatureParams())
    np.testing.assert_allclose(got, np.load(GOLDEN), atol=1e-3)


def test_logmel_batches_like_single():
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((3, 24000)).astype(np.float32) * 0.1
    p = FeatureParams()
    out = logmel(y=batch, sr=8000, params=p)
    assert out.shape == (3, 297, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out[1], logmel(y=batch[1], sr=8000, params=p), atol=1e-4)


def test_logmel_validates():
    with pytest.raises(ParameterError, match="n_samples=100"):
        logmel(y=np.zeros(100, np.float32), sr=8000, params=FeatureParams())
    with pytest.raises(ParameterError, match="Nyquist"):
        logmel(y=np.zeros(1000, np.float32), sr=6000, params=FeatureParams())
    with pytest.raises(ParameterError, match="n_mels=0"):
        FeatureParams(n_mels=0)


def test_segment_windows_and_padding():
    p = SegmentParams(window_s=3.0, hop_s=3.0, min_s=0.5)
    y = np.arange(8000 * 7, dtype=np.float32)
    starts, segs = segment(y=y, sr=8000, params=p)
    assert starts.tolist() == [0, 24000, 48000]
    assert segs.shape == (3, 24000)
    assert segs[2, 7999] == y[-1] and segs[2, 8000:].max() == 0
    # a tail under min_s is dropped; a clip under min_s yields nothing
    starts, _ = segment(y=np.ones(24000 + 3000, np.float32), sr=8000, params=p)
    assert starts.tolist() == [0]
    assert segment(y=np.ones(3000, np.float32), sr=8000, params=p)[1].shape == (0, 24000)
    starts, _ = segment(y=np.ones(8000 * 6, np.float32), sr=8000, params=SegmentParams(hop_s=1.5))
    assert starts.tolist() == [0, 12000, 24000]
    with pytest.raises(ParameterError, match="hop_s=4.0"):
        SegmentParams(hop_s=4.0)


def test_vad_separates_speechlike_from_silence():
    rng = np.random.default_rng(3)
    loud = 0.1 * rng.standard_normal(24000).astype(np.float32)
    quiet = 0.0005 * rng.standard_normal(24000).astype(np.float32)
    mask = voiced(segments=np.stack([loud, quiet, np.zeros(24000, np.float32)]), sr=8000, params=VadParams())
    assert mask.tolist() == [True, False, False]
