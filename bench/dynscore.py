"""The conversation dynamics measured against known truth on seeded synthetic conversations.

Each call is two channels of speech-like audio (bench/speechlike.py: Silero VAD calls it speech)
over a -70 dBFS floor, with turns, gaps (some of 3 to 8 s: dead air), overlaps where one speaker
cuts in (some where the other stops within 1 s) and a level per speaker. It goes through the real
call session (``producer.session.CallSession``: resampling, the bundle's Silero VAD and utterance
cutter, the dynamics), without a model. Scores, over all calls:

* talk-time error per speaker: ``|measured - truth| / truth`` of each channel's talk seconds;
* silences (no one speaking for >= 3 s): precision and recall, a detected silence matching a true
  one when they overlap by at least half the shorter;
* overtalk (>= 0.5 s) and interruptions (who came in): precision and recall, matched the same way;
* raised voice: with ``--raise-db``, the customer's utterances starting in the call's second third
  are that much louder: the raised-voice seconds measured per speaker against the raised speech's
  true seconds, and the ``raised_voice`` alerts opened.

    python -m bench.dynscore --calls 10
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.dynamics_cost import DEFAULT_MODEL, PayloadOnly
from bench.speechlike import SR, stereo
from models.bundle import load_bundle

Span = tuple[float, float]


def conversation(seed: int, *, seconds: float = 120.0) -> tuple[list[tuple[int, float, float]], float]:
    """Seeded turns ``(channel, start_s, seconds)``: 1-6 s utterances, gaps 0.5-2 s, 1 in 6 a
    3.5-8 s silence, 1 in 4 a cut-in 0.7-2.5 s before the other's end."""
    rng = np.random.default_rng(seed)
    utts, t, ch = [], 0.5, int(rng.integers(2))
    while t < seconds - 8:
        length = float(rng.uniform(1.0, 6.0))
        utts.append((ch, round(t, 2), round(length, 2)))
        r = rng.uniform()
        if r < 0.25 and length > 2.6:
            t = t + length - float(rng.uniform(0.7, 2.5))
        elif r < 0.42:
            t = t + length + float(rng.uniform(3.5, 8.0))
        else:
            t = t + length + float(rng.uniform(0.5, 2.0))
        ch = 1 - ch
    return utts, seconds


def truth_of(utts: list[tuple[int, float, float]], seconds: float) -> dict[str, Any]:
    """The truth from the utterances themselves (tracker run on the exact spans)."""
    from producer.dynamics import Dynamics

    d = Dynamics(channels=["agent", "customer"], lag_s=0.0)
    for c, a, sec in sorted(utts, key=lambda u: u[1]):
        d.speech(c, start_s=a, end_s=a + sec)
    return _collect(d, seconds)


def _collect(d: Any, seconds: float) -> dict[str, Any]:
    events = d.finish(duration_s=seconds)
    out = d.episodes_summary()
    out["interruptions"] = [(e["start_s"], e["end_s"], e["by"]) for e in events if e.get("interruption")]
    return out


def measured(utts: list[tuple[int, float, float]], seconds: float, *, spec: Any, seed: int,
             levels: tuple[float, float], raised: frozenset[int] = frozenset(), raise_db: float = 10.0
             ) -> dict[str, Any]:
    import producer.session as session_mod
    from bench.speechlike import vowels

    y = stereo(seconds, [], floor_seed=seed)
    for k, (c, a, sec) in enumerate(utts):
        v = vowels(sec, seed=seed * 1000 + k, level_dbfs=levels[c] + (raise_db if k in raised else 0.0))
        i = int(round(a * SR))
        y[c, i : i + len(v)] += v[: y.shape[1] - i]
    s = session_mod.CallSession(spec=spec, backend=PayloadOnly(spec=spec, stream_id="score"),
                                names=["agent", "customer"], in_rate=SR, batch=1, connection=None, call_id="score",
                                source="file")
    events: list[dict[str, Any]] = []
    s.calls.publish = lambda evs: events.extend(evs) or []  # type: ignore[method-assign,func-returns-value]
    for a in range(0, y.shape[1], SR // 10):
        s.push(y[:, a : a + SR // 10])
    s.close()
    out = s.dynamics.episodes_summary()
    out["interruptions"] = [(e["start_s"], e["end_s"], e["by"]) for e in events if e.get("interruption")]
    out["raised_alerts"] = [e["channel"] for e in events if e["kind"] == "alert_opened" and e["rule"] == "raised_voice"]
    return out


def _overlap(a: Span, b: Span) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def match(found: list[Any], true: list[Any], *, same: Any = None) -> tuple[int, int, int]:
    """(true positives, found, true): a found span matches an unmatched true one overlapping it by
    at least half the shorter (and ``same(found, true)``)."""
    used: set[int] = set()
    tp = 0
    for f in found:
        for i, t in enumerate(true):
            if i in used or (same is not None and not same(f, t)):
                continue
            if _overlap((f[0], f[1]), (t[0], t[1])) >= 0.5 * min(f[1] - f[0], t[1] - t[0]):
                used.add(i)
                tp += 1
                break
    return tp, len(found), len(true)


@click.command()
@click.option("--calls", default=10, show_default=True)
@click.option("--seconds", default=120.0, show_default=True)
@click.option("--levels", default=None, help="AGENT,CUSTOMER dBFS for every call (default: per call, "
              "-20 to -32 and -26 to -38)")
@click.option("--raise-db", default=0.0, show_default=True, help="raise the customer's voice in the middle third")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_MODEL,
              show_default=True)
def main(calls: int, seconds: float, levels: str | None, raise_db: float, model_dir: Path) -> None:
    spec = load_bundle(model_dir).spec
    errors: dict[str, list[float]] = {"agent": [], "customer": []}
    counts = {k: np.zeros(3, dtype=int) for k in ("silence", "overtalk", "interruption")}
    raised_true, raised_got, raised_other, alerts = 0.0, 0.0, 0.0, []
    for seed in range(calls):
        utts, secs = conversation(seed, seconds=seconds)
        lv = (tuple(float(x) for x in levels.split(",")) if levels else
              (-20.0 - 6 * (seed % 3), -26.0 - 4 * (seed % 4)))
        up = frozenset(k for k, (c, a, _) in enumerate(utts) if raise_db and c == 1 and secs / 3 <= a < 2 * secs / 3)
        true = truth_of(utts, secs)
        got = measured(utts, secs, spec=spec, seed=seed, levels=(lv[0], lv[1]), raised=up, raise_db=raise_db)
        raised_true += sum(utts[k][2] for k in up)
        raised_got += got["channels"]["customer"]["raised_s"]
        raised_other += got["channels"]["agent"]["raised_s"]
        alerts += got["raised_alerts"]
        for name in errors:
            t = true["channels"][name]["talk_s"]
            errors[name].append(abs(got["channels"][name]["talk_s"] - t) / t)
        counts["silence"] += match(got["silences"], true["silences"])
        counts["overtalk"] += match(got["overtalks"], true["overtalks"])
        counts["interruption"] += match(got["interruptions"], true["interruptions"], same=lambda f, t: f[2] == t[2])
    click.echo(f"{calls} synthetic call(s) of {seconds:g} s, levels {levels or 'per call'} dBFS, "
               f"model {model_dir.name} (Silero VAD)")
    for name, errs in errors.items():
        click.echo(f"talk-time error {name}: median {100 * np.median(errs):.1f} %, max {100 * max(errs):.1f} %")
    for kind, (tp, nf, nt) in counts.items():
        p, r = (tp / nf if nf else 1.0), (tp / nt if nt else 1.0)
        click.echo(f"{kind}: precision {p:.3f} ({tp}/{nf}), recall {r:.3f} ({tp}/{nt})")
    if raise_db:
        click.echo(f"raised voice (+{raise_db:g} dB): customer {raised_got:.1f} s measured of {raised_true:.1f} s "
                   f"raised; agent (never raised) {raised_other:.1f} s; raised_voice alerts: "
                   f"{alerts.count('customer')} customer, {alerts.count('agent')} agent, in {calls} call(s)")


if __name__ == "__main__":
    main()
