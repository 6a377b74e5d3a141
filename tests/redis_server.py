"""A real, throwaway redis-server for the pipeline tests (never a mock).

:class:`RedisServer` is one such server that a test owns: it can be stopped and started again
on the same port (no persistence: a restart loses every key) and take extra arguments
(``--requirepass``, ACL users). The session fixture starts
``redis-server --port P --save '' --appendonly no`` on a free port in a temporary directory
and kills it at the end; ``redis_url`` flushes the database before each test.
Without a redis-server binary the tests are skipped, saying why (a failure under
``SER_REQUIRE_SYSTEM_DEPS=1``, as ``.ci/run`` sets: see ``tests/sysdeps.py``).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sysdeps import binary as _need_binary
from sysdeps import missing

from bench.server import free_port  # noqa: F401  (re-exported for the tests)
from bench.server import redis_binary as _redis_binary
from bench.server import redis_server as _bench_redis_server

#: Seconds to wait for a freshly started server to answer PING.
START_TIMEOUT_S = 10.0


def redis_binary() -> str:
    try:
        return _redis_binary()
    except RuntimeError as exc:
        missing(f"{exc}: needed to run these tests")


def make_certs(workdir: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI); returns the CA file."""
    openssl = _need_binary("openssl", hint="apt-get install openssl: it makes the TLS certificates")
    d = workdir / "tls"
    d.mkdir(exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=ser-test-ca", "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.pem")
    return d / "ca.pem"


class RedisServer:
    """A private redis-server on a fixed port that a test may stop, restart and configure."""

    def __init__(self, workdir: Path, *extra: str, port: int | None = None, password: str | None = None,
                 tls: bool = False) -> None:
        self.binary = redis_binary()
        self.workdir, self.extra, self.password = workdir, list(extra), password
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ca: Path | None = make_certs(workdir) if tls else None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        password = password if password is not None else self.password
        auth = f"{user or ''}:{password}@" if password else ""
        if self.ca is not None:  # TLS only, the server certificate checked against our CA
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        ports = ["--port", str(self.port)]
        if self.ca is not None:
            d = self.ca.parent
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(d / "server.pem"),
                     "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(self.ca),
                     "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(
            [self.binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url())
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        pytest.fail(f"redis-server on port {self.port} did not start")
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Kill the server (SIGKILL: nothing is saved, clients see their connection drop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a private redis-server for the whole session (``bench.server.redis_server``)."""
    redis_binary()  # skips, saying why, when there is none
    with _bench_redis_server() as (url, _version):
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session server's URL, with an empty database."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    try:
        yield redis_server
    finally:
        client.close()
