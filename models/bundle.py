"""The model bundle: ``model.onnx`` + ``spec.json`` (+ ``MODEL_CARD.md``) in one directory.

``spec.json`` holds everything inference needs (ordered labels, sample rate, segment, VAD and
feature parameters, normalisation statistics, ONNX input/output names, the sha256 of
``model.onnx``) and everything a reader needs to trust it (training corpora and licences,
evaluation protocol and figures, library versions). :func:`load_bundle` validates all of it and
raises :class:`BundleError` naming the first mismatch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import BundleError, ParameterError
from models.features import FeatureParams, SegmentParams, VadParams
from models.history import HistoryParams
from models.speaker import SpeakerParams
from models.vad import SileroParams

#: Version of the spec.json layout this code writes. Format 2 added the optional ``speaker_stats``
#: (the model's per-speaker input) and ``calibration`` sections; format 3 the Silero VAD
#: (``vad.kind == "silero"``: utterance-aligned segments, :mod:`models.utterances`). Format 1 and 2
#: bundles (1.3.0 and older) still load: energy gate and fixed windows, no speaker input (format 1),
#: not calibrated (format 1).
SPEC_FORMAT = 5
#: Formats this code reads. Format 4 adds ``features.kind == "whisper"`` (model 3.x: Whisper's front
#: end and a frozen encoder prefix inside ``model.onnx``); a format 4 bundle with log-mel features
#: is laid out like format 3. Format 5 adds the optional ``embedding_history`` section (the graph's
#: second input and output, :mod:`models.history`); a spec without it is written as format 4, so
#: code that reads format 4 still reads it.
SPEC_FORMATS = (1, 2, 3, 4, 5)
SPEC_FILE = "spec.json"
ONNX_FILE = "model.onnx"
CARD_FILE = "MODEL_CARD.md"
#: The bundle shipped with the package (trained on ../shared/data; see its MODEL_CARD.md).
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "default"
#: Bundles shipped with the package, by name: ``--model ensemble`` (where no such directory exists
#: in the working directory) loads ``models/ensemble`` of the installed package; ``v2`` is 2.0.0, the
#: log-mel model that was the default before 3.0.0.
PACKAGED_BUNDLES = ("default", "v2", "ensemble")


@dataclass(frozen=True)
class Calibration:
    """Post-hoc calibration recorded in ``spec.json``: probabilities are raised to ``1 / temperature``
    and renormalised (temperature scaling of the logits), and a record whose calibrated confidence is
    below ``uncertain_below`` is flagged ``uncertain``."""

    temperature: float = 1.0
    uncertain_below: float = 0.0

    def __post_init__(self) -> None:
        if not 0.05 <= self.temperature <= 20:
            raise ParameterError(f"calibration.temperature={self.temperature!r} must be in [0.05, 20]")
        if not 0 <= self.uncertain_below < 1:
            raise ParameterError(f"calibration.uncertain_below={self.uncertain_below!r} must be in [0, 1)")

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``(k, n_labels)`` float32 from the network's ``probs``."""
        if self.temperature == 1.0:
            return probs
        logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), 1e-12)) / self.temperature
        logp -= logp.max(axis=-1, keepdims=True)
        p = np.exp(logp)
        return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class Spec:
    """Parsed, validated ``spec.json``. ``info`` keeps the provenance/metrics sections verbatim."""

    name: str
    version: str
    labels: tuple[str, ...]
    sample_rate: int
    segment: SegmentParams
    features: FeatureParams
    vad: VadParams | SileroParams  # energy gate + fixed windows, or Silero + utterance segments
    norm_mean: np.ndarray  # (n_mels,)
    norm_std: np.ndarray  # (n_mels,)
    input_name: str = "features"
    output_name: str = "probs"
    onnx_sha256: str = ""
    speaker: SpeakerParams | None = None
    calibration: Calibration | None = None
    history: HistoryParams | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """``name@version``, as published with every result."""
        return f"{self.name}@{self.version}"

    @property
    def n_frames(self) -> int:
        """Frames per segment: the model's time axis."""
        window, _, _ = self.segment.samples(self.sample_rate)
        return self.features.n_frames(window, self.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": SPEC_FORMAT if self.history is not None else 4,
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "sample_rate": self.sample_rate,
            "segment": self.segment.to_dict(),
            "vad": self.vad.to_dict(),
            "features": self.features.to_dict(),
            "normalisation": {
                "mean": [float(v) for v in self.norm_mean],
                "std": [float(v) for v in self.norm_std],
            },
            "onnx": {"file": ONNX_FILE, "sha256": self.onnx_sha256, "input": self.input_name,
                     "output": self.output_name, "input_shape": [None, self.n_frames, self.features.n_mels]},
        }
        if self.speaker is not None:
            out["speaker_stats"] = {**self.speaker.to_dict(),
                                    "layout": "[mean (n_mels), std (n_mels), weight] of the normalised log-mel "
                                              "over the channel's voiced frames so far, blended with the prior"}
            out["onnx"]["speaker_input"] = self.speaker.input
        if self.history is not None:
            out["embedding_history"] = {**self.history.to_dict(),
                                        "layout": "history input: the channel's last max_segments embeddings "
                                                  "(output 'embedding') blended with the prior "
                                                  "(sum + prior_segments * prior) / (m + prior_segments)"}
            out["onnx"]["history_input"] = self.history.input
            out["onnx"]["embedding_output"] = self.history.output
        if self.calibration is not None:
            out["calibration"] = {**self.info.get("calibration", {}), **asdict(self.calibration)}
        out.update({k: v for k, v in self.info.items() if k != "calibration"})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spec:
        """Build a Spec from parsed JSON; raises :class:`BundleError` naming the bad field."""
        try:
            if data.get("format") not in SPEC_FORMATS:
                raise BundleError(f"spec format {data.get('format')!r} is not one this code reads "
                                  f"({', '.join(map(str, SPEC_FORMATS))}); upgrade ser-stream to use this bundle")
            labels = tuple(str(v) for v in data["labels"])
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise BundleError(f"labels {list(labels)} must be at least two distinct names")
            features = FeatureParams(**data["features"])
            mean = np.asarray(data["normalisation"]["mean"], dtype=np.float32)
            std = np.asarray(data["normalisation"]["std"], dtype=np.float32)
            if mean.shape != (features.n_mels,) or std.shape != (features.n_mels,):
                raise BundleError(
                    f"normalisation mean/std have shapes {mean.shape}/{std.shape}, expected ({features.n_mels},)"
                )
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise BundleError("normalisation stats must be finite with std > 0")
            onnx = data["onnx"]
            known = {"format", "name", "version", "labels", "sample_rate", "segment", "vad",
                     "features", "normalisation", "onnx", "speaker_stats", "embedding_history"}
            speaker = SpeakerParams.from_dict(data["speaker_stats"]) if "speaker_stats" in data else None
            if speaker is not None and features.kind != "logmel":
                raise BundleError(f"speaker_stats go with log-mel features only, not features.kind={features.kind!r}")
            if speaker is not None and speaker.n_mels != features.n_mels:
                raise BundleError(f"speaker_stats has {speaker.n_mels} bands, features have {features.n_mels}")
            history = None
            if "embedding_history" in data:
                if data["format"] < 5:
                    raise BundleError(f"embedding_history needs spec format 5, not {data['format']}")
                hist = dict(data["embedding_history"])
                hist.pop("layout", None)
                history = HistoryParams.from_dict(hist)
                if speaker is not None:
                    raise BundleError("a spec declares speaker_stats or embedding_history, not both")
            cal = data.get("calibration")
            calibration = (Calibration(temperature=float(cal["temperature"]),
                                       uncertain_below=float(cal.get("uncertain_below", 0.0)))
                           if isinstance(cal, dict) else None)
            spec = cls(
                name=str(data["name"]), version=str(data["version"]), labels=labels,
                sample_rate=int(data["sample_rate"]), segment=SegmentParams(**data["segment"]),
                features=features, vad=parse_vad(data["vad"]), norm_mean=mean, norm_std=std,
                input_name=str(onnx["input"]), output_name=str(onnx["output"]),
                onnx_sha256=str(onnx["sha256"]), speaker=speaker, calibration=calibration, history=history,
                info={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as exc:
            raise BundleError(f"spec.json lacks the field {exc.args[0]!r}") from None
        except (TypeError, ParameterError) as exc:
            raise BundleError(f"spec.json: {exc}") from None
        if spec.features.kind == "logmel" and spec.features.fmax > spec.sample_rate / 2:
            raise BundleError(f"features.fmax {spec.features.fmax} exceeds Nyquist for {spec.sample_rate} Hz")
        return spec


def parse_vad(data: Any) -> VadParams | SileroParams:
    """The ``vad`` section: ``"kind": "silero"`` or the energy gate (no ``kind``, formats 1 and 2)."""
    if not isinstance(data, dict):
        raise BundleError(f"spec.json vad must be an object, got {type(data).__name__}")
    kind = data.get("kind", "energy")
    if kind == "silero":
        return SileroParams(**data)
    if kind == "energy":
        return VadParams(**{k: v for k, v in data.items() if k != "kind"})
    raise BundleError(f"spec.json vad.kind {kind!r} is not one this code knows (energy, silero); "
                      "upgrade ser-stream to use this bundle")


@dataclass(frozen=True)
class Bundle:
    """A validated bundle directory: ``path``, ``spec`` and the ONNX bytes' location."""

    path: Path
    spec: Spec

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Read and validate a bundle directory (default: :data:`DEFAULT_BUNDLE`; a name of
    :data:`PACKAGED_BUNDLES` that is not a directory here means the packaged bundle).

    Checks that ``spec.json`` parses and is complete, that ``model.onnx`` exists and matches the
    recorded sha256. The ONNX graph's shapes are checked against the spec when a session is made
    (:class:`models.runtime.EmotionModel`).
    """
    root = Path(path) if path is not None else DEFAULT_BUNDLE
    if not root.is_dir() and str(path) in PACKAGED_BUNDLES:
        root = DEFAULT_BUNDLE.parent / str(path)
    if not root.is_dir():
        raise BundleError(f"model bundle {root} is not a directory")
    spec_path, onnx_path = root / SPEC_FILE, root / ONNX_FILE
    if not spec_path.is_file():
        raise BundleError(f"model bundle {root} has no {SPEC_FILE}")
    if not onnx_path.is_file():
        raise BundleError(f"model bundle {root} has no {ONNX_FILE}")
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{spec_path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{spec_path} must hold a JSON object")
    spec = Spec.from_dict(data)
    actual = sha256_file(onnx_path)
    if actual != spec.onnx_sha256:
        raise BundleError(
            f"{onnx_path} has sha256 {actual[:12]}…, but spec.json records {spec.onnx_sha256[:12] or 'none'}…"
            " (corrupt or mismatched bundle)"
        )
    return Bundle(path=root, spec=spec)


def write_bundle(path: str | Path, *, onnx_bytes: bytes, spec: Spec, card: str | None = None) -> Bundle:
    """Write ``model.onnx``, ``spec.json`` (with the ONNX sha256 filled in) and the model card.

    Returns the re-loaded, validated bundle.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / ONNX_FILE).write_bytes(onnx_bytes)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    data = Spec.from_dict(spec.to_dict()).to_dict()
    data["onnx"]["sha256"] = digest
    (root / SPEC_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if card is not None:
        (root / CARD_FILE).write_text(card, encoding="utf-8")
    return load_bundle(root)
