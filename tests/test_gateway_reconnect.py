"""Reused call ids (issue 26): a second AudioHook session or Twilio stream for the same
conversationId / callSid (platforms reconnect; Twilio forks streams) becomes a distinct stream of
the call, ``<id>#2``, ``<id>#3``...: every session's results land and each ``call_ended`` counts what
its session really sent. Hostile call ids never share a key (models.ids)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_gateway import (
    API_KEY,
    SECRET,
    TWILIO_TOKEN,
    events,
    expected_voiced,
    gateway_pool,
    results,
    wait_ended,
)

from bench.platforms import (
    AudioHookClient,
    audiohook_headers,
    connect,
    interleaved_pcmu,
    open_parameters,
    synth_stereo,
    twilio_messages,
    twilio_signature,
)
from models.ids import key_id


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[tuple[str, str]]:
    with gateway_pool(tmp_path_factory.mktemp("gwr-redis"), tiny_bundle_dir) as p:
        yield p


def twilio_call(host: str, call_sid: str, seed: int) -> None:
    async def run() -> None:
        sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
        async with await connect(f"ws://{host}/twilio", {"X-Twilio-Signature": sig}) as ws:
            for m in twilio_messages(synth_stereo(seed=seed), call_sid=call_sid):
                await ws.send(m)
            await asyncio.wait_for(ws.wait_closed(), 20)

    asyncio.run(run())


def landed(client: redis.Redis, stream: str, bundle: Path, seed: int) -> dict:
    """The stream's call_ended after checking every voiced segment of its audio has its record."""
    ended = wait_ended(client, stream)[-1]
    want = expected_voiced(synth_stereo(seed=seed), bundle)
    recs = [r for r in results(client, stream) if r["kind"] == "result"]
    got = {ch: {r["seq"] for r in recs if r["channel"] == ch} for ch in ("customer", "agent")}
    assert got == want, stream
    assert len(recs) == sum(len(v) for v in want.values())  # no record of another session
    assert ended["reason"] == "completed" and ended["segments"] == len(recs)
    return ended


def test_twilio_reused_call_sid_forked_and_reconnected_streams_all_land(pool: tuple[str, str],
                                                                         tiny_bundle_dir: Path) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    call_sid = "CA" + uuid.uuid4().hex

    async def forked() -> None:  # two streams of one call at once (Twilio forks), then a reconnect
        await asyncio.gather(asyncio.to_thread(twilio_call, host, call_sid, 0),
                             asyncio.to_thread(twilio_call, host, call_sid, 0))

    asyncio.run(forked())
    twilio_call(host, call_sid, 0)
    streams = [call_sid, f"{call_sid}#2", f"{call_sid}#3"]
    for stream in streams:
        landed(client, stream, tiny_bundle_dir, 0)
    started = [events(client, s)[0] for s in streams]
    assert [e.get("raw_call_id") for e in started] == [None, f"{call_sid}#2", f"{call_sid}#3"]
    assert started[1]["call_id"] == key_id(f"{call_sid}#2") != call_sid
    assert not client.exists(f"ser:events:{key_id(call_sid + '#4')}")


def test_audiohook_reconnect_with_the_same_conversation_id_is_a_second_stream(pool: tuple[str, str],
                                                                             tiny_bundle_dir: Path) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    conversation = str(uuid.uuid4())

    async def session(seed: int) -> None:
        sid = str(uuid.uuid4())
        headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                    session_id=sid)
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, sid)
            await c.send("open", open_parameters(conversation))
            assert (await c.recv())["type"] == "opened"
            audio = interleaved_pcmu(synth_stereo(seed=seed))
            for i in range(0, len(audio), 3200):
                await ws.send(audio[i : i + 3200])
            await c.send("close", {"reason": "end"}, position=18.0)
            assert (await c.recv())["type"] == "closed"

    asyncio.run(session(1))
    asyncio.run(session(2))  # the platform reconnects: another session, the same conversation
    first = landed(client, conversation, tiny_bundle_dir, 1)
    second = landed(client, f"{conversation}#2", tiny_bundle_dir, 2)
    assert first["call_id"] == conversation and second["call_id"] == key_id(f"{conversation}#2")


def test_hostile_call_ids_never_share_a_key(pool: tuple[str, str], tiny_bundle_dir: Path) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    base = "CA" + uuid.uuid4().hex[:8]
    hostile = f"{base}é中文🙂"  # sanitised naively, both were "CA..." and the second was refused

    async def both() -> None:
        await asyncio.gather(asyncio.to_thread(twilio_call, host, base, 3),
                             asyncio.to_thread(twilio_call, host, hostile, 3))

    asyncio.run(both())
    assert key_id(hostile) != base
    landed(client, base, tiny_bundle_dir, 3)
    landed(client, hostile, tiny_bundle_dir, 3)
    started = events(client, hostile)[0]
    assert started["raw_call_id"] == hostile and started["call_id"] == key_id(hostile)
    ended = wait_ended(client, hostile)[-1]
    assert client.zscore("ser:calls:ended", key_id(hostile)) and ended["call_id"] == key_id(hostile)
    end = [r for r in results(client, hostile) if r["kind"] == "end"]
    assert end and end[0]["stream_id"] == hostile  # the raw id stays in the records


def test_key_id_is_injective_on_unsafe_ids_and_idempotent() -> None:
    ids = ["CA", "CAé中文🙂", "CA中文", "CA:1", "CA_1", "CA 1", "x" * 64, "x" * 65, "x" * 66, "", "ünï", "CA#2"]
    keys = [key_id(i) for i in ids]
    assert len(set(keys)) == len(ids), keys
    assert key_id("CA") == "CA" and key_id("x" * 64) == "x" * 64
    for k in keys:
        assert key_id(k) == k and len(k) <= 64 and all(c.isalnum() or c in "_-" for c in k) and k.isascii()
