"""The README's "Options and environment" table is true: every option of every console script's click
command has exactly one row, with its environment variable and its default as the command defines
them (the default exactly, not as a substring), and no row names an option or a variable the
command does not have."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Console script -> its click command (``module:attribute``, as in pyproject's [project.scripts]).
#: A new command gets a line here and its rows in the README.
COMMANDS = {
    "ser-produce": "producer.cli:main",
    "ser-worker": "workers.cli:main",
    "ser-status": "workers.cli:status",
    "ser-dashboard": "dashboard.cli:main",
    "ser-gateway": "gateway.cli:main",
    "ser-archive": "archive.cli:main",
}

#: Console scripts whose options the table does not list one by one, and why.
NOT_CHECKED = {
    "ser-train": "a group of subcommands with their own options (docs/training.md); its one row lists them",
    # being built on the archive branches: the lead moves it to COMMANDS, with its rows, after merging
    "ser-calls": "being built (archive.calls_cli)",
}

#: Known differences in rows that another branch is rewriting: (command, option) -> why. The lead
#: empties this after merging; an entry whose difference is gone fails, so it cannot go stale.
PENDING = {
    # branch producer-meta rewrites the --format/--output row (its default cell ends "`-` (stdout)"); after merging
    # it, split the row in two: `--format table\|jsonl\|csv` (table ...) and `--output FILE` (`-` (stdout))
    ("ser-produce", "--output"): "its default shares the --format row",
}


def command(name: str) -> click.Command:
    module, attr = COMMANDS[name].split(":")
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command), COMMANDS[name]
    return cmd


def cells(readme: str, name: str) -> list[list[str]]:
    """The table's rows of command ``name``: [option, env, default] cells (``\\|`` is a literal pipe)."""
    table = readme.split("## Options and environment", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table.splitlines()
            if line.startswith(f"| {name} |")]
    return [r[1:] for r in rows]


def spans(text: str) -> list[str]:
    """The backticked spans of ``text`` outside parentheses (the parts a row *names*, not its notes)."""
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\([^()]*\)", "", text)
    return re.findall(r"`([^`]+)`", text)


def named(option_cell: str) -> list[str]:
    """The options a row names: ``--format table|jsonl|csv`` -> ``--format``."""
    return [s.split()[0] for s in spans(option_cell) if s.startswith("--")]


def shown(param: click.Option) -> str | None:
    """How the table writes an option's default (None: computed or unset, described in words)."""
    if param.is_flag:
        return "on" if param.default is True else "off"
    default = param.default
    if isinstance(default, bool) or not isinstance(default, str | int | float):
        return None  # None, click's unset sentinel, a callable, a multiple option's ()
    return f"{default:g}" if isinstance(default, float) else str(default)


def is_default(cell: str, want: str) -> bool:
    """``cell`` is exactly the default, backticked or not, optionally followed by a note in parentheses."""
    return re.fullmatch(rf"(`?){re.escape(want)}\1( \(.+\))?", cell) is not None


def problems(readme: str, cmd: click.Command, name: str) -> list[str]:
    rows = cells(readme, name)
    options = {max(p.opts, key=len): p for p in cmd.params if isinstance(p, click.Option)}
    out = []
    for param in cmd.params:
        if isinstance(param, click.Argument) and param.name is not None:
            arg = param.name.upper()
            if not any(re.match(rf"`{arg}\b", r[0]) for r in rows):
                out.append(f"{name} {arg}: no row")
    for row in rows:
        for opt in named(row[0]):
            if opt not in options:
                out.append(f"{name} {opt}: a row, but the command has no such option")
        envs = set(spans(row[1]))
        claimed = {options[o].envvar for o in named(row[0]) if o in options} - {None}
        if named(row[0]) and envs != claimed:
            out.append(f"{name} {named(row[0])[0]}: env {sorted(envs)} in the table, {sorted(claimed)} in the code")
    for opt, param in options.items():
        mine = [r for r in rows if opt in named(r[0])]
        if len(mine) != 1:
            out.append(f"{name} {opt}: {len(mine) or 'no'} rows" if mine else f"{name} {opt}: no row")
            continue
        option, _, default = mine[0]
        want = shown(param)
        if want is None:
            continue
        if len(named(option)) > 1:
            out.append(f"{name} {opt}: its default {want} shares a row with {named(option)}")
        elif not is_default(default, want):
            out.append(f"{name} {opt}: default {want} in the code, {default!r} in the table")
    return out


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_console_script_is_checked_or_excused() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert set(scripts) == set(COMMANDS) | set(NOT_CHECKED) and not set(COMMANDS) & set(NOT_CHECKED)
    assert {name: scripts[name] for name in COMMANDS} == COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_in_the_readme_table_with_its_env_and_default(readme: str, name: str) -> None:
    found = problems(readme, command(name), name)
    pending = {f"{name} {opt}" for (cmd, opt) in PENDING if cmd == name}
    assert [p for p in found if p.split(":")[0] not in pending] == []
    assert [p for p in sorted(pending) if not any(f.startswith(p + ":") for f in found)] == [], "stale PENDING"


def test_the_check_sees_a_missing_row_a_wrong_default_and_a_wrong_env(readme: str) -> None:
    gateway = command("ser-gateway")
    row = next(line for line in readme.splitlines() if line.startswith("| ser-gateway | `--header-timeout S`"))
    assert problems(readme.replace(row + "\n", ""), gateway, "ser-gateway") == [
        "ser-gateway --header-timeout: no row"]
    assert problems(readme.replace(row, row.replace("| 10 |", "| 100 |")), gateway, "ser-gateway") == [
        "ser-gateway --header-timeout: default 10 in the code, '100' in the table"]
    # a substring is not the default: "10 s" and "110" both hold "10"
    for cell in ("10 s", "110", "`10`x"):
        assert problems(readme.replace(row, row.replace("| 10 |", f"| {cell} |")), gateway, "ser-gateway") != []
    assert problems(readme.replace(row, row.replace("| | 10 |", "| `SER_HEADER_TIMEOUT` | 10 |")), gateway,
                    "ser-gateway") == [
        "ser-gateway --header-timeout: env ['SER_HEADER_TIMEOUT'] in the table, [] in the code"]
    threads = next(line for line in readme.splitlines() if line.startswith("| ser-gateway | `--threads N`"))
    merged = readme.replace(row + "\n", "").replace(threads, threads.replace("`--threads N`",
                                                                             "`--threads N`, `--header-timeout S`"))
    assert "ser-gateway --header-timeout: its default 10 shares a row with ['--threads', '--header-timeout']" in (
        problems(merged, gateway, "ser-gateway"))
    extra = readme.replace("| ser-gateway | `--redis-url URL` |", "| ser-gateway | `--redis-url URL`, `--portal X` |")
    unknown = "ser-gateway --portal: a row, but the command has no such option"
    assert problems(extra, gateway, "ser-gateway") == [unknown]


@pytest.mark.parametrize(("cell", "want", "ok"), [
    ("`ser`", "ser", True), ("ser", "ser", True), ("60", "60", True), ("`-` (stdout)", "-", True),
    ("`ser", "ser", False), ("sers", "ser", False), ("60, 16", "60", False), ("stdout", "-", False),
])
def test_a_default_cell_is_the_default_exactly(cell: str, want: str, ok: bool) -> None:
    assert is_default(cell, want) is ok
