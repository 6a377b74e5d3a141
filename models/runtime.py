"""The onnxruntime wrapper: a batch of segments (or features) in, probabilities out.

Create one :class:`EmotionModel` per process (onnxruntime sessions are neither fork-safe nor
picklable) and reuse it for every job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.bundle import Bundle, load_bundle
from models.errors import BundleError, ParameterError
from models.features import compute
from models.history import causal, prior_wire, wire_vector
from models.speaker import prior_vector, segment_sums, stats_vector
from models.utterances import clip_windows

#: Default intra-op threads per session: one, so N worker processes use N cores.
DEFAULT_THREADS = 1


class EmotionModel:
    """A loaded, validated bundle with its onnxruntime session."""

    def __init__(self, bundle: Bundle | str | Path | None = None, *, threads: int = DEFAULT_THREADS) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.spec = self.bundle.spec
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.bundle.onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise BundleError(f"{self.bundle.onnx_path} cannot be loaded by onnxruntime: {exc}") from None
        self._check_graph()
        self._mean = self.spec.norm_mean.astype(np.float32)
        self._inv_std = (1.0 / self.spec.norm_std).astype(np.float32)

    def _check_graph(self) -> None:
        spec = self.spec
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if spec.input_name not in inputs:
            raise BundleError(f"model.onnx has no input {spec.input_name!r} (has {sorted(inputs)})")
        if spec.output_name not in outputs:
            raise BundleError(f"model.onnx has no output {spec.output_name!r} (has {sorted(outputs)})")
        want_in = [spec.n_frames, spec.features.n_mels]
        got_in = list(inputs[spec.input_name].shape)[1:]
        if len(got_in) != 2 or any(isinstance(g, int) and g != w for g, w in zip(got_in, want_in, strict=True)):
            raise BundleError(f"model.onnx input shape {got_in} does not match spec (frames, n_mels) {want_in}")
        if spec.speaker is not None:
            if spec.speaker.input not in inputs:
                raise BundleError(f"spec.json declares speaker_stats, model.onnx has no input {spec.speaker.input!r}")
            got = list(inputs[spec.speaker.input].shape)[1:]
            if len(got) != 1 or (isinstance(got[0], int) and got[0] != spec.speaker.size):
                raise BundleError(f"model.onnx speaker input shape {got} does not match spec ({spec.speaker.size},)")
        elif spec.history is not None:
            hist = spec.history
            for name, table, what in ((hist.input, inputs, "input"), (hist.output, outputs, "output")):
                if name not in table:
                    raise BundleError(f"spec.json declares embedding_history, model.onnx has no {what} {name!r}")
                got = list(table[name].shape)[1:]
                if len(got) != 1 or (isinstance(got[0], int) and got[0] != hist.size):
                    raise BundleError(f"model.onnx {what} {name!r} shape {got} does not match spec ({hist.size},)")
            if len(inputs) != 2:
                raise BundleError(f"model.onnx has inputs {sorted(inputs)}, spec.json declares "
                                  f"{[spec.input_name, hist.input]}")
        elif len(inputs) != 1:
            raise BundleError(f"model.onnx has inputs {sorted(inputs)} but spec.json declares only {spec.input_name!r}")
        got_out = list(outputs[spec.output_name].shape)[1:]
        if len(got_out) != 1 or (isinstance(got_out[0], int) and got_out[0] != len(spec.labels)):
            raise BundleError(f"model.onnx output shape {got_out} does not match {len(spec.labels)} labels")

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def features(self, segments: np.ndarray) -> np.ndarray:
        """Normalised features of ``segments`` ``(k, window)`` -> ``(k, frames, n_mels)`` float32 (log-mel, or
        Whisper's front end for a ``whisper`` bundle, whose normalisation is the identity)."""
        feats = compute(y=segments, sr=self.spec.sample_rate, params=self.spec.features)
        feats -= self._mean  # in place: logmel returns a fresh array
        feats *= self._inv_std
        return feats

    @property
    def uncertain_below(self) -> float:
        """Calibrated confidence under which a record is flagged ``uncertain`` (0: never)."""
        cal = self.spec.calibration
        return cal.uncertain_below if cal is not None else 0.0

    @property
    def uses_speaker(self) -> bool:
        """Whether the bundle takes per-speaker statistics (``spec.speaker``)."""
        return self.spec.speaker is not None

    @property
    def uses_history(self) -> bool:
        """Whether the bundle takes the channel's embedding history (``spec.history``)."""
        return self.spec.history is not None

    def frame_sums(self, segments: np.ndarray, x: np.ndarray, *, valid: np.ndarray | None = None) -> np.ndarray:
        """Per-segment sums of the voiced frames ``(k, 2 * n_mels + 1)`` of ``segments`` ``(k, window)``
        whose normalised features are ``x``: what :class:`models.speaker.ChannelStats` accumulates."""
        sp = self.spec.speaker
        if sp is None:
            raise ParameterError(f"{self.model_id} takes no speaker statistics")
        return segment_sums(segments, x, params=sp, features=self.spec.features, valid=valid)

    def predict_features(self, x: np.ndarray, speaker: np.ndarray | None = None, *, calibrated: bool = True
                         ) -> np.ndarray:
        """Probabilities ``(k, n_labels)`` for normalised features ``(k, frames, n_mels)``.

        ``speaker``: ``(k, 2 * n_mels + 1)`` speaker vectors (:mod:`models.speaker`) when the bundle
        takes them, or ``(k, size + 1)`` history wire vectors (:mod:`models.history`) for a bundle with
        ``embedding_history``; None means "no history": the prior. Ignored by bundles without either.
        ``calibrated``: apply the bundle's temperature (if any).
        """
        if self.spec.history is not None:
            return self.predict_history(x, speaker, calibrated=calibrated)[0]
        self._check_features(x)
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        feeds = {self.spec.input_name: np.asarray(x, dtype=np.float32)}
        sp = self.spec.speaker
        if sp is not None:
            if speaker is None:
                speaker = np.repeat(prior_vector(sp)[None, :], len(x), axis=0)
            speaker = np.asarray(speaker, dtype=np.float32)
            if speaker.shape != (len(x), sp.size):
                raise ParameterError(f"speaker vectors have shape {speaker.shape}, expected ({len(x)}, {sp.size})")
            feeds[sp.input] = speaker
        (probs,) = self.session.run([self.spec.output_name], feeds)
        probs = np.asarray(probs, dtype=np.float32)
        if calibrated and self.spec.calibration is not None:
            probs = self.spec.calibration.apply(probs)
        return probs

    def predict_history(self, x: np.ndarray, history: np.ndarray | None = None, *, calibrated: bool = True
                        ) -> tuple[np.ndarray, np.ndarray]:
        """For a bundle with ``embedding_history``: probabilities ``(k, n_labels)`` and each segment's
        embedding ``(k, size)`` for normalised features ``x`` ``(k, frames, n_bands)``.

        ``history``: ``(k, size + 1)`` wire vectors (:func:`models.history.wire_vector`: the channel's
        shrunk mean embedding and how many earlier segments it holds); None: the prior (no history).
        """
        hist = self.spec.history
        if hist is None:
            raise ParameterError(f"{self.model_id} takes no embedding history")
        self._check_features(x)
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, hist.size), np.float32)
        wire = prior_wire(hist, len(x)) if history is None else np.asarray(history, dtype=np.float32)
        if wire.shape != (len(x), hist.size + 1):
            raise ParameterError(f"history vectors have shape {wire.shape}, expected ({len(x)}, {hist.size + 1})")
        probs, emb = self.session.run([self.spec.output_name, hist.output],
                                      {self.spec.input_name: np.asarray(x, dtype=np.float32),
                                       hist.input: np.ascontiguousarray(wire[:, :-1])})
        probs = np.asarray(probs, dtype=np.float32)
        if calibrated and self.spec.calibration is not None:
            probs = self.spec.calibration.apply(probs)
        return probs, np.asarray(emb, dtype=np.float32)

    def predict_causal(self, x: np.ndarray, past: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """One channel's consecutive segments ``x`` ``(k, frames, n_bands)``, each with the history of the
        channel's earlier segments (:func:`models.history.causal`): ``past`` ``(m, size)``, the channel's
        history before the first (None: none). Returns probabilities, embeddings and each segment's ``m``."""
        hist = self.spec.history
        if hist is None:
            raise ParameterError(f"{self.model_id} takes no embedding history")
        self._check_features(x)
        past = np.zeros((0, hist.size), np.float32) if past is None else np.asarray(past, dtype=np.float32)
        if past.ndim != 2 or past.shape[1] != hist.size:
            raise ParameterError(f"history embeddings have shape {past.shape}, expected (m, {hist.size})")
        probs, emb, counts = causal(self.predict_history, x, past, hist)
        return (probs if len(x) else np.zeros((0, len(self.labels)), np.float32)), emb, counts

    def _check_features(self, x: np.ndarray) -> None:
        if x.ndim != 3 or x.shape[1:] != (self.spec.n_frames, self.spec.features.n_mels):
            raise ParameterError(
                f"features have shape {x.shape}, expected (k, {self.spec.n_frames}, {self.spec.features.n_mels})"
            )

    def predict_segments(self, segments: np.ndarray, speaker: np.ndarray | None = None) -> np.ndarray:
        """Probabilities ``(k, n_labels)`` for raw segments ``(k, window)`` at the spec's rate."""
        window, _, _ = self.spec.segment.samples(self.spec.sample_rate)
        if segments.ndim != 2 or segments.shape[1] != window:
            raise ParameterError(f"segments have shape {segments.shape}, expected (k, {window})")
        return self.predict_features(self.features(segments), speaker)

    def clip_sums(self, y: np.ndarray) -> np.ndarray:
        """Voiced-frame sums ``(2 * n_mels + 1,)`` of a whole clip: its contribution to a speaker's
        statistics (as a call's history holds it)."""
        segs = self._segments(y)
        x = self.features(segs)
        return self.frame_sums(segs, x).sum(axis=0)

    def clip_embeddings(self, y: np.ndarray) -> np.ndarray:
        """Embeddings ``(segments, size)`` of a whole clip's segments (with the prior as history): what
        it adds to a speaker's history, as a call's results would return them."""
        segs = self._segments(y)
        return self.predict_history(self.features(segs))[1]

    def _segments(self, y: np.ndarray) -> np.ndarray:
        sr = self.spec.sample_rate
        segs = clip_windows(y=y, spec=self.spec)
        if len(segs) == 0:
            raise ParameterError(f"clip of {len(y) / sr:.2f} s is shorter than segment.min_s={self.spec.segment.min_s}")
        return segs

    def predict_clip(self, y: np.ndarray, *, history: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """Classify a whole mono clip ``(n,)``: mean of the voiced segments' probabilities.

        ``history``: the speaker's earlier voiced-frame sums ``(2 * n_mels + 1,)`` (e.g. a sum of
        :meth:`clip_sums` of earlier clips); the clip's own frames are added to it, as a call's
        running statistics would hold them. For a bundle with ``embedding_history``: the speaker's
        earlier segment embeddings ``(m, size)`` (e.g. :meth:`clip_embeddings` of earlier clips), of
        which the last ``max_segments`` count; the clip itself is never in its history.
        None: the clip alone (and the prior).
        Returns ``(probs (n_labels,), n_segments_used)``. When no segment passes the VAD gate,
        all segments are used (a quiet clip still gets a label).
        """
        segs = self._segments(y)
        x = self.features(segs)
        speaker = None
        if self.spec.history is not None:
            hist = self.spec.history
            past = np.zeros((0, hist.size)) if history is None else np.asarray(history).reshape(-1, hist.size)
            speaker = np.repeat(wire_vector(past, hist)[None, :], len(segs), axis=0)
        elif self.spec.speaker is not None:
            sums = self.frame_sums(segs, x).sum(axis=0)
            if history is not None:
                sums = sums + history
            speaker = np.repeat(stats_vector(sums, self.spec.speaker)[None, :], len(segs), axis=0)
        probs = self.predict_features(x, speaker)
        return probs.mean(axis=0), len(segs)

    def warmup(self) -> None:
        """Pay librosa's lazy imports and onnxruntime's first-run cost before real work."""
        window, _, _ = self.spec.segment.samples(self.spec.sample_rate)
        self.predict_segments(np.zeros((1, window), dtype=np.float32))
