"""What the conversation dynamics (producer/dynamics.py) add to the ingestion side's CPU per call.

Runs the call session (``producer.session.CallSession``: resampling, the Silero VAD and the
utterance cutter, speaker statistics, batching, job payloads; no model, no Redis: the workers'
side is not the ingestion side) over a WAV in 0.1 s blocks, as ``ser-produce`` reads it, and
measures process CPU time with the dynamics as shipped and with them replaced by a no-op, and the
CPU (of the calling thread: onnxruntime's own threads do not count) spent inside the dynamics' own
methods. Prints one line per figure::

    python -m bench.dynamics_cost examples/call.wav --repeat 5
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import soundfile as sf

from models.bundle import load_bundle
from producer.backend import Backend
from producer.dispatch import Batch
from producer.dynamics import Dynamics
from workers.contract import failure_records

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default"


class PayloadOnly(Backend):
    """The distributed side's per-batch work without Redis: int16 PCM and the job payload, dropped.
    Each batch is answered at once with failure records (nothing was classified), so that a session
    whose model keeps an embedding history sends a channel's next batch as it would once results are in."""

    def submit(self, batch: Batch, *, on_idle: Any = None) -> list[dict[str, Any]]:
        pcm = np.clip(np.round(np.stack(batch.segments) * 32768), -32768, 32767).astype("<i2").tobytes()
        payload = self.payload(batch, f"ser:pcm:{len(pcm)}")
        self.jobs += 1
        return failure_records(payload, "not classified (bench: payload only)")


class NoDynamics(Dynamics):
    """The same interface doing nothing (the session without dynamics)."""

    def speech(self, channel: int, *, start_s: float, end_s: float) -> None:
        return None

    def advance(self, *, clock_s: float) -> list[dict[str, Any]]:
        return []

    def level(self, channel: int, samples: Any, *, start_s: float) -> list[dict[str, Any]]:
        return []

    def finish(self, *, duration_s: float) -> list[dict[str, Any]]:
        return []


class Timed(Dynamics):
    """The shipped dynamics, counting the CPU spent in them."""

    cpu_s = 0.0

    def speech(self, channel: int, *, start_s: float, end_s: float) -> None:
        t = time.thread_time()
        super().speech(channel, start_s=start_s, end_s=end_s)
        Timed.cpu_s += time.thread_time() - t

    def advance(self, *, clock_s: float) -> list[dict[str, Any]]:
        t = time.thread_time()
        out = super().advance(clock_s=clock_s)
        Timed.cpu_s += time.thread_time() - t
        return out

    def level(self, channel: int, samples: Any, *, start_s: float) -> list[dict[str, Any]]:
        t = time.thread_time()
        out = super().level(channel, samples, start_s=start_s)
        Timed.cpu_s += time.thread_time() - t
        return out

    def finish(self, *, duration_s: float) -> list[dict[str, Any]]:
        t = time.thread_time()
        out = super().finish(duration_s=duration_s)
        Timed.cpu_s += time.thread_time() - t
        return out


def run_call(audio: np.ndarray, rate: int, *, model_dir: Path, dynamics: type[Dynamics]) -> tuple[float, dict]:
    """One call through a session with ``dynamics``; (process CPU seconds, the dynamics summary)."""
    import producer.session as session_mod

    spec = load_bundle(model_dir).spec
    saved = session_mod.Dynamics
    session_mod.Dynamics = dynamics  # type: ignore[misc]
    try:
        t = time.process_time()
        s = session_mod.CallSession(spec=spec, backend=PayloadOnly(spec=spec, stream_id="cost"),
                                    names=["agent", "customer"][: audio.shape[0]], in_rate=rate, batch=1,
                                    connection=None, call_id="cost", source="file")
        s.start()
        block = int(0.1 * rate)
        for a in range(0, audio.shape[1], block):
            s.push(audio[:, a : a + block])
        s.close()
        s.end()
        return time.process_time() - t, s.dynamics.summary()
    finally:
        session_mod.Dynamics = saved  # type: ignore[misc]


@click.command()
@click.argument("wav", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_MODEL,
              show_default=True)
@click.option("--repeat", default=5, show_default=True, help="runs of each variant (interleaved); medians")
@click.option("--tile", default=1, show_default=True, help="play the file this many times in a row (a longer call)")
def main(wav: Path, model_dir: Path, repeat: int, tile: int) -> None:
    y, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = np.ascontiguousarray(np.tile(y.T, (1, tile)))
    with_s, without_s, inside_s = [], [], []
    for _ in range(repeat):
        Timed.cpu_s = 0.0
        _, summary = run_call(audio, rate, model_dir=model_dir, dynamics=Timed)
        inside_s.append(Timed.cpu_s)
        with_s.append(run_call(audio, rate, model_dir=model_dir, dynamics=Dynamics)[0])
        without_s.append(run_call(audio, rate, model_dir=model_dir, dynamics=NoDynamics)[0])
    w, wo, ins = (float(np.median(v)) for v in (with_s, without_s, inside_s))
    seconds = audio.shape[1] / rate
    click.echo(f"call: {wav.name} x{tile}, {seconds:.1f} s, {audio.shape[0]} channel(s); model {model_dir.name}")
    click.echo(f"ingestion CPU per call, median of {repeat}: with dynamics {w:.3f} s, without {wo:.3f} s "
               f"(difference {100 * (w - wo) / wo:+.1f} %, run-to-run noise included)")
    click.echo(f"CPU inside the dynamics: {1000 * ins:.2f} ms per call = {100 * ins / wo:.2f} % of the ingestion "
               f"side's CPU ({1e6 * ins / seconds:.1f} us per second of audio)")
    talk = ", ".join(f"{k} {v['talk_s']:.1f} s" for k, v in summary["channels"].items())
    click.echo(f"talk: {talk}; silences {summary['silence']['count']}, "
               f"overtalks {summary.get('overtalk', {}).get('count', 0)}")


if __name__ == "__main__":
    main()
