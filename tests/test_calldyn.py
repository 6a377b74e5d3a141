"""The call simulator's conversation dynamics (overlaps, cut-short utterances, dead air, raised voice)
and their scoring (``python -m bench.calls dynscore``): on a tiny generated corpus, and on the
shared corpora (``corpus``: skipped where they are absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_calls import call, corpus, groups, span  # noqa: F401  (fixtures)

from bench.calldyn import truth_spans
from bench.calls import cli
from bench.callsignals import SPEECH_DBFS, SR, active_level_db
from bench.callsim import MIN_INTO_S, MIN_OVERLAP_S
from bench.dynscore import truth_of

DYN = {"utterances": 16, "overlap_p": 0.6, "yield_p": 0.5, "silence_p": 0.4, "raise_db": 10.0, "raise_share": 0.5}


@pytest.mark.parametrize("seed", [1, 4, 6, 8])
def test_dynamics_keep_the_clips_and_the_truth_holds(groups: dict[str, list], seed: int) -> None:  # noqa: F811
    plain_audio, plain = call(groups, utterances=16, seed=seed)
    audio, truth = call(groups, seed=seed, **DYN)
    utts = truth["utterances"]
    # their own random stream: the same clips, in the same order, on the same channels
    key = [(u["source"], u["channel"], u["label"]) for u in utts]
    assert key == [(u["source"], u["channel"], u["label"]) for u in plain["utterances"]]
    assert truth["options"]["overlap_p"] == 0.6 and "overlap_p" not in plain["options"]
    cut_ins = [k for k, u in enumerate(utts) if u.get("cut_in")]
    stopped = [k for k, u in enumerate(utts) if u.get("stopped_early")]
    assert cut_ins and stopped and set(stopped) <= {k - 1 for k in cut_ins}
    for k in cut_ins:  # it came in while the other was speaking, at least MIN_INTO_S into it
        prev, u = utts[k - 1], utts[k]
        assert prev["channel"] != u["channel"]
        assert prev["start_s"] + MIN_INTO_S - 1e-3 <= u["start_s"]
        assert min(prev["end_s"], u["end_s"]) - u["start_s"] >= MIN_OVERLAP_S - 1e-3
        if k - 1 in stopped:  # ... which then stopped 0.6-0.9 s after the cut-in
            assert 0.6 - 1e-3 <= prev["end_s"] - u["start_s"] <= 0.9 + 1e-3
    for ch in truth["channels"]:  # a speaker never overlaps itself; silence outside their utterances
        own = sorted((u for u in utts if u["channel"] == ch), key=lambda u: u["start_s"])
        assert all(a["end_s"] <= b["start_s"] for a, b in zip(own, own[1:], strict=False))
        c = truth["channels"].index(ch)
        speech = np.zeros(audio.shape[1], dtype=bool)
        for u in own:
            speech[span(u)] = True
        assert np.abs(audio[c, ~speech]).max() < 1e-3
    # dead air: gaps with nobody speaking are 0.3-0.9 s, or 3-8 s
    ends = np.maximum.accumulate([u["end_s"] for u in utts])
    gaps = [b["start_s"] - e for e, b in zip(ends[:-1], utts[1:], strict=True) if b["start_s"] >= e]
    long = [g for g in gaps if g > 1.0]
    assert long and all(3.0 - 1e-3 <= g <= 8.0 + 1e-3 for g in long)
    assert all(0.3 - 1e-3 <= g <= 0.9 + 1e-3 for g in gaps if g <= 1.0)
    # raised voice: a run of the customer's utterances, 10 dB up; truth["raised"] spans them
    up = [u for u in utts if "raised_db" in u]
    assert up and all(u["channel"] == "customer" for u in up)
    for u in utts:
        c = truth["channels"].index(u["channel"])
        y = audio[c, span(u)] if not u.get("stopped_early") else audio[c, span(u)][: round(0.5 * SR)]
        assert abs(active_level_db(y) - SPEECH_DBFS - u.get("raised_db", 0.0)) < 1.0
    r = truth["raised"]
    assert r["role"] == "customer" and r["start_s"] == up[0]["start_s"] and r["end_s"] == up[-1]["end_s"]
    assert r["speech_s"] == pytest.approx(sum(u["end_s"] - u["start_s"] for u in up), abs=1e-3)
    # the truth the scorer derives: one interruption per cut-in, by the one who came in; a silence per dead air
    spans = [(truth["channels"].index(u["channel"]), u["start_s"], u["end_s"] - u["start_s"]) for u in utts]
    true = truth_of(spans, truth["duration_s"])
    assert [i[2] for i in true["interruptions"]] == [utts[k]["channel"] for k in cut_ins]
    assert len(true["silences"]) == len(long)
    # reproducible
    again, t2 = call(groups, seed=seed, **DYN)
    assert np.array_equal(again, audio) and t2 == truth
    assert plain_audio.shape != audio.shape


def test_dynamics_options_are_checked() -> None:
    from bench.callsim import CallOptions

    with pytest.raises(ValueError, match="overlap_p=1.5"):
        CallOptions(overlap_p=1.5)
    with pytest.raises(ValueError, match="silence_s="):
        CallOptions(silence_s=(5.0, 3.0))
    with pytest.raises(ValueError, match="raise_role='boss'"):
        CallOptions(raise_role="boss")


def _make(args: list[str], out: Path) -> dict:
    r = CliRunner().invoke(cli(), ["make", *args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads((out / "call.json").read_text())


def test_cli_make_and_dynscore(corpus: Path, tmp_path: Path, silero_bundle_dir: Path) -> None:  # noqa: F811
    truth = _make(["--data", f"cremad={corpus}", "--model", str(tmp_path / "none"), "--speakers",
                   "cremad:1001,cremad:1002", "--utterances", "14", "--overlap-p", "0.5", "--yield-p", "0.5",
                   "--silence-p", "0.3", "--silence-s", "3.5,5", "--raise-db", "10", "--seed", "6"], tmp_path / "c")
    assert any(u.get("cut_in") for u in truth["utterances"]) and truth["raised"]["speech_s"] > 0
    out = tmp_path / "s.json"
    base = ["dynscore", str(tmp_path / "c"), "--model", str(silero_bundle_dir)]
    r = CliRunner().invoke(cli(), [*base, "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "c: talk-time error agent" in r.output and "raised voice: customer" in r.output, r.output
    f = json.loads(out.read_text())["figures"]
    n_true = len(truth_of(truth_spans(truth), truth["duration_s"])["silences"])
    assert f["silence"]["true"] == n_true > 0 and f["interruption"]["true"] > 0
    assert f["silence"]["recall"] == 1.0, r.output  # 3.5-5 s of digital silence is not missed
    r = CliRunner().invoke(cli(), [*base, "--opt-in", "--gate-share", "0.2"])
    assert r.exit_code == 0, r.output
    assert '"level_gain_db": 20.0, "gate_share": 0.2, "speech_hold_s": 0.3, "bleed_share": 0.5' in r.output
    _make(["--data", f"cremad={corpus}", "--model", str(tmp_path / "none"), "--speakers", "cremad:1001,cremad:1002",
           "--utterances", "3", "--mono"], tmp_path / "m")
    r = CliRunner().invoke(cli(), ["dynscore", str(tmp_path / "m"), "--model", str(silero_bundle_dir)])
    assert r.exit_code == 1 and "need a stereo call" in r.output


@pytest.mark.corpus
def test_dynscore_on_a_corpus_call(shared_data: Path, tmp_path: Path) -> None:
    """One short seeded call of held-out corpus speakers with every dynamics option, through the
    shipped bundle's VAD: the scores come out and the dead air is found (full figures: docs/pipeline.md)."""
    truth = _make(["--data-root", str(shared_data), "--utterances", "16", "--overlap-p", "0.4", "--yield-p", "0.5",
                   "--silence-p", "0.25", "--silence-s", "4,6", "--raise-db", "10", "--noise", "pink", "--seed", "3"],
                  tmp_path / "c")
    assert any(u.get("cut_in") for u in truth["utterances"])
    r = CliRunner().invoke(cli(), ["dynscore", str(tmp_path / "c"), "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    f = json.loads((tmp_path / "s.json").read_text())["figures"]
    assert f["silence"]["true"] > 0 and f["silence"]["recall"] == 1.0, r.output
    assert all(e["max_abs"] < 0.5 for e in f["talk_error"].values()), r.output
