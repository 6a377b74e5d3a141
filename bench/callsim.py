"""Simulated test calls with ground truth (the simulator behind ``python -m bench.calls make``, docs/vad.md).

A call alternates utterances (labelled corpus clips, leading/trailing silence trimmed) of two
speakers with gaps of ``gap_s``; stereo puts the agent on channel 0 and the customer on channel 1,
mono sums them. Options add what real lines do: a quieter channel, white/pink line noise, office
babble built from *other* speakers' clips, bleed between channels, a codec (mu-law, GSM 06.10,
low-bitrate Opus), DTMF bursts and synthesised hold music (non-speech, for false alarms).

Levels: every clip is scaled to an active speech level of :data:`SPEECH_DBFS` (or kept as
recorded: ``speech_dbfs=None``, ``--keep-levels``); ``levels`` then
shift a channel (its speech and tones); noise and babble SNRs are relative to
:data:`SPEECH_DBFS` (the nominal level), not to a quieted channel. Ground truth (``call.json``):
per utterance ``channel``, ``role``, ``start_s``, ``end_s`` (the clip's speech extent,
:func:`speech_extent`), ``label``, ``speaker``, ``source``; and per
DTMF/hold event ``kind``, ``channel``, ``start_s``, ``end_s``. Everything is seeded.

Conversation dynamics (off by default; with them off a seed gives the same call as before they
existed): ``overlap_p``, the other side cuts in ``overlap_s`` before the current utterance's end
(``cut_in`` in its record), and with ``yield_p`` the interrupted one stops ``yield_after_s`` after
the cut-in (its clip cut short, ``stopped_early``; ``end_s`` is where it stops); ``silence_p``, a gap
between utterances is ``silence_s`` of dead air; ``raise_db``, the ``raise_role``'s utterances in a
run of ``raise_share`` of the call's utterances (after its first quarter) are that much louder
(``raised_db`` in their records, and ``raised``: role, dB, first start, last end, speech seconds).
They draw from their own seeded stream (:data:`DYNAMICS_STREAM`): turning them on keeps the clips,
labels and order. ``bench/calldyn.py`` scores the call session's dynamics against this truth.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.callsignals import (
    CODECS,
    DTMF,
    SPEECH_DBFS,
    SR,
    apply_codec,
    babble,
    db_gain,
    dtmf_burst,
    hold_music,
    load_clip,
    noise,
)
from training.corpora import CANONICAL_LABELS, Item, load_corpora, parse_data_args

ROLES = ("agent", "customer")
#: Clips of other speakers decoded for a call's babble.
BABBLE_CLIPS = 40
#: The dynamics options (overlaps, dead air, raised voice) draw from ``default_rng([seed, this])``, so
#: turning them on keeps the call's clips, labels and order; off, they draw nothing.
DYNAMICS_STREAM = 27
DYNAMICS_OPTIONS = ("overlap_p", "overlap_s", "yield_p", "yield_after_s", "silence_p", "silence_s", "raise_db",
                    "raise_role", "raise_share")
#: A cut-in starts at least this far into the utterance it interrupts, and overlaps it at least this long.
MIN_INTO_S = 0.3
MIN_OVERLAP_S = 0.5


@dataclass(frozen=True)
class CallOptions:
    """What one simulated call holds. Levels/SNRs in dB; ``None`` switches an effect off."""

    utterances: int = 40
    gap_s: tuple[float, float] = (0.3, 0.9)
    stereo: bool = True
    levels: dict[str, float] = field(default_factory=lambda: {"agent": 0.0, "customer": 0.0})
    level_jitter_db: float = 0.0  # each utterance's level varies uniformly by +- this much
    speech_dbfs: float | None = SPEECH_DBFS  # None: keep each clip's own corpus level
    noise: str | None = None  # "white" or "pink"
    noise_snr_db: float = 30.0
    babble_snr_db: float | None = None
    babble_on: tuple[str, ...] = ROLES
    babble_talkers: int = 6
    bleed_db: float | None = None
    bleed_delay_ms: float = 0.0  # the bleed arrives this much later than the other channel's audio
    codec: str | None = None
    dtmf: int = 0  # DTMF bursts (customer channel)
    hold_s: float = 0.0  # hold music (agent channel), one block in the middle of the call
    neutral_share: float | None = None  # None: labels uniform; else P(neutral) per utterance
    switch_p: float = 0.7  # probability that the other side speaks next
    lead_s: float = 0.5
    seed: int = 0
    # conversation dynamics (bench/calldyn.py), all off by default; drawn from their own seeded stream
    overlap_p: float = 0.0  # P(the other side comes in before the current utterance ends)
    overlap_s: tuple[float, float] = (0.7, 2.0)  # ... this long before its end
    yield_p: float = 0.0  # P(the interrupted one then stops early)
    yield_after_s: tuple[float, float] = (0.6, 0.9)  # ... this long after the cut-in
    silence_p: float = 0.0  # P(a gap is dead air)
    silence_s: tuple[float, float] = (3.0, 8.0)  # ... of this length
    raise_db: float = 0.0  # raised voice: a run of the call's utterances that one side speaks louder
    raise_role: str = "customer"
    raise_share: float = 1 / 3  # ... the run's share of the call's utterances

    @property
    def dynamics(self) -> bool:
        return bool(self.overlap_p or self.silence_p or self.raise_db)

    def __post_init__(self) -> None:
        if self.utterances < 1:
            raise ValueError(f"utterances={self.utterances} must be >= 1")
        if not 0 <= self.gap_s[0] <= self.gap_s[1]:
            raise ValueError(f"gap_s={self.gap_s} must be 0 <= min <= max")
        if self.noise not in (None, "white", "pink"):
            raise ValueError(f"noise={self.noise!r} must be white, pink or None")
        if self.codec not in (None, *CODECS):
            raise ValueError(f"codec={self.codec!r} must be one of {', '.join(CODECS)} or None")
        if self.neutral_share is not None and not 0 <= self.neutral_share <= 1:
            raise ValueError(f"neutral_share={self.neutral_share} must be in [0, 1]")
        if not 0 <= self.bleed_delay_ms <= 500:
            raise ValueError(f"bleed_delay_ms={self.bleed_delay_ms} must be in [0, 500]")
        if set(self.levels) - set(ROLES) or set(self.babble_on) - set(ROLES):
            raise ValueError(f"levels/babble_on name roles other than {ROLES}")
        for name in ("overlap_p", "yield_p", "silence_p", "raise_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        for name in ("overlap_s", "yield_after_s", "silence_s"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name}={getattr(self, name)} must be 0 < min <= max")
        if self.raise_role not in ROLES:
            raise ValueError(f"raise_role={self.raise_role!r} must be one of {ROLES}")


# --- clips and speakers ----------------------------------------------------------------------

def load_items(data: list[str], data_root: Path | None) -> list[Item]:
    """Every labelled clip of the given corpus folders (``training.corpora``), canonical labels."""
    return load_corpora(parse_data_args(data, data_root), CANONICAL_LABELS).items


def split_speakers(model_dir: Path) -> dict[str, list[str]]:
    """The speaker split recorded in a bundle's ``spec.json`` (``training.split``)."""
    from training.split import read_split

    split = read_split(model_dir)
    return {part: list(split.get(part) or []) for part in ("train", "val", "test")}  # type: ignore[call-overload]


def by_speaker(items: list[Item]) -> dict[str, list[Item]]:
    out: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        out[it.speaker].append(it)
    return dict(out)


# --- the call --------------------------------------------------------------------------------

def _pick(pool: list[Item], opts: CallOptions, used: set[str], rng: np.random.Generator) -> Item:
    labels = sorted({it.label for it in pool})
    if opts.neutral_share is not None and "neutral" in labels and (
            rng.random() < opts.neutral_share or len(labels) == 1):
        label = "neutral"
    else:
        others = [lab for lab in labels if opts.neutral_share is None or lab != "neutral"] or labels
        label = others[int(rng.integers(len(others)))]
    cands = [it for it in pool if it.label == label and it.path not in used] or [
        it for it in pool if it.label == label]
    it = cands[int(rng.integers(len(cands)))]
    used.add(it.path)
    return it


def build_call(speakers: dict[str, list[Item]], opts: CallOptions, *, babble_items: Sequence[Item] = ()
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """Build one call. ``speakers``: role -> that speaker's clips (``agent``, ``customer``);
    ``babble_items``: clips of other speakers for babble (up to :data:`BABBLE_CLIPS` are used).

    Returns ``(audio (channels, n) float32 at SR, truth dict)``; see the module docstring.
    """
    if set(speakers) != set(ROLES) or not all(speakers.values()):
        raise ValueError(f"speakers must give clips for {ROLES}")
    rng = np.random.default_rng(opts.seed)
    used: set[str] = set()
    placed: list[tuple[str, int, np.ndarray, dict[str, Any]]] = []  # role, start sample, signal, record
    pos = round(opts.lead_s * SR)
    role = ROLES[int(rng.integers(2))]
    dtmf_at = set(rng.choice(np.arange(opts.utterances), size=min(opts.dtmf, opts.utterances),
                             replace=False).tolist()) if opts.dtmf else set()
    hold_at = opts.utterances // 2 if opts.hold_s > 0 else -1

    def gap() -> int:
        return round(rng.uniform(*opts.gap_s) * SR)

    drng = np.random.default_rng([opts.seed, DYNAMICS_STREAM])  # the dynamics options' own draws
    raised = raised_run(opts, drng)
    cut_in: int | None = None  # where the next utterance starts when it cuts in
    end = pos  # the end of the latest-ending utterance so far
    last_end: dict[str, int] = {}  # per role
    for i in range(opts.utterances):
        if i == hold_at:
            y = hold_music(opts.hold_s, rng=rng)
            placed.append(("agent", pos, y, {"kind": "hold"}))
            pos += len(y) + gap()
        if i in dtmf_at:
            digits = "".join(rng.choice(list(DTMF), size=int(rng.integers(4, 11))))
            y = dtmf_burst(digits)
            placed.append(("customer", pos, y, {"kind": "dtmf", "digits": digits}))
            pos += len(y) + gap()
        clip: np.ndarray | None = None
        while clip is None:  # skip the rare clip that is silence
            item = _pick(speakers[role], opts, used, rng)
            clip = load_clip(item.path, level_dbfs=opts.speech_dbfs)
        start = pos if cut_in is None else cut_in
        rec: dict[str, Any] = {"kind": "utterance", "label": item.label, "speaker": item.speaker,
                               "source": str(Path(item.path).resolve())}
        if cut_in is not None:
            rec["cut_in"] = True
        if i in raised and role == opts.raise_role:
            rec["raised_db"] = opts.raise_db
        placed.append((role, start, clip, rec))
        g = gap()
        switch = rng.random() < opts.switch_p
        cut_in = None
        if switch and opts.overlap_p and i + 1 < opts.utterances and i + 1 not in dtmf_at and i + 1 != hold_at:
            cut_in, stop = overlap(len(clip), opts, drng)
            other = ROLES[1 - ROLES.index(role)]
            if cut_in is not None and start + cut_in < last_end.get(other, 0):  # never over its own speech
                cut_in = None
            if cut_in is not None:
                cut_in += start
                if stop is not None:  # the interrupted one stops early
                    placed[-1] = (role, start, fade_out(clip[: cut_in - start + stop]), {**rec, "stopped_early": True})
        if cut_in is None and opts.silence_p and i + 1 < opts.utterances and drng.random() < opts.silence_p:
            g = round(drng.uniform(*opts.silence_s) * SR)
        end = max(end, start + len(placed[-1][2]))
        last_end[role] = start + len(placed[-1][2])
        pos = end + g
        if switch:
            role = ROLES[1 - ROLES.index(role)]
    n = pos + round(opts.lead_s * SR)
    clean = {r: np.zeros(n, dtype=np.float32) for r in ROLES}
    for r, start, y, rec in placed:
        jitter = rng.uniform(-opts.level_jitter_db, opts.level_jitter_db) if rec["kind"] == "utterance" else 0.0
        level = opts.levels.get(r, 0.0) + jitter + rec.get("raised_db", 0.0)
        clean[r][start : start + len(y)] += y * db_gain(level)
    chans = {r: clean[r].copy() for r in ROLES}
    if opts.bleed_db is not None:
        for r in ROLES:
            lag = round(opts.bleed_delay_ms * SR / 1000)
            other = clean[ROLES[1 - ROLES.index(r)]]
            chans[r][lag:] += other[: n - lag] * db_gain(opts.bleed_db)
    if opts.babble_snr_db is not None:
        pick = rng.choice(len(babble_items), size=min(BABBLE_CLIPS, len(babble_items)), replace=False)
        pool = [c for c in (load_clip(babble_items[int(i)].path) for i in pick) if c is not None]
        for r in opts.babble_on:
            chans[r] += babble(pool, n, talkers=opts.babble_talkers, level_dbfs=SPEECH_DBFS - opts.babble_snr_db,
                               rng=rng)
    if opts.noise is not None:
        for r in ROLES:
            chans[r] += noise(n, kind=opts.noise, level_dbfs=SPEECH_DBFS - opts.noise_snr_db, rng=rng)
    names = list(ROLES) if opts.stereo else ["mono"]
    mix = [chans[r] for r in ROLES] if opts.stereo else [chans["agent"] + chans["customer"]]
    if opts.codec is not None:
        mix = [apply_codec(m, opts.codec) for m in mix]
    audio = np.clip(np.stack(mix), -1.0, 1.0).astype(np.float32)
    utts, events = [], []
    for r, start, y, rec in placed:
        base = {"channel": r if opts.stereo else "mono", "role": r, "start_s": round(start / SR, 4),
                "end_s": round((start + len(y)) / SR, 4)}
        if rec["kind"] == "utterance":
            utts.append({**base, **{k: v for k, v in rec.items() if k != "kind"}})
        else:
            events.append({"kind": rec["kind"], **base, **{k: v for k, v in rec.items() if k != "kind"}})
    options = asdict(opts)
    if not opts.dynamics:  # call.json as before these options existed
        options = {k: v for k, v in options.items() if k not in DYNAMICS_OPTIONS}
    truth = {"format": 1, "sample_rate": SR, "duration_s": round(n / SR, 4), "channels": names,
             "speakers": {r: speakers[r][0].speaker for r in ROLES}, "options": options,
             "utterances": utts, "events": events}
    if opts.raise_db:
        up = [u for u in utts if "raised_db" in u]
        truth["raised"] = {"role": opts.raise_role, "db": opts.raise_db,
                           "start_s": min((u["start_s"] for u in up), default=None),
                           "end_s": max((u["end_s"] for u in up), default=None),
                           "speech_s": round(sum(u["end_s"] - u["start_s"] for u in up), 4)}
    return audio, truth


def raised_run(opts: CallOptions, rng: np.random.Generator) -> range:
    """The utterance indices of the raised stretch: a run of ``raise_share`` of them at a random place
    after the call's first quarter (the speaker has a baseline to be raised above by then)."""
    if not opts.raise_db:
        return range(0)
    n = max(1, round(opts.raise_share * opts.utterances))
    lo = min(opts.utterances // 4, opts.utterances - n)
    first = int(rng.integers(lo, opts.utterances - n + 1))
    return range(first, first + n)


def overlap(length: int, opts: CallOptions, rng: np.random.Generator) -> tuple[int | None, int | None]:
    """Whether the next utterance cuts into one of ``length`` samples: ``(its onset in samples from
    this one's start, or None; where this one then stops, in samples after that onset, or None)``.
    The cut-in comes ``overlap_s`` before the end, at least :data:`MIN_INTO_S` after the start; an
    utterance too short for :data:`MIN_OVERLAP_S` of overlap is not cut into."""
    if rng.random() >= opts.overlap_p:
        return None, None
    ov = round(rng.uniform(*opts.overlap_s) * SR)
    stops = rng.random() < opts.yield_p
    after = round(rng.uniform(*opts.yield_after_s) * SR)
    onset = max(length - ov, round(MIN_INTO_S * SR))
    if length - onset < round(MIN_OVERLAP_S * SR):
        return None, None
    return onset, (after if stops and onset + after < length else None)


def fade_out(y: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    """``y`` with a linear fade over its last ``seconds`` (an utterance cut short, without a click)."""
    k = min(len(y), round(seconds * SR))
    out = y.copy()
    out[len(y) - k :] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
    return out


def choose_speakers(items: list[Item], allowed: list[str], rng: np.random.Generator, *, min_clips: int = 12
                    ) -> dict[str, list[Item]]:
    """Two distinct speakers from ``allowed`` with at least ``min_clips`` clips: agent, customer."""
    groups = by_speaker(items)
    cands = sorted(s for s in allowed if len(groups.get(s, [])) >= min_clips)
    if len(cands) < 2:
        raise ValueError(f"need two speakers with >= {min_clips} clips among {len(allowed)} allowed; found "
                         f"{len(cands)}")
    a, c = rng.choice(len(cands), size=2, replace=False)
    return {"agent": groups[cands[int(a)]], "customer": groups[cands[int(c)]]}


def write_call(out: Path, audio: np.ndarray, truth: dict[str, Any]) -> tuple[Path, Path]:
    """``out/call.wav`` (16-bit PCM) and ``out/call.json``."""
    out.mkdir(parents=True, exist_ok=True)
    wav, js = out / "call.wav", out / "call.json"
    sf.write(wav, audio.T, SR, subtype="PCM_16")
    js.write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return wav, js
