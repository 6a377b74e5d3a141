"""training.ensemble: members' probabilities averaged in one graph, each member hearing its own
normalisation; mismatched members refused with a message naming what differs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from models.bundle import load_bundle, write_bundle
from models.errors import BundleError
from models.runtime import EmotionModel
from models.speaker import SpeakerParams
from tests.tinybundle import tiny_onnx, tiny_spec
from training.cli import main as ser_train
from training.ensemble import ensemble

N_MELS = 64
#: The first member's normalisation and speaker prior, in raw log-mel units.
MEAN0, STD0, PRIOR_RAW_MEAN, PRIOR_RAW_STD = -50.0, 20.0, -40.0, 15.0


def _member(tmp_path, i: int, *, mean: np.ndarray, std: np.ndarray, prior_shift: float = 0.0, **spec_kwargs):
    """A tiny speaker bundle with its own normalisation and the prior that normalisation implies."""
    base = tiny_spec(speaker=True, **spec_kwargs)
    sp = SpeakerParams(prior_mean=tuple((PRIOR_RAW_MEAN - mean) / std + prior_shift),
                       prior_std=tuple(PRIOR_RAW_STD / std), prior_frames=base.speaker.prior_frames)
    spec = replace(base, norm_mean=mean.astype(np.float32), norm_std=std.astype(np.float32), speaker=sp,
                   version=f"0.0.{i}", info={"training": {"config": {"seed": i}}})
    return write_bundle(tmp_path / f"m{i}", onnx_bytes=tiny_onnx(spec, seed=i), spec=spec)


def _members(tmp_path, n: int = 3):
    rng = np.random.default_rng(5)
    out = [_member(tmp_path, 0, mean=np.full(N_MELS, MEAN0), std=np.full(N_MELS, STD0))]
    for i in range(1, n):
        mean, std = MEAN0 + rng.normal(0, 2, N_MELS), STD0 * rng.uniform(0.9, 1.1, N_MELS)
        out.append(_member(tmp_path, i, mean=mean, std=std))
    return out


def _inputs(bundle, raw: np.ndarray, mu: np.ndarray, sd: np.ndarray, w: float):
    """A member's own features and speaker vector for raw log-mel frames and a voice's raw mean/std."""
    s = bundle.spec
    x = (raw - s.norm_mean) / s.norm_std
    vec = np.concatenate([(mu - s.norm_mean) / s.norm_std, sd / s.norm_std, [w]])
    return x.astype(np.float32), np.repeat(vec[None, :], len(raw), axis=0).astype(np.float32)


def test_ensemble_is_the_mean_of_members_each_on_its_own_normalisation(tmp_path):
    members = _members(tmp_path)
    onnx_bytes, spec = ensemble(members, version="9.9.9")
    merged = write_bundle(tmp_path / "ens", onnx_bytes=onnx_bytes, spec=spec)
    rng = np.random.default_rng(0)
    raw = rng.normal(-45, 18, (5, members[0].spec.n_frames, N_MELS))
    mu, sd = rng.normal(-42, 3, N_MELS), rng.uniform(10, 20, N_MELS)
    want = np.mean([EmotionModel(b).predict_features(*_inputs(b, raw, mu, sd, 0.4), calibrated=False)
                    for b in members], axis=0)
    got = EmotionModel(merged).predict_features(*_inputs(members[0], raw, mu, sd, 0.4), calibrated=False)
    np.testing.assert_allclose(got, want, atol=2e-5)
    single = EmotionModel(members[0]).predict_features(*_inputs(members[0], raw, mu, sd, 0.4), calibrated=False)
    assert np.abs(got - single).max() > 1e-3  # the others count
    assert spec.calibration is None and spec.version == "9.9.9"
    facts = spec.info["ensemble"]["members"]
    assert [f["train_seed"] for f in facts] == [0, 1, 2] and facts[0]["prior_shift"] == 0.0
    assert max(f["prior_shift"] for f in facts) < 1e-4  # the priors agree in raw units


def test_members_that_do_not_match_are_refused(tmp_path):
    a = _member(tmp_path, 0, mean=np.full(N_MELS, MEAN0), std=np.full(N_MELS, STD0))
    with pytest.raises(BundleError, match="at least 2"):
        ensemble([a], version="1")
    other_labels = _member(tmp_path, 1, mean=np.full(N_MELS, MEAN0), std=np.full(N_MELS, STD0),
                           labels=("neutral", "happy", "sad", "angry"))
    with pytest.raises(BundleError, match="'labels' differs"):
        ensemble([a, other_labels], version="1")
    shifted = _member(tmp_path, 2, mean=np.full(N_MELS, MEAN0), std=np.full(N_MELS, STD0), prior_shift=0.5)
    with pytest.raises(BundleError, match="speaker prior is 0.667 standard"):
        ensemble([a, shifted], version="1")


def test_cli_writes_a_loadable_bundle_and_says_why_it_cannot(tmp_path):
    members = _members(tmp_path, 2)
    args = ["ensemble", "--bundle", str(members[0].path), "--bundle", str(members[1].path),
            "--out", str(tmp_path / "ens"), "--model-version", "2.1.0"]
    res = CliRunner().invoke(ser_train, args)
    assert res.exit_code == 0, res.output
    assert "not calibrated" in res.output
    assert load_bundle(tmp_path / "ens").spec.model_id == "tiny-test@2.1.0"
    assert "**Ensemble** (`training.ensemble`): 2 networks" in (tmp_path / "ens" / "MODEL_CARD.md").read_text()
    res = CliRunner().invoke(ser_train, ["ensemble", "--bundle", str(members[0].path), "--out", str(tmp_path / "x"),
                                         "--model-version", "1"])
    assert res.exit_code == 1 and "cannot merge: an ensemble needs at least 2 bundles" in res.output
