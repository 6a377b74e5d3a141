"""Figures that count: means over training seeds, speaker-bootstrap intervals, the worst held-out
speaker, codec losses and leave-one-corpus-out results, computed from the per-clip CSVs that
``ser-train fit`` writes under ``<run>/eval/`` (``test_<name>.csv``).

``summarize`` returns a JSON-able dict (stored in the shipped bundle's ``spec.json`` as
``evaluation_summary``) and :func:`markdown` renders it for the model card and the docs.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from training.calibrate import ece

#: Bootstrap draws over test speakers for the 95 % intervals.
BOOTSTRAP = 2000
#: Evaluation names in the order tables show them (see ``training.cli.EVAL_RUNS``).
ORDER = ("clean", "clean_nohistory", "clean_call", "telephone", "gsm", "opus8")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _uar(true: list[str], pred: list[str]) -> float:
    labels = sorted(set(true))
    t, p = np.asarray(true), np.asarray(pred)
    return float(np.mean([np.mean(p[t == lab] == lab) for lab in labels])) if labels else 0.0


def _by_speaker(rows: list[dict[str, str]]) -> dict[str, tuple[list[str], list[str]]]:
    out: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for r in rows:
        out[r["speaker"]][0].append(r["true_label"])
        out[r["speaker"]][1].append(r["pred_label"])
    return dict(out)


def corpus_figures(seed_rows: list[list[dict[str, str]]], *, rng: np.random.Generator) -> dict[str, Any]:
    """One corpus, one evaluation, several seeds (``seed_rows``: each seed's rows of that corpus).

    ``uar``: per-seed UAR; ``mean``/``min``/``max`` over seeds; ``ci95``: speaker-bootstrap interval
    of the seed mean (speakers resampled with replacement, the same draw for every seed);
    ``worst_speaker``: the speaker with the lowest seed-mean UAR; ``ece``: mean over seeds.
    """
    per_seed = [_uar([r["true_label"] for r in rows], [r["pred_label"] for r in rows]) for rows in seed_rows]
    speakers = sorted({r["speaker"] for rows in seed_rows for r in rows})
    tables = [_by_speaker(rows) for rows in seed_rows]
    boot = []
    for _ in range(BOOTSTRAP):
        pick = [speakers[int(i)] for i in rng.integers(0, len(speakers), len(speakers))]
        vals = []
        for tab in tables:
            true = [x for s in pick if s in tab for x in tab[s][0]]
            pred = [x for s in pick if s in tab for x in tab[s][1]]
            vals.append(_uar(true, pred))
        boot.append(float(np.mean(vals)))
    spk = {s: float(np.mean([_uar(*tab[s]) for tab in tables if s in tab])) for s in speakers}
    worst = min(spk, key=lambda s: spk[s])
    eces = []
    for rows in seed_rows:
        labels = [k[2:] for k in rows[0] if k.startswith("p_")] if rows else []
        probs = np.array([[float(r[f"p_{lab}"]) for lab in labels] for r in rows])
        y = np.array([labels.index(r["true_label"]) for r in rows])
        eces.append(ece(probs, y) if len(rows) else 0.0)
    return {"uar": [round(v, 4) for v in per_seed], "mean": round(float(np.mean(per_seed)), 4),
            "min": round(min(per_seed), 4), "max": round(max(per_seed), 4),
            "ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
            "speakers": len(speakers), "clips": len(seed_rows[0]),
            "worst_speaker": {"speaker": worst, "uar": round(spk[worst], 4)},
            "ece": round(float(np.mean(eces)), 4)}


#: Warm-up buckets: clips the call had said before the scored one (``history_clips`` of ``clean_call``).
WARMUP_BUCKETS = ((0, 0), (1, 2), (3, 5), (6, 99))


def warmup(seed_rows: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """UAR of generated calls by position: how the speaker statistics warm up (mean over seeds)."""
    out = []
    for lo, hi in WARMUP_BUCKETS:
        vals = []
        n = 0
        for rows in seed_rows:
            sel = [r for r in rows if lo <= int(r.get("history_clips") or 0) <= hi]
            if sel:
                vals.append(_uar([r["true_label"] for r in sel], [r["pred_label"] for r in sel]))
                n = len(sel)
        if vals:
            out.append({"earlier_clips": f"{lo}" if lo == hi else f"{lo}-{hi}" if hi < 99 else f">={lo}",
                        "uar": round(float(np.mean(vals)), 4), "clips": n})
    return out


def summarize(runs: list[Path], loco: list[Path], *, seed: int = 0) -> dict[str, Any]:
    """Aggregate the seed runs' and the leave-one-corpus-out runs' evaluation CSVs."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"runs": [str(r) for r in runs], "seeds": [], "evaluations": {}, "loco": {}}
    for run in runs:
        cfg = json.loads((run / "info.json").read_text(encoding="utf-8"))["training"]["config"]
        out["seeds"].append(cfg.get("seed"))
    for name in ORDER:
        paths = [run / "eval" / f"test_{name}.csv" for run in runs]
        if not all(p.is_file() for p in paths):
            continue
        rows = [read_rows(p) for p in paths]
        corpora = sorted({r["corpus"] for rs in rows for r in rs})
        out["evaluations"][name] = {
            c: corpus_figures([[r for r in rs if r["corpus"] == c] for rs in rows], rng=rng) for c in corpora}
        if name == "clean_call":
            out["warmup"] = {c: warmup([[r for r in rs if r["corpus"] == c] for rs in rows]) for c in corpora}
    by_corpus: dict[str, list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    for run in loco:  # several runs holding out one corpus (training seeds) are averaged like the seeds above
        info = json.loads((run / "info.json").read_text(encoding="utf-8"))["training"]
        for corpus in info.get("hold_out_corpora", []):
            by_corpus[corpus].append((run, info))
    for corpus, group in by_corpus.items():
        res = {}
        for name in ("clean", "clean_nohistory", "clean_call"):
            paths = [run / "eval" / f"test_{name}.csv" for run, _ in group]
            if all(p.is_file() for p in paths):
                res[name] = corpus_figures([[r for r in read_rows(p) if r["corpus"] == corpus] for p in paths], rng=rng)
        out["loco"][corpus] = {"runs": [str(run) for run, _ in group],
                               "epochs_run": [info.get("epochs_run") for _, info in group], **res}
    return out


def markdown(summary: dict[str, Any]) -> str:
    """Tables for the card and docs: seed means with spread and intervals, codec losses, LOCO."""
    ev = summary.get("evaluations", {})
    n = len(summary.get("seeds", []))
    lines = [f"Mean over {n} training seeds ({', '.join(map(str, summary.get('seeds', [])))}) on the same "
             "held-out speakers; [95 % speaker-bootstrap interval of the mean]; min–max over seeds; ECE after "
             "calibration; the worst held-out speaker's seed-mean UAR.", "",
             "| evaluation | corpus | clips | UAR mean | 95 % CI | seeds min–max | ECE | worst speaker |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ORDER:
        for corpus, f in ev.get(name, {}).items():
            lines.append(f"| {name} | {corpus} | {f['clips']} | {f['mean']:.3f} | {f['ci95'][0]:.3f}–"
                         f"{f['ci95'][1]:.3f} | {f['min']:.3f}–{f['max']:.3f} | {f['ece']:.3f} | "
                         f"{f['worst_speaker']['speaker']} {f['worst_speaker']['uar']:.3f} |")
    warm = summary.get("warmup", {})
    if warm:
        lines += ["", "Warm-up of the speaker statistics in generated calls (UAR by how many clips of the call came "
                  "before; seed means):", "", "| corpus | " + " | ".join(
                      f"{b['earlier_clips']} earlier" for b in next(iter(warm.values()))) + " |",
                  "|---|" + "---|" * len(next(iter(warm.values())))]
        for corpus, buckets in warm.items():
            lines.append(f"| {corpus} | " + " | ".join(f"{b['uar']:.3f} ({b['clips']})" for b in buckets) + " |")
    clean = ev.get("clean", {})
    losses = []
    for name in ("telephone", "gsm", "opus8"):
        for corpus, f in ev.get(name, {}).items():
            if corpus in clean:
                losses.append(f"| {name} | {corpus} | {100 * (clean[corpus]['mean'] - f['mean']):+.1f} |")
    if losses:
        lines += ["", "Loss against clean audio (points of UAR, seed means; positive = worse):", "",
                  "| channel | corpus | loss |", "|---|---|---|", *losses]
    loco = summary.get("loco", {})
    if loco:
        lines += ["", "Leave-one-corpus-out (the corpus is entirely unseen, all its speakers tested; UAR mean over "
                  "the runs that held it out, with min–max; 95 % speaker-bootstrap interval):", "",
                  "| held-out corpus | runs | speaker history | clips | UAR | 95 % CI | runs min–max | worst speaker |",
                  "|---|---|---|---|---|---|---|---|"]
        for corpus, res in sorted(loco.items()):
            for name in ("clean", "clean_nohistory", "clean_call"):
                if name in res:
                    f = res[name]
                    hist = {"clean": "6 other clips", "clean_nohistory": "none", "clean_call": "causal call"}[name]
                    lines.append(f"| {corpus} | {len(f['uar'])} | {hist} | {f['clips']} | {f['mean']:.3f} | "
                                 f"{f['ci95'][0]:.3f}–{f['ci95'][1]:.3f} | {f['min']:.3f}–{f['max']:.3f} | "
                                 f"{f['worst_speaker']['speaker']} {f['worst_speaker']['uar']:.3f} |")
    return "\n".join(lines)
