"""Corpus loaders: file names -> (path, canonical label, namespaced speaker).

Every loader walks a folder for ``.wav``/``.flac``/``.opus`` (case-insensitive extension), parses
the corpus' naming scheme and returns :class:`Item` records. Speaker ids are namespaced by corpus
(``cremad:1001``, ``ravdess:12``, ``tess:OAF``, ``savee:DC``, ``nemo:EB0``, ``manifest:<id>``) so that a split
grouped by speaker never mixes corpora. Known quirks of the official releases are skipped and
reported (see :data:`CREMAD_SKIP`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

#: The canonical label set, in the order of the shipped model's output.
CANONICAL_LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
AUDIO_EXTENSIONS = (".wav", ".flac", ".opus", ".ogg")

#: Label aliases accepted anywhere (manifests, TESS' odd spellings) -> canonical label.
ALIASES: dict[str, str] = {
    "neutral": "neutral", "neu": "neutral", "n": "neutral", "calm": "neutral",
    "happy": "happy", "happiness": "happy", "hap": "happy", "h": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "angry": "angry", "anger": "angry", "ang": "angry", "a": "angry",
    "fearful": "fearful", "fear": "fearful", "fea": "fearful", "f": "fearful",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust", "d": "disgust",
    "surprised": "surprised", "surprise": "surprised", "ps": "surprised", "su": "surprised",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised", "pleasantsurprise": "surprised",
}

CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral",
                   "SAD": "sad"}
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fearful", "07": "disgust", "08": "surprised"}
NEMO_EMOTIONS = {"anger": "angry", "fear": "fearful", "happiness": "happy", "neutral": "neutral",
                 "sadness": "sad", "surprised": "surprised"}
SAVEE_EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad",
                  "su": "surprised"}

#: CREMA-D stems skipped on purpose: digital silence, and byte-identical files carrying two labels.
CREMAD_SKIP: dict[str, str] = {
    "1076_MTI_SAD_XX": "digital silence in the official release",
    "1006_TIE_HAP_XX": "byte-identical to 1006_TIE_NEU_XX (ambiguous label)",
    "1006_TIE_NEU_XX": "byte-identical to 1006_TIE_HAP_XX (ambiguous label)",
    "1013_WSI_DIS_XX": "byte-identical to 1013_WSI_SAD_XX (ambiguous label)",
    "1013_WSI_SAD_XX": "byte-identical to 1013_WSI_DIS_XX (ambiguous label)",
    "1017_IWW_ANG_XX": "byte-identical to 1017_IWW_FEA_XX (ambiguous label)",
    "1017_IWW_FEA_XX": "byte-identical to 1017_IWW_ANG_XX (ambiguous label)",
}

_CREMAD_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$", re.IGNORECASE)
_RAVDESS_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_TESS_RE = re.compile(r"^([A-Za-z]{3})_([A-Za-z]+)_(.+)$")
_NEMO_RE = re.compile(r"^([A-Za-z]{2}\d)_([A-Za-z]+)_(\d+)$")
_SAVEE_RE = re.compile(r"^(?:([A-Za-z]{2})_)?(sa|su|a|d|f|h|n)(\d{2})$", re.IGNORECASE)


class CorpusError(ValueError):
    """A corpus folder or manifest that cannot be used (named in the message)."""


@dataclass(frozen=True)
class Item:
    """One labelled clip. ``label`` is canonical (after mapping); ``speaker`` is ``corpus:id``."""

    path: str
    corpus: str
    speaker: str
    label: str


@dataclass
class LoadResult:
    items: list[Item]
    skipped: list[tuple[str, str]]  # (path, reason)


def canonical_label(raw: str) -> str | None:
    """Map a raw emotion name (any case, TESS/manifest spellings) to a canonical one, or None."""
    key = raw.strip().lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(key)


def audio_files(root: Path) -> list[Path]:
    """All audio files under ``root`` (recursive, sorted, hidden files ignored)."""
    if not root.is_dir():
        raise CorpusError(f"corpus folder {root} does not exist")
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
    )


def load_cremad(root: Path) -> LoadResult:
    """CREMA-D: ``AudioWAV/1001_DFA_ANG_XX.wav`` (``root`` may be the corpus or AudioWAV folder)."""
    items, skipped = [], []
    for p in audio_files(root):
        m = _CREMAD_RE.match(p.stem)
        if not m:
            skipped.append((str(p), "name does not follow CREMA-D's 1001_DFA_ANG_XX scheme"))
            continue
        stem = f"{m.group(1)}_{m.group(2).upper()}_{m.group(3).upper()}_{m.group(4).upper()}"
        if stem in CREMAD_SKIP:
            skipped.append((str(p), CREMAD_SKIP[stem]))
            continue
        label = CREMAD_EMOTIONS.get(m.group(3).upper())
        if label is None:
            skipped.append((str(p), f"unknown CREMA-D emotion code {m.group(3)}"))
            continue
        items.append(Item(str(p), "cremad", f"cremad:{m.group(1)}", label))
    return LoadResult(items, skipped)


def load_ravdess(root: Path) -> LoadResult:
    """RAVDESS speech: ``Actor_12/03-01-05-01-02-01-12.wav``; 3rd field emotion, 7th actor.

    Only modality 03 (audio-only) / vocal channel 01 (speech) files are used. ``calm`` is kept as a
    raw label here and mapped to ``neutral`` by :func:`apply_labels`.
    """
    items, skipped = [], []
    for p in audio_files(root):
        m = _RAVDESS_RE.match(p.stem)
        if not m:
            skipped.append((str(p), "name does not follow RAVDESS's 03-01-05-01-02-01-12 scheme"))
            continue
        modality, channel, emotion, actor = m.group(1), m.group(2), m.group(3), m.group(7)
        if modality != "03" or channel != "01":
            skipped.append((str(p), "not an audio-only speech file (modality 03, channel 01)"))
            continue
        label = RAVDESS_EMOTIONS.get(emotion)
        if label is None:
            skipped.append((str(p), f"unknown RAVDESS emotion code {emotion}"))
            continue
        items.append(Item(str(p), "ravdess", f"ravdess:{int(actor):02d}", label))
    return LoadResult(items, skipped)


def load_tess(root: Path) -> LoadResult:
    """TESS: flat ``OAF_back_angry.wav`` or nested ``OAF_angry/OAF_back_angry.wav``.

    Tolerates the official release's odd spellings (``Fear``, ``pleasant_surprise``, ``ps``,
    upper/lower case); ``ps`` -> ``surprised``. Speaker is ``tess:OAF`` / ``tess:YAF``.
    """
    items, skipped = [], []
    for p in audio_files(root):
        m = _TESS_RE.match(p.stem)
        label = None
        if m:
            # the emotion is the last '_' field, or (pleasant_surprise) the last two
            rest = m.group(3)
            parts = rest.split("_")
            for k in (2, 1):
                if len(parts) >= k:
                    label = canonical_label("_".join(parts[-k:]))
                    if label:
                        break
        if not m or label is None:
            skipped.append((str(p), "name does not follow TESS's OAF_word_emotion scheme"))
            continue
        items.append(Item(str(p), "tess", f"tess:{m.group(1).upper()}", label))
    return LoadResult(items, skipped)


def load_savee(root: Path) -> LoadResult:
    """SAVEE: flat ``DC_sa03.wav`` or official ``DC/sa03.wav``; speakers DC, JE, JK, KL."""
    items, skipped = [], []
    for p in audio_files(root):
        m = _SAVEE_RE.match(p.stem)
        speaker = m.group(1) if m and m.group(1) else (p.parent.name if m else None)
        if not m or not speaker or not re.fullmatch(r"[A-Za-z]{2}", speaker):
            skipped.append((str(p), "name does not follow SAVEE's DC_sa03 scheme"))
            continue
        items.append(Item(str(p), "savee", f"savee:{speaker.upper()}", SAVEE_EMOTIONS[m.group(2).lower()]))
    return LoadResult(items, skipped)


def load_nemo(root: Path) -> LoadResult:
    """nEMO (Polish): flat ``EB0_anger_1.wav``; speaker EB0, emotion anger/fear/happiness/neutral/
    sadness/surprised (nEMO has no disgust). Speaker is ``nemo:EB0``."""
    items, skipped = [], []
    for p in audio_files(root):
        m = _NEMO_RE.match(p.stem)
        label = NEMO_EMOTIONS.get(m.group(2).lower()) if m else None
        if not m or label is None:
            skipped.append((str(p), "name does not follow nEMO's EB0_anger_1 scheme"))
            continue
        items.append(Item(str(p), "nemo", f"nemo:{m.group(1).upper()}", label))
    return LoadResult(items, skipped)


#: A manifest's optional ``corpus`` column: a short name that groups its speakers in the split and the figures.
_CORPUS_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def load_manifest(csv_path: Path) -> LoadResult:
    """A user manifest: CSV with header ``path,label,speaker[,corpus]``; paths relative to the CSV's folder.

    Labels go through :func:`canonical_label` when they are a known alias and are kept verbatim
    (lower-cased) otherwise, so a custom ``--labels`` set can use its own names. ``corpus`` (default
    ``manifest``) names the recording set a row belongs to. Every row is checked here: a row with an
    empty field, a file that does not exist or a bad corpus name is a :class:`CorpusError` naming the
    row (its line in the file) and the value.
    """
    if not csv_path.is_file():
        raise CorpusError(f"manifest {csv_path} does not exist")
    items = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label", "speaker"} - set(reader.fieldnames or [])
        if missing:
            raise CorpusError(f"manifest {csv_path} lacks the column(s) {', '.join(sorted(missing))}"
                              " (header must be path,label,speaker[,corpus])")
        for row in reader:
            where = f"manifest {csv_path} line {reader.line_num}"
            rel = (row["path"] or "").strip()
            raw = (row["label"] or "").strip()
            speaker = (row["speaker"] or "").strip()
            corpus = (row.get("corpus") or "").strip().lower() or "manifest"
            for name, value in (("path", rel), ("label", raw), ("speaker", speaker)):
                if not value:
                    raise CorpusError(f"{where}: empty {name}")
            if not _CORPUS_NAME_RE.match(corpus):
                raise CorpusError(f"{where}: corpus {row.get('corpus')!r} must be a short lower-case name "
                                  "(letters, digits, _ or -)")
            path = (csv_path.parent / rel).resolve()
            if not path.is_file():
                raise CorpusError(f"{where}: {rel!r} does not exist ({path})")
            label = canonical_label(raw) or raw.lower()
            items.append(Item(str(path), corpus, f"{corpus}:{speaker}", label))
    if not items:
        raise CorpusError(f"manifest {csv_path} has no rows")
    return LoadResult(items, [])


LOADERS: dict[str, Callable[[Path], LoadResult]] = {
    "cremad": load_cremad,
    "ravdess": load_ravdess,
    "tess": load_tess,
    "savee": load_savee,
    "nemo": load_nemo,
    "manifest": load_manifest,
}

#: Folder names under a data root (``../shared/data``) for each corpus.
DEFAULT_FOLDERS = {"cremad": "cremad", "ravdess": "ravdess", "tess": "tess", "savee": "savee", "nemo": "nemo"}


def parse_data_args(data: Iterable[str], data_root: Path | None) -> list[tuple[str, Path]]:
    """``CORPUS=PATH`` strings (plus every known corpus found under ``data_root``) -> pairs."""
    pairs: list[tuple[str, Path]] = []
    for spec in data:
        if "=" not in spec:
            raise CorpusError(f"--data {spec!r} must be CORPUS=PATH with CORPUS one of {', '.join(LOADERS)}")
        name, _, path = spec.partition("=")
        name = name.strip().lower()
        if name not in LOADERS:
            raise CorpusError(f"unknown corpus {name!r} in --data; choose one of {', '.join(LOADERS)}")
        pairs.append((name, Path(path).expanduser()))
    if data_root is not None:
        if not data_root.is_dir():
            raise CorpusError(f"--data-root {data_root} is not a folder")
        for name, folder in DEFAULT_FOLDERS.items():
            if (data_root / folder).is_dir() and name not in {n for n, _ in pairs}:
                pairs.append((name, data_root / folder))
    if not pairs:
        raise CorpusError("no data: give --data CORPUS=PATH or --data-root with corpus folders")
    return pairs


def apply_labels(items: list[Item], labels: tuple[str, ...]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Map raw labels onto ``labels`` (``calm`` -> ``neutral`` when calm is not itself a label) and
    drop items whose label is not in the set."""
    kept, dropped = [], []
    for it in items:
        label = it.label
        if label not in labels:
            mapped = canonical_label(label)
            if mapped in labels:
                label = mapped
        if label in labels:
            kept.append(Item(it.path, it.corpus, it.speaker, label) if label != it.label else it)
        else:
            dropped.append((it.path, f"label {it.label!r} is not in --labels"))
    return kept, dropped


def load_corpora(pairs: list[tuple[str, Path]], labels: tuple[str, ...]) -> LoadResult:
    """Load every ``(corpus, path)`` pair, map labels, and fail if nothing usable is left."""
    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    for name, path in pairs:
        res = LOADERS[name](path)
        if not res.items:
            raise CorpusError(f"{name} at {path}: no usable audio files found")
        if name == "manifest":  # the user's own labels: one outside the set is a mistake, not a skip
            _, dropped = apply_labels(res.items, labels)
            if dropped:
                raise CorpusError(f"manifest {path}: {dropped[0][0]}: {dropped[0][1]} ({', '.join(labels)}); "
                                  f"{len(dropped)} row(s) so")
        items.extend(res.items)
        skipped.extend(res.skipped)
    items, dropped = apply_labels(items, labels)
    skipped.extend(dropped)
    if not items:
        raise CorpusError(f"no clips carry one of the labels {', '.join(labels)}")
    return LoadResult(items, skipped)
