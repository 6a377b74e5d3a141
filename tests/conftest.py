from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tinybundle import make_tiny_bundle  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid bundle with the default spec's shapes and a tiny ONNX graph (no TensorFlow)."""
    path = tmp_path_factory.mktemp("bundle")
    make_tiny_bundle(path)
    return path


@pytest.fixture(scope="session")
def speaker_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like tiny_bundle_dir, but the model takes per-speaker statistics and is calibrated
    (temperature 8, records under 0.705 confidence flagged uncertain: on the stereo_call fixture
    some segments fall on each side)."""
    from models.bundle import Calibration

    path = tmp_path_factory.mktemp("speaker-bundle")
    make_tiny_bundle(path, speaker=True, calibration=Calibration(temperature=8.0, uncertain_below=0.705))
    return path


@pytest.fixture
def shared_data() -> Path:
    """The shared corpora; tests using it are skipped, loudly, where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"corpora not found at {SHARED_DATA}")
    return SHARED_DATA


# --- pipeline tests (producer/workers): a real redis-server and synthetic calls -------------------
from redis_server import redis_server, redis_url  # noqa: E402,F401


def synth_call(path: Path, *, sr: int = 16000, seconds: float = 18.0, seed: int = 0,
               silent: bool = False) -> Path:
    """A seeded stereo 16-bit WAV: ch0 noise 0-6 s, ch1 noise 6-12 s, a tone on both at 12-15 s,
    silence elsewhere. With a 3 s window/hop: ch0 voiced seq 0,1,4; ch1 voiced seq 2,3,4."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    y = np.zeros((n, 2), dtype=np.float32)
    if not silent:
        noise = rng.standard_normal((n, 2)).astype(np.float32)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)
        y[: 6 * sr, 0] = 0.3 * noise[: 6 * sr, 0]
        y[6 * sr : 12 * sr, 1] = 0.25 * noise[6 * sr : 12 * sr, 1]
        y[12 * sr : 15 * sr] = tone[12 * sr : 15 * sr, None]
    else:
        y += 1e-4 * rng.standard_normal(y.shape).astype(np.float32)  # -80 dBFS hiss: below the VAD gate
    sf.write(path, y, sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def silero_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with the Silero VAD and utterance-aligned segments (spec format 3)."""
    from tinybundle import make_tiny_bundle

    path = tmp_path_factory.mktemp("bundle") / "silero"
    make_tiny_bundle(path, vad="silero")
    return path


@pytest.fixture(scope="session")
def silero_speaker_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Utterance segments and per-speaker statistics (the shipped model's inputs since 2.0.0)."""
    from tinybundle import make_tiny_bundle

    path = tmp_path_factory.mktemp("bundle") / "silero-speaker"
    make_tiny_bundle(path, vad="silero", speaker=True)
    return path


#: Utterances of :func:`speech_call` (channel, start s, seconds): ch1's second one is long (cut into
#: overlapping windows), the rest are single segments.
SPEECH_CALL = ((0, 0.5, 1.4), (1, 2.4, 1.2), (0, 4.1, 1.0), (1, 5.6, 5.0), (0, 11.2, 1.5))


def speech_call(path: Path, *, sr: int = 16000, seed: int = 0) -> Path:
    """A seeded stereo 16-bit WAV of speech-like bursts (bench/speechlike.py) taking turns, over a
    -70 dBFS floor: the utterances of :data:`SPEECH_CALL`, 13 s in all."""
    from bench.speechlike import stereo, write_wav

    utts = [(c, int(start * 8000), sec, seed + 10 + k) for k, (c, start, sec) in enumerate(SPEECH_CALL)]
    out = write_wav(path, stereo(13.0, utts, floor_seed=seed), sr=sr)
    assert len(out) >= int(13.0 * 8000) * sr // 8000 - 1
    return path


@pytest.fixture
def stereo_speech_call(tmp_path: Path) -> Path:
    return speech_call(tmp_path / "speech.wav")


@pytest.fixture
def stereo_call(tmp_path: Path) -> Path:
    return synth_call(tmp_path / "call.wav")


# --- archive tests: a real PostgreSQL per session (tests/pg_server.py) and fresh archive databases --
from pg_server import archive_url, pg_private, pg_server, pg_url  # noqa: E402,F401
