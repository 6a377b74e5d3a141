"""training.summary: seed means, speaker-bootstrap intervals, worst speaker, codec losses and
leave-one-corpus-out runs averaged per held-out corpus, from generated per-clip CSVs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from training.evaluate import csv_columns
from training.summary import markdown, summarize

LABELS = ("neutral", "happy", "sad", "angry")


def _rows(corpus: str, speakers: list[str], accuracy: dict[str, float], *, seed: int) -> list[dict[str, object]]:
    """8 clips per speaker and label, right with the speaker's probability (the rest: the next label)."""
    rng = np.random.default_rng(seed)
    rows = []
    for spk in speakers:
        for k, lab in enumerate(LABELS):
            for _ in range(8):
                pred = lab if rng.random() < accuracy[spk] else LABELS[(k + 1) % len(LABELS)]
                p = {f"p_{x}": (0.7 if x == pred else 0.1) for x in LABELS}
                rows.append({"path": f"{spk}-{lab}", "corpus": corpus, "speaker": f"{corpus}:{spk}", "true_label": lab,
                             "pred_label": pred, "confidence": 0.7, "history_clips": 0, **p})
    return rows


def _run(root: Path, name: str, seed: int, rows: dict[str, list[dict[str, object]]], hold_out: list[str]) -> Path:
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "info.json").write_text(json.dumps({"training": {"config": {"seed": seed}, "epochs_run": 10,
                                                            "hold_out_corpora": hold_out}}))
    for ev, rs in rows.items():
        with open(run / "eval" / f"test_{ev}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=csv_columns(LABELS))
            w.writeheader()
            w.writerows(rs)
    return run


def test_seed_means_intervals_worst_speaker_and_loco_groups(tmp_path: Path) -> None:
    acc = {"a": 0.9, "b": 0.6, "c": 0.3}
    runs = [_run(tmp_path, f"s{s}", s, {"clean": _rows("cremad", list(acc), acc, seed=s),
                                       "gsm": _rows("cremad", list(acc), {k: v - 0.2 for k, v in acc.items()}, seed=s)},
                 []) for s in (1, 2, 3)]
    loco_acc = {"x": 0.5, "y": 0.5}
    loco = [_run(tmp_path, f"loco{s}", s, {"clean": _rows("savee", list(loco_acc), loco_acc, seed=10 + s)
                                           + _rows("cremad", ["a"], acc, seed=s)}, ["savee"]) for s in (1, 2)]
    out = summarize(runs, loco, seed=0)
    clean = out["evaluations"]["clean"]["cremad"]
    assert out["seeds"] == [1, 2, 3] and len(clean["uar"]) == 3
    assert abs(clean["mean"] - np.mean(list(acc.values()))) < 0.06
    assert clean["min"] <= clean["mean"] <= clean["max"]
    assert clean["ci95"][0] < clean["mean"] < clean["ci95"][1]
    assert clean["worst_speaker"]["speaker"] == "cremad:c" and clean["worst_speaker"]["uar"] < 0.45
    assert out["evaluations"]["gsm"]["cremad"]["mean"] < clean["mean"] - 0.1
    savee = out["loco"]["savee"]
    assert savee["runs"] == [str(p) for p in loco] and len(savee["clean"]["uar"]) == 2  # both runs, averaged
    assert savee["clean"]["clips"] == 2 * 4 * 8  # only the held-out corpus' rows
    text = markdown(out)
    assert "| savee | 2 | 6 other clips | 64 |" in text
    assert "| gsm | cremad | +" in text  # a loss against clean, in points
