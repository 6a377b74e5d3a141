"""Corpus loaders parse every naming scheme (tiny generated files with real names), split, augment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.corpora import (
    CANONICAL_LABELS,
    CorpusError,
    apply_labels,
    load_corpora,
    load_cremad,
    load_manifest,
    load_ravdess,
    load_savee,
    load_tess,
    parse_data_args,
)


def _wav(path: Path, *, seconds: float = 0.6, sr: int = 8000, fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    y = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(path, y, sr, format=fmt, subtype="PCM_16" if fmt != "OGG" else "OPUS")
    return path


def test_cremad_names_and_quirks(tmp_path: Path) -> None:
    root = tmp_path / "cremad" / "AudioWAV"
    _wav(root / "1001_DFA_ANG_XX.wav")
    _wav(root / "1002_IEO_NEU_HI.flac", fmt="FLAC")
    _wav(root / "1076_MTI_SAD_XX.wav")  # digital silence in the release: skipped by name
    _wav(root / "1006_TIE_HAP_XX.wav")  # byte-identical pair: skipped
    _wav(root / "notes.wav")
    res = load_cremad(tmp_path / "cremad")
    got = {(Path(i.path).name, i.speaker, i.label) for i in res.items}
    assert got == {("1001_DFA_ANG_XX.wav", "cremad:1001", "angry"), ("1002_IEO_NEU_HI.flac", "cremad:1002", "neutral")}
    reasons = " ".join(r for _, r in res.skipped)
    assert "silence" in reasons and "byte-identical" in reasons and "scheme" in reasons


def test_cremad_reads_opus(tmp_path: Path) -> None:
    _wav(tmp_path / "AudioWAV" / "1003_WSI_FEA_LO.opus", fmt="OGG")
    res = load_cremad(tmp_path)
    assert [(i.speaker, i.label) for i in res.items] == [("cremad:1003", "fearful")]


def test_ravdess_fields(tmp_path: Path) -> None:
    _wav(tmp_path / "Actor_12" / "03-01-05-01-02-01-12.wav")
    _wav(tmp_path / "Actor_01" / "03-01-02-02-01-01-01.wav")
    _wav(tmp_path / "Actor_01" / "03-01-08-02-01-01-01.wav")
    _wav(tmp_path / "Actor_01" / "03-02-05-01-01-01-01.wav")  # song channel: not speech
    res = load_ravdess(tmp_path)
    got = sorted((i.speaker, i.label) for i in res.items)
    assert got == [("ravdess:01", "calm"), ("ravdess:01", "surprised"), ("ravdess:12", "angry")]
    assert len(res.skipped) == 1
    kept, _ = apply_labels(res.items, CANONICAL_LABELS)
    assert sorted(i.label for i in kept) == ["angry", "neutral", "surprised"]  # calm -> neutral


def test_tess_flat_and_nested_layouts(tmp_path: Path) -> None:
    _wav(tmp_path / "flat" / "OAF_back_angry.opus", fmt="OGG")
    _wav(tmp_path / "flat" / "YAF_bar_ps.wav")
    nested = tmp_path / "nested"
    _wav(nested / "OAF_angry" / "OAF_back_angry.wav")
    _wav(nested / "OAF_Fear" / "OAF_bite_Fear.wav")
    _wav(nested / "YAF_pleasant_surprised" / "YAF_base_ps.wav")
    _wav(nested / "OAF_Pleasant_surprise" / "OAF_bath_pleasant_surprise.wav")
    _wav(nested / "YAF_neutral" / "yaf_book_NEUTRAL.wav")
    flat = {(i.speaker, i.label) for i in load_tess(tmp_path / "flat").items}
    assert flat == {("tess:OAF", "angry"), ("tess:YAF", "surprised")}
    got = sorted((Path(i.path).name, i.speaker, i.label) for i in load_tess(nested).items)
    assert got == [
        ("OAF_back_angry.wav", "tess:OAF", "angry"),
        ("OAF_bath_pleasant_surprise.wav", "tess:OAF", "surprised"),
        ("OAF_bite_Fear.wav", "tess:OAF", "fearful"),
        ("YAF_base_ps.wav", "tess:YAF", "surprised"),
        ("yaf_book_NEUTRAL.wav", "tess:YAF", "neutral"),
    ]


def test_savee_codes(tmp_path: Path) -> None:
    for name in ("DC_sa03", "DC_su01", "JE_a01", "JK_d02", "JK_f10", "DC_h04", "JE_n30"):
        _wav(tmp_path / f"{name}.wav")
    _wav(tmp_path / "KL" / "sa01.wav")  # official nested layout
    got = {Path(i.path).stem: (i.speaker, i.label) for i in load_savee(tmp_path).items}
    assert got == {"DC_sa03": ("savee:DC", "sad"), "DC_su01": ("savee:DC", "surprised"),
                   "JE_a01": ("savee:JE", "angry"), "JK_d02": ("savee:JK", "disgust"),
                   "JK_f10": ("savee:JK", "fearful"), "DC_h04": ("savee:DC", "happy"),
                   "JE_n30": ("savee:JE", "neutral"), "sa01": ("savee:KL", "sad")}


def test_manifest_relative_paths_aliases_and_corpus(tmp_path: Path) -> None:
    _wav(tmp_path / "calls" / "a.wav")
    _wav(tmp_path / "calls" / "b.wav")
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,label,speaker,corpus\ncalls/a.wav,Anger,agent7,\ncalls/b.wav,frustrated,cust1,acme\n",
                        encoding="utf-8")
    res = load_manifest(csv_path)
    assert [(i.corpus, i.speaker, i.label) for i in res.items] == [
        ("manifest", "manifest:agent7", "angry"), ("acme", "acme:cust1", "frustrated")]
    assert Path(res.items[0].path).is_absolute() and not res.skipped
    kept, dropped = apply_labels(res.items, CANONICAL_LABELS)
    assert [i.label for i in kept] == ["angry"] and len(dropped) == 1
    kept, _ = apply_labels(res.items, ("angry", "frustrated"))
    assert len(kept) == 2
    # through load_corpora a label outside the set is an error naming it, not a silent skip
    with pytest.raises(CorpusError, match="'frustrated' is not in --labels"):
        load_corpora([("manifest", csv_path)], CANONICAL_LABELS)
    assert len(load_corpora([("manifest", csv_path)], ("angry", "frustrated")).items) == 2


@pytest.mark.parametrize(("row", "message"), [
    ("calls/missing.wav,sad,x", r"line 3: 'calls/missing.wav' does not exist"),
    ("calls/a.wav,,x", "line 3: empty label"),
    ("calls/a.wav,sad,", "line 3: empty speaker"),
    ("calls/a.wav,sad,x,Bad Name!", "line 3: corpus 'Bad Name!' must be"),
])
def test_manifest_rows_are_validated_naming_the_line(tmp_path: Path, row: str, message: str) -> None:
    _wav(tmp_path / "calls" / "a.wav")
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(f"path,label,speaker,corpus\ncalls/a.wav,sad,x\n{row}\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        load_manifest(csv_path)


def test_manifest_bad_header(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\nx.wav,sad\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="label"):
        load_manifest(bad)


def test_parse_data_args(tmp_path: Path) -> None:
    (tmp_path / "cremad").mkdir()
    (tmp_path / "tess").mkdir()
    pairs = parse_data_args(["savee=/x/savee"], tmp_path)
    assert [n for n, _ in pairs] == ["savee", "cremad", "tess"]
    with pytest.raises(CorpusError, match="unknown corpus"):
        parse_data_args(["iemocap=/x"], None)
    with pytest.raises(CorpusError, match="CORPUS=PATH"):
        parse_data_args(["cremad"], None)
    with pytest.raises(CorpusError, match="no data"):
        parse_data_args([], None)
    with pytest.raises(CorpusError, match="no usable"):
        load_corpora([("cremad", tmp_path / "cremad")], CANONICAL_LABELS)


@pytest.mark.corpus
def test_shared_corpora_parse(shared_data: Path) -> None:
    """On the real corpora: every file parses, speaker counts match the README."""
    counts = {"cremad": (load_cremad, 75), "ravdess": (load_ravdess, 20), "tess": (load_tess, 2),
              "savee": (load_savee, 3)}
    for name, (loader, n_speakers) in counts.items():
        res = loader(shared_data / name)
        assert len({i.speaker for i in res.items}) == n_speakers, name
        assert all(r for _, r in res.skipped)
