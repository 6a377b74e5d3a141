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


#: Serving dependencies whose older major versions behave differently under the fault tests (pyproject:
#: "the versions tested here; older ones are not tested").
FAULT_TESTED = ("redis", "rq")


def test_serving_dependencies_are_bounded_by_the_tested_versions() -> None:
    """Every serving dependency has a lower bound the installed (tested) version satisfies, and for
    the ones the fault tests exercise the bound is in the major version installed here: the floor
    is a version this suite ran against, not an older one (no version is named in this test)."""
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version

    deps = {r.name: r for r in map(Requirement, tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                                   ["dependencies"])}
    assert set(FAULT_TESTED) <= set(deps)
    for name, req in deps.items():
        installed = Version(version(name))
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert floors, f"{name}: no lower bound"
        assert req.specifier.contains(installed, prereleases=True), f"{name}: installed {installed} not in {req}"
        if name in FAULT_TESTED:
            assert max(floors).major == installed.major, f"{name}: {req} allows versions older than the tested " \
                                                         f"{installed.major}.x"
