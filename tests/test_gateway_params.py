"""A call's metadata through the gateway: the generic route's header ``params`` and AudioHook's participant
and ``customConfig`` land in ``call_started.params`` (read back from Redis), sent by the real protocol
clients of bench/platforms.py (websockets) to the app under uvicorn with a real worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import websockets
from test_gateway import API_KEY, SECRET, STREAM_TOKEN, events, gateway_pool, wait_ended

from bench.platforms import AudioHookClient, audiohook_headers, connect, interleaved_pcmu, open_parameters, synth_stereo


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Iterator[tuple[str, str]]:
    with gateway_pool(tmp_path_factory.mktemp("gw-params"), tiny_bundle_dir) as p:
        yield p


def send_stream(host: str, header: dict) -> tuple[int | None, str]:
    """One generic-route call (6 s of stereo pcm16 after ``header``); the close code and reason the gateway sent."""
    pcm = (np.clip(synth_stereo(seconds=6.0).T, -1, 1) * 32767).astype("<i2").tobytes()

    async def run() -> tuple[int | None, str]:
        async with await connect(f"ws://{host}/stream", {"Authorization": f"Bearer {STREAM_TOKEN}"}) as ws:
            await ws.send(json.dumps(header))
            try:
                for i in range(0, len(pcm), 3200):
                    await ws.send(pcm[i : i + 3200])
                await ws.send(json.dumps({"event": "stop"}))
            except websockets.ConnectionClosed:
                pass
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code, ws.close_reason

    return asyncio.run(run())


def test_stream_header_params_land_in_call_started(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    call_id = "gen-" + uuid.uuid4().hex[:8]
    code, _ = send_stream(host, {"call_id": call_id, "sample_rate": 8000, "channels": 2, "encoding": "pcm16",
                                 "channel_names": ["customer", "agent"],
                                 "params": {"agent": "a-17", "queue": "billing", "direction": "inbound",
                                            "priority": 2, "vip": True}})
    assert code == 1000
    evs = wait_ended(client, call_id)
    assert evs[0]["kind"] == "call_started" and evs[0]["source"] == "stream"
    assert evs[0]["params"] == {"agent": "a-17", "queue": "billing", "direction": "inbound", "priority": "2",
                                "vip": "true"}


@pytest.mark.parametrize("params,named", [({"bad key": "x"}, "bad key"), ({"queue": "x" * 300}, "queue"),
                                          ("agent=a-17", "params must be an object"), ({"agent": {"id": 1}}, "agent")])
def test_a_bad_params_header_is_refused_naming_it_and_no_call_starts(pool: tuple[str, str], params: object,
                                                                      named: str) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    call_id = "gen-" + uuid.uuid4().hex[:8]
    code, reason = send_stream(host, {"call_id": call_id, "sample_rate": 8000, "channels": 2, "params": params})
    assert code == 1008 and named in reason, (code, reason)
    assert events(client, call_id) == []


def test_audiohook_participant_and_custom_config_land_in_call_started(pool: tuple[str, str]) -> None:
    url, host = pool
    client = redis.Redis.from_url(url)
    conversation, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                session_id=session_id)
    audio = interleaved_pcmu(synth_stereo(seconds=6.0, seed=3))
    opening = {**open_parameters(conversation),
               "customConfig": {"agent": "a-17", "queue": "billing", "direction": "inbound", "skills": ["en", "fr"]}}

    async def run() -> None:
        async with await connect(f"ws://{host}/audiohook", headers) as ws:
            c = AudioHookClient(ws, session_id)
            await c.send("open", opening)
            assert (await c.recv())["type"] == "opened"
            for i in range(0, len(audio), 3200):
                await ws.send(audio[i : i + 3200])
            await c.send("close", {"reason": "end"}, position=len(audio) / 16000)
            assert (await c.recv())["type"] == "closed"

    asyncio.run(run())
    started = wait_ended(client, conversation)[0]
    participant = opening["participant"]
    assert started["params"] == {
        "organizationId": opening["organizationId"], "audiohookSessionId": session_id, "language": "en-US",
        "participant.id": participant["id"], "participant.ani": "+15555550100", "participant.aniName": "",
        "participant.dnis": "+15555550199", "agent": "a-17", "queue": "billing", "direction": "inbound",
        "skills": '["en","fr"]'}
