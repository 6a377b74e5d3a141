"""What ``ser-produce`` is asked to read and tag: its AUDIO arguments (paths and globs) expanded to
files, ``--meta key=value`` pairs, the ``--report`` path of each call."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from callevents.schema import check_params

#: The ``--report`` placeholder for the audio file's stem (required with several files).
STEM = "{stem}"


def expand(args: Sequence[str]) -> list[str]:
    """The files named by ``args`` in order, each once: a path as given (an existing file whose name holds
    glob characters too), a glob (``*``, ``?``, ``[...]``; ``**`` crosses folders) as its sorted matches;
    ``-`` (stdin) only alone. ValueError names a glob that matches nothing."""
    if "-" in args and len(args) > 1:
        raise ValueError("- (stdin) cannot be combined with other inputs")
    out: list[str] = []
    for arg in args:
        if arg != "-" and glob.has_magic(arg) and not os.path.exists(arg):
            matches = sorted(m for m in glob.glob(arg, recursive=True) if not os.path.isdir(m))
            if not matches:
                raise ValueError(f"{arg!r} matches no file")
            out.extend(matches)
        else:
            out.append(arg)
    return list(dict.fromkeys(out))


def parse_meta(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` pairs (``--meta``; a later key wins) validated as call parameters
    (:func:`callevents.schema.check_params`); ValueError names the bad one."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--meta {item[:80]!r}: want key=value")
        pairs[key] = value
    try:
        return tuple(check_params(pairs).items())
    except ValueError as exc:
        raise ValueError(f"--meta: {exc}") from None


def report_path(template: str, audio: str, *, several: bool) -> str:
    """The report of call ``audio``: ``template`` with :data:`STEM` replaced by the file's stem (stdin:
    ``stdin``). ValueError when several files would share one report."""
    if several and STEM not in template:
        raise ValueError(f"--report with several files needs {STEM} in its name, e.g. reports/{STEM}.html")
    return template.replace(STEM, "stdin" if audio == "-" else Path(audio).stem)
