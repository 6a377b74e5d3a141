"""CI cannot go green with a tier skipped: ``.ci/install-system-deps.sh`` fails when it cannot
install, and under ``SER_REQUIRE_SYSTEM_DEPS=1`` (which ``.ci/run`` exports) a missing system binary
or declared Python test dependency fails the test that needs it. Simulated with a PATH of fake
commands (no root, no apt, no real install)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis_server
import sysdeps

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "install-system-deps.sh"
COMMANDS = ("redis-server", "prometheus", "promtool", "chromium", "chromedriver", "openssl", "postgres")
BASH = "/bin/bash"


def _fake(bin_dir: Path, name: str, body: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def _run(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    # SER_PG_ROOT: where the script looks for PostgreSQL's off-PATH binaries (none here)
    return subprocess.run([BASH, str(SCRIPT)], env={"PATH": str(bin_dir), "SER_PG_ROOT": str(bin_dir / "pg")},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    _fake(d, "id", 'echo "${FAKE_UID:-0}"')
    return d


def test_install_script_fails_without_apt(bin_dir: Path) -> None:
    _fake(bin_dir, "openssl")
    proc = _run(bin_dir)
    assert proc.returncode == 1, proc.stderr
    assert "no apt-get" in proc.stderr and "redis-server" in proc.stderr and "openssl" not in proc.stderr


def test_install_script_fails_when_not_root_and_no_sudo(bin_dir: Path) -> None:
    _fake(bin_dir, "id", "echo 1000")
    _fake(bin_dir, "apt-get", f"touch {bin_dir}/apt-called")
    proc = _run(bin_dir)
    assert proc.returncode == 1, proc.stderr
    assert "not root" in proc.stderr and not (bin_dir / "apt-called").exists()


def test_install_script_fails_when_the_install_provides_nothing(bin_dir: Path) -> None:
    _fake(bin_dir, "apt-get", "exit 0")  # "succeeds" without installing anything
    proc = _run(bin_dir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "still missing after the install" in proc.stderr
    assert all(cmd in proc.stderr for cmd in COMMANDS)


def test_install_script_installs_what_is_missing(bin_dir: Path) -> None:
    for cmd in ("redis-server", "openssl"):
        _fake(bin_dir, cmd)
    # The fake apt-get "installs" by creating the commands of the packages it is given.
    provides = {"prometheus": "prometheus promtool", "chromium": "chromium", "chromium-driver": "chromedriver",
                "postgresql": "postgres"}
    cases = "\n".join(f'    {pkg}) for c in {cmds}; do printf "#!{BASH}\\n" > {bin_dir}/$c; '
                      f'/bin/chmod +x {bin_dir}/$c; done;;' for pkg, cmds in provides.items())
    _fake(bin_dir, "apt-get", f'echo "$@" >> {bin_dir}/apt-log\nfor a in "$@"; do case $a in\n{cases}\n'
                              "    esac; done")
    proc = _run(bin_dir)
    assert proc.returncode == 0, proc.stderr
    log = (bin_dir / "apt-log").read_text()
    install = [line for line in log.splitlines() if line.startswith("install")]
    assert len(install) == 1 and set(install[0].split()) >= {"prometheus", "chromium", "chromium-driver", "postgresql"}
    assert "redis-server" not in install[0].split()


def test_install_script_does_nothing_when_all_present(bin_dir: Path) -> None:
    for cmd in COMMANDS:
        _fake(bin_dir, cmd)
    _fake(bin_dir, "apt-get", "exit 1")
    proc = _run(bin_dir)
    assert proc.returncode == 0 and "all present" in proc.stdout, proc.stderr


def test_ci_run_requires_the_system_deps_before_the_tests() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    flag = text.index(f"export {sysdeps.FLAG}=1")
    assert text.index("bash .ci/install-system-deps.sh") < flag < text.index("python -m pytest")
    assert re.search(r"^set -euo pipefail$", text, re.M)  # a failing install stops the run


@pytest.mark.parametrize("value, fails", [("1", True), ("", False), ("0", False)])
def test_missing_binary_skips_or_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str,
                                       fails: bool) -> None:
    monkeypatch.setenv(sysdeps.FLAG, value)
    monkeypatch.setenv("PATH", str(tmp_path))
    expected = pytest.fail.Exception if fails else pytest.skip.Exception
    with pytest.raises(expected, match="promtool not found on PATH"):
        sysdeps.binary("promtool", hint="apt-get install prometheus")
    with pytest.raises(expected, match="no_such_module_for_ser_tests"):
        sysdeps.module("no_such_module_for_ser_tests", "pip install .[dev]")


def test_missing_redis_server_fails_under_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent() -> str:
        raise RuntimeError("redis-server not found on PATH (apt-get install redis-server)")

    monkeypatch.setattr(redis_server, "_redis_binary", absent)
    monkeypatch.setenv(sysdeps.FLAG, "1")
    with pytest.raises(pytest.fail.Exception, match="redis-server not found"):
        redis_server.redis_binary()
    monkeypatch.setenv(sysdeps.FLAG, "")
    with pytest.raises(pytest.skip.Exception, match="redis-server not found"):
        redis_server.redis_binary()


def test_missing_openssl_fails_under_the_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(sysdeps.FLAG, "1")
    with pytest.raises(pytest.fail.Exception, match="openssl not found"):
        redis_server.make_certs(tmp_path)
