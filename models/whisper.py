"""Whisper's log-mel front end in numpy: what the v3 model's encoder hears.

The same numbers as OpenAI Whisper's ``log_mel_spectrogram`` (16 kHz, 80 bands, 25 ms Hann window
every 10 ms, centred with reflection, the last frame dropped, ``log10(max(mel, 1e-10))`` clamped at
its maximum minus 8, then ``(x + 4) / 4``), with two differences that serving needs:

- the input is one segment at the spec's rate (8 kHz on a phone line), resampled here to 16 kHz
  with soxr; the clamp's maximum is the segment's own (Whisper pads a clip to 30 s first; we never
  do: the encoder runs on the segment's frames only);
- it takes a batch ``(k, n)`` of segments.

No torch: the mel filters are librosa's (Whisper's ``mel_filters.npz`` was made with
``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)``) and the FFT is ``scipy.fft``.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import soxr

from models.errors import ParameterError
from models.mel import hann_window, mel_basis

#: Whisper's fixed front end.
WHISPER_SR = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
#: Segments per FFT chunk (keeps the frame stack in cache).
CHUNK = 4


def n_frames(n_samples: int, *, sr: int) -> int:
    """Frames Whisper's front end gives for ``n_samples`` samples at rate ``sr``."""
    n16 = resampled_length(n_samples, sr=sr)
    if n16 < N_FFT // 2 + 1:
        raise ParameterError(f"n_samples={n_samples} at {sr} Hz is shorter than Whisper's window")
    return n16 // HOP_LENGTH


def resampled_length(n_samples: int, *, sr: int) -> int:
    """Length of ``n_samples`` samples at ``sr`` once resampled to 16 kHz (soxr's rounding)."""
    return int(np.ceil(n_samples * WHISPER_SR / sr)) if sr != WHISPER_SR else int(n_samples)


def to_16k(y: np.ndarray, *, sr: int) -> np.ndarray:
    """``(k, n)`` at ``sr`` -> ``(k, n16)`` float32 at 16 kHz."""
    y = np.asarray(y, dtype=np.float32)
    if sr == WHISPER_SR:
        return y
    if sr <= 0:
        raise ParameterError(f"sr={sr} must be positive")
    out = soxr.resample(np.ascontiguousarray(y.T), sr, WHISPER_SR, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).T.reshape(len(y), -1))


def log_mel(*, y: np.ndarray, sr: int) -> np.ndarray:
    """Whisper log-mel of segments. ``y``: ``(n,)`` or ``(k, n)`` at ``sr`` -> ``(frames, 80)`` or
    ``(k, frames, 80)`` float32 with ``frames = n16 // 160`` (``n16``: the length at 16 kHz)."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim not in (1, 2):
        raise ParameterError(f"y must be (n,) or (k, n), got shape {y.shape}")
    rows = y.reshape(-1, y.shape[-1])
    n_out = n_frames(rows.shape[-1], sr=sr)  # validates the length
    x = to_16k(rows, sr=sr)
    pad = N_FFT // 2
    x = np.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    # librosa's Slaney mel filters over 0-8 kHz (Whisper's own) and the periodic Hann window (torch's)
    basis, window = mel_basis(WHISPER_SR, N_FFT, N_MELS, 0.0, WHISPER_SR / 2), hann_window(N_FFT)
    out = np.empty((len(rows), n_out, N_MELS), dtype=np.float32)
    for i in range(0, len(rows), CHUNK):
        frames = np.lib.stride_tricks.sliding_window_view(x[i : i + CHUNK], N_FFT, axis=-1)[:, ::HOP_LENGTH][:, :n_out]
        spec = scipy.fft.rfft(frames * window, axis=-1)
        power = np.square(spec.real) + np.square(spec.imag)
        np.matmul(power.astype(np.float32), basis, out=out[i : i + CHUNK])
    np.maximum(out, 1e-10, out=out)
    np.log10(out, out=out)
    top = out.max(axis=(1, 2), keepdims=True)
    np.maximum(out, top - 8.0, out=out)
    out += 4.0
    out /= 4.0
    return out.reshape(y.shape[:-1] + (n_out, N_MELS))
