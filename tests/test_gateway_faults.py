"""ser-gateway refuses what it must and survives bad input: forged or missing credentials (nothing
reaches Redis), routes without credentials, malformed messages, media before start, a non-PCMU
offer, a payload that is not base64, an oversized frame, Redis going away mid-call; one failing
session never disturbs another."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import websockets
from redis_server import RedisServer, free_port
from test_gateway import API_KEY, CREDS, SECRET, STREAM_TOKEN, TWILIO_TOKEN, gateway_pool, results, rules, wait_ended

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
    ulaw_encode,
)
from gateway.settings import Credentials, GatewaySettings
from models.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]


def refused_status(url: str, headers: dict[str, str] | None = None) -> int:
    async def run() -> int:
        try:
            ws = await connect(url, headers)
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code
        await ws.close()
        return 101

    return asyncio.run(run())


def test_forged_or_missing_credentials_are_refused_before_the_upgrade_and_nothing_reaches_redis(
        redis_url: str, tiny_bundle_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = GatewaySettings(credentials=CREDS, model_dir=str(tiny_bundle_dir), redis_url=redis_url)
    with serve_gateway(settings, free_port()) as host:
        forged = twilio_signature("not-the-token", f"wss://{host}/twilio")
        assert refused_status(f"ws://{host}/twilio", {"X-Twilio-Signature": forged}) == 403
        assert refused_status(f"ws://{host}/twilio") == 403
        good = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
        assert refused_status(f"ws://{host}/twilio?x=1", {"X-Twilio-Signature": good}) == 403  # other URL
        sid = str(uuid.uuid4())
        bad_secret = base64.b64encode(b"not the secret").decode()
        assert refused_status(f"ws://{host}/audiohook", audiohook_headers(
            api_key=API_KEY, secret_b64=bad_secret, host=host, path="/audiohook", session_id=sid)) == 401
        stale = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook", session_id=sid,
                                  created=int(time.time()) - 3600)
        assert refused_status(f"ws://{host}/audiohook", stale) == 401
        assert refused_status(f"ws://{host}/audiohook", {"x-api-key": API_KEY}) == 401
        assert refused_status(f"ws://{host}/stream", {"Authorization": "Bearer wrong"}) == 401
        assert refused_status(f"ws://{host}/stream") == 401
        assert refused_status(f"ws://{host}/stream", {"Authorization": f"Bearer {STREAM_TOKEN}"}) == 101
        with urllib.request.urlopen(f"http://{host}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'ser_gateway_connections_total{outcome="refused",route="twilio"} 3.0' in text
    assert client.dbsize() == 0, client.keys()


def test_routes_without_credentials_refuse_everyone_and_insecure_accepts(redis_url: str,
                                                                        tiny_bundle_dir: Path) -> None:
    settings = GatewaySettings(credentials=Credentials(), model_dir=str(tiny_bundle_dir), redis_url=redis_url)
    with serve_gateway(settings, free_port()) as host:
        sig = twilio_signature("", f"wss://{host}/twilio")
        assert refused_status(f"ws://{host}/twilio", {"X-Twilio-Signature": sig}) == 403
        assert refused_status(f"ws://{host}/audiohook") == 401
        assert refused_status(f"ws://{host}/stream", {"Authorization": "Bearer "}) == 401
        for path in ("healthz", "readyz"):
            with urllib.request.urlopen(f"http://{host}/{path}", timeout=5) as resp:
                assert resp.status == 200
    insecure = GatewaySettings(credentials=Credentials(insecure_no_auth=True), model_dir=str(tiny_bundle_dir))
    with serve_gateway(insecure, free_port()) as host:  # embedded: nothing in Redis either way
        assert refused_status(f"ws://{host}/twilio") == 101


def test_cli_says_which_routes_refuse_and_is_loud_about_insecure(tiny_bundle_dir: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--model", str(tiny_bundle_dir), "--port",
                             str(port), "--insecure-no-auth"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first, second = proc.stderr.readline(), proc.stderr.readline()
        assert "embedded" in first and "WARNING --insecure-no-auth" in second
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "--model", str(tiny_bundle_dir), "--port",
                           str(port), "--redis-url", "redis://127.0.0.1:1/0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "cannot reach Redis" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[tuple[str, str]]:
    with gateway_pool(tmp_path_factory.mktemp("gwf-redis"), tiny_bundle_dir) as p:
        yield p


def twilio_session(host: str, msgs: list[str]) -> tuple[int | None, str]:
    """Send ``msgs``; the close code and reason the gateway answers with."""
    async def run() -> tuple[int | None, str]:
        sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
        async with await connect(f"ws://{host}/twilio", {"X-Twilio-Signature": sig}) as ws:
            try:
                for m in msgs:
                    await ws.send(m)
            except websockets.exceptions.ConnectionClosed:
                pass
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code, ws.close_reason

    return asyncio.run(run())


@pytest.mark.parametrize("name, mutate, code, reason", [
    ("malformed JSON", lambda m: m[:40] + ["{not json"] + m[40:], 1007, "error"),
    ("payload not base64", lambda m: m[:40] + [json.dumps({"event": "media", "media": {
        "track": "inbound", "chunk": "1", "timestamp": "800", "payload": "***not base64***"}})] + m[40:],
     1007, "error"),
    ("oversized frame", lambda m: m[:40] + ["x" * (64 * 1024 + 1)] + m[40:], 1009, "error"),
    ("unknown event", lambda m: m[:40] + [json.dumps({"event": "teleport", "x": 1})] + m[40:], 1000, "completed"),
    ("not mu-law", lambda m: m[:1] + [m[1].replace("audio/x-mulaw", "audio/l16")] + m[2:], 1003, None),
    ("bad mediaFormat", lambda m: m[:1] + [m[1].replace('"sampleRate": 8000', '"sampleRate": "fast"')] + m[2:],
     1003, None),
    ("dtmf and mark", lambda m: m[:40] + [json.dumps({"event": "dtmf", "dtmf": {"digit": "1"}}),
                                          json.dumps({"event": "mark", "mark": {"name": "x"}})] + m[40:], 1000,
     "completed"),
])
def test_twilio_bad_input(pool: tuple[str, str], name: str, mutate, code: int, reason: str | None) -> None:  # type: ignore[no-untyped-def]
    url, host = pool
    client = redis.Redis.from_url(url)
    call_sid = "CA" + uuid.uuid4().hex
    msgs = mutate(twilio_messages(synth_stereo(seconds=6.0), call_sid=call_sid))
    got_code, _ = twilio_session(host, msgs)
    assert got_code == code, name
    if reason is None:  # refused at start: no call at all
        assert not client.exists(f"ser:events:{call_sid}") and not client.exists(f"ser:results:{call_sid}")
        return
    evs = wait_ended(client, call_sid)
    assert evs[-1]["reason"] == reason
    assert [r["kind"] for r in results(client, call_sid)].count("end") == 1  # what came before is complete


def test_twilio_media_before_start_opens_no_call(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    call_sid = "CA" + uuid.uuid4().hex
    msgs = twilio_messages(synth_stereo(seconds=1.0), call_sid=call_sid)
    code, why = twilio_session(host, [msgs[0], msgs[2], msgs[1]])
    assert code == 1008 and "media before start" in why
    assert not client.exists(f"ser:events:{call_sid}") and not client.exists(f"ser:results:{call_sid}")


def test_audiohook_non_pcmu_offer_and_audio_before_open_get_a_disconnect(pool: tuple[str, str]) -> None:
    url, host = pool

    async def session(first: str) -> dict:
        sid = str(uuid.uuid4())
        headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook", session_id=sid)
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, sid)
            if first == "l16":
                await c.send("open", open_parameters(str(uuid.uuid4()), media=[
                    {"type": "audio", "format": "L16", "channels": ["external", "internal"], "rate": 16000}]))
            else:
                await ws.send(b"\xff" * 320)
            msg = await c.recv()
            assert msg["type"] == "disconnect" and msg["parameters"]["reason"] == "error"
            await c.send("close", {"reason": "disconnected"})
            closed = await c.recv()
            assert closed["type"] == "closed"
            await asyncio.wait_for(ws.wait_closed(), 10)
            return msg

    assert "PCMU" in asyncio.run(session("l16"))["parameters"]["info"]
    assert "before open" in asyncio.run(session("audio"))["parameters"]["info"]


def test_stream_route_pcm16(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    call_id = "gen-" + uuid.uuid4().hex[:8]
    y = synth_stereo(seconds=9.0)
    pcm = (np.clip(y.T, -1, 1) * 32767).astype("<i2").tobytes()

    async def run() -> None:
        async with await connect(f"ws://{host}/stream", {"Authorization": f"Bearer {STREAM_TOKEN}"}) as ws:
            await ws.send(json.dumps({"call_id": call_id, "sample_rate": 8000, "channels": 2, "encoding": "pcm16",
                                      "channel_names": ["customer", "agent"]}))
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i : i + 3200])
            await ws.send(json.dumps({"event": "stop"}))
            await asyncio.wait_for(ws.wait_closed(), 10)

    asyncio.run(run())
    evs = wait_ended(client, call_id)
    assert evs[0]["source"] == "stream" and evs[-1]["reason"] == "completed"
    got = {(r["channel"], r["seq"]) for r in results(client, call_id) if r["kind"] == "result"}
    assert got == {("customer", 0), ("customer", 1), ("agent", 2)}


def test_redis_down_mid_call_ends_the_session_with_a_protocol_close(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    with RedisServer(tmp_path) as server:
        settings = GatewaySettings(credentials=CREDS, model_dir=str(tiny_bundle_dir), redis_url=server.url(),
                                   timeout_s=1.5, idle_timeout_s=10.0)
        y = synth_stereo(seconds=12.0)
        msgs = twilio_messages(y, call_sid="CA" + uuid.uuid4().hex)
        with serve_gateway(settings, free_port()) as host:
            async def twilio() -> int | None:
                sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
                async with await connect(f"ws://{host}/twilio", {"X-Twilio-Signature": sig}) as ws:
                    try:
                        for i, m in enumerate(msgs[:-1]):  # no stop: Redis fails while the call is live
                            if i == 10:
                                server.stop()
                            await ws.send(m)
                            await asyncio.sleep(0.001)
                    except websockets.exceptions.ConnectionClosed:
                        pass
                    await asyncio.wait_for(ws.wait_closed(), 20)
                    return ws.close_code

            t0 = time.monotonic()
            assert asyncio.run(twilio()) == 1011
            assert time.monotonic() - t0 < 30

            async def audiohook() -> dict:  # Redis is down from the start of this one
                sid = str(uuid.uuid4())
                headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                            session_id=sid)
                async with await connect(f"ws://{host}/audiohook", headers) as ws:
                    c = AudioHookClient(ws, sid)
                    await c.send("open", open_parameters(str(uuid.uuid4())))
                    assert (await c.recv())["type"] == "opened"
                    audio = interleaved_pcmu(y)
                    try:
                        for i in range(0, len(audio), 3200):
                            await ws.send(audio[i : i + 3200])
                            await asyncio.sleep(0.001)
                    except websockets.exceptions.ConnectionClosed:
                        pass
                    msg = await c.recv(timeout=20)
                    await c.send("close", {"reason": "disconnected"})
                    assert (await c.recv())["type"] == "closed"
                    return msg

            msg = asyncio.run(audiohook())
            assert msg["type"] == "disconnect" and msg["parameters"]["reason"] == "error"
            with urllib.request.urlopen(f"http://{host}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            assert 'ser_gateway_session_errors_total{source="twilio"} 1.0' in text
            assert 'ser_gateway_session_errors_total{source="audiohook"} 1.0' in text


def test_a_call_stuck_in_backpressure_blocks_neither_the_loop_nor_other_calls(redis_url: str,
                                                                           tiny_bundle_dir: Path) -> None:
    """No worker and --max-pending 1: the Twilio call's session waits for room in the queue; meanwhile
    an AudioHook session opens and gets its pongs at once and /healthz answers."""
    settings = GatewaySettings(credentials=CREDS, model_dir=str(tiny_bundle_dir), redis_url=redis_url,
                               max_pending=1, timeout_s=5.0, idle_timeout_s=30.0)
    y = synth_stereo(seconds=18.0)
    msgs = twilio_messages(y, call_sid="CA" + uuid.uuid4().hex)[:-1]
    client = redis.Redis.from_url(redis_url)
    with serve_gateway(settings, free_port()) as host:
        async def stuck() -> None:
            sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
            async with await connect(f"ws://{host}/twilio", {"X-Twilio-Signature": sig}) as ws:
                for m in msgs:
                    await ws.send(m)
                await asyncio.sleep(4.0)
                await ws.close()

        async def lively() -> list[float]:
            while client.llen("rq:queue:ser") < 1:  # the stuck call has filled the queue
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            sid = str(uuid.uuid4())
            headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                        session_id=sid)
            waits = []
            async with await connect(f"ws://{host}/audiohook", headers) as ws:
                c = AudioHookClient(ws, sid)
                await c.send("open", open_parameters(str(uuid.uuid4())))
                assert (await c.recv())["type"] == "opened"
                for _ in range(3):
                    t0 = time.monotonic()
                    await c.send("ping")
                    assert (await c.recv(timeout=5))["type"] == "pong"
                    waits.append(time.monotonic() - t0)
                t0 = time.monotonic()
                await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://{host}/healthz", timeout=5).read())
                waits.append(time.monotonic() - t0)
                await c.send("close")
                await c.recv()
            return waits

        async def both() -> list[float]:
            _, waits = await asyncio.gather(stuck(), lively())
            return waits

        waits = asyncio.run(both())
        assert max(waits) < 1.0, waits


def test_gateway_runs_as_the_documented_producer_acl_user(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    import secrets
    import shlex

    admin_pw = "admin-" + secrets.token_hex(8)
    acl = [shlex.split(line) for line in (ROOT / "docs" / "security.md").read_text().splitlines()
           if line.startswith("ACL SETUSER ")]
    with RedisServer(tmp_path, "--requirepass", admin_pw, password=admin_pw) as server:
        admin = redis.Redis.from_url(server.url())
        pw = {}
        for rule in acl:
            pw[rule[2]] = f"{rule[2]}-" + secrets.token_hex(12)
            admin.execute_command("ACL", "SETUSER", rule[2], *[p.replace("CHANGE-ME", pw[rule[2]]) for p in rule[3:]])
        worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "--redis-url",
                                   server.url("ser-worker", pw["ser-worker"]), "--model", str(tiny_bundle_dir)],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        spec = load_bundle(tiny_bundle_dir).spec
        settings = GatewaySettings(credentials=CREDS, model_dir=str(tiny_bundle_dir), events=rules(spec.labels),
                                   redis_url=server.url("ser-producer", pw["ser-producer"]))
        call_sid = "CA" + uuid.uuid4().hex
        try:
            with serve_gateway(settings, free_port()) as host:
                with urllib.request.urlopen(f"http://{host}/readyz", timeout=5) as resp:
                    assert resp.status == 200
                twilio_session(host, twilio_messages(synth_stereo(seconds=9.0), call_sid=call_sid))
                evs = wait_ended(admin, call_sid)
        finally:
            worker.terminate()
            worker.wait(20)
        denied = admin.execute_command("ACL", "LOG")
        admin.close()
    assert evs[-1]["reason"] == "completed" and evs[-1]["segments"] == 3
    assert denied == [], denied


@pytest.mark.parametrize("header, why", [
    ("not json", "malformed JSON header"),
    (json.dumps({"call_id": "x", "sample_rate": 8000, "channels": 2, "encoding": "opus"}), "encoding"),
    (json.dumps({"call_id": "x", "sample_rate": 100, "channels": 1}), "sample_rate"),
    (json.dumps({"sample_rate": 8000}), "call_id"),
])
def test_stream_bad_headers_are_refused(pool: tuple[str, str], header: str, why: str) -> None:
    url, host = pool

    async def run() -> tuple[int | None, str]:
        async with await connect(f"ws://{host}/stream", {"Authorization": f"Bearer {STREAM_TOKEN}"}) as ws:
            await ws.send(header)
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(run())
    assert code in (1003, 1007, 1008) and why in reason


def test_audiohook_client_gone_quiet_gets_a_disconnect_and_ends_disconnected(pool: tuple[str, str]) -> None:
    url, host = pool  # the pool's gateway has --idle-timeout 2
    client = redis.Redis.from_url(url)
    conversation, sid = str(uuid.uuid4()), str(uuid.uuid4())
    headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook", session_id=sid)

    async def run() -> dict:
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, sid)
            await c.send("open", open_parameters(conversation))
            assert (await c.recv())["type"] == "opened"
            await ws.send(interleaved_pcmu(synth_stereo(seconds=3.0)))
            msg = await c.recv(timeout=10)  # nothing more from us: the gateway says disconnect
            await c.send("close", {"reason": "disconnected"})
            assert (await c.recv())["type"] == "closed"
            return msg

    msg = asyncio.run(run())
    assert msg["type"] == "disconnect" and "idle" in msg["parameters"]["info"]
    ended = wait_ended(client, conversation)[-1]
    assert ended["reason"] == "disconnected" and ended["segments"] == 1


def test_embedded_gateway_classifies_in_process(tiny_bundle_dir: Path) -> None:
    settings = GatewaySettings(credentials=Credentials(stream_token=STREAM_TOKEN), model_dir=str(tiny_bundle_dir))
    y = synth_stereo(seconds=9.0)
    mulaw = np.stack([np.frombuffer(ulaw_encode(ch), np.uint8) for ch in y], axis=1).tobytes()
    with serve_gateway(settings, free_port()) as host:
        async def run() -> None:
            async with await connect(f"ws://{host}/stream", {"Authorization": f"Bearer {STREAM_TOKEN}"}) as ws:
                await ws.send(json.dumps({"call_id": "emb-1", "sample_rate": 8000, "channels": 2,
                                          "encoding": "mulaw"}))
                for i in range(0, len(mulaw), 1600):
                    await ws.send(mulaw[i : i + 1600])
                await ws.close()

        asyncio.run(run())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://{host}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            if "ser_gateway_records_total 3.0" in text:
                break
            time.sleep(0.2)
        assert "ser_gateway_records_total 3.0" in text  # customer seq 0,1 and agent seq 2
        assert 'ser_gateway_active_calls{source="stream"} 0.0' in text
