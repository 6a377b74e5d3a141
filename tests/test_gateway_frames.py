"""Every bad frame gets its protocol's answer (issue 26): deeply nested JSON (1007, not 1011), a close
reason with non-ASCII text (cut by bytes: a valid close frame, not 1006), a frame over the server's
1 MiB limit (1009, counted, ``call_ended`` ``error``), a Twilio payload that contradicts its
mediaFormat (1007, not silently dropped); each counted in ``ser_gateway_bad_input_total`` with one
log line. A replayed AudioHook upgrade request is refused (401)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from test_gateway import API_KEY, SECRET, gateway_pool, wait_ended
from test_gateway_faults import refused_status, twilio_session

from bench.platforms import (
    AudioHookClient,
    audiohook_headers,
    connect,
    open_parameters,
    synth_stereo,
    twilio_messages,
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[tuple[str, str]]:
    with gateway_pool(tmp_path_factory.mktemp("gwb-redis"), tiny_bundle_dir) as p:
        yield p


def bad_input(host: str, route: str, what: str) -> float:
    with urllib.request.urlopen(f"http://{host}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(f'ser_gateway_bad_input_total{{route="{route}",what="{what}"}}'):
                return float(line.split()[-1])
    return 0.0


def media(track: str, ts: int, payload: bytes) -> str:
    return json.dumps({"event": "media", "media": {"track": track, "chunk": "1", "timestamp": str(ts),
                                                   "payload": base64.b64encode(payload).decode()}})


def l16_frames(m: list[str]) -> list[str]:
    """Twilio media whose payloads are 16-bit (320 bytes per 20 ms) while mediaFormat says mu-law."""
    return m[:40] + [media("inbound", 20 * (500 + k), b"\x01\x02" * 160) for k in range(5)] + m[40:]


@pytest.mark.parametrize("name, mutate, code, what", [
    ("deeply nested JSON", lambda m: m[:40] + ["[" * 30000 + "]" * 30000] + m[40:], 1007, "json"),
    ("non-ASCII reason", lambda m: m[:40] + [json.dumps({"event": "media", "media": {
        "track": "中文🙂" * 40, "timestamp": "0", "payload": ""}})] + m[40:], 1008, "bad_media"),
    ("payload contradicts mediaFormat", l16_frames, 1007, "bad_payload"),
])
def test_twilio_bad_frames_get_a_close_code_a_count_and_one_log_line(
        pool: tuple[str, str], caplog: pytest.LogCaptureFixture, name: str,
        mutate: Callable[[list[str]], list[str]], code: int, what: str) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    call_sid = "CA" + uuid.uuid4().hex
    before = bad_input(host, "twilio", what)
    caplog.set_level(logging.INFO)
    got_code, reason = twilio_session(host, mutate(twilio_messages(synth_stereo(seconds=12.0), call_sid=call_sid)))
    assert got_code == code, (name, got_code, reason)
    assert reason and len(reason.encode()) <= 123, reason
    assert bad_input(host, "twilio", what) == before + 1
    assert wait_ended(client, call_sid)[-1]["reason"] == "error"
    lines = [r for r in caplog.records if r.name.startswith("ser.gateway.twilio")]
    assert len(lines) == 1, [r.getMessage() for r in lines]


def test_audiohook_frame_over_the_server_limit_is_counted_and_ends_as_error(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    conversation, sid = str(uuid.uuid4()), str(uuid.uuid4())
    before = bad_input(host, "audiohook", "oversized")

    async def run() -> int | None:
        headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook", session_id=sid)
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, sid)
            await c.send("open", open_parameters(conversation))
            assert (await c.recv())["type"] == "opened"
            await ws.send(b"\xff" * (3 << 19))  # 1.5 MiB: uvicorn's parser refuses it unread
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code

    assert asyncio.run(run()) == 1009
    assert bad_input(host, "audiohook", "oversized") == before + 1
    assert wait_ended(client, conversation)[-1]["reason"] == "error"  # not "disconnected"


def test_audiohook_deep_json_gets_a_disconnect(pool: tuple[str, str]) -> None:
    url, host = pool
    sid = str(uuid.uuid4())

    async def run() -> dict:
        headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook", session_id=sid)
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, sid)
            await ws.send("[" * 30000)
            msg = await c.recv()
            await c.send("close", {"reason": "disconnected"})
            assert (await c.recv())["type"] == "closed"
            return msg

    msg = asyncio.run(run())
    assert msg["type"] == "disconnect" and "JSON" in msg["parameters"]["info"]


def test_a_replayed_audiohook_request_is_refused(pool: tuple[str, str]) -> None:
    url, host = pool
    headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                session_id=str(uuid.uuid4()))
    assert refused_status(f"ws://{host}/audiohook", headers) == 101
    assert refused_status(f"ws://{host}/audiohook", headers) == 401  # the same signed request, again
    fresh = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                              session_id=str(uuid.uuid4()))
    assert refused_status(f"ws://{host}/audiohook", fresh) == 101
