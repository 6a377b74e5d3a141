"""The command line of ``python -m bench.calls``: ``make`` (the simulator, bench/callsim.py), ``score``
(bench/callscore.py) and ``dynscore`` (bench/calldyn.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.callsignals import CODECS, SPEECH_DBFS
from bench.callsim import CallOptions, build_call, choose_speakers, load_items, split_speakers, write_call


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not MIN,MAX") from None
    return lo, hi


def cli() -> Any:
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
    @click.option("--overlap-p", type=float, default=0.0, show_default=True,
                  help="P(the other side cuts in before the end of the current utterance)")
    @click.option("--overlap-s", default="0.7,2.0", show_default=True, help="cut-in MIN,MAX s before the end")
    @click.option("--yield-p", type=float, default=0.0, show_default=True,
                  help="P(the interrupted one stops early, --yield-after-s after the cut-in)")
    @click.option("--yield-after-s", default="0.6,0.9", show_default=True)
    @click.option("--silence-p", type=float, default=0.0, show_default=True, help="P(a gap is dead air)")
    @click.option("--silence-s", default="3,8", show_default=True, help="dead air MIN,MAX seconds")
    @click.option("--raise-db", type=float, default=0.0, show_default=True,
                  help="raised voice: --raise-role louder by this much for a run of --raise-share of the utterances")
    @click.option("--raise-role", type=click.Choice(["agent", "customer"]), default="customer", show_default=True)
    @click.option("--raise-share", type=float, default=1 / 3, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    def make(data_root: Path | None, data: tuple[str, ...], out: Path, model_dir: Path, speakers: str | None,
             utterances: int, gap: str, mono: bool, agent_db: float, customer_db: float, jitter_db: float,
             keep_levels: bool, noise: str | None,
             snr: float, babble_snr: float | None, babble_on: str, bleed_db: float | None, bleed_delay_ms: float,
             codec: str | None,
             dtmf: int, hold_s: float, neutral_share: float | None, overlap_p: float, overlap_s: str,
             yield_p: float, yield_after_s: str, silence_p: float, silence_s: str, raise_db: float,
             raise_role: str, raise_share: float, seed: int) -> None:
        """Build one call from corpus clips: OUT/call.wav and OUT/call.json (ground truth)."""
        try:
            lo, hi = _pair(gap)
            dyn = {"overlap_p": overlap_p, "overlap_s": _pair(overlap_s), "yield_p": yield_p,
                   "yield_after_s": _pair(yield_after_s), "silence_p": silence_p, "silence_s": _pair(silence_s),
                   "raise_db": raise_db, "raise_role": raise_role, "raise_share": raise_share}
            opts = CallOptions(utterances=utterances, gap_s=(lo, hi), stereo=not mono,
                               levels={"agent": agent_db, "customer": customer_db}, level_jitter_db=jitter_db,
                               speech_dbfs=None if keep_levels else SPEECH_DBFS,
                               noise=noise, noise_snr_db=snr,
                               babble_snr_db=babble_snr, babble_on=tuple(babble_on.split(",")), bleed_db=bleed_db,
                               bleed_delay_ms=bleed_delay_ms,
                               codec=codec, dtmf=dtmf, hold_s=hold_s, neutral_share=neutral_share, seed=seed,
                               **dyn)
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

    @main.command()
    @click.argument("calls", nargs=-1, type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
    @click.option("--model", "model_dir", type=click.Path(path_type=Path, file_okay=False),
                  default=Path("models/default"), show_default=True, help="bundle whose Silero VAD the session runs")
    @click.option("--opt-in", is_flag=True, help="the opt-in VAD settings of docs/vad.md: level gain 20 dB, gate "
                  "share 0.3, speech hold 0.3 s, bleed share 0.5 (the options below override them)")
    @click.option("--level-gain-db", type=float, default=None)
    @click.option("--gate-share", type=float, default=None)
    @click.option("--speech-hold-s", type=float, default=None)
    @click.option("--bleed-share", type=float, default=None)
    @click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="write figures here")
    def dynscore(calls: tuple[Path, ...], model_dir: Path, opt_in: bool, level_gain_db: float | None,
                 gate_share: float | None, speech_hold_s: float | None, bleed_share: float | None,
                 json_out: Path | None) -> None:
        """Score the call session's conversation dynamics on CALLS (make folders) against their truth."""
        from bench.calldyn import OPT_IN, call_line, score_calls, with_vad
        from models.bundle import load_bundle

        changes: dict[str, Any] = dict(OPT_IN) if opt_in else {}
        changes.update({k: v for k, v in (("level_gain_db", level_gain_db), ("gate_share", gate_share),
                                          ("speech_hold_s", speech_hold_s), ("bleed_share", bleed_share))
                        if v is not None})
        try:
            spec = with_vad(load_bundle(model_dir).spec, changes)
            tally, per_call = score_calls(calls, spec)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        for s in per_call:
            click.echo(call_line(s))
        click.echo(f"{len(calls)} call(s), model {model_dir.name}, VAD "
                   f"{json.dumps(changes) if changes else '(the bundle)'}")
        for line in tally.lines():
            click.echo(line)
        if json_out is not None:
            json_out.write_text(json.dumps({"vad": changes, "figures": tally.figures(), "calls": per_call},
                                           indent=1) + "\n", encoding="utf-8")

    return main


if __name__ == "__main__":
    cli()()
