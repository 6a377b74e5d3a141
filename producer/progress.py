"""Progress of a long call on a terminal: audio seconds done / total, segments classified, rate, ETA.

``ser-produce`` shows it on stderr only when stderr is a terminal (a 3-hour recording takes minutes
with a heavy model); piped or redirected, nothing extra is written. One ``tqdm`` bar, redrawn at most
a few times a second, closed (and left on screen) before the summary. With several files
(:class:`FilesProgress`) one bar covers them all: files done / total, audio seconds done / total
(the files' lengths from their headers), segments classified, ETA; the per-file lines printed
meanwhile go above it (:meth:`FilesProgress.write`).
"""

from __future__ import annotations

from typing import Any, TextIO


class Progress:
    """Audio seconds pushed, with the segments classified so far as a postfix."""

    def __init__(self, stream: TextIO | None, *, total_s: float | None, name: str) -> None:
        self._bar: Any = None
        self.segments = 0
        if stream is None or not _is_terminal(stream):
            return
        from tqdm import tqdm

        cols, rows = _size(stream)
        self._bar = tqdm(total=round(total_s, 1) if total_s else None, unit="s", unit_scale=False, file=stream,
                         desc=name, mininterval=0.25, ncols=cols, nrows=rows, leave=True,
                         bar_format="{desc}: {n:.1f}/{total_fmt} s of audio{postfix} [{elapsed}<{remaining}, "
                                    "{rate_fmt}]" if total_s else
                                    "{desc}: {n:.1f} s of audio{postfix} [{elapsed}, {rate_fmt}]")
        self._bar.set_postfix_str("0 segments classified", refresh=False)

    @property
    def active(self) -> bool:
        return self._bar is not None

    def audio(self, seconds: float) -> None:
        if self._bar is not None:
            self._bar.update(seconds)

    def classified(self, n: int) -> None:
        if n and self._bar is not None:
            self.segments += n
            self._bar.set_postfix_str(f"{self.segments} segments classified", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()
            self._bar.close()
            self._bar = None


class FilesProgress:
    """One bar over several files (``ser-produce a.wav b.wav ...``); :meth:`view` is what one call reports to."""

    def __init__(self, stream: TextIO | None, *, files: list[str]) -> None:
        self.stream, self.files, self.done, self.segments = stream, len(files), 0, 0
        self._bar: Any = None
        self._pushed = 0.0  # audio seconds of the current file
        if stream is None or not _is_terminal(stream):
            return
        from tqdm import tqdm

        self._lengths = [_length_s(f) for f in files]
        cols, rows = _size(stream)
        self._bar = tqdm(total=round(sum(self._lengths), 1) or None, unit="s", file=stream, mininterval=0.25,
                         ncols=cols, nrows=rows, leave=True, desc=self._desc(),
                         bar_format="{desc}, {n:.1f}/{total_fmt} s of audio{postfix} [{elapsed}<{remaining}, "
                                    "{rate_fmt}]")
        self._bar.set_postfix_str("0 segments classified", refresh=False)

    def _desc(self) -> str:
        return f"{self.done}/{self.files} files"

    @property
    def active(self) -> bool:
        return self._bar is not None

    def view(self) -> Progress:
        """A :class:`Progress` for the next file: its audio and segments count here; closing it does nothing."""
        return _FileView(self)

    def audio(self, seconds: float) -> None:
        if self._bar is not None:
            self._pushed += seconds
            self._advance(seconds)

    def _advance(self, seconds: float) -> None:
        """Move the bar on, never past its total (the total is rounded to 0.1 s)."""
        total = self._bar.total
        step = seconds if not total else min(seconds, total - self._bar.n)
        if step > 0:
            self._bar.update(step)

    def classified(self, n: int) -> None:
        if n and self._bar is not None:
            self.segments += n
            self._bar.set_postfix_str(f"{self.segments} segments classified", refresh=False)

    def file_done(self) -> None:
        """The current file is over (done or failed): the audio it did not push counts as done (the ETA
        stays true)."""
        if self._bar is not None and self.done < self.files:
            rest = self._lengths[self.done] - self._pushed
            self._advance(rest)
            self._pushed = 0.0
        self.done += 1
        if self._bar is not None:
            self._bar.set_description_str(self._desc(), refresh=True)

    def write(self, line: str) -> None:
        """A line on the stream, above the bar (the bar is redrawn under it)."""
        if self._bar is None:
            if self.stream is not None:
                self.stream.write(line + "\n")
                self.stream.flush()
            return
        self._bar.write(line, file=self.stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()
            self._bar.close()
            self._bar = None


class _FileView(Progress):
    def __init__(self, parent: FilesProgress) -> None:  # no bar of its own
        self._bar, self.segments, self.parent = None, 0, parent

    @property
    def active(self) -> bool:
        return self.parent.active

    def audio(self, seconds: float) -> None:
        self.parent.audio(seconds)

    def classified(self, n: int) -> None:
        self.parent.classified(n)

    def close(self) -> None:
        pass


def _length_s(path: str) -> float:
    """A file's audio length from its header (0 when it cannot be read: the file's own run says why)."""
    try:
        import soundfile as sf

        info = sf.info(path)
        return float(info.frames) / float(info.samplerate) if info.frames > 0 and info.samplerate else 0.0
    except Exception:  # noqa: BLE001 - any unreadable file: its run reports it
        return 0.0


def _size(stream: TextIO) -> tuple[int, int]:
    """The terminal's columns and rows; a pseudo-terminal may report 0 x 0 (tqdm then draws nothing):
    100 x 24 instead."""
    import os

    try:
        size = os.get_terminal_size(stream.fileno())
        return size.columns or 100, size.lines or 24
    except (OSError, ValueError, AttributeError):
        return 100, 24


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or exotic stream
        return False
