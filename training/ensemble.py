"""Several bundles of one recipe (training seeds) as one bundle: a single ONNX graph whose ``probs``
is the mean of the members' ``probs``.

Serving does not change: the merged graph has the members' inputs (``features`` and, for speaker
models, ``speaker``) and one ``probs`` output, and the bundle's spec is the first member's.
Members must agree on everything that makes their inputs (labels, sample rate, segments, VAD,
features, the speaker statistics' layout and warm-up). Their normalisation statistics may differ a
little (the means and standard deviations of the same training speakers' frames, measured on
slightly different cuts): each member gets its own exact affine map from the first member's
normalised features, and its speaker vector ``[mean, std, weight]`` the same map, inside the
graph. The speaker prior is then the first member's, mapped; :func:`merge` measures how far that
is from each member's own prior (``prior_shift``, in the member's standard deviations) and refuses
members whose prior differs by more than :data:`MAX_PRIOR_SHIFT`.

The merged bundle is not calibrated: fit its temperature with ``ser-train calibrate``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from models.bundle import Bundle, Spec
from models.errors import BundleError

#: The spec sections (as ``spec.json`` writes them) every member must share exactly.
SHARED = ("labels", "sample_rate", "segment", "vad", "features")
#: Largest difference between a member's own speaker prior and the first member's prior mapped into
#: the member's units (in units of the member's prior standard deviation).
MAX_PRIOR_SHIFT = 0.1


def affine(first: Spec, member: Spec) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` ``(n_mels,)``: ``x_member = a * x_first + b`` for normalised log-mel frames."""
    a = np.asarray(first.norm_std, dtype=np.float64) / np.asarray(member.norm_std, dtype=np.float64)
    b = (np.asarray(first.norm_mean, dtype=np.float64) - np.asarray(member.norm_mean, dtype=np.float64)) / \
        np.asarray(member.norm_std, dtype=np.float64)
    return a, b


def speaker_affine(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same map for a speaker vector ``[mean, std, weight]`` ``(2 n_mels + 1,)``: the means map like
    frames, the spreads scale by ``a``, the weight stays."""
    return np.concatenate([a, a, [1.0]]), np.concatenate([b, np.zeros(len(a) + 1)])


def check_members(specs: list[Spec]) -> list[dict[str, Any]]:
    """Raise :class:`BundleError` naming the first section a member does not share; returns per-member
    facts (model id, affine range, prior shift) for the merged spec."""
    if len(specs) < 2:
        raise BundleError(f"an ensemble needs at least 2 bundles, got {len(specs)}")
    first = specs[0].to_dict()
    facts = []
    for spec in specs:
        d = spec.to_dict()
        for key in SHARED:
            if d.get(key) != first.get(key):
                raise BundleError(f"{spec.model_id}: spec section {key!r} differs from {specs[0].model_id}'s")
        if (spec.speaker is None) != (specs[0].speaker is None):
            raise BundleError(f"{spec.model_id}: speaker statistics differ from {specs[0].model_id}'s (one has none)")
        a, b = affine(specs[0], spec)
        fact: dict[str, Any] = {"model_id": spec.model_id, "onnx_sha256": spec.onnx_sha256,
                                "train_seed": spec.info.get("training", {}).get("config", {}).get("seed"),
                                "scale_range": [round(float(a.min()), 4), round(float(a.max()), 4)],
                                "shift_max": round(float(np.abs(b).max()), 4)}
        if spec.speaker is not None and specs[0].speaker is not None:
            s0, s = specs[0].speaker, spec.speaker
            settings = ("prior_frames", "rel_db", "floor_dbfs", "input")
            if any(getattr(s, k) != getattr(s0, k) for k in settings):
                raise BundleError(f"{spec.model_id}: speaker statistics settings differ from {specs[0].model_id}'s")
            std = np.asarray(s.prior_std)
            shift = max(float(np.max(np.abs(a * np.asarray(s0.prior_mean) + b - np.asarray(s.prior_mean)) / std)),
                        float(np.max(np.abs(a * np.asarray(s0.prior_std) - std) / std)))
            if shift > MAX_PRIOR_SHIFT:
                raise BundleError(f"{spec.model_id}: its speaker prior is {shift:.3f} standard deviations from "
                                  f"{specs[0].model_id}'s (at most {MAX_PRIOR_SHIFT})")
            fact["prior_shift"] = round(shift, 4)
        facts.append(fact)
    return facts


def merge_onnx(models: list[bytes], specs: list[Spec]) -> bytes:
    """One ONNX graph: each member's inputs mapped (:func:`affine`, :func:`speaker_affine`) from the first member's, the
    members' ``probs`` averaged (``Mean``) into the output."""
    import onnx
    from onnx import compose, helper, numpy_helper

    first = specs[0]
    protos = [onnx.load_from_string(m) for m in models]
    opsets = {(o.domain, o.version) for o in protos[0].opset_import}
    nodes, inits, outs = [], [], []
    inputs = [first.input_name] + ([first.speaker.input] if first.speaker is not None else [])
    for i, (proto, spec) in enumerate(zip(protos, specs, strict=True)):
        if {(o.domain, o.version) for o in proto.opset_import} != opsets:
            raise BundleError(f"{spec.model_id}: ONNX opsets differ from {first.model_id}'s")
        if [x.name for x in proto.graph.input] != inputs or [x.name for x in proto.graph.output] != [first.output_name]:
            raise BundleError(f"{spec.model_id}: ONNX inputs/outputs differ from {first.model_id}'s")
        pre = f"m{i}_"
        member = compose.add_prefix(proto, pre)
        a, b = affine(first, spec)
        maps = [(first.input_name, a, b)]
        if first.speaker is not None:
            maps.append((first.speaker.input, *speaker_affine(a, b)))
        for name, scale, shift in maps:
            sc, sh = numpy_helper.from_array(scale.astype(np.float32), f"{pre}{name}_scale"), \
                numpy_helper.from_array(shift.astype(np.float32), f"{pre}{name}_shift")
            inits += [sc, sh]
            nodes += [helper.make_node("Mul", [name, sc.name], [f"{pre}{name}_scaled"], name=f"{pre}{name}_mul"),
                      helper.make_node("Add", [f"{pre}{name}_scaled", sh.name], [pre + name], name=f"{pre}{name}_add")]
        nodes += list(member.graph.node)
        inits += list(member.graph.initializer)
        outs.append(pre + first.output_name)
    nodes.append(helper.make_node("Mean", outs, [first.output_name], name="ensemble_mean"))
    graph = helper.make_graph(nodes, "ensemble", list(protos[0].graph.input), list(protos[0].graph.output),
                              initializer=inits)
    merged = helper.make_model(graph, opset_imports=list(protos[0].opset_import), producer_name="ser-train ensemble")
    merged.ir_version = protos[0].ir_version
    onnx.checker.check_model(merged)
    return merged.SerializeToString()


def ensemble(bundles: list[Bundle], *, version: str) -> tuple[bytes, Spec]:
    """Merged ONNX bytes and the (uncalibrated) spec of the ensemble of ``bundles``."""
    specs = [b.spec for b in bundles]
    facts = check_members(specs)
    onnx_bytes = merge_onnx([b.onnx_path.read_bytes() for b in bundles], specs)
    info = {k: v for k, v in specs[0].info.items() if k not in ("calibration", "evaluation", "evaluation_summary")}
    info["ensemble"] = {"members": facts, "combine": "mean of the members' probabilities",
                        "normalisation": f"{specs[0].model_id}'s; the others' mapped in the graph"}
    return onnx_bytes, replace(specs[0], version=version, calibration=None, info=info)
