"""``ser-calls``: search, show, compare (trends), export and delete archived calls (docs/archive.md)."""
