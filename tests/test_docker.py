"""The worker image, built and run where a Docker engine is available (skipped, saying so, where not):
``deploy/build-local.sh`` builds it without any registry, and the example call classified through a
host Redis by the containerised worker matches embedded mode record for record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "ser-worker:0.1.0"


def docker_engine() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI: the image build/run test needs a Docker engine (.ci/run runs it where one is)")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker engine (docker info failed): the image build/run test needs one "
                    "(.ci/run runs it where dockerd is available)")
    return docker


def produce(*args: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "SER_REDIS_URL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "producer.cli", str(ROOT / "examples" / "call.wav"), "--format",
                           "jsonl", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.slow
def test_worker_image_builds_without_a_registry_and_matches_embedded_mode(tmp_path: Path) -> None:
    docker = docker_engine()
    build = subprocess.run(["bash", str(ROOT / "deploy" / "build-local.sh")], capture_output=True, text=True,
                           cwd=ROOT, timeout=1800)
    assert build.returncode == 0, build.stderr[-3000:]
    name = f"ser-test-worker-{uuid.uuid4().hex[:8]}"
    with RedisServer(tmp_path) as server:
        run = subprocess.run([docker, "run", "-d", "--rm", "--network", "host", "--name", name, IMAGE,
                              "--processes", "1", "--redis-url", server.url()], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        try:
            distributed = produce("--redis-url", server.url(), "--timeout", "120")
        finally:
            logs = subprocess.run([docker, "logs", name], capture_output=True, text=True, timeout=30)
            subprocess.run([docker, "stop", "-t", "30", name], capture_output=True, timeout=60)
    embedded = produce()

    def key(r: dict) -> tuple:
        return r["channel"], r["seq"], r["start_s"], r["end_s"], r["kind"], r.get("label"), r["model"]

    assert distributed and [key(r) for r in distributed] == [key(r) for r in embedded], logs.stderr[-2000:]
    # the image's wheels (numpy, onnxruntime) may differ from the host's in the last digits
    worst = max(abs(a["probs"][lab] - b["probs"][lab]) for a, b in zip(distributed, embedded, strict=True)
                for lab in a["probs"])
    assert worst < 1e-4, worst
    assert "Traceback" not in logs.stderr and "could not connect" not in logs.stderr, logs.stderr[-2000:]


@pytest.mark.parametrize("compose", [["docker-compose"], ["docker", "compose"]], ids=["v1", "v2"])
def test_compose_file_is_valid_for_compose_v1_and_v2(compose: list[str]) -> None:
    if shutil.which(compose[0]) is None:
        pytest.skip(f"{' '.join(compose)} not installed")
    version = subprocess.run([*compose, "version"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0:
        pytest.skip(f"{' '.join(compose)} not available: {(version.stderr.strip().splitlines() or [''])[0][:200]}")
    proc = subprocess.run([*compose, "-p", "ser-stream", "-f", str(ROOT / "deploy" / "docker-compose.yml"), "config",
                           "-q"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
