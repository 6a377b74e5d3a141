"""Score ``ser-produce --format jsonl`` records against a simulated call's ground truth (bench.calls).

- **coverage**: share of utterances overlapped, on their channel, by at least one ``result``
  record whose span covers >= 50 % of the utterance or >= 1 s of it (:data:`COVER_SHARE`,
  :data:`COVER_S`); also per role (agent/customer).
- **segment accuracy / UAR**: every ``result`` record takes the label of the utterance of its
  channel it overlaps most; accuracy over those records (also per role), UAR = mean recall over
  the true labels present. Records that overlap no utterance are **false segments**, reported per
  minute of non-speech (per channel: call duration minus that channel's utterance time, summed), and
  separately those that overlap a DTMF/hold event.
- **turn accuracy**: the same for ``kind == "turn"`` records (producer.turns).
- **latency**: for ``ser-produce --realtime`` output, whose records carry ``wall_s`` (when the
  record came out, in seconds on the call's clock): per covered utterance, the ``wall_s`` of the
  first record whose span contains the utterance's true end (else the last record overlapping it)
  minus that end (p50/p95). Without ``wall_s``: not measurable.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

#: An utterance is covered by a record overlapping this share of it ...
COVER_SHARE = 0.5
#: ... or at least this many seconds of it.
COVER_S = 1.0


def load_records(path: Path) -> list[dict[str, Any]]:
    """JSON lines -> records (blank lines skipped); a bad line raises ValueError naming it."""
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not JSON ({exc.msg})") from None
    return out


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def union_s(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for s, e in sorted(spans):
        if e > end:
            total += e - max(s, end)
            end = e
    return float(total)


def uar(true: list[str], pred: list[str]) -> float:
    """Unweighted average recall over the labels present in ``true`` (nan when empty)."""
    labels = sorted(set(true))
    if not labels:
        return float("nan")
    return float(np.mean([np.mean([p == lab for t, p in zip(true, pred, strict=True) if t == lab])
                          for lab in labels]))


def _label_records(recs: list[dict[str, Any]], utts: list[dict[str, Any]], events: list[dict[str, Any]]
                   ) -> dict[str, Any]:
    true, pred, roles, false, on_events = [], [], [], 0, 0
    for r in recs:
        ovs = [overlap(r["start_s"], r["end_s"], u["start_s"], u["end_s"]) if u["channel"] == r["channel"] else 0.0
               for u in utts]
        best = int(np.argmax(ovs)) if ovs else -1
        if best < 0 or ovs[best] <= 0:
            false += 1
            on_events += any(e["channel"] == r["channel"] and overlap(r["start_s"], r["end_s"], e["start_s"],
                                                                      e["end_s"]) > 0 for e in events)
            continue
        true.append(utts[best]["label"])
        pred.append(r["label"])
        roles.append(utts[best]["role"])
    n = len(true)
    by_role = {role: float(np.mean([t == p for t, p, q in zip(true, pred, roles, strict=True) if q == role]))
               for role in sorted(set(roles))}
    return {"records": len(recs), "matched": n, "false": false, "false_on_events": on_events,
            "accuracy": float(np.mean([t == p for t, p in zip(true, pred, strict=True)])) if n else float("nan"),
            "uar": uar(true, pred), "accuracy_by_role": by_role, "true_labels": dict(Counter(true))}


def score(truth: dict[str, Any], records: list[dict[str, Any]], *, channel_names: list[str] | None = None
          ) -> dict[str, Any]:
    """Figures for one call (see the module docstring). ``channel_names``: the names the records use,
    in the order of ``truth["channels"]`` (default: the truth's own names)."""
    names = list(truth["channels"])
    if channel_names is not None:
        if len(channel_names) != len(names):
            raise ValueError(f"--channel-names gives {len(channel_names)} name(s) for {len(names)} channel(s)")
        rename = dict(zip(channel_names, names, strict=True))
    else:
        rename = {n: n for n in names}
    recs = [{**r, "channel": rename.get(str(r.get("channel")), r.get("channel"))} for r in records]
    unknown = {r["channel"] for r in recs if r.get("kind") in ("result", "turn") and r["channel"] not in names}
    if unknown:
        raise ValueError(f"records name channel(s) {', '.join(sorted(map(str, unknown)))} not in the truth's "
                         f"{', '.join(names)}: pass --channel-names")
    utts, events = truth["utterances"], truth["events"]
    results = [r for r in recs if r.get("kind") == "result"]
    turns = [r for r in recs if r.get("kind") == "turn"]
    covered = []
    for u in utts:
        dur = u["end_s"] - u["start_s"]
        ovs = [overlap(r["start_s"], r["end_s"], u["start_s"], u["end_s"]) for r in results
               if r["channel"] == u["channel"]]
        covered.append(any(o >= COVER_SHARE * dur or o >= COVER_S for o in ovs))
    by_role = {role: float(np.mean([c for c, u in zip(covered, utts, strict=True) if u["role"] == role]))
               for role in sorted({u["role"] for u in utts})}
    nonspeech_s = sum(truth["duration_s"] - union_s([(u["start_s"], u["end_s"]) for u in utts if u["channel"] == ch])
                      for ch in names)
    seg = _label_records(results, utts, events)
    lat = []
    for u, c in zip(utts, covered, strict=True):
        mine = [r for r in results if c and r["channel"] == u["channel"] and isinstance(r.get("wall_s"), (int, float))
                and overlap(r["start_s"], r["end_s"], u["start_s"], u["end_s"]) > 0]
        at_end = [float(r["wall_s"]) for r in mine if r["start_s"] <= u["end_s"] <= r["end_s"]]
        if at_end:  # the first record that heard the utterance end
            lat.append(min(at_end) - u["end_s"])
        elif mine:  # no record reaches the end: the last one that heard any of it
            lat.append(max(float(r["wall_s"]) for r in mine) - u["end_s"])
    return {
        "models": sorted({str(r["model"]) for r in recs if r.get("model")}),
        "utterances": len(utts), "coverage": float(np.mean(covered)) if covered else float("nan"),
        "coverage_by_role": by_role, "missed": [i for i, c in enumerate(covered) if not c],
        "segments": seg,
        "false_per_min_nonspeech": seg["false"] / (nonspeech_s / 60) if nonspeech_s > 0 else float("nan"),
        "nonspeech_s": round(nonspeech_s, 2),
        "failures": sum(r.get("kind") == "failure" for r in recs),
        "turns": _label_records(turns, utts, events) if turns else None,
        "latency": ({"p50_s": float(np.percentile(lat, 50)), "p95_s": float(np.percentile(lat, 95)), "n": len(lat)}
                    if lat else "not measurable: records carry no wall_s (run ser-produce --realtime)"),
    }


def clip_scores(truth: dict[str, Any], model_dir: Path, *, call_wav: Path | None = None) -> dict[str, Any]:
    """The same model's whole-clip predictions (``EmotionModel.predict_clip``): on the call's source
    clips as recorded (the ceiling a segmenter could reach), and with ``call_wav`` also on each
    utterance cut from the call at its true times ("oracle segmentation": the call's level, noise,
    babble and codec, but perfect boundaries). Accuracy and UAR over the utterances."""
    from models.audio import decode, to_mono
    from models.runtime import EmotionModel

    model = EmotionModel(model_dir, threads=1)
    sr = model.spec.sample_rate
    min_len = round(model.spec.segment.min_s * sr)
    call = decode(str(call_wav), sr=sr)[0] if call_wav is not None else None
    true, pred, cut = [], [], []
    for u in truth["utterances"]:
        y, _ = decode(u["source"], sr=sr)
        probs, _ = model.predict_clip(to_mono(y))
        true.append(u["label"])
        pred.append(model.labels[int(np.argmax(probs))])
        if call is not None:
            z = call[truth["channels"].index(u["channel"]), round(u["start_s"] * sr) : round(u["end_s"] * sr)]
            z = np.pad(z, (0, max(0, min_len - len(z))))
            cut.append(model.labels[int(np.argmax(model.predict_clip(z)[0]))])
    out: dict[str, Any] = {
        "model": model.model_id, "clips": len(true),
        "accuracy": float(np.mean([t == p for t, p in zip(true, pred, strict=True)])), "uar": uar(true, pred)}
    if call is not None:
        out["oracle"] = {"accuracy": float(np.mean([t == p for t, p in zip(true, cut, strict=True)])),
                         "uar": uar(true, cut)}
    return out


def summary_lines(s: dict[str, Any], clips: dict[str, Any] | None = None) -> list[str]:
    seg = s["segments"]
    roles = ", ".join(f"{k} {v:.3f}" for k, v in s["coverage_by_role"].items())
    lines = [
        f"model(s): {', '.join(s['models']) or '-'}",
        f"coverage: {s['coverage']:.3f} of {s['utterances']} utterances ({roles}); missed: {s['missed']}",
        f"segments: {seg['records']} results, {seg['matched']} on speech: accuracy {seg['accuracy']:.3f}, "
        f"UAR {seg['uar']:.3f} (accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in seg["accuracy_by_role"].items())
        + ")",
        f"false segments: {seg['false']} ({s['false_per_min_nonspeech']:.2f} per min of {s['nonspeech_s']:.0f} s "
        f"non-speech; {seg['false_on_events']} on DTMF/hold)",
        f"failures: {s['failures']}",
        "turns: " + ("none in the records" if s["turns"] is None else
                     f"{s['turns']['records']}: accuracy {s['turns']['accuracy']:.3f}, UAR {s['turns']['uar']:.3f}"),
        f"latency: {s['latency']}",
    ]
    if clips is not None:
        lines.append(f"clip level ({clips['model']}, predict_clip on the {clips['clips']} source clips): "
                     f"accuracy {clips['accuracy']:.3f}, UAR {clips['uar']:.3f}")
        if "oracle" in clips:
            lines.append(f"oracle segmentation (each utterance cut from the call at its true times, predict_clip): "
                         f"accuracy {clips['oracle']['accuracy']:.3f}, UAR {clips['oracle']['uar']:.3f}")
    return lines
