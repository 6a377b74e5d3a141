"""The speaking-rate bench (bench/ratescore.py): its scoring on a synthetic signal whose syllables
are known, and on the CREMA-D clips of ../shared/data where present."""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench import ratescore


def hand_counts() -> dict[str, tuple[str, list[tuple[list[str], int]]]]:
    """Each sentence's hand syllabification, read from the comment on its line of
    ``ratescore.SENTENCES``: code -> (text, [(words, syllables), ...]); ``it's 1 + e-lev-en 3`` is
    ``[(["it's"], 1), (["e-lev-en"], 3)]`` and ``what, this, is 3`` one group of three words."""
    source = inspect.getsource(ratescore)
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    table = next(node.value for node in ast.parse(source).body if isinstance(node, ast.AnnAssign)
                 and isinstance(node.target, ast.Name) and node.target.id == "SENTENCES")
    assert isinstance(table, ast.Dict)
    out = {}
    for key, value in zip(table.keys, table.values, strict=True):
        assert isinstance(key, ast.Constant) and isinstance(value, ast.Tuple), ast.dump(key)
        text = value.elts[0]
        assert isinstance(text, ast.Constant), ast.dump(value)
        groups = []
        for group in comments[key.lineno].lstrip("# ").split(" + "):
            parts = re.fullmatch(r"(.+?) (\d+)", group.strip())
            assert parts, (key.value, group)
            words, count = parts.groups()
            groups.append(([w.strip() for w in words.split(",")], int(count)))
        out[key.value] = (text.value, groups)
    return out


def test_the_sentences_and_their_syllables() -> None:
    """CREMA-D's twelve sentences. Each count is derived from its line's comment: the comment's words
    are the sentence's words, each group's count is its syllables (the hyphenated parts: ``e-lev-en``
    is 3, a contraction one), and the sentence's count is the sum of its groups."""
    hand = hand_counts()
    assert set(hand) == set(ratescore.SENTENCES) and len(hand) == 12
    for code, (text, groups) in hand.items():
        words = [w for ws, _ in groups for w in ws]
        assert [w.replace("-", "").lower() for w in words] == text.lower().split(), (code, text, words)
        for ws, count in groups:
            assert count == sum(len(w.split("-")) for w in ws), (code, ws, count)
        assert ratescore.SENTENCES[code] == (text, sum(count for _, count in groups)), code
    assert ratescore.sentence(Path("1001_DFA_ANG_XX.opus")) == "DFA"
    assert ratescore.sentence(Path("readme.txt")) == ""


def test_score_arithmetic() -> None:
    sc = ratescore.Score(syllables=8, speech_s=2.0, rate_sps=3.6, nuclei=7)
    assert sc.truth_sps == 4.0 and sc.rel_error == pytest.approx(-0.1)
    assert ratescore.Score(syllables=8, speech_s=0.0, rate_sps=None).rel_error is None
    line = ratescore.summarise([-0.1, 0.0, 0.2])
    assert "median |error|  10.0 %" in line and "bias (median error)   +0.0 %" in line
    assert "within 15 %:  66.7 %" in line


@pytest.mark.parametrize("seconds", [1.6, 3.0])
def test_scoring_a_synthetic_clip_of_known_syllables(seconds: float, silero_bundle_dir: Path) -> None:
    """bench.speechlike.vowels holds a syllable every 0.2 s: through the live path (call session,
    Silero VAD, loudness tracker) the bench finds the speech and scores the rate within 5 %."""
    from bench.speechlike import noise, vowels
    from models.bundle import load_bundle

    spec = load_bundle(silero_bundle_dir).spec
    y = np.concatenate([np.zeros(4000, np.float32), vowels(seconds, seed=7), np.zeros(8000, np.float32)])
    y += noise(y.size / 8000, seed=2, level_dbfs=-70.0)
    sc = ratescore.score(y, sr=8000, syllables=round(seconds / 0.2), spec=spec)
    assert sc.speech_s == pytest.approx(seconds, abs=0.1)
    assert sc.rel_error is not None and abs(sc.rel_error) < 0.05
    silent = ratescore.score(noise(3.0, seed=3, level_dbfs=-80.0), sr=8000, syllables=5, spec=spec)
    assert silent.speech_s == 0.0 and silent.rel_error is None  # no speech: left out, not scored


@pytest.mark.corpus
def test_ratescore_on_cremad(shared_data: Path) -> None:
    """A seeded sample of CREMA-D through the bench: every sentence code of the corpus is known, and
    the printed median error is the shipped estimator's (the full figure: docs/pipeline.md)."""
    import re

    codes = {ratescore.sentence(p) for p in (shared_data / "cremad" / "AudioWAV").iterdir()}
    assert codes == set(ratescore.SENTENCES)
    r = CliRunner().invoke(ratescore.main, ["--data-root", str(shared_data), "--clips", "120", "--seed", "0"])
    assert r.exit_code == 0, r.output
    assert "120 CREMA-D clip(s), a sample (seed 0)" in r.output
    m = re.search(r"^all \(\s*(\d+)\): median \|error\|\s+([\d.]+) %", r.output, flags=re.M)
    assert m is not None, r.output
    assert int(m.group(1)) >= 110 and float(m.group(2)) <= 25.0, r.output
