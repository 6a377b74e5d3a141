"""Decoding corpora once per run and caching the waveforms as int16 (``<run>/waves.npz``).

Decoding goes through :func:`models.audio.decode` + :func:`models.audio.to_mono` at the spec's
sample rate: exactly what serving does with a file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.audio import decode, to_mono
from models.errors import AudioError
from training.corpora import Item


def _key(items: list[Item], sr: int) -> str:
    h = hashlib.sha256(f"{sr}\n".encode())
    for it in items:
        h.update(f"{it.path}\n".encode())
    return h.hexdigest()[:16]


def load_wave(path: str, *, sr: int) -> np.ndarray:
    y, _ = decode(path, sr=sr)
    return to_mono(y)


class WaveStore:
    """Decoded mono clips kept in memory as one int16 buffer plus offsets."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray) -> None:
        self.buffer = buffer
        self.offsets = offsets  # (n + 1,)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> np.ndarray:
        return self.buffer[self.offsets[i] : self.offsets[i + 1]].astype(np.float32) / 32767.0

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


def load_waves(items: list[Item], *, sr: int, cache: Path | None, progress: bool = True
               ) -> tuple[WaveStore, list[Item], list[tuple[str, str]]]:
    """Decode ``items`` (or read them from ``cache``); returns the store, the items that decoded and
    the failures ``(path, reason)``. Clips with no samples above -80 dBFS (digital silence) are dropped.
    """
    key = _key(items, sr)
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                keep = json.loads(str(z["keep"]))
                fails = [tuple(f) for f in json.loads(str(z["fails"]))]
                return WaveStore(z["buffer"], z["offsets"]), [items[i] for i in keep], fails  # type: ignore[misc]
    chunks, keep, fails = [], [], []
    for i, it in enumerate(tqdm(items, desc="decoding", unit="clip", disable=not progress, mininterval=2)):
        try:
            y = load_wave(it.path, sr=sr)
        except AudioError as exc:
            fails.append((it.path, str(exc)))
            continue
        if np.max(np.abs(y)) < 1e-4:
            fails.append((it.path, "digital silence"))
            continue
        chunks.append(np.round(np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16))
        keep.append(i)
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    buffer = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=key, buffer=buffer, offsets=offsets, keep=json.dumps(keep), fails=json.dumps(fails))
    return WaveStore(buffer, offsets), [items[i] for i in keep], fails
