"""Record writers: ``table`` (for people), ``jsonl`` and ``csv`` (for programs).

Every writer gets the released records in order, ``result``/``failure`` and the ``turn`` records
(:mod:`producer.turns`) among them, each right after the segment record that closed it (the last
turns after the last record); ``jsonl``/``csv`` tell them apart by ``kind``."""

from __future__ import annotations

import csv
import json
from typing import Any, TextIO

#: CSV columns before the per-label ``p_<label>`` columns, and after them.
CSV_HEAD = ("stream_id", "channel", "seq", "start_s", "end_s", "kind", "label", "confidence", "uncertain")
CSV_TAIL = ("model", "error", "segments")  # segments: a turn's result count (empty for segment records)


class Writer:
    def __init__(self, out: TextIO, labels: tuple[str, ...]) -> None:
        self.out, self.labels = out, labels

    def start(self) -> None:
        """Called once before the first record."""

    def write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        self.out.flush()


class JsonlWriter(Writer):
    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n")


class CsvWriter(Writer):
    def __init__(self, out: TextIO, labels: tuple[str, ...]) -> None:
        super().__init__(out, labels)
        self.columns = [*CSV_HEAD, *(f"p_{lab}" for lab in labels), *CSV_TAIL]
        self._csv = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")

    def start(self) -> None:
        self._csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        row = {k: record.get(k) for k in (*CSV_HEAD, *CSV_TAIL)}
        for lab, p in (record.get("probs") or {}).items():
            row[f"p_{lab}"] = p
        self._csv.writerow({k: "" if v is None else v for k, v in row.items()})


class TableWriter(Writer):
    def start(self) -> None:
        self.out.write(f"{'start':>9} {'end':>9}  {'channel':<12} {'label':<12} {'conf':>5}\n")

    def write(self, record: dict[str, Any]) -> None:
        head = f"{record['start_s']:9.2f} {record['end_s']:9.2f}  {record['channel']:<12} "
        if record["kind"] == "failure":
            self.out.write(head + f"FAILED: {record.get('error')}\n")
        elif record["kind"] == "turn":
            flag = "  uncertain" if record.get("uncertain") else ""
            self.out.write(head + f"TURN {record['label']} {record['confidence']:.2f}, "
                           f"{record['segments']} segment(s){flag}\n")
        else:
            flag = "  uncertain" if record.get("uncertain") else ""
            self.out.write(head + f"{record['label']:<12} {record['confidence']:5.2f}{flag}\n")


WRITERS: dict[str, type[Writer]] = {"table": TableWriter, "jsonl": JsonlWriter, "csv": CsvWriter}


def make_writer(fmt: str, out: TextIO, labels: tuple[str, ...]) -> Writer:
    return WRITERS[fmt](out, labels)
