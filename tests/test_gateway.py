"""ser-gateway end to end: real platform clients (websockets) against the app under uvicorn on
loopback, a real redis-server and a real worker process; every spoken segment of both speakers
must land in ser:results:<call id> in the right channel, with alert and call_ended events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import redis
from redis_server import RedisServer, free_port

from bench.platforms import (
    AudioHookClient,
    audiohook_headers,
    connect,
    interleaved_pcmu,
    open_parameters,
    serve_gateway,
    synth_stereo,
    twilio_messages,
    twilio_signature,
)
from callevents.rules import EventSettings, Rule
from callevents.schema import events_key
from gateway.settings import Credentials, GatewaySettings
from models.bundle import load_bundle
from models.features import voiced
from producer.segmenter import Segmenter
from workers.contract import decode_entry, results_key

ROOT = Path(__file__).resolve().parents[1]
TWILIO_TOKEN = "twilio-test-auth-token-0123456789"
API_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
STREAM_TOKEN = "stream-test-token-0123456789"
CREDS = Credentials(twilio_auth_token=TWILIO_TOKEN, audiohook_api_key=API_KEY,
                    audiohook_secret=__import__("base64").b64decode(SECRET), stream_token=STREAM_TOKEN)


def rules(labels: tuple[str, ...]) -> EventSettings:
    """A rule on every label (its score is 1.0 whatever the model says): it opens on the customer's
    first segment and closes when the call ends; independent of the model's probabilities."""
    return EventSettings(rules=(Rule(name="any_speech", labels=labels, window_s=6.0, open_at=0.5, close_at=0.0),))


def expected_voiced(y: np.ndarray, bundle_dir: Path) -> dict[str, set[int]]:
    """What the VAD gate lets through on this audio (as decoded from mu-law), per channel."""
    from bench.platforms import ulaw_encode
    from models.audio import ulaw_decode

    spec = load_bundle(bundle_dir).spec
    dec = np.stack([ulaw_decode(ulaw_encode(ch)) for ch in y])
    seg = Segmenter(spec=spec, in_rate=8000, channels=2)
    out: dict[str, set[int]] = {"customer": set(), "agent": set()}
    for cut in [*seg.feed(dec), *seg.finish()]:
        mask = voiced(segments=cut.samples, sr=spec.sample_rate, params=spec.vad)
        for i, name in enumerate(("customer", "agent")):
            if mask[i]:
                out[name].add(cut.seq)
    return out


def results(client: redis.Redis, call_id: str) -> list[dict]:
    return [decode_entry(f) for _, f in client.xrange(results_key(call_id))]


def events(client: redis.Redis, call_id: str) -> list[dict]:
    return [json.loads(f[b"event"]) for _, f in client.xrange(events_key(call_id))]


def wait_ended(client: redis.Redis, call_id: str, timeout: float = 40.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        evs = events(client, call_id)
        if any(e["kind"] == "call_ended" for e in evs):
            return evs
        time.sleep(0.1)
    raise AssertionError(f"no call_ended for {call_id}: {[e['kind'] for e in events(client, call_id)]}")


@contextmanager
def gateway_pool(tmp: Path, bundle_dir: Path) -> Iterator[tuple[str, str]]:
    """A private redis-server, one worker process and a gateway on ``bundle_dir``: (redis url,
    gateway host:port). Shared by the gateway test modules."""
    with RedisServer(tmp) as server:
        url = server.url()
        worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "--redis-url", url, "--model",
                                   str(bundle_dir)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        spec = load_bundle(bundle_dir).spec
        settings = GatewaySettings(credentials=CREDS, model_dir=str(bundle_dir), redis_url=url,
                                   idle_timeout_s=2.0, timeout_s=30.0, events=rules(spec.labels))
        try:
            with serve_gateway(settings, free_port()) as host:
                yield url, host
        finally:
            worker.terminate()
            worker.wait(20)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[tuple[str, str]]:
    with gateway_pool(tmp_path_factory.mktemp("gw-redis"), tiny_bundle_dir) as p:
        yield p


def test_twilio_call_lands_per_speaker_with_events(pool: tuple[str, str], tiny_bundle_dir: Path) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    y = synth_stereo()
    call_sid = "CA" + uuid.uuid4().hex
    # every 7th inbound frame twice, some outbound frames lost: time must not shift
    msgs = twilio_messages(y, call_sid=call_sid, params={"crm": "42"}, duplicate_every=7, drop=(100, 101, 400))

    async def run() -> None:
        sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
        async with await connect(f"ws://{host}/twilio", {"X-Twilio-Signature": sig}) as ws:
            for m in msgs:
                await ws.send(m)
            await asyncio.wait_for(ws.wait_closed(), 10)

    asyncio.run(run())
    evs = wait_ended(client, call_sid)
    want = expected_voiced(y, tiny_bundle_dir)
    assert want == {"customer": {0, 1, 4}, "agent": {2, 3, 4}}
    recs = [r for r in results(client, call_sid) if r["kind"] == "result"]
    got = {ch: {r["seq"] for r in recs if r["channel"] == ch} for ch in ("customer", "agent")}
    assert got == want
    for r in recs:  # the time line is the audio's: a duplicate or a lost frame shifts nothing
        assert r["start_s"] == pytest.approx(3.0 * r["seq"], abs=1e-3)
    kinds = [e["kind"] for e in evs]
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended"
    started, ended = evs[0], evs[-1]
    assert started["source"] == "twilio" and started["channels"] == ["customer", "agent"]
    assert started["params"] == {"crm": "42"}
    opened = [e for e in evs if e["kind"] == "alert_opened"]
    assert opened and opened[0]["channel"] == "customer" and opened[0]["rule"] == "any_speech"
    assert any(e["kind"] == "alert_closed" and e["reason"] == "call_ended" for e in evs)
    assert ended["reason"] == "completed" and ended["segments"] == 6
    assert [r["kind"] for r in results(client, call_sid)].count("end") == 1
    assert not client.zscore("ser:calls", call_sid)


def read_until_end(url: str, call_id: str, timeout: float = 60.0) -> list[dict]:
    """What a consumer that follows the call (XREAD BLOCK from the start) and stops at its ``end``
    record gets, in stream order (docs/pipeline.md, "Records")."""
    client = redis.Redis.from_url(url)
    got: list[dict] = []
    last: bytes | str = "0"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for _, entries in client.xread({results_key(call_id): last}, block=200) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    got.append(decode_entry(fields))
                    if got[-1]["kind"] == "end":
                        return got
    finally:
        client.close()
    raise AssertionError(f"no end record for {call_id} within {timeout:g} s: {[r['kind'] for r in got]}")


def test_end_record_comes_after_every_result_and_turn(pool: tuple[str, str], tiny_bundle_dir: Path) -> None:
    """A consumer may stop at ``end``: the gateway publishes it only once the call's last result and
    its closing turns are in the stream (it used to go out as the last job was enqueued)."""
    url, host = pool
    client = redis.Redis.from_url(url)
    call_sid = "CA" + uuid.uuid4().hex
    msgs = twilio_messages(synth_stereo(seed=4), call_sid=call_sid)

    async def run() -> list[dict]:
        reader = asyncio.create_task(asyncio.to_thread(read_until_end, url, call_sid))  # follows it live
        sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
        async with await connect(f"ws://{host}/twilio", {"X-Twilio-Signature": sig}) as ws:
            for m in msgs:
                await ws.send(m)
            await asyncio.wait_for(ws.wait_closed(), 10)
        return await reader

    followed = asyncio.run(run())
    wait_ended(client, call_sid)
    stream = results(client, call_sid)
    kinds = [r["kind"] for r in stream]
    assert kinds.count("end") == 1 and kinds[-1] == "end", kinds  # every result and turn came before it
    assert kinds.count("result") == stream[-1]["segments"] == 6 and kinds.count("turn") >= 2
    assert followed == stream  # stopping at end lost nothing


def test_audiohook_call_lands_per_speaker_with_events(pool: tuple[str, str], tiny_bundle_dir: Path) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    y = synth_stereo(seed=1)
    conversation = str(uuid.uuid4())
    session_id = str(uuid.uuid4())
    headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                session_id=session_id)
    audio = interleaved_pcmu(y)

    async def run() -> None:
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, session_id)
            await c.send("open", open_parameters(conversation))
            opened = await c.recv()
            assert opened["type"] == "opened" and opened["clientseq"] == 1
            assert opened["parameters"]["media"][0]["channels"] == ["external", "internal"]
            step = 2 * 1600  # 200 ms of stereo PCMU
            for i in range(0, len(audio), step):
                await ws.send(audio[i : i + step])
                if i == 20 * step:
                    await c.send("ping", position=i / 16000)
                    t0 = time.monotonic()
                    pong = await c.recv()
                    assert pong["type"] == "pong" and time.monotonic() - t0 < 5
            await c.send("close", {"reason": "end"}, position=len(audio) / 16000)
            closed = await c.recv()
            assert closed["type"] == "closed"

    asyncio.run(run())
    evs = wait_ended(client, conversation)
    want = expected_voiced(y, tiny_bundle_dir)
    recs = [r for r in results(client, conversation) if r["kind"] == "result"]
    assert {ch: {r["seq"] for r in recs if r["channel"] == ch} for ch in ("customer", "agent")} == want
    assert evs[0]["source"] == "audiohook" and evs[0]["params"]["audiohookSessionId"] == session_id
    assert any(e["kind"] == "alert_opened" for e in evs) and evs[-1]["reason"] == "completed"


def test_audiohook_probe_gets_opened_with_no_media_and_no_call(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    session_id = str(uuid.uuid4())
    headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                session_id=session_id)

    async def run() -> None:
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, session_id)
            await c.send("open", open_parameters("00000000-0000-0000-0000-000000000000"))
            opened = await c.recv()
            assert opened["type"] == "opened" and opened["parameters"]["media"] == []
            await c.send("close", {"reason": "end"})
            assert (await c.recv())["type"] == "closed"

    asyncio.run(run())
    assert not client.exists("ser:events:00000000-0000-0000-0000-000000000000")


def test_one_vanishing_client_ends_disconnected_and_a_concurrent_call_is_untouched(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    y = synth_stereo(seconds=9.0, seed=2)
    good, gone = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    good_msgs = twilio_messages(y, call_sid=good)
    gone_msgs = twilio_messages(y, call_sid=gone)[:-1]  # no stop

    async def one(msgs: list[str], call_sid: str, vanish: bool) -> None:
        sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
        ws = await connect(f"ws://{host}/twilio", {"X-Twilio-Signature": sig})
        for m in msgs:
            await ws.send(m)
            await asyncio.sleep(0)
        if vanish:  # the TCP connection stays open but nothing more comes: the idle timeout ends the call
            await asyncio.sleep(3.0)
            ws.transport.abort()
        else:
            await asyncio.wait_for(ws.wait_closed(), 10)

    async def run() -> None:
        await asyncio.gather(one(good_msgs, good, False), one(gone_msgs, gone, True))

    asyncio.run(run())
    ended_good = wait_ended(client, good)[-1]
    ended_gone = wait_ended(client, gone)[-1]
    assert ended_good["reason"] == "completed"
    assert ended_gone["reason"] == "disconnected"
    assert ended_gone["segments"] == ended_good["segments"] > 0  # its results were completed all the same
    assert [r["kind"] for r in results(client, gone)].count("end") == 1


def test_audiohook_discarded_is_silence_and_other_messages_keep_the_session(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    rng = np.random.default_rng(3)
    speech = np.zeros((2, 3 * 8000), dtype=np.float32)
    speech[0] = 0.3 * rng.standard_normal(3 * 8000)  # the customer speaks 3 s, the agent is silent
    audio = interleaved_pcmu(speech)
    conversation, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                session_id=session_id)

    async def run() -> None:
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, session_id)
            await c.send("open", open_parameters(conversation))
            assert (await c.recv())["type"] == "opened"
            await ws.send(audio)
            await c.send("update", {"language": "fr-FR"}, position=3.0)
            await c.send("paused", position=3.0)
            await c.send("resumed", {"start": "PT3S", "discarded": "PT0S"}, position=3.0)
            await c.send("discarded", {"start": "PT3S", "discarded": "PT3S"}, position=3.0)  # 3 s lost: silence
            await c.send("error", {"code": 500, "message": "client hiccup"}, position=6.0)
            await ws.send(audio)
            await c.send("close", {"reason": "end"}, position=9.0)
            assert (await c.recv())["type"] == "closed"

    asyncio.run(run())
    evs = wait_ended(client, conversation)
    assert evs[-1]["reason"] == "completed" and evs[-1]["duration_s"] == pytest.approx(9.0, abs=0.01)
    recs = [r for r in results(client, conversation) if r["kind"] == "result"]
    assert {(r["channel"], r["seq"]) for r in recs} == {("customer", 0), ("customer", 2)}


def test_audiohook_out_of_order_seq_gets_a_disconnect(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    conversation, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                session_id=session_id)

    async def run() -> dict:
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, session_id)
            await c.send("open", open_parameters(conversation))
            assert (await c.recv())["type"] == "opened"
            c.seq += 1  # skip one
            await c.send("ping")
            msg = await c.recv()
            await c.send("close", {"reason": "disconnected"})
            assert (await c.recv())["type"] == "closed"
            await asyncio.wait_for(ws.wait_closed(), 10)
            return msg

    msg = asyncio.run(run())
    assert msg["type"] == "disconnect" and "seq" in msg["parameters"]["info"]
    assert wait_ended(client, conversation)[-1]["reason"] == "error"
