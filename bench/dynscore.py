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

The session run (:func:`session_dynamics`), the truth (:func:`truth_of`), the matching and the
tally (:class:`Tally`) are shared with ``python -m bench.calls dynscore`` (bench/calldyn.py), which
scores simulated corpus calls the same way.
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
NAMES = ("agent", "customer")


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
    from bench.speechlike import vowels

    y = stereo(seconds, [], floor_seed=seed)
    for k, (c, a, sec) in enumerate(utts):
        v = vowels(sec, seed=seed * 1000 + k, level_dbfs=levels[c] + (raise_db if k in raised else 0.0))
        i = int(round(a * SR))
        y[c, i : i + len(v)] += v[: y.shape[1] - i]
    return session_dynamics(y, spec=spec, rate=SR)


def session_dynamics(y: np.ndarray, *, spec: Any, rate: int, names: tuple[str, ...] = NAMES) -> dict[str, Any]:
    """Audio ``(channels, n)`` through the real call session in 0.1 s blocks, as ``ser-produce`` feeds
    it (no model: :class:`bench.dynamics_cost.PayloadOnly`): the dynamics' episodes, the
    interruptions ``(start_s, end_s, by)`` and the channels of the ``raised_voice`` alerts opened."""
    import producer.session as session_mod

    s = session_mod.CallSession(spec=spec, backend=PayloadOnly(spec=spec, stream_id="score"),
                                names=list(names), in_rate=rate, batch=1, connection=None, call_id="score",
                                source="file")
    events: list[dict[str, Any]] = []
    s.calls.publish = lambda evs: events.extend(evs) or []  # type: ignore[method-assign,func-returns-value]
    block = rate // 10
    for a in range(0, y.shape[1], block):
        s.push(y[:, a : a + block])
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


KINDS = {"silence": "silences", "overtalk": "overtalks", "interruption": "interruptions"}


def _by(f: Any, t: Any) -> bool:
    return bool(f[2] == t[2])


class Tally:
    """Scores summed over calls (the module docstring's): :meth:`add` one call, :meth:`lines` to print."""

    def __init__(self, names: tuple[str, ...] = NAMES) -> None:
        self.names = names
        self.errors: dict[str, list[float]] = {n: [] for n in names}  # signed, per call
        self.counts = {k: np.zeros(3, dtype=int) for k in KINDS}
        self.raised_true = dict.fromkeys(names, 0.0)  # raised speech seconds (truth) per side
        self.raised_got = dict.fromkeys(names, 0.0)  # measured raised seconds where that side was raised
        self.raised_calls = dict.fromkeys(names, 0)
        self.unraised_got, self.unraised_sides = 0.0, 0  # measured raised seconds on sides never raised
        self.alerts_raised, self.alerts_other = 0, 0  # calls whose raised / never-raised side got the alert
        self.calls = 0

    def add(self, true: dict[str, Any], got: dict[str, Any], *, raised: str | None = None,
            raised_s: float = 0.0) -> dict[str, Any]:
        """One call: ``true`` from :func:`truth_of`, ``got`` from :func:`session_dynamics`; ``raised``
        names the side whose speech was raised (``raised_s`` seconds of it). Returns the call's scores."""
        self.calls += 1
        out: dict[str, Any] = {"talk_error": {}}
        for name in self.names:
            t = true["channels"][name]["talk_s"]
            err = (got["channels"][name]["talk_s"] - t) / t if t else 0.0
            self.errors[name].append(err)
            out["talk_error"][name] = round(err, 4)
        for kind, key in KINDS.items():
            m = match(got[key], true[key], same=_by if kind == "interruption" else None)
            self.counts[kind] += m
            out[kind] = list(m)
        for name in self.names:
            alerted = name in got["raised_alerts"]
            if name == raised:
                self.raised_true[name] += raised_s
                self.raised_got[name] += got["channels"][name]["raised_s"]
                self.raised_calls[name] += 1
                self.alerts_raised += alerted
            else:
                self.unraised_got += got["channels"][name]["raised_s"]
                self.unraised_sides += 1
                self.alerts_other += alerted
        out["raised_s"] = {n: got["channels"][n]["raised_s"] for n in self.names}
        out["raised_alerts"] = got["raised_alerts"]
        return out

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {"calls": self.calls, "talk_error": {
            n: {"median_abs": float(np.median(np.abs(e))), "max_abs": float(np.max(np.abs(e))),
                "median": float(np.median(e))} for n, e in self.errors.items() if e}}
        for kind, (tp, nf, nt) in self.counts.items():
            out[kind] = {"tp": int(tp), "found": int(nf), "true": int(nt), "precision": tp / nf if nf else 1.0,
                         "recall": tp / nt if nt else 1.0}
        return out

    def lines(self) -> list[str]:
        f = self.figures()
        out = [f"talk-time error {n}: median {100 * e['median_abs']:.1f} %, max {100 * e['max_abs']:.1f} % "
               f"(median signed {100 * e['median']:+.1f} %)" for n, e in f["talk_error"].items()]
        for kind in KINDS:
            k = f[kind]
            out.append(f"{kind}: precision {k['precision']:.3f} ({k['tp']}/{k['found']}), "
                       f"recall {k['recall']:.3f} ({k['tp']}/{k['true']})")
        sides = [n for n in self.names if self.raised_calls[n]]
        if sides:
            out.append("raised voice: " + "; ".join(
                f"{n} {self.raised_got[n]:.1f} s measured of {self.raised_true[n]:.1f} s raised" for n in sides)
                + f"; sides never raised {self.unraised_got:.1f} s in {self.unraised_sides}; raised_voice alerts: "
                f"{self.alerts_raised} of {sum(self.raised_calls.values())} raised sides, {self.alerts_other} of "
                f"{self.unraised_sides} others")
        return out


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
    tally = Tally()
    for seed in range(calls):
        utts, secs = conversation(seed, seconds=seconds)
        lv = (tuple(float(x) for x in levels.split(",")) if levels else
              (-20.0 - 6 * (seed % 3), -26.0 - 4 * (seed % 4)))
        up = frozenset(k for k, (c, a, _) in enumerate(utts) if raise_db and c == 1 and secs / 3 <= a < 2 * secs / 3)
        got = measured(utts, secs, spec=spec, seed=seed, levels=(lv[0], lv[1]), raised=up, raise_db=raise_db)
        tally.add(truth_of(utts, secs), got, raised="customer" if raise_db else None,
                  raised_s=sum(utts[k][2] for k in up))
    click.echo(f"{calls} synthetic call(s) of {seconds:g} s, levels {levels or 'per call'} dBFS"
               f"{f', customer raised +{raise_db:g} dB in the middle third' if raise_db else ''}, "
               f"model {model_dir.name} (Silero VAD)")
    for line in tally.lines():
        click.echo(line)

if __name__ == "__main__":
    main()
