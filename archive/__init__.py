"""The call archive: every call kept in a database after it ends (``ser-archive`` follows Redis and
writes it; ``ser-calls`` searches, compares and exports it; the dashboard's History and Trends pages read
it). Reference: docs/archive.md.

Modules: :mod:`~archive.schema` (tables), :mod:`~archive.db` (engine, migrations, upserts),
:mod:`~archive.ingest` (events and records -> rows, idempotent writes; :mod:`~archive.validate` checks
them first), :mod:`~archive.scores` (emotion score, quarters, trend), :mod:`~archive.filters` (the one
filter set of search, trends, export and the dashboard), :mod:`~archive.queries` (search, show, trends,
delete, prune).
"""
