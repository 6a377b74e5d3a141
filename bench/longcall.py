"""``python -m bench.longcall [--minutes M] [--wav FILE] [--model DIR | --tiny] [--no-profile] [--keep DIR]``

The cost of hearing one long stereo call (issue 33 item 4): ``examples/call.wav`` tiled to ``M``
minutes (30 by default), then

1. ``ser-produce FILE`` embedded (one process: VAD, features and the model), as a user runs it;
2. ``ser-produce FILE --redis-url ...`` with one ``ser-worker`` process on its own redis-server
   (started and warmed up before the clock starts);

each timed as a whole command (wall time, the interpreter's start included) and as × real time,
with the command's CPU; both runs' records are compared (the same segments and labels). Then the
VAD alone (:class:`models.vad.VadStream` over the call in the producer's 0.1 s blocks, no profiler:
ms of CPU per channel-second, the issue's target 1.0), and the producer's CPU split by stage from a
``cProfile`` of the distributed producer run in this process (``time.process_time``; a profile
inflates Python-heavy stages against numpy-heavy ones: read the shares, not the absolute times).

On a loaded machine wall times are pessimistic: the CPU columns are the comparable figures.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, "1")

import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import redirect_stderr  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

from bench.gateway import cpu_seconds, stop  # noqa: E402
from bench.server import redis_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The call tiled by default, and the figures the issue asks for.
DEFAULT_WAV = ROOT / "examples" / "call.wav"
DEFAULT_MINUTES = 30.0
TARGET_X_REALTIME, TARGET_EMBEDDED_SHARE, TARGET_VAD_MS = 250.0, 0.8, 1.0
#: Seconds the worker gets to load its model and answer a warm-up call.
WORKER_READY_S = 120.0
QUEUE = "longcall"

#: Producer stages: (name, file, functions) whose cumulative profile time is the stage's; nested
#: stages (the VAD inside the cutter, bleed inside the VAD) are subtracted from their parents.
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("read + decode (source)", "producer/source.py", ("blocks",)),
    ("resample", "producer/segmenter.py", ("_resample", "_flush")),
    ("utterance cutter", "models/utterances.py", ("feed", "finish")),
    ("VAD (Silero, gate)", "models/vad.py", ("feed",)),
    ("bleed rejection", "models/bleed.py", ("windows",)),
    ("dynamics + loudness", "producer/dynamics.py", ("speech", "level", "advance", "finish")),
    ("speaker stats / history", "models/speaker.py", ("update",)),
    ("send jobs (Redis)", "producer/dispatch.py", ("submit", "flush")),
    ("results (poll, collect, turns)", "producer/session.py", ("poll", "follow")),
    ("call events", "callevents/writer.py", ("publish", "beat", "start", "end")),
    ("output (jsonl)", "producer/output.py", ("write", "flush")),
)
NESTED = {"utterance cutter": "VAD (Silero, gate)", "VAD (Silero, gate)": "bleed rejection"}


def tile_call(wav: Path, minutes: float, out: Path) -> tuple[float, int]:
    """Write ``wav`` repeated to ``minutes`` (16-bit PCM) to ``out``; returns (seconds, channels)."""
    import soundfile as sf

    y, sr = sf.read(str(wav), dtype="int16", always_2d=True)
    n = max(1, int(round(minutes * 60 * sr)))
    sf.write(str(out), np.tile(y, (-(-n // len(y)), 1))[:n], sr, subtype="PCM_16")
    return n / sr, y.shape[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SER_REDIS_URL", "SER_MODEL")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def produce(wav: Path, *, model: str | None, out: Path, redis_url: str | None = None,
            stream_id: str = "longcall") -> tuple[float, float]:
    """One ``ser-produce`` command: (wall seconds, CPU seconds of the command). The warm-up call has a
    stream id of its own: re-sending an id re-uses its claimed jobs (idempotent re-sends), so a warm-up
    under the measured call's id would hand it the warm-up's shorter segments."""
    cmd = [sys.executable, "-m", "producer.cli", str(wav), "--format", "jsonl", "-o", str(out),
           "--stream-id", stream_id, "--queue", QUEUE] + (["--model", model] if model else [])
    if redis_url:
        cmd += ["--redis-url", redis_url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=3600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise click.ClickException(f"ser-produce failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def records(path: Path) -> list[dict[str, Any]]:
    """The result records, whole (times, label, probabilities, history), in output order."""
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "result"]


def start_worker(redis_url: str, model: str | None, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "workers.cli", "--redis-url", redis_url, "--queue", QUEUE, "-n", "1"]
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd + (["--model", model] if model else []), env=_env(), cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT)


def vad_cost(wav: Path, model: str | None) -> tuple[float, float, int, int]:
    """The VAD alone over ``wav`` in the producer's blocks: (CPU s, ms per channel-second, network runs, windows)."""
    import soundfile as sf

    from models.bundle import load_bundle
    from models.vad import SileroParams, VadStream
    from producer.settings import BLOCK_S

    spec = load_bundle(model).spec
    if not isinstance(spec.vad, SileroParams):
        return 0.0, 0.0, 0, 0
    y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    y = np.ascontiguousarray(y.T)
    if sr != spec.sample_rate:
        from models.audio import resample

        y, sr = resample(y=y, orig_sr=sr, target_sr=spec.sample_rate), spec.sample_rate
    vad = VadStream(channels=y.shape[0], sr=sr, params=spec.vad)
    step = max(1, round(BLOCK_S * sr))
    c0 = time.process_time()
    for i in range(0, y.shape[1], step):
        vad.feed(y[:, i : i + step])
    cpu = time.process_time() - c0
    return cpu, 1000 * cpu / (y.shape[0] * y.shape[1] / sr), vad.network_runs, vad.windows * y.shape[0]


def stage_split(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Cumulative CPU per :data:`STAGES` entry (nested stages subtracted), then the rest of the run."""
    raw = stats.stats  # type: ignore[attr-defined]
    cum: dict[str, float] = {}
    for name, path, funcs in STAGES:
        cum[name] = sum(ct for (fn, _, func), (_, _, _, ct, _) in raw.items()
                        if fn.endswith(path) and func in funcs)
    out = {k: v for k, v in cum.items()}
    for parent, child in NESTED.items():
        out[parent] = max(0.0, out[parent] - cum[child])
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = [(name, out[name]) for name, _, _ in STAGES]
    rows.append(("everything else (bundle load, imports, session)", max(0.0, total - sum(out.values()))))
    return rows


def profile_producer(wav: Path, *, model: str | None, redis_url: str,
                     out: Path) -> tuple[float, list[tuple[str, float]]]:
    """The distributed producer in this process under cProfile (process time): (CPU s, stages)."""
    from producer.cli import main as produce_main

    args = [str(wav), "--format", "jsonl", "-o", str(out), "--stream-id", "longcall-profile", "--queue", QUEUE,
            "--redis-url", redis_url] + (["--model", model] if model else [])
    prof = cProfile.Profile(time.process_time)
    c0 = time.process_time()
    with redirect_stderr(io.StringIO()):
        prof.runcall(produce_main.main, args, standalone_mode=False)
    cpu = time.process_time() - c0
    return cpu, stage_split(pstats.Stats(prof))


def wait_ready(wav: Path, *, model: str | None, redis_url: str, tmp: Path, worker: subprocess.Popen[bytes]) -> None:
    """A short call through the worker, so that its model is loaded before the clock starts."""
    short = tmp / "warmup.wav"
    tile_call(wav, 0.2, short)
    deadline = time.monotonic() + WORKER_READY_S
    while True:
        try:
            produce(short, model=model, out=tmp / "warmup.jsonl", redis_url=redis_url, stream_id="longcall-warmup")
            return
        except click.ClickException:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--minutes", type=click.FloatRange(0.05, 600), default=DEFAULT_MINUTES, show_default=True,
              help="Length of the tiled call.")
@click.option("--wav", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_WAV,
              show_default=True, help="The call to tile (stereo WAV).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="Model bundle [default: the shipped bundle].")
@click.option("--tiny", is_flag=True,
              help="Use a tiny generated bundle (tests/tinybundle.py, Silero VAD): a smoke test.")
@click.option("--no-profile", "no_profile", is_flag=True, help="Skip the profiled producer run.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Copy both runs' records (embedded.jsonl, worker.jsonl) here, to diff against another build.")
def main(minutes: float, wav: Path, model_dir: str | None, tiny: bool, no_profile: bool, keep: Path | None) -> None:
    """Time a long stereo call through ser-produce, embedded and with one worker; split the producer's CPU."""
    with tempfile.TemporaryDirectory(prefix="ser-longcall-") as tmp_s:
        tmp = Path(tmp_s)
        if tiny:
            sys.path.insert(0, str(ROOT / "tests"))
            from tinybundle import make_tiny_bundle

            model_dir = str(tmp / "tiny")
            make_tiny_bundle(Path(model_dir), vad="silero")  # the shipped kind of VAD, so that its stages show
        call = tmp / "call.wav"
        seconds, channels = tile_call(wav, minutes, call)
        load = os.getloadavg()[0]
        click.echo(f"call: {wav.name} tiled to {seconds / 60:.1f} min ({channels} channel(s)); model "
                   f"{'tiny' if tiny else model_dir or 'default'}; load average {load:.1f} on {os.cpu_count()} CPUs")
        emb_wall, emb_cpu = produce(call, model=model_dir, out=tmp / "embedded.jsonl")
        with redis_server() as (url, _version):
            worker = start_worker(url, model_dir, tmp / "worker.log")
            try:
                wait_ready(wav, model=model_dir, redis_url=url, tmp=tmp, worker=worker)
                w0 = cpu_seconds(worker.pid)
                dist_wall, dist_cpu = produce(call, model=model_dir, out=tmp / "worker.jsonl", redis_url=url)
                worker_cpu = cpu_seconds(worker.pid) - w0
                prof = None if no_profile else profile_producer(call, model=model_dir, redis_url=url,
                                                                out=tmp / "profile.jsonl")
            finally:
                stop(worker)
        if keep is not None:
            import shutil

            keep.mkdir(parents=True, exist_ok=True)
            for name in ("embedded.jsonl", "worker.jsonl"):
                shutil.copy(tmp / name, keep / name)
        same = records(tmp / "embedded.jsonl") == records(tmp / "worker.jsonl")
        n = len(records(tmp / "worker.jsonl"))
        click.echo(f"{'run':<22}{'wall s':>9}{'x real time':>13}{'command CPU s':>15}")
        click.echo(f"{'one worker (Redis)':<22}{dist_wall:>9.2f}{seconds / dist_wall:>13.0f}{dist_cpu:>15.2f}"
                   f"   + worker {worker_cpu:.2f} s CPU")
        click.echo(f"{'embedded':<22}{emb_wall:>9.2f}{seconds / emb_wall:>13.0f}{emb_cpu:>15.2f}"
                   f"   ({dist_wall / emb_wall:.2f} of the worker run's speed)")
        click.echo(f"{n} result records; embedded and worker records "
                   + ("identical, field for field" if same else "DIFFER"))
        click.echo(f"targets: worker run >= {TARGET_X_REALTIME:.0f}x real time, embedded >= "
                   f"{TARGET_EMBEDDED_SHARE} of it, VAD <= {TARGET_VAD_MS} ms per channel-second")
        vad_cpu, per_s, runs, windows = vad_cost(call, model_dir)
        if windows:
            click.echo(f"VAD alone (no profiler): {vad_cpu:.2f} s CPU, {per_s:.3f} ms per channel-second; "
                       f"network on {runs} of {windows} channel-windows' steps")
        if prof is not None:
            cpu, rows = prof
            click.echo(f"producer (one worker) under cProfile: {cpu:.2f} s CPU; by stage:")
            for name, secs in rows:
                click.echo(f"  {name:<48}{secs:>7.2f} s {100 * secs / max(cpu, 1e-9):>5.1f} %"
                           f"  {1000 * secs / (seconds * channels):>6.3f} ms/channel-s")


if __name__ == "__main__":
    main()
