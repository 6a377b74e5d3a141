"""Live latency on a simulated call: utterance end to its record, one worker under background load.

A private redis-server and one ``ser-worker`` process (:mod:`bench.load`); a paced open-loop load of
``--load`` segments/s from other calls (:func:`bench.load.paced_run`, e.g. half the worker's
capacity from ``python -m bench``) runs in a thread while ``ser-produce --realtime --batch 1``
(:func:`producer.pipeline.run`) plays the call at its own speed. The records' ``wall_s`` against
the call's ground truth (:func:`bench.callscore.score`) gives p50/p95 from each utterance's true
end to the last record that covers it::

    python -m bench.call_latency --call /tmp/calls/ordinary --model models/default --load 350
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import click


@click.command()
@click.option("--call", "call_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="a bench.calls make folder (call.wav, call.json)")
@click.option("--model", "model_dir", default="models/default", show_default=True)
@click.option("--load", "load_rate", type=float, default=0.0, show_default=True,
              help="background segments/s from other calls (0: none)")
@click.option("--channel-names", default="agent,customer", show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
@click.option("--records", "records_out", type=click.Path(path_type=Path), default=None,
              help="also write the call's records (jsonl, with wall_s) here")
def main(call_dir: Path, model_dir: str, load_rate: float, channel_names: str, json_out: Path | None,
         records_out: Path | None) -> None:
    import redis

    from bench import callscore, load
    from bench.server import redis_server
    from models.bundle import load_bundle
    from producer.pipeline import run
    from producer.settings import ProducerSettings

    truth = json.loads((call_dir / "call.json").read_text())
    spec = load_bundle(model_dir).spec
    with redis_server() as (url, _), load.worker(url, "bench", model_dir) as w:
        background: list[Any] = []
        stop = threading.Event()

        def offered() -> None:
            while not stop.is_set():
                background.append(load.paced_run(url, spec, queue="bench", batch=1, rate=load_rate, seconds=10.0))

        thread = threading.Thread(target=offered, daemon=True) if load_rate > 0 else None
        if thread is not None:
            thread.start()
        out = io.StringIO()
        settings = ProducerSettings(audio=str(call_dir / "call.wav"), stream_id="latency", model_dir=model_dir,
                                    redis_url=url, queue="bench", batch=1, output_format="jsonl",
                                    realtime=True, channel_names=tuple(channel_names.split(",")))
        conn = redis.Redis.from_url(url)
        try:
            outcome = run(settings, stdin=io.BytesIO(), out=out, connection=conn)
        finally:
            stop.set()
            if thread is not None:
                thread.join()
            conn.close()
        worker_cpu = load.cpu_seconds(w.child)
    records = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    if records_out is not None:
        records_out.write_text(out.getvalue(), encoding="utf-8")
    s = callscore.score(truth, records)
    bg = {"offered_per_s": load_rate, "runs": len(background),
          "p95_ms": [round(b.p95_ms, 1) for b in background]} if background else None
    result = {"model": spec.model_id, "call": str(call_dir), "duration_s": truth["duration_s"],
              "utterances": s["utterances"], "coverage": s["coverage"], "latency": s["latency"],
              "background": bg, "worker_cpu_s": round(worker_cpu, 1), "error": outcome.error}
    click.echo(json.dumps(result, indent=1))
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
