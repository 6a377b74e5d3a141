"""``ser-train evaluate``, ``card``, ``calibrate`` and ``summarize``: what is done with a bundle after its fit.

``evaluate`` scores any bundle the serving code loads (2.x log-mel bundles such as ``models/v2`` and
``models/ensemble`` included); ``card``, ``calibrate`` and ``summarize`` handle the bundles the recipe
writes (3.x: Whisper features) and refuse any other format in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from models.errors import SERError
from training.cli_common import REPRODUCE, load_items, new_folder

#: Evaluation channel conditions and speaker-history modes (training.evaluate; kept here as literals
#: so that ``ser-train --help`` does not import numpy-heavy modules; a test keeps them equal).
CONDITIONS = ("clean", "telephone", "gsm", "opus8", "mp3", "white20", "white10", "pink20", "pink10", "hum")
HISTORIES = ("none", "speaker", "call")


def recipe_spec(bundle: Path, command: str) -> Any:
    """The spec of a bundle the recipe wrote (3.x, Whisper features); any other is refused in one line."""
    from models.bundle import load_bundle

    try:
        spec = load_bundle(bundle).spec
    except SERError as exc:
        raise click.ClickException(str(exc)) from None
    if spec.features.kind != "whisper":
        raise click.ClickException(f"ser-train {command} handles the recipe's bundles (3.x, Whisper features); "
                                   f"{bundle} is {spec.model_id} ({spec.features.kind} features): not changed")
    return spec


def _command_of(spec: Any) -> str:
    return str(spec.info.get("training", {}).get("command", REPRODUCE))


@click.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Bundle directory (default: the shipped models/default); any bundle format serving loads.")
@click.option("--data-root", type=click.Path(path_type=Path), help="Folder holding the corpora.")
@click.option("--data", "data", multiple=True, metavar="CORPUS=PATH", help="Corpus folder or manifest; repeatable.")
@click.option("--predictions", type=click.Path(path_type=Path), required=True, help="CSV, one row per file.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), required=True,
              help="JSON report (a confusion-matrix PNG is written beside it).")
@click.option("--speakers-from", type=click.Path(path_type=Path),
              help="Keep only the speakers of a split: a run's split.json, or a bundle "
                   "(directory or spec.json) to score the speakers it was tested on.")
@click.option("--part", type=click.Choice(["test", "val", "train"]), default="test", show_default=True,
              help="Which part of --speakers-from to keep.")
@click.option("--telephone", is_flag=True, help="Same as --condition telephone (300-3400 Hz, 8-bit mu-law).")
@click.option("--condition", type=click.Choice(CONDITIONS), default="clean", show_default=True,
              help="Channel each clip passes through first: telephone, a real codec (gsm = GSM 06.10, "
                   "opus8 = Opus at ~9 kbit/s, mp3), or a noise floor at an SNR against active speech "
                   "(white20, white10, pink20, pink10; hum = mains hum with harmonics at 20 dB).")
@click.option("--history", "history_mode", type=click.Choice(HISTORIES), default="speaker", show_default=True,
              help="The history a model that takes one hears each clip with: speaker = 6 other clips of the "
                   "speaker (chosen without labels), none = the clip alone, call = generated mostly-neutral "
                   "calls, causal.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the histories and generated calls.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(model_dir: Path | None, data_root: Path | None, data: tuple[str, ...], predictions: Path,
             report_path: Path, speakers_from: Path | None, part: str, telephone: bool, condition: str,
             history_mode: str, seed: int, threads: int, quiet: bool) -> None:
    """Classify every audio file of the given corpora through the serving path and score it."""
    from models.runtime import EmotionModel
    from training.evaluate import run_evaluation

    try:
        em = EmotionModel(model_dir, threads=threads)
    except SERError as exc:
        raise click.ClickException(str(exc)) from None
    items = load_items(data, data_root, em.labels)
    if speakers_from is not None:
        from training.split import read_split

        try:
            split = read_split(speakers_from)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot read {speakers_from}: {exc}") from None
        if split.get("mode") == "random":
            keep = {os.path.realpath(p) for p in split.get(f"{part}_paths", [])}  # type: ignore[union-attr]
            items = [i for i in items if os.path.realpath(i.path) in keep]
        else:
            speakers = set(split.get(part, []))  # type: ignore[arg-type]
            items = [i for i in items if i.speaker in speakers]
        if not items:
            raise click.ClickException(f"no files of the {part} speakers in {speakers_from} found in the data given")
    rep = run_evaluation(em, items, predictions=predictions, report_path=report_path, telephone=telephone,
                         condition=condition, history=history_mode, seed=seed, progress=not quiet,
                         split=str(speakers_from) if speakers_from else None, part=part if speakers_from else None)
    for corpus, sc in rep["corpora"].items():  # type: ignore[union-attr]
        click.echo(f"{corpus}: n={sc['n']} UAR {sc['uar']:.3f} WA {sc['wa']:.3f} macro-F1 {sc['macro_f1']:.3f} "
                   f"ECE {sc['ece']:.3f}")
    ov = rep["overall"]
    click.echo(f"overall: n={ov['n']} UAR {ov['uar']:.3f} WA {ov['wa']:.3f} macro-F1 {ov['macro_f1']:.3f}")  # type: ignore[index]


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if the card or licence file is not the spec's.")
def card(bundle: Path, check: bool) -> None:
    """Re-render a bundle's MODEL_CARD.md from its spec.json (and put Whisper's licence file beside it)."""
    from models.bundle import CARD_FILE
    from training.card import render_card
    from training.graph import WHISPER_LICENSE, WHISPER_LICENSE_FILE

    spec = recipe_spec(bundle, "card")
    want = {CARD_FILE: render_card(spec.to_dict(), command=_command_of(spec)), WHISPER_LICENSE_FILE: WHISPER_LICENSE}
    stale = [n for n, text in want.items()
             if not (bundle / n).is_file() or (bundle / n).read_text(encoding="utf-8") != text]
    if check:
        if stale:
            raise click.ClickException(f"{bundle}: {', '.join(stale)} differ(s) from spec.json (ser-train card "
                                       f"--bundle {bundle} rewrites them)")
        click.echo(f"{bundle}: card and licence agree with spec.json")
        return
    for name in stale:
        (bundle / name).write_text(want[name], encoding="utf-8")
    click.echo(f"{bundle}: {', '.join(stale) or 'nothing'} rewritten from spec.json ({spec.model_id})")


@click.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="The bundle to calibrate (its spec records the speaker split it was trained on).")
@click.option("--data-root", type=click.Path(path_type=Path), help="Folder holding the corpora.")
@click.option("--data", "data", multiple=True, metavar="CORPUS=PATH", help="Corpus folder or manifest; repeatable.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Where to write the new bundle (a new or empty folder).")
@click.option("--model-version", required=True, help="The new bundle's version: calibrated outputs are a new model.")
def calibrate(model_dir: Path, data_root: Path | None, data: tuple[str, ...], out_dir: Path,
              model_version: str) -> None:
    """Fit temperature scaling and the uncertain threshold on the bundle's own validation speakers through
    the serving path, as the recipe does: each clip's probability is its segments' mean, and a model with
    an embedding history hears each clip with 6 other clips of its speaker (chosen without labels)."""
    from dataclasses import replace

    import numpy as np

    from models.bundle import ONNX_FILE
    from models.runtime import EmotionModel
    from training.calibrate import calibrate as fit_calibration
    from training.card import render_card
    from training.data import load_wave
    from training.evaluate import history_part, speaker_histories
    from training.fit import V3_PRECISION
    from training.graph import write_model
    from training.split import read_split

    spec = recipe_spec(model_dir, "calibrate")
    new_folder(out_dir, option="--out")
    try:
        em = EmotionModel(model_dir)
        split = read_split(model_dir)
    except (SERError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot calibrate {model_dir}: {exc}") from None
    val = set(split.get("val", []))  # type: ignore[arg-type]
    items = [i for i in load_items(data, data_root, em.labels) if i.speaker in val]
    if not items:
        raise click.ClickException(f"no clips of {model_dir}'s validation speakers in the data given")
    waves = [load_wave(it.path, sr=spec.sample_rate) for it in items]
    hists: list[Any] = [None] * len(items)
    if em.uses_history:
        parts = [history_part(em, y) for y in waves]
        hists = [h for h, _ in speaker_histories([it.speaker for it in items], parts, rng=np.random.default_rng(0),
                                                 stack=True)]
    probs = np.stack([_uncalibrated_clip(em, y, h) for y, h in zip(waves, hists, strict=True)])
    labels = np.asarray([em.labels.index(it.label) for it in items])
    cal, summary = fit_calibration(probs, labels, precision=V3_PRECISION)
    summary["fitted_on"] = (f"{len(items)} clips of the validation speakers ({', '.join(sorted(val))}), clean, "
                            f"{'a label-blind 6-clip speaker history each' if em.uses_history else 'no history'}")
    info = {**spec.info, "calibration": summary, "calibrated_from": spec.model_id}
    new = replace(spec, version=model_version, calibration=cal, info=info)
    write_model(out_dir, onnx_bytes=(model_dir / ONNX_FILE).read_bytes(), spec=new,
                card=render_card(new.to_dict(), command=_command_of(spec)))
    click.echo(json.dumps(summary))
    click.echo(f"calibrated bundle {new.model_id} written to {out_dir}")


def _uncalibrated_clip(em: Any, y: Any, history: Any) -> Any:
    """A clip's mean segment probability before calibration, with ``history`` (stacked embeddings) or none."""
    import numpy as np

    from models.history import wire_vector

    x = em.features(em._segments(y))
    if em.spec.history is None:
        return em.predict_features(x, None, calibrated=False).mean(axis=0)
    h = em.spec.history
    past = np.zeros((0, h.size)) if history is None else np.asarray(history).reshape(-1, h.size)
    vec = np.repeat(wire_vector(past, h)[None, :], len(x), axis=0)
    return em.predict_history(x, vec, calibrated=False)[0].mean(axis=0)


@click.command()
@click.option("--run", "runs", multiple=True, required=True, type=click.Path(path_type=Path, exists=True,
              file_okay=False), help="A ser-train fit run folder (its seed*/result.json); repeatable.")
@click.option("--bundle", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Store the summary in this bundle's spec.json (evaluation_summary) and re-render its card.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), help="Also write the table here.")
def summarize(runs: tuple[Path, ...], bundle: Path | None, markdown_path: Path | None) -> None:
    """Means over training seeds (min-max), speaker-bootstrap intervals, ECE and the worst speaker per
    corpus and condition, from fit runs' per-seed results."""
    from dataclasses import replace

    from models.bundle import ONNX_FILE
    from training.card import render_card, seeds_table, summarize_seeds
    from training.graph import write_model

    results = []
    for run in runs:
        found = sorted(run.glob("seed*/result.json")) or ([run / "result.json"] if (run / "result.json").is_file()
                                                           else [])
        if not found:
            raise click.ClickException(f"{run} holds no seed*/result.json: summarize reads ser-train fit runs")
        results += [json.loads(p.read_text(encoding="utf-8")) for p in found]
    kinds = {(r.get("kind"), bool(r.get("speaker_norm"))) for r in results}
    if len(kinds) > 1:
        raise click.ClickException(f"the runs mix heads/histories {sorted(kinds)}: give the seed folders of one")
    summary = summarize_seeds([r["scores"] for r in results])
    text = f"{len(results)} seeds ({', '.join(str(r['seed']) for r in results)})\n\n" + seeds_table(summary)
    click.echo(text)
    if markdown_path is not None:
        markdown_path.write_text(text + "\n", encoding="utf-8")
    if bundle is not None:
        spec = recipe_spec(bundle, "summarize")
        final = replace(spec, info={**spec.info, "evaluation_summary": summary})
        write_model(bundle, onnx_bytes=(bundle / ONNX_FILE).read_bytes(), spec=final,
                    card=render_card(final.to_dict(), command=_command_of(spec)))
        click.echo(f"{bundle}: evaluation summary stored and card re-rendered")
