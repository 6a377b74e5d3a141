"""Parse a WAV (RIFF/WAVE) header from a non-seekable stream, leaving it at the first data byte.

Live streams often write a data length of 0 or 0xFFFFFFFF (unknown); both mean "until EOF".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from models.errors import AudioError

#: WAVE format tags -> (bits per sample -> models.audio.RAW_ENCODINGS name).
_FORMATS: dict[int, dict[int, str]] = {
    1: {8: "pcmu8", 16: "pcm16", 24: "pcm24", 32: "pcm32"},
    3: {32: "float32"},
    6: {8: "alaw"},
    7: {8: "mulaw"},
}
_EXTENSIBLE = 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
#: Most bytes of non-data chunks skipped before giving up (a stream that never reaches "data").
MAX_HEADER_BYTES = 1 << 20
#: Largest fmt chunk accepted (WAVE_FORMAT_EXTENSIBLE needs 40 bytes; a few more may follow).
MAX_FMT_BYTES = 1 << 10


@dataclass(frozen=True)
class WavHeader:
    rate: int
    channels: int
    encoding: str
    data_bytes: int | None  # None: read until EOF


def read_exact(stream: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, retrying short reads (pipes); fewer only at EOF."""
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _need(stream: BinaryIO, n: int, what: str) -> bytes:
    data = read_exact(stream, n)
    if len(data) < n:
        raise AudioError(f"WAV stream ends inside the {what}")
    return data


def read_header(stream: BinaryIO) -> WavHeader:
    head = read_exact(stream, 12)
    if len(head) == 0:
        raise AudioError("stdin is empty")
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioError("stdin is not a WAV stream (for raw PCM pass --rate, --channels, --encoding)")
    fmt: tuple[int, int, int, int] | None = None
    skipped = 0
    while True:
        chunk_id, size = struct.unpack("<4sI", _need(stream, 8, "chunk headers"))
        if chunk_id == b"data":
            if fmt is None:
                raise AudioError("WAV stream has no fmt chunk before its data")
            tag, channels, rate, bits = fmt
            encoding = _FORMATS.get(tag, {}).get(bits)
            if encoding is None:
                raise AudioError(f"WAV format tag {tag} with {bits} bits per sample is not supported")
            return WavHeader(rate=rate, channels=channels, encoding=encoding,
                             data_bytes=None if size in _UNKNOWN_SIZES else size)
        if chunk_id == b"fmt ":
            if size > MAX_FMT_BYTES:
                raise AudioError(f"WAV fmt chunk claims {size} bytes (at most {MAX_FMT_BYTES})")
        elif skipped + size > MAX_HEADER_BYTES:  # checked before reading: a chunk may claim 4 GB
            raise AudioError("WAV stream has no data chunk in its first MiB")
        body = _need(stream, size + (size & 1), f"{chunk_id!r} chunk")
        if chunk_id == b"fmt ":
            if size < 16:
                raise AudioError(f"WAV fmt chunk of {size} bytes is too short")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE:
                if size < 40:
                    raise AudioError("WAV extensible fmt chunk is too short")
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        else:
            skipped += size
            if skipped > MAX_HEADER_BYTES:
                raise AudioError("WAV stream has no data chunk in its first MiB")
