"""Simulated test calls with ground truth: ``python -m bench.calls make|score`` (docs/vad.md).

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
        placed.append((role, pos, clip, {"kind": "utterance", "label": item.label, "speaker": item.speaker,
                                         "source": str(Path(item.path).resolve())}))
        pos += len(clip) + gap()
        if rng.random() < opts.switch_p:
            role = ROLES[1 - ROLES.index(role)]
    n = pos + round(opts.lead_s * SR)
    clean = {r: np.zeros(n, dtype=np.float32) for r in ROLES}
    for r, start, y, rec in placed:
        jitter = rng.uniform(-opts.level_jitter_db, opts.level_jitter_db) if rec["kind"] == "utterance" else 0.0
        clean[r][start : start + len(y)] += y * db_gain(opts.levels.get(r, 0.0) + jitter)
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
    truth = {"format": 1, "sample_rate": SR, "duration_s": round(n / SR, 4), "channels": names,
             "speakers": {r: speakers[r][0].speaker for r in ROLES}, "options": options,
             "utterances": utts, "events": events}
    return audio, truth


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


# --- CLI -------------------------------------------------------------------------------------

def _cli() -> Any:
    import click

    @click.group()
    def main() -> None:
        """Simulated test calls with ground truth, and scoring ser-produce output against them."""

    @main.command()
    @click.option("--data-root", type=click.Path(path_type=Path), default=None, help="folder of corpus folders")
    @click.option("--data", multiple=True, help="CORPUS=PATH (repeatable)")
    @click.option("--out", type=click.Path(path_type=Path), required=True, help="writes OUT/call.wav, OUT/call.json")
    @click.option("--model", "model_dir", type=click.Path(path_type=Path), default=Path("models/default"),
                  show_default=True, help="bundle whose recorded split gives the speakers (test) and babble (train)")
    @click.option("--speakers", default=None, help="comma list of speaker ids (corpus:id) instead of the split's test")
    @click.option("--utterances", type=int, default=40, show_default=True)
    @click.option("--gap", default="0.3,0.9", show_default=True, help="gap range MIN,MAX seconds")
    @click.option("--mono", is_flag=True, help="one channel: agent + customer summed")
    @click.option("--agent-db", type=float, default=0.0, show_default=True)
    @click.option("--customer-db", type=float, default=0.0, show_default=True)
    @click.option("--jitter-db", type=float, default=0.0, show_default=True, help="per-utterance level +- dB")
    @click.option("--keep-levels", is_flag=True, help="keep each clip's corpus level (no scaling to -26 dBFS)")
    @click.option("--noise", type=click.Choice(["white", "pink"]), default=None)
    @click.option("--snr", type=float, default=30.0, show_default=True, help="line noise dB below nominal speech")
    @click.option("--babble-snr", type=float, default=None, help="office babble dB below nominal speech (off)")
    @click.option("--babble-on", default="agent,customer", show_default=True)
    @click.option("--bleed-db", type=float, default=None, help="each channel gets the other at this gain (off)")
    @click.option("--bleed-delay-ms", type=float, default=0.0, show_default=True, help="delay of the bleed")
    @click.option("--codec", type=click.Choice(CODECS), default=None)
    @click.option("--dtmf", type=int, default=0, show_default=True, help="DTMF bursts on the customer channel")
    @click.option("--hold-s", type=float, default=0.0, show_default=True, help="hold music on the agent channel")
    @click.option("--neutral-share", type=float, default=None, help="P(neutral) per utterance (default uniform)")
    @click.option("--seed", type=int, default=0, show_default=True)
    def make(data_root: Path | None, data: tuple[str, ...], out: Path, model_dir: Path, speakers: str | None,
             utterances: int, gap: str, mono: bool, agent_db: float, customer_db: float, jitter_db: float,
             keep_levels: bool, noise: str | None,
             snr: float, babble_snr: float | None, babble_on: str, bleed_db: float | None, bleed_delay_ms: float,
             codec: str | None,
             dtmf: int, hold_s: float, neutral_share: float | None, seed: int) -> None:
        """Build one call from corpus clips: OUT/call.wav and OUT/call.json (ground truth)."""
        try:
            lo, hi = (float(x) for x in gap.split(","))
            opts = CallOptions(utterances=utterances, gap_s=(lo, hi), stereo=not mono,
                               levels={"agent": agent_db, "customer": customer_db}, level_jitter_db=jitter_db,
                               speech_dbfs=None if keep_levels else SPEECH_DBFS,
                               noise=noise, noise_snr_db=snr,
                               babble_snr_db=babble_snr, babble_on=tuple(babble_on.split(",")), bleed_db=bleed_db,
                               bleed_delay_ms=bleed_delay_ms,
                               codec=codec, dtmf=dtmf, hold_s=hold_s, neutral_share=neutral_share, seed=seed)
            items = load_items(list(data), data_root)
            split = split_speakers(model_dir) if model_dir.exists() else {"train": [], "test": []}
            allowed = speakers.split(",") if speakers else split["test"]
            chosen = choose_speakers(items, allowed, np.random.default_rng(seed))
            in_call = {v[0].speaker for v in chosen.values()}
            others = set(split["train"]) or ({it.speaker for it in items} - set(allowed))
            babble_items = [it for it in items if it.speaker in others and it.speaker not in in_call]
            audio, truth = build_call(chosen, opts, babble_items=babble_items)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        wav, js = write_call(out, audio, truth)
        click.echo(f"{wav}: {truth['duration_s']:.1f} s, {len(truth['channels'])} channel(s), "
                   f"{len(truth['utterances'])} utterances ({truth['speakers']['agent']} / "
                   f"{truth['speakers']['customer']}), {len(truth['events'])} events; truth {js}")

    @main.command()
    @click.option("--truth", type=click.Path(path_type=Path, exists=True), required=True)
    @click.option("--records", type=click.Path(path_type=Path, exists=True), required=True)
    @click.option("--channel-names", default=None, help="names the records use, in channel order")
    @click.option("--clips-model", type=click.Path(path_type=Path), default=None,
                  help="also classify the source clips whole with this bundle (predict_clip)")
    @click.option("--call", "call_wav", type=click.Path(path_type=Path, exists=True), default=None,
                  help="with --clips-model: also classify each utterance cut from this call.wav at its true times")
    @click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="write figures here")
    def score(truth: Path, records: Path, channel_names: str | None, clips_model: Path | None,
              call_wav: Path | None, json_out: Path | None) -> None:
        """Score ser-produce --format jsonl records against call.json."""
        from bench.callscore import clip_scores, load_records, summary_lines
        from bench.callscore import score as score_call

        try:
            t = json.loads(truth.read_text(encoding="utf-8"))
            s = score_call(t, load_records(records), channel_names=channel_names.split(",") if channel_names else None)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        clips = clip_scores(t, clips_model, call_wav=call_wav) if clips_model is not None else None
        for line in summary_lines(s, clips):
            click.echo(line)
        if json_out is not None:
            json_out.write_text(json.dumps({"call": s, "clips": clips}, indent=1) + "\n", encoding="utf-8")

    return main


if __name__ == "__main__":
    _cli()()
