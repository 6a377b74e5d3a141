"""The speaking rate (``rate_sps``, producer/loudness.py) measured against CREMA-D's known texts.

CREMA-D's actors read twelve fixed sentences; the sentence code is the second field of each file
name (``1001_DFA_ANG_XX``). Each clip goes through the real call session
(``producer.session.CallSession``, mono, no model, no Redis: resampling, the bundle's Silero VAD
and utterance cutter, the dynamics and their loudness tracker), exactly as ``ser-produce`` runs it,
and the channel's ``rate_sps`` is read from the dynamics' summary. The truth divides the text's
syllables by the **same** speech duration the estimator divides by: the seconds of the VAD's
speech (``speech_start``-``speech_end`` of each utterance segment, pre-roll and hangover excluded)
that the loudness tracker measured. The relative error of a clip is ``(measured - truth) / truth``;
the bench prints its median absolute value and its median (the bias), per emotion and overall.

    python -m bench.ratescore --data-root ../shared/data --clips 600 --seed 0
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench.dynamics_cost import DEFAULT_MODEL, PayloadOnly

#: Syllables of CREMA-D's twelve sentences, counted by hand (texts: the CREMA-D README,
#: github.com/CheyneyComputerScience/CREMA-D; dictionary syllabification, contractions one syllable).
SENTENCES: dict[str, tuple[str, int]] = {
    "IEO": ("It's eleven o'clock", 6),  # it's 1 + e-lev-en 3 + o'-clock 2
    "TIE": ("That is exactly what happened", 8),  # that 1 + is 1 + ex-act-ly 3 + what 1 + hap-pened 2
    "IOM": ("I'm on my way to the meeting", 8),  # I'm, on, my, way, to, the 6 + meet-ing 2
    "IWW": ("I wonder what this is about", 8),  # I 1 + won-der 2 + what, this, is 3 + a-bout 2
    "TAI": ("The airplane is almost full", 7),  # the 1 + air-plane 2 + is 1 + al-most 2 + full 1
    "MTI": ("Maybe tomorrow it will be cold", 9),  # may-be 2 + to-mor-row 3 + it, will, be, cold 4
    "IWL": ("I would like a new alarm clock", 8),  # I, would, like, a, new 5 + a-larm 2 + clock 1
    "ITH": ("I think I have a doctor's appointment", 10),  # I, think, I, have, a 5 + doc-tor's 2 + ap-point-ment 3
    "DFA": ("Don't forget a jacket", 6),  # don't 1 + for-get 2 + a 1 + jack-et 2
    "ITS": ("I think I've seen this before", 7),  # I, think, I've, seen, this 5 + be-fore 2
    "TSI": ("The surface is slick", 5),  # the 1 + sur-face 2 + is 1 + slick 1
    "WSI": ("We'll stop in a couple of minutes", 9),  # we'll, stop, in, a 4 + cou-ple 2 + of 1 + min-utes 2
}
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


@dataclass(frozen=True)
class Score:
    """One clip: the syllables its text holds, the speech seconds measured and the rate measured."""

    syllables: int
    speech_s: float
    rate_sps: float | None
    nuclei: int = 0

    @property
    def truth_sps(self) -> float | None:
        return self.syllables / self.speech_s if self.speech_s else None

    @property
    def rel_error(self) -> float | None:
        """``(measured - truth) / truth`` (None: no speech measured)."""
        truth = self.truth_sps
        return None if truth is None or self.rate_sps is None else (self.rate_sps - truth) / truth


def measure(y: np.ndarray, *, sr: int, spec: Any) -> tuple[float, float | None, int]:
    """Mono ``y`` (float32 at ``sr``) through the call session in 0.1 s blocks, as ``ser-produce``
    reads a file: (the speech seconds the loudness tracker measured, the channel's ``rate_sps``, the
    syllable nuclei it counted)."""
    import producer.session as session_mod

    s = session_mod.CallSession(spec=spec, backend=PayloadOnly(spec=spec, stream_id="rate"), names=["a"],
                                in_rate=sr, batch=1, connection=None, call_id="rate", source="file")
    s.calls.publish = lambda events: []  # type: ignore[method-assign]
    block = y.reshape(1, -1).astype(np.float32)
    for a in range(0, block.shape[1], sr // 10):
        s.push(block[:, a : a + sr // 10])
    s.close()
    loud = s.dynamics.loudness
    return loud.seconds[0], s.dynamics.summary()["channels"]["a"]["rate_sps"], loud.nuclei[0]


def score(y: np.ndarray, *, sr: int, syllables: int, spec: Any) -> Score:
    """One clip of ``syllables`` through the live path (:func:`measure`)."""
    speech_s, rate, nuclei = measure(y, sr=sr, spec=spec)
    return Score(syllables=syllables, speech_s=speech_s, rate_sps=rate, nuclei=nuclei)


def clips(data_root: Path, *, n: int, seed: int) -> list[Path]:
    """A seeded sample of ``n`` CREMA-D clips (all of them when ``n`` is 0 or more than there are)."""
    folder = data_root / "cremad" / "AudioWAV"
    files = sorted(p for p in folder.iterdir() if p.suffix in (".wav", ".flac", ".opus") and sentence(p) in SENTENCES)
    if not files:
        raise click.UsageError(f"no CREMA-D clips under {folder}")
    if 0 < n < len(files):
        idx = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
        files = [files[i] for i in sorted(idx)]
    return files


def sentence(path: Path) -> str:
    """The sentence code of a CREMA-D file name (``1001_DFA_ANG_XX`` -> ``DFA``; "" if none)."""
    parts = path.stem.split("_")
    return parts[1] if len(parts) == 4 else ""


def run(files: list[Path], *, spec: Any) -> Iterator[tuple[Path, Score]]:
    import soundfile as sf

    for path in files:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
        yield path, score(y.mean(axis=1), sr=sr, syllables=SENTENCES[sentence(path)][1], spec=spec)


def summarise(errors: list[float]) -> str:
    e = np.asarray(errors)
    return (f"median |error| {100 * np.median(np.abs(e)):5.1f} %, bias (median error) {100 * np.median(e):+6.1f} %, "
            f"mean error {100 * np.mean(e):+6.1f} %, within 15 %: {100 * np.mean(np.abs(e) <= 0.15):5.1f} %")


@click.command()
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="the shared corpora (its cremad/AudioWAV)")
@click.option("--clips", "n", default=0, show_default=True, help="clips to sample with --seed (0: all of them)")
@click.option("--seed", default=0, show_default=True)
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_MODEL,
              show_default=True)
def main(data_root: Path, n: int, seed: int, model_dir: Path) -> None:
    from models.bundle import load_bundle

    spec = load_bundle(model_dir).spec
    files = clips(data_root, n=n, seed=seed)
    by_emotion: dict[str, list[float]] = {e: [] for e in EMOTIONS}
    counted: dict[str, list[int]] = {k: [] for k in SENTENCES}
    truth, got, none = [], [], []
    for path, sc in run(files, spec=spec):
        err = sc.rel_error
        if err is None or sc.truth_sps is None or sc.rate_sps is None:
            none.append(path.stem)
            continue
        by_emotion.setdefault(path.stem.split("_")[2], []).append(err)
        counted[sentence(path)].append(sc.nuclei)
        truth.append(sc.truth_sps)
        got.append(sc.rate_sps)
    sample = f"a sample (seed {seed})" if n and len(files) == n else "all"
    click.echo(f"{len(files)} CREMA-D clip(s), {sample}; model {model_dir.name} (its VAD gives the speech "
               f"seconds); {len(none)} with no speech measured, left out{': ' if none else ''}{' '.join(none[:8])}"
               f"{' ...' if len(none) > 8 else ''}")
    for emo, errs in by_emotion.items():
        if errs:
            click.echo(f"{emo} ({len(errs):4d}): {summarise(errs)}")
    allerr = [e for errs in by_emotion.values() for e in errs]
    click.echo(f"all ({len(allerr):4d}): {summarise(allerr)}")
    click.echo(f"rate: truth median {np.median(truth):.2f} syllables/s, measured median {np.median(got):.2f}")
    click.echo("nuclei counted per sentence (mean / the text's syllables): " + ", ".join(
        f"{k} {np.mean(v):.1f}/{SENTENCES[k][1]}" for k, v in counted.items() if v))


if __name__ == "__main__":
    main()
