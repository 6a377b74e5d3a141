"""``ser-archive``: follow the call events and results streams in Redis with a consumer group and write
every call to the archive database (docs/archive.md)."""
