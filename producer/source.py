"""Audio sources: a file, a WAV stream or raw PCM on stdin, read in fixed blocks of float32.

Every source yields ``(channels, n)`` float32 blocks of :data:`producer.settings.BLOCK_S` at
its own rate; files and streams are cut into the same blocks, so the same audio gives the same
segments either way. ``realtime`` paces the blocks at the audio's own speed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import soundfile as sf

from models.audio import RAW_ENCODINGS, check_channels, check_rate, decode_raw
from models.errors import AudioError
from producer.settings import BLOCK_S, RawFormat
from producer.wavstream import read_exact, read_header

#: Blocks decoded per libsndfile read of a file (then yielded one by one, unchanged).
READ_BLOCKS = 100


class Source:
    """A decoded audio input: ``rate``, ``channels`` and :meth:`blocks`."""

    def __init__(self, *, rate: int, channels: int, name: str) -> None:
        self.rate = check_rate(rate, what=f"{name}: sample rate")
        self.channels = check_channels(channels)
        self.name = name
        self.block_frames = max(1, round(BLOCK_S * self.rate))

    def _raw_blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def blocks(self, *, realtime: bool = False) -> Iterator[np.ndarray]:
        start, sent = time.monotonic(), 0
        for block in self._raw_blocks():
            sent += block.shape[1]
            if realtime:  # a live block exists only once its last sample has been spoken
                delay = start + sent / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            # Float input beyond full scale is clipping, not signal: |x| up to 3e38 would overflow
            # the features' float32 arithmetic (and the int16 quantisation) with warnings.
            np.clip(block, -1.0, 1.0, out=block)
            yield block


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what C libraries print on file descriptor 2 meanwhile (libmpg123 prints "Note: Illegal
    Audio-MPEG-Header" and the like while libsndfile probes a file that is not audio)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            sys.stderr.flush()
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


#: libsndfile's reason for some undecodable files, which names the wrong cause for a regular file.
_MISLEADING = "File does not exist or is not a regular file (possibly a pipe?)."


class FileSource(Source):
    """Any file libsndfile reads (WAV, FLAC, Ogg, MP3, ...)."""

    def __init__(self, path: str) -> None:
        if os.path.isdir(path):
            raise AudioError(f"{path} is a directory, not an audio file")
        if not os.path.isfile(path):
            raise AudioError(f"no such audio file: {path}")
        if os.path.getsize(path) == 0:
            raise AudioError(f"{path} is empty")
        try:
            with quiet_native_stderr():
                self._file = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            reason = str(exc).strip() or type(exc).__name__
            if _MISLEADING in reason:
                reason = "not a recognised audio format"
            raise AudioError(f"cannot decode {path}: {reason}") from None
        super().__init__(rate=self._file.samplerate, channels=self._file.channels, name=path)
        #: Frames in the file (0 where libsndfile cannot tell): the progress display's total.
        self.frames = max(0, int(self._file.frames))

    def _raw_blocks(self) -> Iterator[np.ndarray]:
        # Decode READ_BLOCKS blocks per libsndfile call and cut them into the same blocks: one read
        # per 0.1 s block cost ~0.2 ms of soundfile overhead each, as much as a worker's segment.
        step = self.block_frames
        with self._file as fh:
            while True:
                try:
                    data = fh.read(step * READ_BLOCKS, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    raise AudioError(f"cannot decode {self.name}: {exc}") from None
                if len(data) == 0:
                    return
                for i in range(0, len(data), step):
                    block = data[i : i + step]
                    if not np.isfinite(block).all():
                        raise AudioError(f"{self.name} contains NaN or infinite samples")
                    yield np.ascontiguousarray(block.T)


class StreamSource(Source):
    """Interleaved PCM from a (possibly non-seekable) byte stream."""

    def __init__(self, stream: BinaryIO, *, rate: int, channels: int, encoding: str,
                 data_bytes: int | None, name: str) -> None:
        if encoding not in RAW_ENCODINGS:
            raise AudioError(f"unknown raw encoding {encoding!r}; choose one of {', '.join(RAW_ENCODINGS)}")
        super().__init__(rate=rate, channels=channels, name=name)
        self._stream, self._encoding, self._left = stream, encoding, data_bytes
        self.frame_bytes = RAW_ENCODINGS[encoding][1] * self.channels

    def _raw_blocks(self) -> Iterator[np.ndarray]:
        want = self.block_frames * self.frame_bytes
        frames = 0
        while True:
            n = want if self._left is None else min(want, self._left)
            data = read_exact(self._stream, n) if n else b""
            if self._left is not None:
                self._left -= len(data)
            whole = len(data) - len(data) % self.frame_bytes
            if whole:
                y, _ = decode_raw(data[:whole], sr=self.rate, channels=self.channels, encoding=self._encoding)
                frames += y.shape[1]
                yield y
            if len(data) < want:
                if whole != len(data) and frames:
                    print(f"ser-produce: dropped a trailing partial frame of {len(data) - whole} bytes",
                          file=sys.stderr)
                return


def is_stream_path(path: str) -> bool:
    """A FIFO or a character device path (``mkfifo``, ``<(...)`` = ``/dev/fd/N``): read as a stream."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def open_stream_path(path: str) -> BinaryIO:
    """Open a FIFO for reading, saying so first (open() blocks until a writer opens it)."""
    if stat.S_ISFIFO(os.stat(path).st_mode):
        print(f"ser-produce: reading {path} (a FIFO; waiting for its writer)", file=sys.stderr, flush=True)
    try:
        return open(path, "rb")  # noqa: SIM115 - read to its end by the source
    except OSError as exc:
        raise AudioError(f"cannot open {path}: {exc.strerror or exc}") from None


def open_source(audio: str, *, stdin: BinaryIO | None, raw: RawFormat | None) -> Source:
    """Open ``audio`` (a path, or ``-`` for stdin: WAV unless ``raw`` is given). A FIFO or ``<(...)``
    path is read as a stream, like stdin."""
    if audio != "-" and not is_stream_path(audio):
        if raw is not None:
            raise AudioError("--rate/--channels/--encoding apply only to raw PCM on stdin (AUDIO '-')")
        return FileSource(audio)
    if audio != "-":
        stdin = open_stream_path(audio)
    elif stdin is None:
        raise AudioError("stdin is closed: nothing to read for AUDIO '-'")
    if raw is not None:
        return StreamSource(stdin, rate=raw.rate, channels=raw.channels, encoding=raw.encoding,
                            data_bytes=None, name="raw stdin" if audio == "-" else f"raw {audio}")
    header = read_header(stdin)
    return StreamSource(stdin, rate=header.rate, channels=header.channels, encoding=header.encoding,
                        data_bytes=header.data_bytes, name="WAV stdin" if audio == "-" else f"WAV {audio}")
