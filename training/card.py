"""The model card (``MODEL_CARD.md``) and the provenance block stored in ``spec.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The command a card names when its bundle's spec records none.
REPRODUCE = "ser-train fit --data-root ../shared/data --out runs/default --bundle models/default"


def short_scores(sc: dict[str, Any]) -> dict[str, Any]:
    """The fields of an evaluation score that a spec and card keep."""
    return {k: sc[k] for k in ("n", "uar", "wa", "macro_f1", "recall", "confusion", "ece") if k in sc}

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


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _aug(a: dict[str, Any]) -> str:
    if not a:
        return "see training/augment.py"
    sp, snr, gain = a["speed_range"], a["snr_db"], a["gain_db"]
    text = (f"p={a['p_speed']} speed {sp[0]}–{sp[1]}, random 3 s crop, gain {gain[0]}…{gain[1]} dB, "
            f"p={a['p_band']} band limits 200–400 / 3000–3700 Hz, p={a['p_noise']} white/pink noise "
            f"{snr[0]:g}–{snr[1]:g} dB SNR, p={a['p_mulaw']} mu-law / p={a['p_alaw']} A-law 8-bit")
    if a.get("p_codec"):
        text += (f", p={a['p_codec']} a real codec (GSM 06.10 / Opus ~9 kbit/s / MP3), p={a['p_loss']} packet loss "
                 f"{a['loss_rate'][0]:g}–{a['loss_rate'][1]:g} of 20 ms frames, p={a['p_reverb']} synthetic "
                 f"reverberation (RT60 {a['rt60'][0]:g}–{a['rt60'][1]:g} s), p={a['p_babble']} babble of 1–3 other "
                 f"training speakers at {a['babble_snr_db'][0]:g}–{a['babble_snr_db'][1]:g} dB")
    return text


def _average(cfg: dict[str, Any], tr: dict[str, Any]) -> str:
    decay = cfg.get("average_decay")
    if not decay:
        return ""
    kept = "the average" if tr.get("best_weights") == "average" else "the raw weights"
    return (f", scored each epoch of the second half for the raw weights and for an exponential moving "
            f"average of the epochs' weights (decay {decay} per epoch); kept: {kept}")


def _adversary(cfg: dict[str, Any]) -> str:
    w = cfg.get("corpus_adversary") or 0.0
    text = (f", a corpus adversary (a corpus classifier on the head through gradient reversal ramped up to {w})"
            if w else "")
    if cfg.get("teacher"):
        text += (f", distilled from `{Path(str(cfg['teacher'])).name}` (targets: {cfg.get('distill_weight')} of "
                 "the teacher's probabilities, the rest the label)")
    return text


def _share(cfg: dict[str, Any]) -> str:
    """How corpora shared a label in the sampler (configs of 1.1.0 and earlier have no key: they were equal)."""
    if cfg.get("corpus_share", "equal") == "sqrt-speakers":
        return ("within a label, each corpus a share growing with the square root of its training speakers, "
                "TESS half that")
    return "an equal share per corpus within a label, TESS half a share"


def _decode(tr: dict[str, Any]) -> str:
    minutes = tr.get("decode_min")
    if minutes is None:
        return ""
    if minutes < 0.1:
        return " (decoded audio read from the run's cache: a fresh run adds the decoding time)"
    return f", of which decoding {minutes} min"


def figures_table(evaluation: dict[str, Any]) -> str:
    lines = ["| condition | corpus | clips | UAR | WA | macro-F1 | ECE |", "|---|---|---|---|---|---|---|"]
    for cond, rep in evaluation.items():
        if not isinstance(rep, dict) or "overall" not in rep:
            continue
        for corpus, sc in [*rep["corpora"].items(), ("**all**", rep["overall"])]:
            lines.append(f"| {cond} | {corpus} | {sc['n']} | {_fmt(sc['uar'])} | {_fmt(sc['wa'])} | "
                         f"{_fmt(sc['macro_f1'])} | {_fmt(sc['ece']) if 'ece' in sc else '–'} |")
    return "\n".join(lines)


#: Held-out UAR targets of the issue that asked for this model, and the largest telephone loss allowed.
TARGETS = {"cremad": 0.60, "ravdess": 0.65}
MAX_TELEPHONE_LOSS = 0.03
#: Model v2's further targets: leave-one-corpus-out UAR, the worst held-out speaker, codec losses, ECE.
LOCO_TARGETS = {"nemo": 0.45, "savee": 0.45, "ravdess": 0.50}
SPEAKER_FLOOR = 0.30
MAX_ECE = 0.05


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def summary_targets(summary: dict[str, Any]) -> str:
    """The targets against the seed means of ``evaluation_summary`` (training.summary)."""
    ev = summary.get("evaluations", {})
    clean = ev.get("clean", {})
    lines = [f"Against the targets (means over {len(summary.get('seeds', []))} training seeds):", ""]
    for corpus, goal in TARGETS.items():
        if corpus in clean:
            lines.append(f"- {corpus} held-out UAR {clean[corpus]['mean']:.3f} vs {goal:.2f}: "
                         f"{_verdict(clean[corpus]['mean'] >= goal)}")
    if clean:
        worst = min(clean.values(), key=lambda f: f["worst_speaker"]["uar"])["worst_speaker"]
        lines.append(f"- every held-out speaker >= {SPEAKER_FLOOR}: worst {worst['speaker']} {worst['uar']:.3f}: "
                     f"{_verdict(worst['uar'] >= SPEAKER_FLOOR)}")
    for corpus, goal in LOCO_TARGETS.items():
        res = summary.get("loco", {}).get(corpus, {}).get("clean")
        if res:
            lines.append(f"- leave-one-corpus-out {corpus} UAR {res['mean']:.3f} vs {goal:.2f}: "
                         f"{_verdict(res['mean'] >= goal)}")
        else:
            lines.append(f"- leave-one-corpus-out {corpus}: not measured")
    for name in ("gsm", "opus8"):
        for corpus in ("cremad", "ravdess"):
            f = ev.get(name, {}).get(corpus)
            if f and corpus in clean:
                d = clean[corpus]["mean"] - f["mean"]
                lines.append(f"- {name} loss on {corpus} {100 * d:+.1f} points vs at most 3: {_verdict(d <= 0.03)}")
    if clean:
        top = max(clean.items(), key=lambda kv: kv[1]["ece"])
        lines.append(f"- ECE <= {MAX_ECE} after calibration: largest {top[0]} {top[1]['ece']:.3f}: "
                     f"{_verdict(top[1]['ece'] <= MAX_ECE)}")
    return "\n".join(lines)


def targets_text(evaluation: dict[str, Any]) -> str:
    clean, tel = evaluation.get("clean"), evaluation.get("telephone")
    if not isinstance(clean, dict):
        return ""
    lines = ["Against the project's targets (held-out UAR):", ""]
    for corpus, goal in TARGETS.items():
        sc = clean["corpora"].get(corpus)
        if sc is None:
            continue
        verdict = "met" if sc["uar"] >= goal else "**not met**"
        loss = ""
        if isinstance(tel, dict) and corpus in tel["corpora"]:
            d = sc["uar"] - tel["corpora"][corpus]["uar"]
            loss = (f"; telephone loss {100 * d:+.1f} points "
                    f"({'within' if d <= MAX_TELEPHONE_LOSS else '**beyond**'} the 3-point budget)")
        lines.append(f"- {corpus}: UAR {sc['uar']:.3f} vs target {goal:.2f}: {verdict}{loss}")
    return "\n".join(lines)


def _speaker_text(spec_dict: dict[str, Any]) -> str:
    """The per-speaker statistics and calibration paragraphs (bundles of spec format 2)."""
    out = ""
    sp = spec_dict.get("speaker_stats")
    if isinstance(sp, dict):
        out += (
            "\n**Per-speaker statistics** (second input `speaker`, `models.speaker`): the running mean and std of "
            "the channel's normalised log-mel over its voiced frames so far, blended with a prior from the "
            f"training speakers (warm-up: the channel's own frames weigh as much as the prior after "
            f"{sp.get('prior_frames', 0) / 100:g} s of voiced speech), and that weight. The head sees how the "
            "segment's band means and spreads differ from the speaker's. The producer keeps these statistics per "
            "channel, causally, and sends them with each job; a clip without history uses the prior and itself. "
            "Training draws each example's history from 0–10 other clips of the same training speaker, mostly "
            "neutral (p=0.6 each), through the same kind of channel and gain; validation and test histories "
            "never look at labels.\n")
    cal = spec_dict.get("calibration")
    if isinstance(cal, dict):
        out += (
            f"\n**Calibration**: temperature {cal.get('temperature')} fitted on the validation speakers' segments "
            f"(ECE {cal.get('val_ece_before')} → {cal.get('val_ece_after')}); records whose calibrated confidence "
            f"is below {cal.get('uncertain_below')} carry `uncertain: true` (chosen so that validation segments at "
            f"or above it are right {cal.get('target_precision', 0) * 100:.0f} % of the time; "
            f"{100 * cal.get('val_uncertain_share', 0):.0f} % of validation segments fall below it).\n")
    return out


def render_card(spec_dict: dict[str, Any], *, command: str) -> str:
    tr = spec_dict.get("training", {})
    ev = spec_dict.get("evaluation", {})
    corpora = tr.get("corpora", {})
    used = sorted(corpora)
    nc = [c for c in used if c in NON_COMMERCIAL]
    labels = ", ".join(spec_dict["labels"])
    rows = "\n".join(
        f"| {LICENCES.get(c, {}).get('name', c)} | {v['clips']} | {v['speakers']} | "
        f"{LICENCES.get(c, {}).get('licence', '?')} | {LICENCES.get(c, {}).get('citation', '-')} |"
        for c, v in sorted(corpora.items())
    )
    split = tr.get("split", {})
    parts = "\n".join(f"- {k}: {', '.join(v) if v else '(none)'}" for k, v in split.get("speakers", {}).items())
    licence_text = (
        f"**Non-commercial.** This model was trained on {', '.join(LICENCES[c]['name'] for c in nc)}, whose "
        "terms do not allow commercial use (SAVEE: research use only); the shipped weights inherit those "
        "terms. For commercial use retrain on CREMA-D alone (ODbL/DbCL, attribution + share-alike of the "
        "database) or on your own labelled call recordings:\n\n"
        "```\nser-train fit --data cremad=../shared/data/cremad --out runs/cremad-only --bundle models/cremad-only\n"
        "ser-train fit --data manifest=my_calls.csv --out runs/mine --bundle models/mine\n```"
        if nc else "Trained only on data whose licence allows commercial use (see the table above)."
    )
    random_note = ""
    if "random_split" in spec_dict:
        rs = spec_dict["random_split"]
        random_note = (
            "\n### Random clip-level split (NOT comparable: speaker and sentence leakage)\n\n"
            f"{rs.get('note', '')}\n\n{figures_table({'random split': rs['report']})}\n"
        )
    parity = tr.get("parity", {})
    cfg = tr.get("config", {})
    spectrum = (f", the first {cfg['spectrum_coefs']} DCT coefficients of its average spectrum (tilt)"
                if cfg.get("spectrum_coefs") else "")
    speaker_text = _speaker_text(spec_dict)
    members = spec_dict.get("ensemble", {}).get("members", [])
    if members:
        seeds = ", ".join(str(m.get("train_seed")) for m in members)
        speaker_text += (f"\n**Ensemble** (`training.ensemble`): {len(members)} networks of this recipe (training "
                         f"seeds {seeds}, all on the same speaker split) in one ONNX graph that averages their "
                         "probabilities; each member keeps its own feature normalisation, mapped inside the graph. "
                         f"It costs about {len(members)}× one network. The calibration below is the ensemble's own.\n")
    summary = spec_dict.get("evaluation_summary")
    seeds_text = ""
    if isinstance(summary, dict):
        from training.summary import markdown

        head = ("\n## Figures over training seeds (what counts)\n\n" if not members else
                f"\n## Figures of the ensemble (what counts)\n\nOne ensemble of {len(members)} training seeds, "
                "evaluated as one model: the tables' seed columns describe that single run, and the seeds' own "
                "spread is in the single model's card (models/default).\n\n")
        seeds_text = head + markdown(summary) + "\n\n" + summary_targets(summary) + "\n"
    vad = spec_dict.get("vad", {})
    if vad.get("kind") == "silero":
        cut = (f"utterance-aligned segments of 8 kHz audio: Silero VAD (on at p ≥ {vad.get('threshold')}, "
               f"off after {vad.get('min_silence_s')} s below {vad.get('off_threshold')}), onset − "
               f"{vad.get('pre_roll_s')} s to end + {vad.get('hangover_s')} s, at least "
               f"{spec_dict['segment']['min_s']} s, 3 s windows every {spec_dict['segment']['hop_s']} s inside "
               "longer utterances, zero-padded to 3 s (`models.utterances`; "
               "training cuts its clips to their speech with the same function)")
        clip_rule = "its utterance segments"
        path = "decode → Silero VAD → utterance segments"
    else:
        cut = "3 s windows of 8 kHz audio"
        clip_rule = "its voiced 3 s segments"
        path = "decode → 3 s segments → VAD"
    return f"""# {spec_dict['name']} {spec_dict['version']} — speech emotion recognition (CNN-BiLSTM, ONNX)

Classifies speech into **{labels}** from {cut} (log-mel, 64 bands, 50–4000 Hz). A clip's label is
the argmax of the mean probability over {clip_rule}
(`models.runtime.EmotionModel.predict_clip`). Intended domain: narrow-band call-centre audio.

## Model

Per-segment band-mean normalisation inside the graph (removes channel colouring, which otherwise
identifies the corpus), 4 conv blocks, BiLSTM 2 × 64, mean + max pooling over time plus the segment's
level mean/std{spectrum}, dense, softmax; ≈ 250 k parameters, ≈ 1 MB ONNX. See docs/training.md.
{speaker_text}
## Training data

| corpus | clips (train + val) | speakers (train + val) | licence | citation |
|---|---|---|---|---|
{rows}

Copies used: `../shared/data` (8 kHz mono Ogg/Opus ≈ 25 kbit/s). Skipped on purpose: CREMA-D
`1076_MTI_SAD_XX` (digital silence) and the three byte-identical CREMA-D pairs carrying two labels.
RAVDESS *calm* is mapped to *neutral*, TESS *ps* (pleasant surprise) to *surprised*.

## Split and protocol

Speaker-independent, grouped by corpus + speaker, seed {split.get('seed')}: CREMA-D 15 test / 8
validation speakers; RAVDESS 4 test actors (2 male, 2 female) / 2 validation (1 + 1); SAVEE 1 test
speaker;{" nEMO 2 test / 1 validation speakers;" if "nemo" in corpora else ""} **TESS in training only** (two
female speakers reading the same 200 words: holding one out would test a single voice and halve the data).
The split is in `spec.json` (`training.split`).

{parts}

Training: balanced sampling over labels ({cfg.get('epoch_size')} clips per epoch; {_share(cfg)}),
telephone-channel augmentation on training clips only ({_aug(cfg.get('augment', {}))}),
SpecAugment masks, label smoothing {cfg.get('label_smoothing')}{_adversary(cfg)}, Adam (lr {cfg.get('lr')},
cosine decay, batch {cfg.get('batch_size')}), early stopping on validation UAR{_average(cfg, tr)}
(best epoch {tr.get('best_epoch')} of {tr.get('epochs_run')}, validation UAR {_fmt(tr.get('best_val_uar'))}).
Wall time (decode, train, export) {tr.get('wall_time_min')} min on {tr.get('machine', '?')}{_decode(tr)}.

Evaluation: `ser-train evaluate` over every held-out test speaker's file through the full serving
path ({path} → log-mel → normalise → ONNX → mean), open-set argmax over all
{len(spec_dict['labels'])} labels. UAR = mean recall over the labels present in that corpus; WA =
accuracy; macro-F1 over the labels present. *telephone* = the same clips through a 300–3400 Hz band
limit and 8-bit mu-law (G.711-like) before classification.

## Figures of this model (held-out speakers, this training seed)

{figures_table(ev)}

{targets_text(ev)}
{seeds_text}
Context: logistic regression on MFCC statistics ≈ 0.53 UAR on unseen CREMA-D speakers; the seed
CNNs 0.48–0.51. Human listeners on CREMA-D audio alone: 40.9 % (Cao et al.).
{random_note}
## Limits

- Acted emotions from a few hundred actors reading fixed sentences, mostly North American English
  (SAVEE: British male). Real call-centre emotion is subtler, rarer and conversational: expect lower
  figures on real calls, and validate on your own labelled calls before acting on outputs.
- *calm* is folded into *neutral*.
- Test sets are small (a few speakers per corpus): UAR varies by several points with the split seed,
  and by as much with the training seed alone on the same split (reruns: docs/training.md, "Development
  notes"); validation UAR moved by ±0.05 from epoch to epoch during training.
- *surprised* exists only in RAVDESS, TESS and SAVEE, so a network can learn "not CREMA-D-sounding →
  surprised"; the in-graph band normalisation and corpus-balanced sampling are there against that
  (docs/training.md, "Development notes").
- Trained for {tr.get('wall_time_min')} min on CPU ({tr.get('epochs_run')} epochs of {cfg.get('epoch_size')}
  clips); if the training loss was still falling at the end, a longer run would likely score higher.
- Not for decisions about individuals (hiring, credit, health); emotion labels are perceptual.

## Licence

{licence_text}

## Reproduce

```
{command}
```

ONNX opset {parity.get('opset', 17)}, input `features` [batch, 297, 64] (normalised with the per-band
mean/std in `spec.json`), output `probs`; Keras/ONNX parity max |diff| {_fmt(parity.get('max_abs_diff'))}
on {parity.get('n')} real feature windows. Library versions are in `spec.json` (`libraries`).
"""
