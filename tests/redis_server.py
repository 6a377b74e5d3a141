"""A real, throwaway redis-server for the pipeline tests (never a mock).

The session fixture starts ``redis-server --port P --save '' --appendonly no`` on a free port
in a temporary directory and kills it at the end; ``redis_url`` flushes the database before
each test. Without a redis-server binary the tests are skipped, saying why.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Seconds to wait for a freshly started server to answer PING.
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private redis-server for the whole session."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                              else None)
    if binary is None:
        pytest.skip("redis-server not found on PATH: install it (apt-get install redis-server) to run these tests")
    import redis

    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server on port {port} did not start")
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
