"""The two spectral building blocks both log-mel front ends share: librosa's Slaney mel filters and
the periodic Hann window, cached per process.

:mod:`models.features` (the 1.x/2.x log-mel at the spec's rate) and :mod:`models.whisper`
(Whisper's front end at 16 kHz, model 3.x) both build on them; neither imports the other for them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.signal


@lru_cache(maxsize=8)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's mel filter bank, transposed for ``power @ basis``: ``(1 + n_fft // 2, n_mels)`` float32."""
    import librosa  # imported lazily: its first import costs ~1 s, paid once per process

    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return np.ascontiguousarray(basis.T.astype(np.float32))


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window of ``n_fft`` samples (librosa's and torch's), float32."""
    return scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
