"""``python -m bench [--model DIR | --tiny] [--seconds S] [--quick] [--out FILE]``

Starts its own redis-server on a free loopback port and one ``ser-worker`` process, then measures
(see docs/benchmark.md): end-to-end segments/s per worker process, the producer's enqueue cost,
latency under paced open-loop load at 50 % and 90 % of the measured capacity, the worker's RSS,
Redis memory per active call, the in-process limit and a seed-style baseline, and prints a table.
"""

from __future__ import annotations

import os

# Same thread caps as ser-worker, before numpy is imported (the in-process figures use one core).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, "1")

import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

#: Queues the benchmark uses on its private server.
QUEUE = "bench"
ENQUEUE_QUEUE = "bench-enqueue"
#: Batch sizes measured: the file default and the live default.
FILE_BATCH, LIVE_BATCH = 16, 1
#: Rough capacities (segments/s) used only to size the runs.
SIZE_RATE = {FILE_BATCH: 500, LIVE_BATCH: 150}


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: list[float], fmt: str = "{:.0f}") -> str:
    return "" if len(xs) < 2 else f"runs: {', '.join(fmt.format(x) for x in xs)}"


def note(text: str) -> str:
    return f"; {text}" if text else ""


def cleanup(url: str) -> None:
    """Drop results streams, claims and finished RQ jobs between runs (keeps the worker's keys)."""
    import redis

    conn = redis.Redis.from_url(url)
    for pattern in ("ser:results:*", "ser:claim:*", "ser:pcm:*", "rq:job:*", "rq:results:*"):
        keys = list(conn.scan_iter(pattern, count=1000))
        for i in range(0, len(keys), 500):
            conn.delete(*keys[i:i + 500])
    conn.close()


def resolve_model(model_dir: str | None, tiny: bool, workdir: Path) -> tuple[str, str]:
    """``(bundle dir, description)``."""
    if tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tinybundle import make_tiny_bundle

        path = workdir / "tiny"
        make_tiny_bundle(path)
        return str(path), "tiny test bundle (tests/tinybundle.py: mean-pool + linear; not the real cost)"
    from models.bundle import DEFAULT_BUNDLE, load_bundle

    path = Path(model_dir) if model_dir else Path(DEFAULT_BUNDLE)
    if not (path / "spec.json").exists():
        raise click.ClickException(f"no bundle at {path}: pass --model DIR, or --tiny for the test bundle")
    spec = load_bundle(path).spec
    return str(path), f"{spec.model_id} ({path}, {(path / 'model.onnx').stat().st_size / 1e6:.1f} MB ONNX)"


@click.command()
@click.option("--model", "model_dir", default=None, help="bundle directory (default: models/default)")
@click.option("--tiny", is_flag=True, help="use the tiny test bundle (smoke test; not the real cost)")
@click.option("--seconds", default=5.0, show_default=True, help="approximate length of each measurement")
@click.option("--repeat", default=3, show_default=True, help="runs per measurement (median reported)")
@click.option("--quick", is_flag=True, help="1 s measurements, one run each, no seed-style baseline")
@click.option("--no-baseline", is_flag=True, help="skip the seed-style (librosa + Keras) baseline")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="also write the report here")
def main(model_dir: str | None, tiny: bool, seconds: float, repeat: int, quick: bool, no_baseline: bool,
         out_path: str | None) -> None:
    command = "python -m bench " + shlex.join(sys.argv[1:])
    if quick:
        seconds, repeat, no_baseline = min(seconds, 1.0), 1, True
    from bench import baseline, embedded, idle, inprocess, load, report
    from bench.server import redis_server
    from models.bundle import load_bundle
    from models.vad import SileroParams

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-") as tmp, redis_server() as (url, redis_version):
        work = Path(tmp)
        model, model_desc = resolve_model(model_dir, tiny, work)
        spec = load_bundle(model).spec
        window = spec.segment.samples(spec.sample_rate)[0]
        header = report.machine_lines(redis_version=redis_version, extra={
            "model": model_desc, "command": f"`{command}`",
            "audio": f"{spec.sample_rate} Hz, {spec.segment.window_s:g} s segments, voiced noise (std 0.2); "
                     + ("stereo WAV of speech-like bursts (bench.speechlike: the Silero VAD cuts them) "
                        if isinstance(spec.vad, SileroParams) else "stereo noise WAV ")
                     + "for the producer runs"})
        click.echo("\n".join(header), err=True)

        def log(msg: str) -> None:
            click.echo(f"[{time.strftime('%H:%M:%S')}] {msg}", err=True)

        # 1. Enqueue cost (no worker running).
        enq: dict[int, list[float]] = {}
        job_bytes: dict[int, float] = {}
        for b in (LIVE_BATCH, FILE_BATCH):
            n = max(b * 8, int(SIZE_RATE[FILE_BATCH] * seconds) // b * b)
            runs = [load.enqueue_cost_ms(url, spec, batch=b, segments=n, queue=ENQUEUE_QUEUE) for _ in range(repeat)]
            enq[b], job_bytes[b] = [r[0] for r in runs], runs[0][1]
            log(f"enqueue batch {b}: {enq[b]} ms/segment")
        cleanup(url)

        cap: dict[int, list[float]] = {}
        inproc: dict[int, list[float]] = {}
        inproc_cpu: dict[int, list[float]] = {}
        cpu: dict[int, list[tuple[float, ...]]] = {}  # ms of CPU per segment: worker, redis-server, producer
        import redis

        probe = redis.Redis.from_url(url)
        redis_pid = int(probe.info("server")["process_id"])
        probe.close()
        paced: dict[tuple[int, float], list[load.Paced]] = {}
        worker_log = work / "worker.log"
        with load.worker(url, QUEUE, model, log=worker_log) as w:
            # 2. Capacity end to end: the real producer (in this process) and one worker process.
            for b in (FILE_BATCH, LIVE_BATCH):
                segs = max(2 * b * 4, int(SIZE_RATE[b] * seconds))
                wav = work / f"noise-{b}.wav"
                if isinstance(spec.vad, SileroParams):  # utterance segments: the VAD must hear speech
                    load.write_speech_wav(wav, seconds=segs / 2 * 2.4, rate=spec.sample_rate)
                else:
                    load.write_noise_wav(wav, seconds=segs / 2 * spec.segment.hop_s, rate=spec.sample_rate)
                cap[b], inproc[b], cpu[b], inproc_cpu[b] = [], [], [], []
                for r in range(repeat):
                    before = (load.cpu_seconds(w.child), load.cpu_seconds(redis_pid), time.process_time())
                    n, secs = load.producer_run(url, QUEUE, model, wav, batch=b, stream_id=f"cap-{b}-{r}")
                    after = (load.cpu_seconds(w.child), load.cpu_seconds(redis_pid), time.process_time())
                    cap[b].append(n / secs)
                    cpu[b].append(tuple(1000 * (a - z) / n for a, z in zip(after, before, strict=True)))
                    cleanup(url)
                    # 3. The in-process limit right after (same batch, one thread; the worker idles):
                    # paired with the run, so the ratio sees the same background load.
                    wall, per_cpu = inprocess.inprocess_rate(model, batch=b, seconds=min(seconds, 3.0))
                    inproc[b].append(wall)
                    inproc_cpu[b].append(per_cpu)
                log(f"end to end batch {b}: {[round(x) for x in cap[b]]} segments/s; "
                    f"in-process {[round(x) for x in inproc[b]]}")
            # 3b. Embedded mode (no Redis, the worker idles), as a user runs ser-produce.
            emb = [embedded.embedded_rate(model, work / f"noise-{FILE_BATCH}.wav", batch=FILE_BATCH)
                   for _ in range(repeat)]
            log(f"embedded batch {FILE_BATCH}: {[round(x) for x in emb]} segments/s")
            # 4. Paced open-loop latency at 50 % and 90 % of that capacity.
            for b in (LIVE_BATCH, FILE_BATCH):
                for frac in (0.5, 0.9):
                    paced[(b, frac)] = []
                    for _ in range(repeat):
                        paced[(b, frac)].append(load.paced_run(url, spec, queue=QUEUE, batch=b,
                                                               rate=frac * median(cap[b]), seconds=seconds))
                        cleanup(url)
                    log(f"paced batch {b} at {frac:.0%}: p95 {[round(p.p95_ms, 1) for p in paced[(b, frac)]]} ms")
            # 5. First job after an idle spell (longer than redis-py's default socket timeout).
            idle_s = 6.0 if quick else idle.IDLE_S
            idle_ms = [idle.first_job_after_idle_ms(url, spec, queue=QUEUE, idle_s=idle_s) for _ in range(repeat)]
            cleanup(url)
            log(f"first job after {idle_s:g} s idle: {[round(x, 1) for x in idle_ms]} ms")
            rss, hwm = load.rss_mb(w.child)
            parent_rss, _ = load.rss_mb(w.proc.pid)
        worker_text = worker_log.read_text(errors="replace") if worker_log.exists() else ""
        if worker_text:
            click.echo(worker_text.rstrip("\n"), err=True)  # the worker's own log, as it would have printed
        spurious = idle.spurious_lines(worker_log)

        # 6. Seed-style baseline.
        base = None
        if no_baseline:
            base_note = "skipped (--quick or --no-baseline)"
        elif not baseline.available():
            base_note = "skipped: tensorflow/keras not installed"
        else:
            runs = [baseline.baseline_rate(sr=spec.sample_rate, window=window, n_labels=len(spec.labels),
                                           seconds=seconds) for _ in range(repeat)]
            base = (median([r[0] for r in runs]), median([r[1] for r in runs]), median([r[2] for r in runs]))
            base_note = (f"features {base[1]:.1f} ms + predict {base[2]:.1f} ms per segment; keras "
                         f"{report.version('keras')}, tensorflow {report.version('tensorflow')}")
            log(f"baseline: {runs}")

    c16, c1 = median(cap[FILE_BATCH]), median(cap[LIVE_BATCH])
    i16, i1 = median(inproc[FILE_BATCH]), median(inproc[LIVE_BATCH])
    rows.append(("end to end, 1 worker process, `--batch 16` (files)", f"{c16:.0f} segments/s", "≥ 400",
                 "real producer → Redis → worker → results read back" + note(spread(cap[FILE_BATCH]))))
    rows.append(("embedded (no Redis), `ser-produce FILE`, `--batch 16`", f"{median(emb):.0f} segments/s", "",
                 "the CLI in a subprocess whose environment has no BLAS thread caps (it sets them itself); "
                 "its own run time, model load included; compare with the row above" + note(spread(emb))))
    rows.append(("end to end, 1 worker process, `--batch 1` (live)", f"{c1:.0f} segments/s", "",
                 spread(cap[LIVE_BATCH])))
    for b in (FILE_BATCH, LIVE_BATCH):
        wk, rd, pr = (median([c[i] for c in cpu[b]]) for i in range(3))
        rows.append((f"CPU per segment end to end, `--batch {b}` (worker / redis-server / producer)",
                     f"{wk:.2f} / {rd:.2f} / {pr:.2f} ms", "",
                     f"worker alone on a core: ≈ {1000 / wk:.0f} segments/s; in-process "
                     f"{median(inproc_cpu[b]):.0f} segments per CPU second (CPU time: robust to contention)"))
    for b in (LIVE_BATCH, FILE_BATCH):
        rows.append((f"enqueue cost, `--batch {b}`", f"{median(enq[b]):.3f} ms/segment", "≤ 0.5",
                     f"RedisBackend.submit: int16 encode, claim, PCM + RQ job in one MULTI/EXEC; RQ job data "
                     f"{job_bytes[b]:.0f} B per job (PCM {2 * b * window / 1024:.0f} KB in its own key)"
                     + note(spread(enq[b], "{:.3f}"))))
    for b in (LIVE_BATCH, FILE_BATCH):
        for frac in (0.5, 0.9):
            ps = paced[(b, frac)]
            target = "p95 ≤ 50" if frac == 0.5 else ""
            rows.append((f"latency at {frac:.0%} load, `--batch {b}` (ms p50 / p95 / p99)",
                         f"{median([p.p50_ms for p in ps]):.1f} / {median([p.p95_ms for p in ps]):.1f} / "
                         f"{median([p.p99_ms for p in ps]):.1f}", target,
                         f"{ps[0].rate:.0f} segments/s offered (Poisson), {ps[0].calls} calls, "
                         f"{ps[0].segments} segments per run; p95 runs: "
                         + ", ".join(f"{p.p95_ms:.1f}" for p in ps)))
    rows.append((f"first job after {idle_s:g} s idle, `--batch 1`", f"{median(idle_ms):.1f} ms", "≤ 50",
                 f"one segment sent to an idle worker, until its record is read back; spurious reconnect lines "
                 f"in the worker log over the whole run: {spurious}" + note(spread(idle_ms, "{:.1f}"))))
    rows.append(("worker RSS", f"{rss:.0f} MB", "≤ 350",
                 f"worker process after the runs (peak {hwm:.0f} MB); pool parent {parent_rss:.0f} MB"))
    mem = paced[(LIVE_BATCH, 0.5)]
    per_call = median([p.redis_bytes_per_call for p in mem])
    seg_per_call = mem[0].segments / mem[0].calls
    rows.append(("Redis memory per active call", f"{per_call / 1024:.0f} KB", "",
                 f"peak used_memory delta / {mem[0].calls} live calls (`--batch 1`, 50 % load), "
                 f"≈ {seg_per_call:.0f} segments sent per call; {per_call / max(seg_per_call, 1):.0f} B per segment"))
    rows.append(("in-process limit, batch 16", f"{i16:.0f} segments/s", "",
                 "features + inference only, one thread" + note(spread(inproc[FILE_BATCH]))))
    rows.append(("in-process limit, batch 1", f"{i1:.0f} segments/s", "", spread(inproc[LIVE_BATCH])))
    for b, target in ((FILE_BATCH, "≥ 40 %"), (LIVE_BATCH, "")):
        ratios = [c / i for c, i in zip(cap[b], inproc[b], strict=True)]
        rows.append((f"end to end / in-process, batch {b}", f"{100 * median(ratios):.0f} %", target,
                     "median of per-run ratios (each end-to-end run is followed by its in-process run)"
                     + note(spread([100 * r for r in ratios]))))
    if base is not None:
        rows.append(("seed-style baseline (librosa kitchen sink + Keras predict)", f"{base[0]:.1f} segments/s", "",
                     base_note))
        rows.append(("end to end `--batch 16` / seed-style baseline", f"{c16 / base[0]:.0f}×", "≥ 20×", ""))
    else:
        rows.append(("seed-style baseline (librosa kitchen sink + Keras predict)", "—", "", base_note))
        rows.append(("end to end `--batch 16` / seed-style baseline", "—", "≥ 20×", base_note))
    end_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join(header + [f"- load average at end: {end_load}", ""] + report.table(rows)) + "\n"
    click.echo(text)
    if out_path:
        Path(out_path).write_text(text)


if __name__ == "__main__":
    main()
