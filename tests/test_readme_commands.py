"""The README's commands run as written: the fenced ``sh`` blocks of its quick start, distributed
setup and local platform-call rehearsal, extracted from README.md and run on loopback in one shell.

What the test changes, and only this (each checked, so a README edit that breaks the assumption fails
here rather than silently running something else):

* the quick start's ``python3 -m venv .venv && . .venv/bin/activate && pip install . && `` prefix is
  dropped (the package is already installed where the tests run), the rest (classify, archive, search)
  runs as written (``ser-calls``: where this environment's scripts predate it, a shim running ``python -m
  archive.calls_cli`` is put on PATH) and its last command, ``bash .ci/run``, is not run (it is
  what runs this test);
* the ports 6379 (Redis), 9100 (metrics) and 8080 (gateway) become free ports (the test's own
  redis-server, never a shared one);
* after a line that starts a server in the background (``... &``), the shell waits until its port
  (``--port``, or ``--metrics-port``: open once the workers have loaded the model) answers, as a
  person typing the next line would;
* at the end every background job is stopped (SIGTERM) and waited for.

The live stream runs at real time (the 42 s example call), so this test takes about a minute.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import free_port, redis_binary

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INSTALL_PREFIX = "python3 -m venv .venv && . .venv/bin/activate && pip install . && "
SECTIONS = ("Quick start", "Distributed setup", "A live platform call")


def section(text: str, title: str) -> str:
    m = re.search(rf"(?ms)^## {re.escape(title)}.*?(?=^## )", text)
    assert m, f"README has no section starting '## {title}'"
    return m.group(0)


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"(?ms)^```sh\n(.*?)^```", text)


def readme_script(ports: dict[int, int]) -> tuple[str, list[str]]:
    """The shell script the README's sections make, and the commands it runs (for the report)."""
    text = README.read_text(encoding="utf-8")
    quick, dist, live = (section(text, t) for t in SECTIONS)
    (quick_block,) = sh_blocks(quick)
    first, second = quick_block.strip().splitlines()  # two commands: install and run; install and test
    assert first.startswith(INSTALL_PREFIX), first
    assert "--archive sqlite:///calls.db" in first and first.endswith("&& ser-calls search"), first
    assert second.startswith("bash .ci/run"), second
    (dist_block,) = sh_blocks(dist)
    live_block = sh_blocks(live)[0]  # the local rehearsal; the next block is the real gateway's settings
    commands = [first[len(INSTALL_PREFIX):]]
    for block in (dist_block, live_block):
        commands += [line for line in block.strip().splitlines() if line.strip() and not line.startswith("#")]
    lines = ["set -euo pipefail", "trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' EXIT",
             "waitport() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; "
             "sleep 0.1; done; echo \"port $1 never opened\" >&2; return 1; }"]
    run = []
    for cmd in commands:
        for old, new in ports.items():
            cmd = re.sub(rf"\b{old}\b", str(new), cmd)
        run.append(cmd)
        lines.append(f"echo {shlex.quote('>>> ' + cmd)} >&2")
        lines.append(cmd)
        code = cmd.split("#", 1)[0].rstrip()
        if code.endswith("&"):
            port = re.search(r"--(?:metrics-)?port (\d+)", code)
            assert port, f"a background command with no port to wait for: {cmd}"
            lines.append(f"waitport {port.group(1)}")
    return "\n".join(lines) + "\n", run


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    redis_binary()  # skips, saying why, without one (a failure under SER_REQUIRE_SYSTEM_DEPS=1)
    ports = {6379: free_port(), 9100: free_port(), 8080: free_port()}
    script, commands = readme_script(ports)
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")  # the README's relative paths, outside the tree
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if shutil.which("ser-calls", path=env["PATH"]) is None:  # scripts installed before ser-calls existed
        shim = tmp_path / "bin" / "ser-calls"
        shim.parent.mkdir()
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m archive.calls_cli "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = str(shim.parent) + os.pathsep + env["PATH"]
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONWARNINGS"] = ""
    (tmp_path / "readme.sh").write_text(script)
    proc = subprocess.run(["bash", str(tmp_path / "readme.sh")], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{proc.stderr[-4000:]}\n--- stdout:\n{proc.stdout[-2000:]}"
    spec = json.loads((ROOT / "models" / "default" / "spec.json").read_text())
    model = f"{spec['name']}@{spec['version']}"
    out = proc.stdout
    # quick start: the table and summary; distributed: the jsonl records, then the live stream's table
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    results = [r for r in records if r["kind"] == "result"]
    assert results and all(r["model"] == model for r in results)
    assert {r["channel"] for r in results} == {"agent", "customer"}
    assert "queue ser:" in out and "workers:" in out  # ser-status
    # the archive line: the example call, archived with its agent, found by ser-calls search
    archived = re.findall(r"^stream (call-[0-9a-f]{8}): ", proc.stderr, flags=re.M)
    assert archived and archived[0] in out and "a-17" in out, proc.stderr[-3000:]
    assert (work / "calls.db").is_file()
    import soundfile as sf

    info = sf.info(str(ROOT / "examples" / "call.wav"))
    assert (work / "live.raw").stat().st_size == info.frames * info.channels  # mu-law: a byte a sample
    assert re.search(rf"call CA[0-9a-f]+: ended, {len(results)} segment record\(s\)", proc.stderr), proc.stderr[-3000:]
    assert any("ser-produce - --rate 8000" in c for c in commands) and any("bench.rehearse" in c for c in commands)
