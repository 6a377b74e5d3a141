"""One source for every figure: the README, the docs and the model card agree with the shipped
bundle's ``spec.json``. Nothing here names a figure: everything is read from the spec when the test
runs, so a new ``models/default`` passes once ``python -m training.docs_figures`` has re-rendered the
blocks (docs/training.md, "Figures in the docs")."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from training import docs_figures as df

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "models" / "default" / "spec.json"
MODEL_ID = re.compile(r"ser-cnn-lstm@(\d+\.\d+\.\d+)")


def _outside_blocks(text: str) -> str:
    return df.BLOCK.sub("", text)


def test_every_figure_block_agrees_with_the_spec() -> None:
    assert df.problems(ROOT, SPEC) == []


def test_the_model_card_is_the_spec_rendered() -> None:
    from training.card import render_card
    from training.cli_common import REPRODUCE

    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    card = (SPEC.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card == render_card(spec, command=spec.get("training", {}).get("command", REPRODUCE))


def test_the_recipes_version_is_the_shipped_models() -> None:
    """One version constant: ``training.MODEL_VERSION`` is the shipped bundle's, and the next run's
    default is a later one."""
    from training import MODEL_NAME, MODEL_VERSION, NEXT_MODEL_VERSION

    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    assert (spec["name"], spec["version"]) == (MODEL_NAME, MODEL_VERSION)
    assert tuple(map(int, NEXT_MODEL_VERSION.split("."))) > tuple(map(int, MODEL_VERSION.split(".")))


def test_model_ids_in_the_readme_are_the_shipped_bundles() -> None:
    """Outside the rendered blocks the README may name a model only by an id some bundle in
    ``models/`` has (the default or the opt-in ensemble), never a stale one."""
    shipped = {json.loads(p.read_text())["version"] for p in (ROOT / "models").glob("*/spec.json")}
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert set(MODEL_ID.findall(text)) <= shipped


def test_no_figure_of_the_shipped_model_is_restated_outside_the_blocks() -> None:
    """Training time and the size of a queued segment appear only where they are rendered."""
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    seg_kb = df.segment_bytes(spec) / 1000
    readme = _outside_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert not re.search(r"\b\d+(\.\d+)? min on (the )?2", readme), "a training time outside the rendered blocks"
    for rel in ("docs/pipeline.md", "deploy/README.md", "README.md"):
        text = _outside_blocks((ROOT / rel).read_text(encoding="utf-8"))
        for m in re.finditer(r"(\d+) [kK]B per (queued |3 s )?segment|× (\d+) KB\b", text):
            assert float(m.group(1) or m.group(3)) == seg_kb, f"{rel}: {m.group(0)!r}, the spec gives {seg_kb:g} KB"


def test_the_check_fails_when_the_spec_changes(tmp_path: Path) -> None:
    """The check is not vacuous: a bundle whose spec says something else (a new version, another
    training time, one corpus fewer) makes every block that states it stale."""
    bundle = tmp_path / "bundle"
    shutil.copytree(SPEC.parent, bundle)
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    spec["version"] = "99.0.0"
    spec["training"]["wall_time_min"] = spec["training"].get("wall_time_min", 0) + 17.0
    spec["training"]["corpora"].pop(sorted(spec["training"]["corpora"])[-1])
    (bundle / "spec.json").write_text(json.dumps(spec))
    found = "\n".join(df.problems(ROOT, bundle / "spec.json"))
    for rel, names in df.FILES.items():
        assert rel in found
        for name in names:
            assert name in found, (rel, name, found)


def test_unknown_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown figures block"):
        df.render_text("<!-- figures:nope -->\nx\n<!-- /figures:nope -->\n", {}, SPEC.parent)
