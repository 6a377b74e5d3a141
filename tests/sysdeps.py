"""What the tests need from the machine, and what happens when it is missing.

Outside CI a missing system binary (redis-server, openssl, chromium + chromedriver, prometheus /
promtool) or a missing declared Python test dependency skips the tests that need it, saying why: a
developer without Chromium can still run the rest. ``.ci/run`` sets ``SER_REQUIRE_SYSTEM_DEPS=1``:
then the same absence is a test **failure** with the same message, so CI cannot go green with a whole
tier skipped. Docker stays a skip even then (``tests/test_docker.py``: CI machines need not have an
engine), and so do the corpus tests (``../shared/data`` is not part of CI).
"""

from __future__ import annotations

import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

#: The environment variable ``.ci/run`` sets.
FLAG = "SER_REQUIRE_SYSTEM_DEPS"


def required() -> bool:
    return os.environ.get(FLAG, "").strip() not in ("", "0")


def missing(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it where the flag is set."""
    if required():
        pytest.fail(f"{reason} [{FLAG}=1: CI requires it; bash .ci/install-system-deps.sh installs the system "
                    "packages, pip install -e '.[train,dev,vad-eval]' the Python ones]", pytrace=False)
    pytest.skip(reason)


def binary(*names: str, hint: str) -> str:
    """The path of the first of ``names`` found on PATH; otherwise :func:`missing`."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    missing(f"{' / '.join(names)} not found on PATH ({hint})")


def module(name: str, hint: str) -> ModuleType:
    """``pytest.importorskip`` for a declared test dependency: a failure where the flag is set."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"Python module {name} not importable ({hint}): {exc}")
