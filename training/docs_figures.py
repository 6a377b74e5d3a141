"""Render the shipped model's figures into the docs from its ``spec.json``: one source for every figure.

README.md, docs/training.md, docs/pipeline.md and deploy/README.md carry marked blocks::

    <!-- figures:NAME -->
    ... rendered text ...
    <!-- /figures:NAME -->

``python -m training.docs_figures`` rewrites every block from ``models/default/spec.json`` (the model
id, the corpora it was trained on and their licences, its held-out figures and seed summary, its
training time and command, the Redis sizing of a queued segment); ``--check`` changes nothing and
exits 1 naming each block that differs. The model card (``MODEL_CARD.md``) is rendered from the same
spec by ``ser-train`` itself (``training.card.render_card``, ``ser-train card``).
``tests/test_docs_figures.py`` fails when
any of them disagrees with the spec. After replacing ``models/default``, run
``python -m training.docs_figures`` and commit what it changed.

Light: json and the card's licence table only (no TensorFlow).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training import MODEL_VERSION
from training.card import LICENCES, NON_COMMERCIAL
from training.cli_common import REPRODUCE

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "models" / "default" / "spec.json"
#: The files that carry figure blocks, and the blocks each must carry.
FILES: dict[str, tuple[str, ...]] = {
    "README.md": ("licence", "record-example", "model-summary"),
    "docs/training.md": ("reproduce",),
    "docs/pipeline.md": ("sizing",),
    "deploy/README.md": ("segment-size",),
}
BLOCK = re.compile(r"(<!-- figures:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)
#: Measured Redis costs besides the PCM (docs/benchmark.md): the peak per active call and per kept record.
CALL_MB = 0.2
RECORD_KB = 0.33


def model_id(spec: dict[str, Any]) -> str:
    return f"{spec['name']}@{spec['version']}"


def _name(corpus: str) -> str:
    return LICENCES.get(corpus, {}).get("name", corpus)


def _short_licence(corpus: str) -> str:
    text = LICENCES.get(corpus, {}).get("licence", "licence unknown")
    return re.split(r"[;(]", text)[0].strip().rstrip(",")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def trained_on(spec: dict[str, Any]) -> list[str]:
    return sorted(spec.get("training", {}).get("corpora", {}))


def non_commercial(corpus: str) -> bool:
    return corpus in NON_COMMERCIAL


def segment_bytes(spec: dict[str, Any]) -> int:
    """The int16 PCM of one queued segment at its longest (the segment window at the model's rate)."""
    return round(spec["sample_rate"] * spec["segment"]["window_s"]) * 2


def render_licence(spec: dict[str, Any], bundle: Path) -> str:
    corpora = trained_on(spec)
    listed = _and([f"{_name(c)} ({_short_licence(c)})" for c in corpora])
    nc = [_name(c) for c in corpora if non_commercial(c)]
    unseen = sorted(c for c in LICENCES if c not in corpora and c != "manifest")
    text = f"**Licence of the shipped model.** `{model_id(spec)}` (`models/default`) was trained on {listed}"
    if nc:
        text += (f": **it inherits the non-commercial terms of {_and(nc)}**. For commercial use retrain on "
                 "CREMA-D alone or on your own labelled calls ([docs/training.md](docs/training.md)).")
    else:
        text += "."
    if unseen:
        text += f" Not used in its training: {_and([_name(c) for c in unseen])}."
    return text + " The code is MIT-licensed; no corpus audio is in this repository.\n"


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def render_model_summary(spec: dict[str, Any], bundle: Path) -> str:
    from training.card import seeds_table

    tr = spec.get("training", {})
    cal = spec.get("calibration") or {}
    seeds = tr.get("seeds", [])
    hist = spec.get("embedding_history")
    arch = ("a frozen Whisper tiny.en encoder prefix under a CNN-BiLSTM head" +
            (", normalised by each channel's own recent embeddings" if hist else ""))
    heard = (", each test clip heard with 6 other clips of its speaker as its channel's history (label-blind)"
             if hist else "")
    text = [f"`{model_id(spec)}` ({arch}), trained on "
            f"{_and([_name(c) for c in trained_on(spec)])}: clip UAR on held-out speakers{heard}, argmax over all "
            f"{len(spec['labels'])} labels, mean of {len(seeds)} training seeds (min–max) [speaker-bootstrap 95 % "
            "interval]; nEMO (Polish) was never trained on; SNRs are against active speech:", "",
            seeds_table(spec.get("evaluation_summary", {})), ""]
    notes = []
    if cal:
        notes.append(f"calibrated (temperature {cal['temperature']:.3f}); records below confidence "
                     f"{cal['uncertain_below']:.3f} are flagged `uncertain`")
    if "encode_min" in tr:
        notes.append(f"encoding took {tr['encode_min']:.1f} min and training {tr.get('fit_min', 0):.1f} min per seed "
                     f"on {tr.get('machine', 'an unrecorded machine')}")
    text.append("The model is " + "; ".join(notes) + ". Every figure, target and caveat: "
                "[the model card](models/default/MODEL_CARD.md) and [docs/training.md](docs/training.md).")
    return "\n".join(text) + "\n"


def render_reproduce(spec: dict[str, Any], bundle: Path) -> str:
    tr = spec.get("training", {})
    sizes = ", ".join(f"{_name(c)} {v['clips']} clips of {v['speakers']} speakers"
                      for c, v in tr.get("corpora", {}).items())
    lines = [f"The shipped model `{model_id(spec)}` was trained on {_and([_name(c) for c in trained_on(spec)])} "
             f"({sizes}; train + validation), speaker split seed {tr.get('split_seed', '?')}, training seeds "
             f"{', '.join(map(str, tr.get('seeds', [])))} ({tr.get('epochs', '?')} epochs each; the bundle is seed "
             f"{tr.get('shipped_seed', '?')}, the best by validation UAR); encoding took "
             f"{tr.get('encode_min', '?')} min and training {tr.get('fit_min', '?')} min per seed on "
             f"{tr.get('machine', '?')}.",
             "Its command, as recorded in `spec.json`:", "", "```", tr.get("command", "(not recorded)"), "```"]
    if not str(tr.get("command", "")).startswith("ser-train fit ") and spec.get("version") == MODEL_VERSION:
        lines += ["", "The same recipe today, from an empty folder beside `../shared/data` (`ser-train fit` is the "
                  "one recipe; it writes a new bundle, here `runs/" + MODEL_VERSION + "/bundle`):", "", "```",
                  REPRODUCE, "```"]
    return "\n".join(lines) + "\n"


def render_sizing(spec: dict[str, Any], bundle: Path) -> str:
    seg_kb = segment_bytes(spec) / 1000
    rate_khz = spec["sample_rate"] / 1000
    win = spec["segment"]["window_s"]
    live = (64 + 100) * 1 * seg_kb / 1000  # 100 live calls at --batch 1, default --max-pending 64
    results = 200_000 * RECORD_KB / 1000
    calls = 100 * CALL_MB
    total = 2 * (live + calls + results)
    files = 64 * 16 * seg_kb / 1000
    return (
        "    maxmemory ≥ 2 × ( queued PCM + active calls × 0.2 MB + results kept )\n"
        f"    queued PCM   ≈ (max_pending + producers) × batch × {seg_kb:g} KB   "
        f"({model_id(spec)}: {win:g} s of int16 at {rate_khz:g} kHz)\n"
        f"    results kept ≈ segments finished in the last hour × {RECORD_KB} KB  "
        "(streams live 1 h after their last write)\n\n"
        f"0.2 MB per active call is the measured peak (`--batch 1`, 50 % load: 175–205 KB per call, jobs,\n"
        "claims, RQ registries and streams included); 0.33 KB per record was measured with `MEMORY`/`INFO`\n"
        "over 10,000 `XADD`s of a typical result record. Example: 100 live calls (`--batch 1`, default\n"
        f"`--max-pending 64`) and 200,000 segments an hour: 2 × ({live:.1f} MB + {calls:.0f} MB + {results:.0f} MB) "
        f"≈ {total:.0f} MB. File\nproducers at `--batch 16` queue up to 64 × 16 × {seg_kb:g} KB ≈ {files:.0f} MB "
        "of PCM each when workers lag.\n"
    )


def render_segment_size(spec: dict[str, Any], bundle: Path) -> str:
    return (f"(PCM is ≈ {segment_bytes(spec) / 1000:g} KB per queued segment with the shipped `{model_id(spec)}`: "
            f"{spec['segment']['window_s']:g} s of int16 at {spec['sample_rate'] / 1000:g} kHz, until a worker "
            "takes it; sizing rule: [docs/pipeline.md](../docs/pipeline.md#redis-memory))\n")


def render_record_example(spec: dict[str, Any], bundle: Path) -> str:
    """The first customer record of the quick start's call (``ser-produce examples/call.wav``, embedded,
    this bundle), probabilities and times rounded for the page."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("SER_REDIS_URL", None)
    proc = subprocess.run([sys.executable, "-m", "producer.cli", str(ROOT / "examples" / "call.wav"),
                           "--channel-names", "agent,customer", "--format", "jsonl", "--model", str(bundle)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"ser-produce examples/call.wav failed: {proc.stderr[-2000:]}")
    rec = next(r for r in map(json.loads, proc.stdout.splitlines())
               if r["kind"] == "result" and r["channel"] == "customer")
    rec = {"kind": rec.pop("kind"), **rec}
    rec.update(start_s=round(rec["start_s"], 2), end_s=round(rec["end_s"], 2),
               confidence=round(rec["confidence"], 2), probs={k: round(v, 2) for k, v in rec["probs"].items()})
    text = json.dumps(rec, ensure_ascii=False)
    cut = text.index('"label"')
    cut2 = text.index('"fearful"')
    return "```json\n" + text[:cut].rstrip() + "\n " + text[cut:cut2].rstrip() + "\n " + text[cut2:] + "\n```\n"


RENDERERS: dict[str, Callable[[dict[str, Any], Path], str]] = {
    "licence": render_licence,
    "record-example": render_record_example,
    "model-summary": render_model_summary,
    "reproduce": render_reproduce,
    "sizing": render_sizing,
    "segment-size": render_segment_size,
}


def render_text(text: str, spec: dict[str, Any], bundle: Path) -> str:
    """``text`` with every figure block rewritten from ``spec`` (unknown block names are an error)."""
    cache: dict[str, str] = {}

    def one(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise ValueError(f"unknown figures block {name!r} (known: {', '.join(RENDERERS)})")
        if name not in cache:
            cache[name] = RENDERERS[name](spec, bundle)
        return m.group(1) + cache[name] + m.group(4)

    return BLOCK.sub(one, text)


def blocks(text: str) -> list[str]:
    return [m.group("name") for m in BLOCK.finditer(text)]


def problems(root: Path = ROOT, spec_path: Path = DEFAULT_SPEC) -> list[str]:
    """What differs from the rendering (empty when every block agrees with the spec)."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    out = []
    for rel, wanted in FILES.items():
        text = (root / rel).read_text(encoding="utf-8")
        have = blocks(text)
        out += [f"{rel}: no figures block {name!r}" for name in wanted if name not in have]
        new = render_text(text, spec, spec_path.parent)
        if new != text:
            fresh = {m.group("name"): m.group("body") for m in BLOCK.finditer(new)}
            stale = [m.group("name") for m in BLOCK.finditer(text) if fresh[m.group("name")] != m.group("body")]
            out.append(f"{rel}: block(s) {', '.join(stale)} differ from {spec_path.name} "
                       "(python -m training.docs_figures rewrites them)")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.docs_figures", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="the bundle's spec.json [models/default]")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = parser.parse_args(argv)
    if args.check:
        found = problems(ROOT, args.spec)
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    for rel in FILES:
        path = ROOT / rel
        text = path.read_text(encoding="utf-8")
        new = render_text(text, spec, args.spec.parent)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"{rel}: figures of {model_id(spec)} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
