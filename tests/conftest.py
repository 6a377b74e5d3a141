from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tinybundle import make_tiny_bundle  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid bundle with the default spec's shapes and a tiny ONNX graph (no TensorFlow)."""
    path = tmp_path_factory.mktemp("bundle")
    make_tiny_bundle(path)
    return path


@pytest.fixture
def shared_data() -> Path:
    """The shared corpora; tests using it are skipped, loudly, where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"corpora not found at {SHARED_DATA}")
    return SHARED_DATA
