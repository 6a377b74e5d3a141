from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from models.audio import MAX_CHANNELS, decode, decode_raw, resample
from models.errors import AudioError


def _tone(sr: int, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(1)
    base = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))
    return np.stack([base * (0.5 + 0.5 * c / max(channels, 1)) for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "PCM_U8"), ("WAV", "FLOAT"),
     ("WAV", "ULAW"), ("WAV", "ALAW"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")],
)
def test_decode_formats_mono_and_stereo(tmp_path, fmt, subtype):
    for channels in (1, 2):
        data = _tone(16000, channels=channels)
        path = tmp_path / f"x{channels}.{fmt.lower()}"
        sf.write(path, data, 16000, format=fmt, subtype=subtype)
        y, sr = decode(path, sr=8000)
        assert sr == 8000 and y.dtype == np.float32
        assert y.shape == (channels, 4000)
        assert np.corrcoef(y[0, 200:-200], resample(y=data.T, orig_sr=16000, target_sr=8000)[0, 200:-200])[0, 1] > 0.95


def test_decode_bytes_keeps_native_rate():
    buf = io.BytesIO()
    sf.write(buf, _tone(44100, channels=2), 44100, format="WAV", subtype="PCM_16")
    y, sr = decode(buf.getvalue())
    assert sr == 44100 and y.shape == (2, 22050)


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "empty"), (b"this is not audio at all" * 10, "cannot decode"),
     (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot decode")],
)
def test_decode_rejects_bad_bytes(payload, message):
    with pytest.raises(AudioError, match=message):
        decode(payload)


def test_decode_rejects_empty_file_and_missing(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        decode(empty)
    with pytest.raises(AudioError, match="no such audio file"):
        decode(tmp_path / "missing.wav")


def test_decode_rejects_zero_length_data(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 8000, subtype="PCM_16")
    with pytest.raises(AudioError, match="no samples"):
        decode(path)


def test_decode_rejects_nan_and_inf(tmp_path):
    data = _tone(8000)
    data[10, 0] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        decode(path)


def test_decode_rejects_too_many_channels(tmp_path):
    path = tmp_path / "many.wav"
    sf.write(path, _tone(8000, channels=MAX_CHANNELS + 1), 8000, subtype="PCM_16")
    with pytest.raises(AudioError, match="channels"):
        decode(path)


@pytest.mark.parametrize("rate", [1, 10_000_000])
def test_absurd_rates_are_rejected(tmp_path, rate):
    with pytest.raises(AudioError, match="outside the supported range"):
        decode_raw(b"\x00\x00" * 100, sr=rate, channels=1)


def test_decode_raw_encodings_roundtrip():
    data = _tone(8000, channels=2)
    for encoding, subtype in [("pcm16", "PCM_16"), ("mulaw", "ULAW"), ("alaw", "ALAW"), ("float32", "FLOAT")]:
        buf = io.BytesIO()
        sf.write(buf, data, 8000, format="RAW", subtype=subtype, endian="LITTLE")
        y, sr = decode_raw(buf.getvalue(), sr=8000, channels=2, encoding=encoding, target_sr=16000)
        assert sr == 16000 and y.shape == (2, 8000)
    with pytest.raises(AudioError, match="whole number"):
        decode_raw(b"\x00\x00\x00", sr=8000, channels=2)
    with pytest.raises(AudioError, match="unknown raw encoding"):
        decode_raw(b"\x00\x00", sr=8000, channels=1, encoding="pcm12")


@pytest.mark.parametrize(("encoding", "subtype", "width"), [("mulaw", "ULAW", 1), ("pcm16", "PCM_16", 2)])
def test_decode_raw_without_libsndfile_gives_its_values_bit_for_bit(encoding, subtype, width):
    """mu-law (a table) and pcm16 (a scale) skip libsndfile: every code decodes to libsndfile's float32,
    interleaved stereo lands in the right channel."""
    codes = np.arange(256, dtype=np.uint8) if width == 1 else np.arange(-32768, 32768, dtype="<i2")
    data = codes.tobytes()
    mine, _ = decode_raw(data, sr=8000, channels=2, encoding=encoding)
    ref, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True, samplerate=8000, channels=2, format="RAW",
                     subtype=subtype, endian="LITTLE")
    assert mine.dtype == np.float32 and mine.shape == (2, codes.size // 2)
    np.testing.assert_array_equal(mine.view(np.uint32), np.ascontiguousarray(ref.T).view(np.uint32))
