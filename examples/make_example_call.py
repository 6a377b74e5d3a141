"""Build examples/call.wav: a ~30 s stereo 8 kHz call made only of CREMA-D clips.

Channel 0 is the agent (CREMA-D actor 1014), channel 1 the customer (actor 1008). They take
turns with short pauses; the customer starts angry, turns disgusted, and ends neutral; there is
silence at both ends and between turns. Run from the repository root::

    python examples/make_example_call.py [--cremad ../shared/data/cremad/AudioWAV] [--out examples/call.wav]

CREMA-D: Cao et al. 2014, released under ODbL 1.0 / DbCL 1.0 (see examples/README.md).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import soundfile as sf

from models.audio import decode, to_mono

RATE = 8000
#: (channel, pause before the turn in s, clips spoken in the turn). 0 = agent, 1 = customer.
SCRIPT: list[tuple[int, float, list[str]]] = [
    (0, 1.0, ["1014_TIE_NEU_XX", "1014_IOM_HAP_XX"]),
    (1, 0.6, ["1008_IEO_ANG_HI", "1008_TSI_ANG_XX", "1008_IWW_ANG_XX"]),
    (0, 0.8, ["1014_ITS_NEU_XX", "1014_DFA_NEU_XX"]),
    (1, 0.5, ["1008_DFA_DIS_XX", "1008_ITH_ANG_XX"]),
    (0, 1.2, ["1014_MTI_HAP_XX"]),
    (1, 0.7, ["1008_IOM_NEU_XX", "1008_ITS_NEU_XX"]),
]
TRAILING_SILENCE_S = 1.5
#: Gap between two clips within one turn (seconds).
CLIP_GAP_S = 0.15
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "cremad" / "AudioWAV"


def load_clip(folder: Path, name: str) -> np.ndarray:
    matches = sorted(folder.glob(name + ".*"))
    if not matches:
        raise click.ClickException(f"CREMA-D clip {name} not found in {folder}")
    y, _ = decode(matches[0], sr=RATE)
    return to_mono(y)


@click.command()
@click.option("--cremad", type=click.Path(file_okay=False, path_type=Path), default=CORPUS, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(__file__).resolve().parent / "call.wav", show_default=True)
def main(cremad: Path, out: Path) -> None:
    tracks: list[list[np.ndarray]] = [[], []]
    t = 0
    for channel, pause_s, clips in SCRIPT:
        t += round(pause_s * RATE)
        for i, name in enumerate(clips):
            y = load_clip(cremad, name)
            tracks[channel].append(np.pad(y, (t, 0)))
            t += len(y) + (round(CLIP_GAP_S * RATE) if i < len(clips) - 1 else 0)
            click.echo(f"{name}: channel {channel}")
    n = t + round(TRAILING_SILENCE_S * RATE)
    call = np.zeros((n, 2), dtype=np.float32)
    for channel, parts in enumerate(tracks):
        for part in parts:
            call[: len(part), channel] += part
    peak = float(np.abs(call).max())
    if peak > 0.99:
        call *= 0.99 / peak
    sf.write(out, call, RATE, subtype="PCM_16")
    click.echo(f"wrote {out}: {n / RATE:.1f} s, 2 channels, {RATE} Hz, 16-bit PCM")


if __name__ == "__main__":
    main()
