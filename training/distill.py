"""Distillation: a trained bundle (typically the seed ensemble, ``ser-train ensemble``) scores every
training example of an epoch, and the student learns from a mix of the one-hot label and the
teacher's probabilities (``ser-train fit --teacher BUNDLE --distill-weight W``).

The teacher sees exactly the student's input: the same augmented, SpecAugment-masked features and
speaker vectors, mapped from the student's normalisation into the teacher's by the exact affine map
that :mod:`training.ensemble` uses between members. Its probabilities are the raw network output
(no temperature): the mean of the ensemble members' probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import BundleError, Spec
from training.ensemble import affine, speaker_affine


class Teacher:
    """A bundle that scores a student's training inputs ``features`` or ``[features, speaker]``."""

    def __init__(self, path: str | Path, student: Spec, *, threads: int = 1) -> None:
        from models.runtime import EmotionModel

        self.model = EmotionModel(path, threads=threads)
        spec = self.model.spec
        for what, mine, theirs in (("labels", student.labels, spec.labels),
                                   ("sample_rate", student.sample_rate, spec.sample_rate),
                                   ("features", student.features, spec.features),
                                   ("n_frames", student.n_frames, spec.n_frames),
                                   ("speaker input", student.speaker is not None, spec.speaker is not None)):
            if mine != theirs:
                raise BundleError(f"teacher {spec.model_id}: its {what} ({theirs}) differ from the student's ({mine})")
        a, b = affine(student, spec)
        scale, shift = speaker_affine(a, b)
        self._x = (a.astype(np.float32), b.astype(np.float32))
        self._spk = (scale.astype(np.float32), shift.astype(np.float32))

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def probs(self, inputs: Any, *, batch: int = 256) -> np.ndarray:
        """The teacher's probabilities ``(k, n_labels)`` for the student's inputs."""
        x, speaker = (inputs[0], inputs[1]) if isinstance(inputs, list) else (inputs, None)
        out = []
        for i in range(0, len(x), batch):
            xt = x[i:i + batch] * self._x[0] + self._x[1]
            st = None if speaker is None else speaker[i:i + batch] * self._spk[0] + self._spk[1]
            out.append(self.model.predict_features(xt, st, calibrated=False))
        return np.concatenate(out) if out else np.zeros((0, len(self.model.labels)), np.float32)


def targets(onehot: np.ndarray, soft: np.ndarray | None, *, weight: float) -> np.ndarray:
    """``(1 - weight) * onehot + weight * soft`` (the one-hot alone without a teacher)."""
    if soft is None or weight == 0.0:
        return onehot
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    return ((1.0 - weight) * onehot + weight * soft).astype(np.float32)
