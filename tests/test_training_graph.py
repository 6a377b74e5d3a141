"""The recipe's pieces: frame pooling, clip averaging, the embedding history's causality, and the
one-graph export with its two parity checks (which must catch a wrong encoder)."""

from __future__ import annotations

import numpy as np
import pytest
import sysdeps

from training.encode import pool_frames
from training.fit import PRIOR_CLIPS, clip_embeddings, clip_probs, history_means

TRAIN = "pip install '.[train]'"


def test_pool_frames_averages_groups_of_three():
    h = np.arange(2 * 7 * 2, dtype=np.float32).reshape(2, 7, 2)
    out = pool_frames(h, 3)
    assert out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[0, 1], h[0, 3:6].mean(axis=0))


def test_clip_probs_mean_over_a_clips_windows():
    probs = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    clips, p = clip_probs(probs, np.array([7, 7, 3]))
    assert clips.tolist() == [3, 7]
    np.testing.assert_allclose(p, [[1, 0], [0.5, 0.5]])


def test_speaker_history_never_holds_the_clip_itself():
    x = np.zeros((4, 5, 3), np.float32)
    x[0] += 1000.0  # clip 0 is extreme: if it leaked into its own history, its mean would show it
    owner = np.array([0, 1, 2, 3])
    speaker = np.array(["a", "a", "a", "b"])
    emb = clip_embeddings(x, owner)
    prior = np.zeros(3, np.float32)
    means = history_means(owner, emb, speaker, prior, rng=np.random.default_rng(0), k=6)
    np.testing.assert_allclose(means[0], 0.0)  # clips 1 and 2 only
    np.testing.assert_allclose(means[1], 1000.0 / (2 + PRIOR_CLIPS))  # clips 0 and 2, shrunk to the prior
    np.testing.assert_allclose(means[3], 0.0)  # a speaker with no other clip: the prior


@pytest.fixture(scope="module")
def exported():
    sysdeps.module("tensorflow", TRAIN)
    from training import whisper_weights

    try:
        whisper_weights.weights_path()
    except whisper_weights.WeightsError as exc:
        sysdeps.missing(f"{exc} ({TRAIN})")
    from models.whisper import log_mel
    from training.head import build_head

    rng = np.random.default_rng(0)
    t = np.arange(24000) / 8000
    y = np.stack([(0.2 * np.sin(2 * np.pi * (150 + 40 * k) * t) * (1 + np.sin(2 * np.pi * 2 * t))
                   + 0.01 * rng.standard_normal(24000)).astype(np.float32) for k in range(3)])
    head = build_head(n_frames=50, width=384, n_labels=7, seed=0)
    return head, log_mel(y=y, sr=8000)


def test_export_is_one_graph_matching_both_references(exported):
    import onnx

    from training.graph import export_graph

    head, mel = exported
    onnx_bytes, par = export_graph(head, mel)
    graph = onnx.load_from_string(onnx_bytes).graph
    assert [i.name for i in graph.input] == ["features"] and [o.name for o in graph.output] == ["probs"]
    assert par["keras_max_abs_diff"] < 2e-4 and par["reference_max_abs_diff"] < 2e-4
    assert len(onnx_bytes) < 25e6
    # the int8 variant: a third of the size, probabilities close to the float graph's
    from training.graph import graph_diff, quantize_int8

    q = quantize_int8(onnx_bytes)
    assert len(q) < 0.5 * len(onnx_bytes)
    d = graph_diff(onnx_bytes, q, mel)
    assert d["n"] == len(mel) and 0 < d["max_abs_diff"] < 0.05


def test_history_export_has_two_inputs_two_outputs_and_serves(exported, tmp_path):
    """The embedding-history model: frames minus the history vector under the head, and the segment's
    mean pooled frame as a second output, both matching the numpy reference; served by EmotionModel."""
    import onnx
    from tinybundle import tiny_spec

    from models.history import HistoryParams, wire_vector
    from models.runtime import EmotionModel
    from training.graph import export_graph, graph_diff, model_spec, quantize_int8, write_model

    head, mel = exported
    prior = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    onnx_bytes, par = export_graph(head, mel, prior=prior)
    graph = onnx.load_from_string(onnx_bytes).graph
    assert [i.name for i in graph.input] == ["features", "history"]
    assert [o.name for o in graph.output] == ["probs", "embedding"]
    assert par["reference_max_abs_diff"] < 2e-4 and par["embedding_max_abs_diff"] < 2e-3
    assert graph_diff(onnx_bytes, quantize_int8(onnx_bytes), mel, prior=prior)["n"] == len(mel)
    from models.bundle import Calibration

    hist = HistoryParams(prior=tuple(round(float(v), 5) for v in prior))  # as spec.json stores it
    spec = model_spec(tiny_spec(whisper=True, vad="silero"), version="0.0.1", labels=tiny_spec().labels,
                   calibration=Calibration(), info={}, history=hist)
    model = EmotionModel(write_model(tmp_path / "b", onnx_bytes=onnx_bytes, spec=spec, card=""))
    assert model.uses_history and model.spec.history == hist
    probs, emb = model.predict_history(mel)
    assert probs.shape == (3, 7) and emb.shape == (3, 384)
    # the history changes the probabilities, and the prior is what "no history" means
    other = np.repeat(wire_vector(emb, hist)[None, :], 3, axis=0)
    assert not np.allclose(model.predict_history(mel, other)[0], probs, atol=1e-4)
    np.testing.assert_allclose(model.predict_features(mel), probs, atol=1e-6)


def test_export_refuses_a_graph_that_differs_from_the_reference(exported, monkeypatch):
    import dataclasses

    import training.graph as b
    from training.export import ExportError

    real = b.encode

    def shifted(mel, weights, **kw):  # the reference with positions off by one frame
        return real(mel, dataclasses.replace(weights, positions=np.roll(weights.positions, 1, axis=0)), **kw)

    monkeypatch.setattr(b, "encode", shifted)
    head, mel = exported
    with pytest.raises(ExportError, match="reference"):
        b.export_graph(head, mel)


def test_bundle_carries_whispers_licence(tmp_path):
    from tinybundle import tiny_onnx, tiny_spec

    from models.bundle import load_bundle
    from training.graph import WHISPER_LICENSE_FILE, write_model

    spec = tiny_spec(whisper=True)
    write_model(tmp_path / "b", onnx_bytes=tiny_onnx(spec), spec=spec, card="# card\n")
    text = (tmp_path / "b" / WHISPER_LICENSE_FILE).read_text()
    assert "Copyright (c) 2022 OpenAI" in text and "MIT License" in text
    assert load_bundle(tmp_path / "b").spec.features.kind == "whisper"
