"""A real, throwaway PostgreSQL server for the archive tests (never a mock).

:class:`PgServer` is one server in its own data directory on a free loopback port: ``initdb`` then
``pg_ctl start``; it can be stopped and started again on the same port and data (the fault tests stop
it for a while). ``initdb`` and ``postgres`` refuse to run as root, so as root they run as an
unprivileged user (``nobody``) that owns the data directory (under ``/tmp``: pytest's own temporary
directories are private to root). Durability is switched off (``fsync``, ``synchronous_commit``,
``full_page_writes``): these servers hold nothing worth keeping, and the tests stay fast.

Fixtures: ``pg_server`` (the session's server, started on first use and stopped at the end);
``pg_url`` (a fresh, empty database on it for one test); ``archive_url`` (parametrised over
``sqlite`` and ``postgresql``: a fresh empty archive database URL either way); ``pg_private`` (a
server of the test's own, which it may stop and start).

Without PostgreSQL's binaries (Debian's ``postgresql`` package puts them in
``/usr/lib/postgresql/<version>/bin``, not on PATH) the tests needing them skip, saying why, or fail
under ``SER_REQUIRE_SYSTEM_DEPS=1`` (``tests/sysdeps.py``).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysdeps import missing

from bench.server import free_port

#: Where Debian's ``postgresql`` package installs each major version's server binaries.
PG_ROOT = Path("/usr/lib/postgresql")
#: The unprivileged user the server runs as when the tests run as root.
PG_OS_USER = "nobody"
#: The database superuser ``initdb`` creates (trust authentication on loopback: no password).
PG_USER = "ser"
#: Seconds ``pg_ctl`` waits for the server to start or stop.
START_TIMEOUT_S = 30

_names = itertools.count()


def pg_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``: PATH first, else the newest
    ``/usr/lib/postgresql/<version>/bin``; skips (or fails under the CI flag) when there is none."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = [p for p in PG_ROOT.glob("*/bin") if (p / "pg_ctl").exists() and (p / "initdb").exists()]
    if versions:
        def major(p: Path) -> tuple[int, ...]:
            return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)
        return max(versions, key=major)
    missing(f"PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in {PG_ROOT}/*/bin "
            "(apt-get install postgresql): needed to run the archive tests on PostgreSQL")


class PgServer:
    """A private PostgreSQL server in ``workdir`` (made if absent) that a test may stop and restart."""

    def __init__(self, workdir: Path | None = None, *, port: int | None = None) -> None:
        self.bindir = pg_bindir()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="ser-pg-"))
        self.datadir = self.workdir / "data"
        self.port = port or free_port()
        self._as_user: dict[str, object] = {}
        if os.geteuid() == 0:  # initdb/postgres refuse root: run them as an unprivileged user
            import pwd

            pw = pwd.getpwnam(PG_OS_USER)
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
            self.workdir.chmod(0o700)
            self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self._initdb()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PGTZ": "UTC", "TZ": "UTC"}
        return subprocess.run(args, cwd=self.workdir, env=env, capture_output=True, text=True, check=check,
                              timeout=START_TIMEOUT_S * 2, **self._as_user)  # type: ignore[call-overload]

    def _initdb(self) -> None:
        proc = self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", PG_USER,
                         "-E", "UTF8", "--locale=C", "--no-sync", check=False)
        if proc.returncode != 0:
            pytest.fail(f"initdb failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")

    @property
    def running(self) -> bool:
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status", check=False).returncode == 0

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3)."""
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname={database}"

    def start(self) -> PgServer:
        opts = (f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c TimeZone=UTC")
        proc = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", opts,
                         "-l", str(self.workdir / "log"), "-t", str(START_TIMEOUT_S), "-w", "start", check=False)
        if proc.returncode != 0:
            log = (self.workdir / "log").read_text(errors="replace")[-800:] if (self.workdir / "log").exists() else ""
            pytest.fail(f"PostgreSQL on port {self.port} did not start: {proc.stderr.strip()} {log}")
        return self

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnects clients, a clean shutdown; ``immediate``: like a crash)."""
        if self.running:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-t",
                      str(START_TIMEOUT_S), "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        """Stop the server and remove its directory (if this object made it)."""
        self.stop(mode="immediate")
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (started on first use, stopped and removed at the end)."""
    with PgServer() as server:
        yield server


def _database(server: PgServer) -> Iterator[str]:
    url = server.create_database()
    try:
        yield url
    finally:
        if server.running:
            try:
                server.drop_database(url.rsplit("/", 1)[1])
            except Exception:  # noqa: BLE001 - a test may leave the server unreachable; the session ends it
                pass


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh, empty database on the session's server."""
    yield from _database(pg_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty archive database URL: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'archive.db'}"
        return
    yield from _database(request.getfixturevalue("pg_server"))


@pytest.fixture
def pg_private() -> Iterator[PgServer]:
    """A started PostgreSQL server of this test's own: it may ``stop()`` and ``start()`` it (fault tests)."""
    with PgServer() as server:
        yield server


def wait_until_up(server: PgServer, *, timeout_s: float = 10.0) -> None:
    """Block until ``server`` accepts connections (after a ``start()`` from another thread)."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(server.conninfo(), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
