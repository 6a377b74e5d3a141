"""Machine facts and the Markdown table the benchmark prints."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("numpy", "scipy", "librosa", "onnxruntime", "redis", "rq")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines(*, redis_version: str, extra: dict[str, str] | None = None) -> list[str]:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = ", ".join(f"{p} {version(p)}" for p in PACKAGES)
    lines = [
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: `nproc` = {os.cpu_count()}, {cpu_model()}, {platform.system()} {platform.release()}",
        f"- load average at start (1, 5, 15 min): {load}",
        f"- Python {sys.version.split()[0]}; {versions}; redis-server {redis_version}",
    ]
    for key, value in (extra or {}).items():
        lines.append(f"- {key}: {value}")
    return lines


def table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    out = ["| measure | value | target | note |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return out
