"""A private, throwaway redis-server on a free loopback port (no persistence)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Seconds to wait for the server to answer PING.
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if binary is None:
        raise RuntimeError("redis-server not found on PATH (apt-get install redis-server)")
    return binary


@contextmanager
def redis_server() -> Iterator[tuple[str, str]]:
    """Yield ``(url, version)`` of a fresh redis-server; it is terminated on exit."""
    import redis

    binary = redis_binary()
    with tempfile.TemporaryDirectory(prefix="ser-bench-redis-") as workdir:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    version = str(client.info("server")["redis_version"])
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {port} did not start") from None
                    time.sleep(0.05)
            yield url, version
        finally:
            client.close()
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
