"""The archiver: a Redis consumer-group reader of the call events and results streams that writes what it
reads through :mod:`archive.ingest`, acknowledging entries only after the database commit."""
