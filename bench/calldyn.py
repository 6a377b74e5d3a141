"""The conversation dynamics of simulated corpus calls against their truth (docs/pipeline.md).

A ``bench.calls make`` folder (``call.wav``, stereo, and ``call.json``; made with ``--overlap-p``,
``--yield-p``, ``--silence-p``, ``--raise-db`` for there to be something to find) goes through the
real call session with the bundle's Silero VAD, optionally with VAD parameters overridden (the
opt-in ones of docs/vad.md, "Quiet speakers and bleed"), exactly as ``bench.dynscore`` runs its
synthetic calls (:func:`bench.dynscore.session_dynamics`). The truth is the same tracker run on the
utterances' exact spans (``start_s``-``end_s`` in ``call.json``: each clip's speech extent, pauses
between its words included); scores, summed over the calls, are :class:`bench.dynscore.Tally`'s:
talk-time error per speaker, silences >= 3 s, overtalk and interruptions (precision/recall), and the
raised speaker's raised-voice seconds and alerts::

    python -m bench.calls dynscore /tmp/dyn/* [--opt-in | --level-gain-db 20 ...] [--json out.json]
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.dynscore import NAMES, Tally, session_dynamics, truth_of

#: The opt-in VAD settings measured in docs/vad.md ("Quiet speakers and bleed").
OPT_IN = {"level_gain_db": 20.0, "gate_share": 0.3, "speech_hold_s": 0.3, "bleed_share": 0.5}


def truth_spans(truth: dict[str, Any]) -> list[tuple[int, float, float]]:
    """``(channel, start_s, seconds)`` of each utterance of a stereo ``call.json``."""
    if truth.get("channels") != list(NAMES):
        raise ValueError(f"dynamics need a stereo call with channels {list(NAMES)}, not {truth.get('channels')}")
    return [(NAMES.index(u["channel"]), u["start_s"], u["end_s"] - u["start_s"]) for u in truth["utterances"]]


def with_vad(spec: Any, changes: dict[str, Any]) -> Any:
    """``spec`` with its Silero VAD parameters overridden by ``changes`` (none: ``spec`` itself)."""
    from models.vad import SileroParams

    if not changes:
        return spec
    if not isinstance(spec.vad, SileroParams):
        raise ValueError("VAD options need a bundle with a Silero vad (spec vad.kind)")
    return dataclasses.replace(spec, vad=dataclasses.replace(spec.vad, **changes))


def score_calls(calls: Sequence[Path], spec: Any) -> tuple[Tally, list[dict[str, Any]]]:
    """Each call folder through the session with ``spec``; the tally and each call's scores."""
    import soundfile as sf

    tally, per_call = Tally(), []
    for call in calls:
        truth = json.loads((call / "call.json").read_text(encoding="utf-8"))
        spans = truth_spans(truth)
        y, rate = sf.read(call / "call.wav", dtype="float32", always_2d=True)
        if rate != spec.sample_rate:
            raise ValueError(f"{call}/call.wav is {rate} Hz; the model's rate is {spec.sample_rate}")
        got = session_dynamics(np.ascontiguousarray(y.T), spec=spec, rate=rate)
        raised = truth.get("raised") or {}
        s = tally.add(truth_of(spans, y.shape[0] / rate), got, raised=raised.get("role"),
                      raised_s=raised.get("speech_s") or 0.0)
        per_call.append({"call": str(call), **s})
    return tally, per_call


def call_line(s: dict[str, Any]) -> str:
    """One call's scores on a line."""
    talk = " ".join(f"{n} {100 * e:+.1f} %" for n, e in s["talk_error"].items())
    eps = ", ".join(f"{k} {s[k][0]}/{s[k][1]}/{s[k][2]}" for k in ("silence", "overtalk", "interruption"))
    raised = " ".join(f"{n} {v:.1f} s" for n, v in s["raised_s"].items())
    return (f"{Path(s['call']).name}: talk-time error {talk}; {eps} (matched/found/true); raised {raised}, "
            f"alerts {','.join(s['raised_alerts']) or 'none'}")
