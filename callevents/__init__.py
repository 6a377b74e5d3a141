"""Call events and the active-call registry: the call-level contract between the ingestion side
(``ser-produce`` today, ``ser-gateway`` later) and readers (``ser-dashboard``, CRM hooks).

* :mod:`callevents.schema` -- key names, event kinds and fields, encoding (the one documented place;
  docs/pipeline.md, "Call events", describes the same).
* :mod:`callevents.rules` -- the alert rules and the rolling trend: a pure engine fed result records.
* :mod:`callevents.writer` -- puts the events and the registry into Redis.

It imports no process package (producer, workers, dashboard, training): ingestion and readers
both import it.
"""
