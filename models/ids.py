"""Call ids in Redis keys and RQ job ids: the one sanitiser every key family uses.

Platforms choose call ids (Twilio's ``callSid``, Genesys's ``conversationId``, a generic stream's
``call_id``, ``ser-produce --stream-id``); keys and RQ job ids allow ``[A-Za-z0-9_-]`` only.
:func:`key_id` maps a raw id to its key part:

* an id that is already safe (1-64 characters of ``[A-Za-z0-9_-]``) is kept as it is, so keys stay
  readable and :func:`key_id` is idempotent (a key part maps to itself: any layer may apply it);
* any other id becomes its sanitised prefix (at most 40 characters) + ``-h`` + 16 hex digits of its
  SHA-256, so two distinct raw ids never share a key (``CAé中文🙂`` and ``CA`` differ) unless the
  hashes collide (64 bits), or someone chooses another call's key part itself as a raw id.

The raw id is kept in the records (``call_started.raw_call_id``) where it differs.
"""

from __future__ import annotations

import hashlib
import re

#: What a key part may hold.
SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
#: Longest sanitised prefix kept before the hash suffix.
PREFIX_LEN = 40
#: Hex digits of SHA-256 appended when sanitising changed an id.
HASH_HEX = 16


def key_id(raw: str) -> str:
    """The key part of call id ``raw`` (module docstring): itself when safe, else prefix + ``-h`` + hash."""
    raw = str(raw)
    if SAFE_ID.fullmatch(raw):
        return raw
    prefix = _UNSAFE.sub("_", raw).strip("_")[:PREFIX_LEN] or "x"
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_HEX]
    return f"{prefix}-h{digest}"
