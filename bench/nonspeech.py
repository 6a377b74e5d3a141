"""Stereo calls with no speech at all, for false segments: ``python -m bench.nonspeech --out DIR``.

Writes ``DIR/<kind>/call.wav`` and ``call.json`` (bench.calls' truth format, no utterances) for
each kind of :data:`KINDS`, both channels of a call holding independent (seeded) material of that
kind: a loud pink line (−36 dBFS), a white line (−46 dBFS), comfort noise (white noise at
−55 dBFS in 1–4 s stretches between digital silence, as a codec's discontinuous transmission
sends it), DTMF bursts (4–10 digits at −26 dBFS every 1–3 s over a −56 dBFS pink floor) and hold
music (−26 dBFS over the same floor). Every segment the segmenter cuts from these is false
(``python -m bench.segscore DIR/*``; docs/vad.md).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from bench.callsignals import DTMF, SR, dtmf_burst, hold_music, noise

KINDS = ("line-pink", "line-white", "comfort", "dtmf", "hold")


def nonspeech(kind: str, *, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One channel of ``kind`` (``(n,)`` float32) and its DTMF/hold event spans in samples."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {', '.join(KINDS)}")
    n = round(seconds * SR)
    if kind == "line-pink":
        return noise(n, kind="pink", level_dbfs=-36.0, rng=rng), []
    if kind == "line-white":
        return noise(n, kind="white", level_dbfs=-46.0, rng=rng), []
    y = np.zeros(n, dtype=np.float32)
    if kind == "comfort":
        pos, on = 0, bool(rng.integers(2))
        while pos < n:
            m = round(rng.uniform(1.0, 4.0) * SR)
            if on:
                y[pos : pos + m] = noise(m, kind="white", level_dbfs=-55.0, rng=rng)[: n - pos]
            pos, on = pos + m, not on
        return y, []
    y += noise(n, kind="pink", level_dbfs=-56.0, rng=rng)
    if kind == "hold":
        return y + hold_music(seconds, rng=rng), [(0, n)]
    events, pos = [], round(rng.uniform(0.5, 1.5) * SR)
    while True:
        burst = dtmf_burst("".join(rng.choice(list(DTMF), size=int(rng.integers(4, 11)))))
        if pos + len(burst) > n:
            return y, events
        y[pos : pos + len(burst)] += burst
        events.append((pos, pos + len(burst)))
        pos += len(burst) + round(rng.uniform(1.0, 3.0) * SR)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="writes OUT/<kind>/call.wav, call.json")
@click.option("--seconds", type=float, default=60.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def main(out: Path, seconds: float, seed: int) -> None:
    """Non-speech stereo calls (line noise, comfort noise, DTMF, hold music) with bench.calls' truth."""
    from bench.callsim import write_call

    if not 1 <= seconds <= 3600:
        raise click.ClickException(f"--seconds {seconds} must be in [1, 3600]")
    rng = np.random.default_rng(seed)
    for kind in KINDS:
        chans, events = [], []
        for name in ("agent", "customer"):
            y, spans = nonspeech(kind, seconds=seconds, rng=rng)
            chans.append(y)
            events += [{"kind": "hold" if kind == "hold" else "dtmf", "channel": name, "role": name,
                        "start_s": round(a / SR, 4), "end_s": round(b / SR, 4)} for a, b in spans]
        truth = {"format": 1, "sample_rate": SR, "duration_s": round(len(chans[0]) / SR, 4),
                 "channels": ["agent", "customer"], "speakers": {}, "options": {"kind": kind, "seed": seed},
                 "utterances": [], "events": events}
        wav, _ = write_call(out / kind, np.clip(np.stack(chans), -1.0, 1.0), truth)
        click.echo(f"{wav}: {kind}, {seconds:.0f} s, {len(events)} events")


if __name__ == "__main__":
    main()
