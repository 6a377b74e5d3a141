"""``ser-train``: the one recipe (``fit``) and what is done with a bundle after it.

Reproduce the shipped model (from an empty folder beside ``../shared/data``; docs/training.md)::

    ser-train fit --data-root ../shared/data --out runs/3.1.0 --model-version 3.1.0

The group only assembles the commands: :mod:`training.cli_fit` (``fit`` and its deprecated alias
``v3``) and :mod:`training.cli_bundle` (``evaluate``, ``card``, ``calibrate``, ``summarize``), which
share :mod:`training.cli_common` and import nothing of this module.
"""

from __future__ import annotations

import click

from training.cli_bundle import calibrate, card, evaluate, summarize
from training.cli_common import require_train_extra
from training.cli_fit import fit, v3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Train, evaluate and document speech-emotion models (see docs/training.md)."""
    if ctx.invoked_subcommand is not None:
        require_train_extra(ctx.invoked_subcommand)


for _command in (fit, evaluate, card, calibrate, summarize, v3):
    main.add_command(_command)


if __name__ == "__main__":
    main()
