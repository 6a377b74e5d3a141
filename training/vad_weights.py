"""Write ``models/vad_model/silero_vad_8k.npz``: the weights of the Silero graph's 8 kHz branch, for
:class:`models.vad.SileroNumpy` (serving reads the ``.npz`` with numpy; this needs the ``onnx``
package, which comes with the ``train`` extra).

    python -m training.vad_weights            # rewrite the file, print its sha256
    python -m training.vad_weights --check    # exit 1 unless the file holds the ONNX model's arrays

After a rewrite, put the printed sha256 in ``models.vad.SILERO_NUMPY_SHA256``.

The names are the PyTorch module names the graph keeps (``encoder.0.reparam_conv.weight`` ...).
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

from models.vad import SILERO_NUMPY_PATH, SILERO_PATH

#: The constants :class:`models.vad.SileroNumpy` needs, by the names in the graph.
NAMES = (
    "stft.forward_basis_buffer",
    *(f"encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")),
    "decoder.rnn.weight_ih", "decoder.rnn.weight_hh", "decoder.rnn.bias_ih", "decoder.rnn.bias_hh",
    "decoder.decoder.2.weight", "decoder.decoder.2.bias",
)


def extract(path: Path = SILERO_PATH) -> dict[str, np.ndarray]:
    """The 8 kHz branch's weights (the ``else`` branch of the graph's ``sr == 16000`` test)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    (branch,) = (a.g for n in graph.node if n.op_type == "If" for a in n.attribute if a.name == "else_branch")
    found = {}
    for node in branch.node:
        name = node.output[0].split("__")[-1]
        if node.op_type == "Constant" and name in NAMES:
            found[name] = numpy_helper.to_array(node.attribute[0].t).astype(np.float32)
    missing = sorted(set(NAMES) - set(found))
    if missing:
        raise ValueError(f"{path}: no constant(s) {missing} in the 8 kHz branch")
    return {name: found[name] for name in NAMES}


def matches(weights: dict[str, np.ndarray], path: Path = SILERO_NUMPY_PATH) -> bool:
    """True when ``path`` holds exactly these arrays (names, shapes, dtypes, values)."""
    if not path.is_file():
        return False
    with np.load(path) as stored:
        return sorted(stored.files) == sorted(weights) and all(
            stored[k].dtype == v.dtype and np.array_equal(stored[k], v) for k, v in weights.items())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    weights = extract()
    if "--check" in args:
        ok = matches(weights)
        print(f"{SILERO_NUMPY_PATH}: {'matches' if ok else 'DOES NOT match'} {SILERO_PATH.name}")
        return 0 if ok else 1
    buf = io.BytesIO()
    np.savez(buf, **weights)
    data = buf.getvalue()
    SILERO_NUMPY_PATH.write_bytes(data)
    print(f"{SILERO_NUMPY_PATH} ({len(data)} bytes) sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
