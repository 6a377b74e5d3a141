"""``ser-train card``, ``summarize``, ``ensemble``, ``calibrate`` and ``export``: what is done with a bundle after
its fit (figures, cards, merging, recalibration, re-export)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from models.errors import SERError
from training.card import REPRODUCE, short_scores


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--random-split-report", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="test_clean.json of a `fit --split random` run (figures with speaker leakage).")
def card(bundle: Path, random_split_report: Path) -> None:
    """Add a random clip-level split's figures (clearly labelled not comparable) to a bundle's spec and card."""
    from dataclasses import replace

    from models.bundle import ONNX_FILE, load_bundle, write_bundle
    from training.card import render_card

    try:
        spec = load_bundle(bundle).spec
        rep = json.loads(random_split_report.read_text(encoding="utf-8"))
        short = {"corpora": {c: short_scores(v) for c, v in rep["corpora"].items()},
                 "overall": short_scores(rep["overall"])}
    except (SERError, ValueError, KeyError) as exc:
        raise click.ClickException(f"cannot annotate {bundle}: {exc}") from None
    info = dict(spec.info)
    info["random_split"] = {"note": random_split_note(random_split_report.parent.parent / "info.json",
                                                      main_epochs=info.get("training", {}).get("epochs_run")),
                            "report": short, "source": str(random_split_report)}
    final = replace(spec, info=info)
    text = render_card(final.to_dict(), command=info.get("training", {}).get("command", REPRODUCE))
    write_bundle(bundle, onnx_bytes=(bundle / ONNX_FILE).read_bytes(), spec=final, card=text)
    click.echo(f"{bundle}: random-split figures added (overall UAR {short['overall']['uar']:.3f})")


def random_split_note(run_info: Path, *, main_epochs: int | None) -> str:
    """The card's caveat for a random-split run, saying whether it trained as long as the main model."""
    epochs_run, size = None, None
    if run_info.is_file():
        tr = json.loads(run_info.read_text(encoding="utf-8")).get("training", {})
        epochs_run, size = tr.get("epochs_run"), tr.get("config", {}).get("epoch_size")
    what = f" ({epochs_run} epochs of {size} clips)" if epochs_run else ""
    leak = ("on a random 70/10/20 clip-level split of the same corpora: test clips share speakers and sentences "
            "with training clips. NOT comparable to the speaker-held-out figures above")
    if epochs_run and main_epochs and epochs_run >= 0.75 * main_epochs:
        return (f"A separate run of the same recipe{what}, about as long as the main model's ({main_epochs} "
                f"epochs), {leak}, and its test set holds other clips and corpora (TESS only here). Compare "
                "corpus by corpus, and allow for a few points of run-to-run noise: these are single runs.")
    return (f"A separate, shorter run{what} {leak}, nor in training length: a short run is undertrained, so "
            "its figures can even fall below the main model's; with equal training, leakage inflates them.")


@click.command()
@click.option("--run", "runs", multiple=True, required=True, type=click.Path(path_type=Path, exists=True,
              file_okay=False), help="A finished fit run of the recipe (one per training seed); repeatable.")
@click.option("--loco", multiple=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A finished leave-one-corpus-out run (fit --hold-out-corpus); repeatable.")
@click.option("--bundle", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Store the summary in this bundle's spec.json (evaluation_summary) and re-render its card.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), help="Also write the tables here.")
def summarize(runs: tuple[Path, ...], loco: tuple[Path, ...], bundle: Path | None, markdown_path: Path | None) -> None:
    """Means over training seeds with speaker-bootstrap intervals, codec losses, the worst speaker and
    leave-one-corpus-out figures, from the runs' per-clip evaluation CSVs."""
    from dataclasses import replace

    from models.bundle import ONNX_FILE, load_bundle, write_bundle
    from training.card import render_card
    from training.summary import markdown
    from training.summary import summarize as summarize_runs

    try:
        summary = summarize_runs(list(runs), list(loco))
    except (OSError, KeyError, ValueError) as exc:
        raise click.ClickException(f"cannot summarize: {exc}") from None
    text = markdown(summary)
    click.echo(text)
    if markdown_path is not None:
        markdown_path.write_text(text + "\n", encoding="utf-8")
    if bundle is not None:
        try:
            spec = load_bundle(bundle).spec
        except SERError as exc:
            raise click.ClickException(str(exc)) from None
        final = replace(spec, info={**spec.info, "evaluation_summary": summary})
        card_text = render_card(final.to_dict(), command=spec.info.get("training", {}).get("command", REPRODUCE))
        write_bundle(bundle, onnx_bytes=(bundle / ONNX_FILE).read_bytes(), spec=final, card=card_text)
        click.echo(f"{bundle}: evaluation summary stored and card re-rendered")


@click.command()
@click.option("--bundle", "bundles", multiple=True, required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A member bundle (a training seed of one recipe); repeatable, at least 2. The first one's "
                   "spec (normalisation, speaker prior, split) is the ensemble's.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Where to write the ensemble.")
@click.option("--model-version", required=True, help="The ensemble's version: it is a new model.")
def ensemble(bundles: tuple[Path, ...], out_dir: Path, model_version: str) -> None:
    """Average the members' probabilities in one ONNX graph (training.ensemble); uncalibrated: run
    `ser-train calibrate` on the result."""
    from models.bundle import load_bundle, write_bundle
    from training.card import render_card
    from training.ensemble import ensemble as merge

    try:
        onnx_bytes, spec = merge([load_bundle(b) for b in bundles], version=model_version)
    except SERError as exc:
        raise click.ClickException(f"cannot merge: {exc}") from None
    command = "ser-train ensemble " + " ".join(f"--bundle {b}" for b in bundles)
    write_bundle(out_dir, onnx_bytes=onnx_bytes, spec=spec, card=render_card(spec.to_dict(), command=command))
    click.echo(f"ensemble {spec.model_id} of {len(bundles)} bundles written to {out_dir} "
               f"({len(onnx_bytes) / 1e6:.1f} MB; not calibrated)")


@click.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="The bundle to calibrate (its spec records the speaker split it was trained on).")
@click.option("--data-root", type=click.Path(path_type=Path), help="Folder holding the corpora.")
@click.option("--data", "data", multiple=True, metavar="CORPUS=PATH", help="Corpus folder or manifest; repeatable.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Where to write the new bundle.")
@click.option("--model-version", required=True, help="The new bundle's version: calibrated outputs are a new model.")
def calibrate(model_dir: Path, data_root: Path | None, data: tuple[str, ...], out_dir: Path,
              model_version: str) -> None:
    """Fit temperature scaling and the uncertain threshold on the bundle's own validation speakers,
    through the serving path (one record per segment, as served; a speaker model hears each clip with
    6 other clips of its speaker, chosen without labels), and write a calibrated bundle."""
    from dataclasses import replace

    import numpy as np

    from models.bundle import ONNX_FILE, write_bundle
    from models.runtime import EmotionModel
    from models.speaker import stats_vector
    from training.calibrate import calibrate as fit_calibration
    from training.card import render_card
    from training.cli import _load_items
    from training.data import load_wave
    from training.evaluate import speaker_histories
    from training.split import read_split

    try:
        em = EmotionModel(model_dir)
        split = read_split(model_dir)
    except (SERError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot calibrate {model_dir}: {exc}") from None
    val = set(split.get("val", []))  # type: ignore[arg-type]
    items = [i for i in _load_items(data, data_root, em.labels) if i.speaker in val]
    if not items:
        raise click.ClickException(f"no clips of {model_dir}'s validation speakers in the data given")
    clips = []  # (item, features, the clip's own voiced-frame sums or None)
    for it in items:
        segs = em._segments(load_wave(it.path, sr=em.spec.sample_rate))
        x = em.features(segs)
        clips.append((it, x, em.frame_sums(segs, x).sum(axis=0) if em.uses_speaker else None))
    sp = em.spec.speaker
    hists = (speaker_histories([it.speaker for it, _, _ in clips], [own for _, _, own in clips],
                               rng=np.random.default_rng(0)) if sp is not None else [])
    probs, labels = [], []
    for k, (it, x, own) in enumerate(clips):
        speaker = None
        if sp is not None and own is not None:  # as served: the clip plus earlier speech of its speaker
            speaker = np.repeat(stats_vector(own + hists[k][0], sp)[None, :], len(x), axis=0)
        p = em.predict_features(x, speaker, calibrated=False)
        probs.append(p)
        labels.extend([em.labels.index(it.label)] * len(p))
    cal, summary = fit_calibration(np.concatenate(probs), np.asarray(labels))
    summary["fitted_on"] = f"{len(items)} clips of the validation speakers ({', '.join(sorted(val))})"
    info = {**em.spec.info, "calibration": summary, "calibrated_from": em.model_id}
    spec = replace(em.spec, version=model_version, calibration=cal, info=info)
    card_text = render_card(spec.to_dict(), command=em.spec.info.get("training", {}).get("command", REPRODUCE))
    write_bundle(out_dir, onnx_bytes=(model_dir / ONNX_FILE).read_bytes(), spec=spec, card=card_text)
    click.echo(json.dumps(summary))
    click.echo(f"calibrated bundle {spec.model_id} written to {out_dir}")


@click.command()
@click.option("--run", "run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="A fit run directory (holds model.keras, bundle/, parity_features.npy).")
@click.option("--bundle", type=click.Path(path_type=Path), required=True, help="Where to write the bundle.")
def export(run_dir: Path, bundle: Path) -> None:
    """Re-export a run's Keras model to ONNX (parity-checked) and write a bundle with its spec and card."""
    from models.bundle import CARD_FILE, load_bundle, write_bundle
    from training.export import ExportError, parity, to_onnx
    from training.train import configure_tf

    keras_path, src = run_dir / "model.keras", run_dir / "bundle"
    if not src.is_dir():
        src = run_dir / "bundle-raw"
    if not keras_path.is_file() or not src.is_dir():
        raise click.ClickException(f"{run_dir} is not a finished fit run (needs model.keras and bundle/)")
    try:
        spec = load_bundle(src).spec
    except SERError as exc:
        raise click.ClickException(str(exc)) from None
    configure_tf(2)
    import keras
    import numpy as np

    import training.model  # noqa: F401  (registers the custom layers)

    model = keras.models.load_model(keras_path)
    x = np.load(run_dir / "parity_features.npy")
    spk_path = run_dir / "parity_speaker.npy"
    spk = np.load(spk_path) if spk_path.is_file() else None
    try:
        onnx_bytes = to_onnx(model, n_frames=spec.n_frames, n_mels=spec.features.n_mels,
                             speaker_input=spec.speaker.input if spec.speaker is not None else None)
        par = parity(model, onnx_bytes, x, speaker=spk)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    card_path = src / CARD_FILE
    write_bundle(bundle, onnx_bytes=onnx_bytes, spec=spec,
                 card=card_path.read_text(encoding="utf-8") if card_path.is_file() else None)
    click.echo(f"bundle written to {bundle} (parity max |diff| {par['max_abs_diff']:.2e})")
