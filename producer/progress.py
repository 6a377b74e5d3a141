"""Progress of a long call on a terminal: audio seconds done / total, segments classified, rate, ETA.

``ser-produce`` shows it on stderr only when stderr is a terminal (a 3-hour recording takes minutes
with a heavy model); piped or redirected, nothing extra is written. One ``tqdm`` bar, redrawn at most
a few times a second, closed (and left on screen) before the summary.
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
