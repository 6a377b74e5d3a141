"""What the documented ACL users can and cannot do (docs/security.md, "What each user can still do"):
the rules are read from the docs and applied to a real redis-server."""

from __future__ import annotations

import secrets
import shlex
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def rules() -> dict[str, list[str]]:
    lines = (ROOT / "docs" / "security.md").read_text().splitlines()
    return {r[2]: r[3:] for r in (shlex.split(line) for line in lines if line.startswith("ACL SETUSER "))}


def test_producer_user_cannot_read_audio_suspend_workers_or_delete_keys(tmp_path: Path) -> None:
    admin_pw, pw = "admin-" + secrets.token_hex(8), "p-" + secrets.token_hex(8)
    with RedisServer(tmp_path, "--requirepass", admin_pw, password=admin_pw) as server:
        admin = redis.Redis.from_url(server.url())
        admin.execute_command("ACL", "SETUSER", "ser-producer",
                              *[p.replace("CHANGE-ME", pw) for p in rules()["ser-producer"]])
        admin.set("ser:pcm:other-call-ch0-0", b"\1\2")
        admin.xadd("ser:results:other-call", {"kind": "result", "record": "{}"})
        admin.rpush("rq:queue:ser", "other-job")
        prod = redis.Redis.from_url(server.url("ser-producer", pw))
        denied = [
            lambda: prod.get("ser:pcm:other-call-ch0-0"),  # another call's audio
            lambda: prod.getdel("ser:pcm:other-call-ch0-0"),
            lambda: prod.set("rq:suspended", 1),  # rq suspend: every worker stops
            lambda: prod.delete("ser:results:other-call"),
            lambda: prod.delete("rq:queue:ser"),
            lambda: prod.xrange("ser:results:other-call"),  # XREAD only (it follows its own stream)
            lambda: prod.keys("*"),
            lambda: prod.eval("return redis.call('del', KEYS[1])", 1, "rq:queue:ser"),
            lambda: prod.flushdb(),
        ]
        for attempt in denied:
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
        # what the docs say it still can do (the queue protocol needs it)
        assert prod.set("ser:pcm:mine-ch0-0", b"\0\0") and prod.hset("rq:job:mine", "status", "queued") == 1
        assert admin.exists("ser:pcm:other-call-ch0-0", "ser:results:other-call", "rq:queue:ser") == 3
        prod.close()
        admin.close()
