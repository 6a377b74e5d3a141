"""``ser-produce --archive URL``: each finished call goes into the call archive with the code ``ser-archive``
uses (:func:`archive.ingest.archive_call`): its call events (computed in this process, also without Redis:
:class:`callevents.writer.CallEvents` ``collect``), its records, turns and ``end`` record. In distributed mode
``ser-archive`` may archive the same call from Redis too: the writes are idempotent upserts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archive.db import open_engine, read_url_file, redact_url
from archive.ingest import archive_call
from models.errors import SERError
from producer.pipeline import Outcome


class ArchiveError(SERError):
    """The call could not be archived (one line, the URL's password redacted)."""


class Archive:
    """The archive database of one ``ser-produce`` command (its engine made, and its schema migrated, once)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)  # SERError (one line, redacted) when unreachable

    @classmethod
    def from_options(cls, url: str | None, url_file: str | None) -> Archive | None:
        """``--archive-url-file`` wins (keeps a password out of argv); neither: None (nothing archived)."""
        if url_file:
            try:
                url = read_url_file(url_file)
            except OSError as exc:
                raise SERError(f"cannot read --archive-url-file {url_file}: {exc.strerror or exc}") from None
        return cls(url) if url else None

    def add(self, outcome: Outcome, *, events: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]],
            call_id: str) -> None:
        """Archive one call (completed or incomplete: ``call_ended`` says which): its ``events`` and ``records``
        (whole, as written to the output: results, failures, turns) and the outcome's ``end`` record;
        :class:`ArchiveError`."""
        records = [*records, *([outcome.end_record] if outcome.end_record else [])]
        try:
            archive_call(self.engine, events=events, records=records, call_id=call_id)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy, the driver, a bad row: one line, the call's only
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ArchiveError(f"cannot archive call {call_id} in {redact_url(self.url)}: "
                               f"{type(exc).__name__}: {first}".replace(self.url, redact_url(self.url))) from None

    def close(self) -> None:
        self.engine.dispose()
