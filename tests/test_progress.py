"""``ser-produce`` shows progress on stderr when stderr is a terminal (a pseudo-terminal, ``os.openpty``), and writes
nothing extra when it is a pipe."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

from conftest import speech_call

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"of audio, (\d+) segments classified")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SER_REDIS_URL", "SER_ARCHIVE_URL")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "160"
    return env


def _args(call: Path, bundle: Path) -> list[str]:
    return [sys.executable, "-m", "producer.cli", str(call), "--model", str(bundle), "--format", "jsonl"]


def on_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run ``args`` with stderr on a 160 x 24 pseudo-terminal: (exit status, stdout, what the terminal got)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a 160 x 24 terminal
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=_env(),
                                cwd=ROOT)
        os.close(slave)
        chunks = []
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_and_not_on_a_pipe(tmp_path: Path, silero_bundle_dir: Path) -> None:
    call = speech_call(tmp_path / "call.wav", sr=8000)
    code, out, tty = on_terminal(_args(call, silero_bundle_dir))
    assert code == 0
    records = [line for line in out.splitlines() if '"kind":"result"' in line]
    found = PROGRESS.findall(tty)
    assert found, tty[:3000]
    assert int(found[-1]) == len(records) > 0  # the last redraw counts every segment
    assert re.search(r"13\.0/13\.0 s of audio", tty), tty  # audio done / total (speech_call: 13 s)
    # The same run with stderr on a pipe: only the usual lines, no progress.
    piped = subprocess.run(_args(call, silero_bundle_dir), capture_output=True, text=True, env=_env(), cwd=ROOT,
                           timeout=120)
    assert piped.returncode == 0
    assert not PROGRESS.search(piped.stderr) and "of audio" not in piped.stderr and "\r" not in piped.stderr
    assert piped.stdout == out

