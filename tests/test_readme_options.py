"""The README's "Options and environment" table lists every ``ser-gateway`` option with its
environment variable and default as :mod:`gateway.cli` defines them."""

from __future__ import annotations

import re
from pathlib import Path

import click

from gateway.cli import main as gateway_main

ROOT = Path(__file__).resolve().parents[1]


def cells(readme: str, command: str) -> list[list[str]]:
    """The table's rows of ``command``: [option, env, default] cells (``\\|`` is a literal pipe)."""
    table = readme.split("## Options and environment", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table.splitlines()
            if line.startswith(f"| {command} |")]
    return [r[1:] for r in rows]


def shown(param: click.Option) -> str | None:
    """How the table writes an option's default (None: unset, nothing to compare)."""
    if param.is_flag:
        return "on" if param.default is True else "off"
    if param.default is None:
        return None
    return f"{param.default:g}" if isinstance(param.default, float) else str(param.default)


def problems(readme: str, command: click.Command, name: str) -> list[str]:
    rows = cells(readme, name)
    out = []
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        opt = max(param.opts, key=len)
        row = next((r for r in rows if re.search(rf"`{re.escape(opt)}[ `]", r[0])), None)
        if row is None:
            out.append(f"{name} {opt}: no row")
            continue
        option, env, default = row
        if param.envvar and param.envvar not in env:
            out.append(f"{name} {opt}: env {param.envvar} not in {env!r}")
        want = shown(param)
        if want is not None and not re.search(rf"(?<![\w.]){re.escape(want)}(?![\w.])", default):
            out.append(f"{name} {opt}: default {want} not in {default!r}")
    return out


def test_every_gateway_option_is_in_the_readme_table_with_its_env_and_default() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert problems(readme, gateway_main, "ser-gateway") == []


def test_the_check_sees_a_missing_row_and_a_wrong_default() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if "`--header-timeout S`" in line)
    assert problems(readme.replace(row + "\n", ""), gateway_main, "ser-gateway") == [
        "ser-gateway --header-timeout: no row"]
    assert problems(readme.replace(row, row.replace("| 10 |", "| 100 |")), gateway_main, "ser-gateway") == [
        "ser-gateway --header-timeout: default 10 not in '100'"]


def test_every_dashboard_option_is_in_the_readme_table_with_its_env_and_default() -> None:
    from dashboard.cli import main as dashboard_main

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert problems(readme, dashboard_main, "ser-dashboard") == []
