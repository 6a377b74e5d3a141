"""Packaging metadata that setuptools accepts without deprecation warnings (a ``project.license``
table is deprecated from setuptools 77 and refused after February 2027: SPDX strings instead)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(meta["project"]["license"], str) and meta["project"]["license"] == "MIT"
    (setuptools,) = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert found and int(found.group(1)) >= 77, setuptools  # SPDX license strings need setuptools >= 77


def test_serving_dependencies_are_bounded_by_the_tested_versions() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "redis[hiredis]>=8.1" in deps and "rq>=3.0" in deps  # what the fault tests run on here
