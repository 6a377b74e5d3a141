"""The segmenter alone on simulated calls: coverage, false segments and VAD cost for VAD settings.

Runs :class:`models.utterances.UtteranceCutter` over each ``bench.calls make`` folder's ``call.wav``
(stereo, 0.1 s blocks as ``ser-produce`` feeds it) and scores the segments with
:func:`bench.callscore.score` (labels ignored: coverage and false segments only need the spans).
Options override the bundle's Silero parameters, for tuning (docs/vad.md)::

    python -m bench.segscore /tmp/calls/* --model models/default --gate-db 10 --threshold 0.3 --off 0.2
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np


@click.command()
@click.argument("calls", nargs=-1, type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--model", "model_dir", default="models/default", show_default=True, help="bundle with a Silero vad")
@click.option("--threshold", type=float, default=None)
@click.option("--off", "off_threshold", type=float, default=None)
@click.option("--gate-db", type=float, default=None)
@click.option("--reset-after-s", type=float, default=None)
@click.option("--min-silence-s", type=float, default=None)
@click.option("--speech-hold-s", type=float, default=None, help="keep the network on this long after speech")
@click.option("--gate-share", type=float, default=None, help="adaptive gate: share of the speech-to-noise distance")
@click.option("--level-gain-db", type=float, default=None, help="lift a quiet channel's network input")
@click.option("--bleed-share", type=float, default=None, help="reject windows this much explained by the other channel")
@click.option("--bleed-max-delay-s", type=float, default=None)
@click.option("--channel-names", default="agent,customer", show_default=True)
def main(calls: tuple[Path, ...], model_dir: str, threshold: float | None, off_threshold: float | None,
         gate_db: float | None, reset_after_s: float | None, min_silence_s: float | None,
         speech_hold_s: float | None, gate_share: float | None, level_gain_db: float | None,
         bleed_share: float | None, bleed_max_delay_s: float | None, channel_names: str) -> None:
    import soundfile as sf

    from bench import callscore
    from models.bundle import load_bundle
    from models.utterances import UtteranceCutter
    from models.vad import SileroParams

    spec = load_bundle(model_dir).spec
    if not isinstance(spec.vad, SileroParams):
        raise click.ClickException(f"{model_dir} has no Silero vad (spec vad.kind)")
    changes: dict[str, Any] = {k: v for k, v in (("threshold", threshold), ("off_threshold", off_threshold),
                                 ("gate_db", gate_db), ("reset_after_s", reset_after_s),
                                 ("min_silence_s", min_silence_s),
                                 ("speech_hold_s", speech_hold_s), ("gate_share", gate_share),
                                 ("level_gain_db", level_gain_db),
                                 ("bleed_share", bleed_share), ("bleed_max_delay_s", bleed_max_delay_s))
               if v is not None}
    params = dataclasses.replace(spec.vad, **changes)
    names = channel_names.split(",")
    cpu, channel_s = 0.0, 0.0
    for call in calls:
        y, sr = sf.read(call / "call.wav", dtype="float32", always_2d=True)
        y = np.ascontiguousarray(y.T)
        if sr != spec.sample_rate:
            raise click.ClickException(f"{call}/call.wav is {sr} Hz; the model's rate is {spec.sample_rate}")
        cutter = UtteranceCutter(channels=y.shape[0], sr=sr, segment=spec.segment, params=params)
        block = round(0.1 * sr)
        t0 = time.process_time()
        segs = []
        for i in range(0, y.shape[1], block):
            segs += cutter.feed(y[:, i : i + block])
        segs += cutter.finish()
        cpu += time.process_time() - t0
        channel_s += y.shape[0] * y.shape[1] / sr
        recs = [{"kind": "result", "channel": names[u.channel] if y.shape[0] > 1 else "mono", "seq": k,
                 "start_s": u.start / sr, "end_s": u.end / sr, "label": "?", "model": spec.model_id}
                for k, u in enumerate(segs)]
        s = callscore.score(json.loads((call / "call.json").read_text()), recs)
        roles = " / ".join(f"{v:.3f}" for v in s["coverage_by_role"].values())
        click.echo(f"{call.name}: coverage {s['coverage']:.3f} ({roles}), {len(segs)} segments, "
                   f"false {s['segments']['false']} "
                   f"({s['false_per_min_nonspeech']:.2f} per min of non-speech), network on "
                   f"{cutter.vad.network_runs} of {cutter.vad.windows} windows, "
                   f"{cutter.vad.bleed_windows} taken for bleed")
    click.echo(f"VAD settings {json.dumps(changes) if changes else '(the bundle)'}: "
               f"{1000 * cpu / channel_s:.2f} ms CPU per channel-second")


if __name__ == "__main__":
    main()
