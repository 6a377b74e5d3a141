"""A throwaway PostgreSQL server for benchmarks: ``initdb`` in a temporary directory, ``pg_ctl start`` on a
free loopback port, trust authentication, durability off unless asked (nothing here is worth keeping); removed at the
end. As root the server runs as ``nobody`` (``initdb`` and ``postgres`` refuse root), like the tests'
``tests/pg_server.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.server import free_port

PG_ROOT = Path("/usr/lib/postgresql")
PG_OS_USER = "nobody"
PG_USER = "ser"


def pg_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: PATH, else the newest ``/usr/lib/postgresql/<v>/bin``."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = [p for p in PG_ROOT.glob("*/bin") if (p / "pg_ctl").exists() and (p / "initdb").exists()]
    if not versions:
        raise RuntimeError(f"PostgreSQL server binaries not found on PATH or in {PG_ROOT}/*/bin "
                           "(apt-get install postgresql)")
    return max(versions, key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,))


@contextmanager
def pg_server(*, shared_buffers: str = "256MB", durable: bool = False) -> Iterator[str]:
    """Start a private server; yields the SQLAlchemy URL of its ``postgres`` database. ``durable`` keeps
    PostgreSQL's defaults (fsync, synchronous commit): for write throughput figures."""
    bindir = pg_bindir()
    workdir = Path(tempfile.mkdtemp(prefix="ser-bench-pg-"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam(PG_OS_USER)
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
    data, port = workdir / "data", free_port()

    def run(*args: str) -> None:
        proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=120, **as_user)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {proc.stderr.strip()[-400:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", PG_USER, "-E", "UTF8", "--locale=C",
            "--no-sync")
        opts = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c shared_buffers={shared_buffers} " \
            "-c TimeZone=UTC"
        if not durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(workdir / "log"), "-w", "start")
        yield f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], cwd=workdir,
                           env=env, capture_output=True, timeout=120, **as_user)
        shutil.rmtree(workdir, ignore_errors=True)
