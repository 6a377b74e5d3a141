"""Export archived calls or their segment records to CSV or Parquet (``ser-calls export``).

Rows come streamed from :func:`archive.queries.export_rows` and are written as they come: Parquet in row
groups of :data:`ROW_GROUP_ROWS` (pyarrow), CSV line by line, so a month of calls never sits in memory.
JSON columns (channels, roles, params, labels, dynamics, probs) are written as JSON text in both formats;
times stay unix seconds (``*_ts``) and audio seconds (``*_s``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy import JSON, Boolean, Connection, Float, Integer

from archive.filters import CallFilter
from archive.queries import CALL_EXPORT_COLUMNS, SEGMENT_EXPORT_COLUMNS, export_rows
from archive.schema import calls, segments

FORMATS = ("parquet", "csv")
WHAT = ("calls", "segments")
#: Rows per Parquet row group (and per batch held in memory).
ROW_GROUP_ROWS = 50_000


def columns(what: str) -> tuple[str, ...]:
    return CALL_EXPORT_COLUMNS if what == "calls" else SEGMENT_EXPORT_COLUMNS


def _kind(what: str, name: str) -> str:
    """``str``, ``float``, ``int``, ``bool`` or ``json`` for an export column."""
    extra = {"raw_id": "str", "started_ts": "float", "role": "str"}
    if what == "segments" and name in extra:
        return extra[name]
    column = (calls if what == "calls" else segments).c[name]
    for sql_type, kind in ((JSON, "json"), (Boolean, "bool"), (Integer, "int"), (Float, "float")):
        if isinstance(column.type, sql_type):
            return kind
    return "str"


def _cell(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_parquet(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str], *, what: str,
                  row_group_rows: int = ROW_GROUP_ROWS) -> int:
    """Write ``rows`` to a Parquet file in row groups; returns the rows written (an empty export is a valid
    file with the schema and no rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = {"str": pa.string(), "json": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
    names = columns(what)
    kinds = {name: _kind(what, name) for name in names}
    schema = pa.schema([pa.field(name, arrow[kinds[name]]) for name in names])
    written = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for batch in _batches(rows, row_group_rows):
            data = {name: [_cell(kinds[name], r.get(name)) for r in batch] for name in names}
            writer.write_table(pa.Table.from_pydict(data, schema=schema), row_group_size=row_group_rows)
            written += len(batch)
    return written


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str], *, what: str) -> int:
    """Write ``rows`` as CSV with a header (empty cell: no value); returns the rows written."""
    names = columns(what)
    kinds = {name: _kind(what, name) for name in names}
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    written = 0
    for r in rows:
        writer.writerow(["" if (v := _cell(kinds[n], r.get(n))) is None else v for n in names])
        written += 1
    return written


def export(conn: Connection, flt: CallFilter, path: str | os.PathLike[str], *, fmt: str, what: str = "calls") -> int:
    """Export the calls matching ``flt`` (or their segment records) to ``path`` (``-``: CSV to stdout); returns
    the rows written. The file is written beside its final name and renamed when complete."""
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if what not in WHAT:
        raise ValueError(f"what: must be one of {', '.join(WHAT)}, got {what!r}")
    rows = export_rows(conn, flt, what=what)
    if str(path) == "-":
        if fmt != "csv":
            raise ValueError("-o -: only CSV can go to stdout")
        import sys

        return write_csv(rows, sys.stdout, what=what)
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    try:
        if fmt == "parquet":
            written = write_parquet(rows, partial, what=what)
        else:
            with open(partial, "w", encoding="utf-8", newline="") as fh:
                written = write_csv(rows, fh, what=what)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return written
