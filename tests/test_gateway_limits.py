"""ser-gateway's resources stay bounded before authentication (silent and half-sent connections are
refused past a per-address limit and dropped after the header timeout; one summary log line, not
one per socket), and a Redis outage longer than ``--timeout`` keeps the sockets alive (pings and
pongs go on, audio beyond the backlog is dropped and counted) until the call ends through its
protocol: AudioHook ``disconnect``, Twilio close 1011."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import websockets
from redis_server import RedisServer, free_port
from test_gateway import API_KEY, CREDS, SECRET, TWILIO_TOKEN

from bench.platforms import (
    AudioHookClient,
    audiohook_headers,
    interleaved_pcmu,
    open_parameters,
    serve_gateway,
    synth_stereo,
    twilio_messages,
    twilio_signature,
)
from gateway.settings import GatewaySettings

SILENT, HALF, PER_ADDRESS = 250, 50, 100


def metric(host: str, line_start: str, source: str = "127.0.0.3") -> float:
    text = http_get(f"http://{host}/metrics", source)
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def http_get(url: str, source: str) -> str:
    host, port = url.split("/")[2].split(":")
    with socket.create_connection((host, int(port)), timeout=5, source_address=(source, 0)) as s:
        s.sendall(f"GET /{url.split('/', 3)[3]} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    return data.split(b"\r\n\r\n", 1)[1].decode()


def test_silent_sockets_are_refused_or_dropped_and_a_real_call_gets_through(
        tiny_bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = GatewaySettings(credentials=CREDS, model_dir=str(tiny_bundle_dir), max_per_address=PER_ADDRESS,
                               header_timeout_s=1.0)  # embedded: the call classifies in-process
    caplog.set_level(logging.INFO)
    with serve_gateway(settings, free_port()) as host:
        port = int(host.split(":")[1])
        socks = []
        for i in range(SILENT + HALF):  # bounded, loopback only
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i >= SILENT:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # half a request, never finished
            socks.append(s)
        t0 = time.monotonic()

        async def call() -> int | None:  # a signed Twilio call from another address meanwhile
            sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
            async with websockets.connect(f"ws://{host}/twilio", additional_headers={"X-Twilio-Signature": sig},
                                          local_addr=("127.0.0.2", 0), open_timeout=5) as ws:
                for m in twilio_messages(synth_stereo(seconds=9.0), call_sid="CA" + uuid.uuid4().hex):
                    await ws.send(m)
                await asyncio.wait_for(ws.wait_closed(), 10)
                return ws.close_code

        assert asyncio.run(call()) == 1000
        assert http_get(f"http://{host}/healthz", "127.0.0.3") == "ok\n"
        answers: dict[bytes, int] = {}
        open_ = set(socks)
        while open_ and time.monotonic() - t0 < 10:  # every silent socket is answered and closed
            ready, _, _ = select.select(list(open_), [], [], 0.5)
            for s in ready:
                data = s.recv(4096)
                answers[data[:12]] = answers.get(data[:12], 0) + 1
                open_.discard(s)
        for s in socks:
            s.close()
        assert not open_, f"{len(open_)} silent sockets still open after {time.monotonic() - t0:.1f} s"
        assert answers == {b"HTTP/1.1 503": SILENT + HALF - PER_ADDRESS, b"HTTP/1.1 408": PER_ADDRESS}, answers
        time.sleep(0.2)
        assert metric(host, 'ser_gateway_refused_sockets_total{why="address"}') == SILENT + HALF - PER_ADDRESS
        assert metric(host, 'ser_gateway_refused_sockets_total{why="header_timeout"}') == PER_ADDRESS
        assert metric(host, "ser_gateway_records_total") == 3  # the real call was classified
    guard = [r for r in caplog.records if r.name == "ser.gateway.guard"]
    assert 1 <= len(guard) <= 3, [r.getMessage() for r in guard]  # one summary per interval
    assert len(caplog.records) < 20, [r.getMessage() for r in caplog.records]


def test_redis_outage_longer_than_timeout_keeps_the_sockets_alive_and_ends_through_the_protocol(
        tmp_path: Path, tiny_bundle_dir: Path) -> None:
    y = synth_stereo(seconds=30.0)
    with RedisServer(tmp_path) as server:
        settings = GatewaySettings(credentials=CREDS, model_dir=str(tiny_bundle_dir), redis_url=server.url(),
                                   timeout_s=4.0, idle_timeout_s=30.0)
        with serve_gateway(settings, free_port()) as host:
            async def audiohook() -> tuple[dict, list[float]]:
                sid = str(uuid.uuid4())
                headers = audiohook_headers(api_key=API_KEY, secret_b64=SECRET, host=host, path="/audiohook",
                                            session_id=sid)
                async with websockets.connect(f"ws://{host}/audiohook", additional_headers=headers) as ws:
                    c = AudioHookClient(ws, sid)
                    await c.send("open", open_parameters(str(uuid.uuid4())))
                    assert (await c.recv())["type"] == "opened"
                    server.stop()  # Redis is away from now on, far longer than --timeout
                    audio, step, waits = interleaved_pcmu(y), 2 * 1600, []
                    for i in range(0, len(audio), 10 * step):  # 2 s of audio, then a ping
                        for j in range(i, min(i + 10 * step, len(audio)), step):
                            await ws.send(audio[j : j + step])
                        t0 = time.monotonic()
                        await c.send("ping", position=i / 16000)
                        msg = await c.recv(timeout=1.5)  # the socket is read all along: pong at once
                        waits.append(time.monotonic() - t0)
                        if msg["type"] == "disconnect":
                            break
                        assert msg["type"] == "pong"
                    else:
                        msg = await c.recv(timeout=10)
                    await c.send("close", {"reason": "disconnected"})
                    assert (await c.recv())["type"] == "closed"
                    return msg, waits

            t0 = time.monotonic()
            msg, waits = asyncio.run(audiohook())
            assert msg["type"] == "disconnect" and msg["parameters"]["reason"] == "error", msg
            assert "unavailable" in msg["parameters"]["info"] and time.monotonic() - t0 < 15
            assert max(waits) < 1.0, waits

            async def twilio() -> tuple[int | None, str, list[float]]:
                sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
                waits = []
                async with websockets.connect(f"ws://{host}/twilio",
                                              additional_headers={"X-Twilio-Signature": sig}) as ws:
                    try:
                        for k, m in enumerate(twilio_messages(y, call_sid="CA" + uuid.uuid4().hex)[:-1]):
                            await ws.send(m)
                            if k % 200 == 199:  # every 2 s of audio: a WebSocket ping, answered at once
                                t1 = time.monotonic()
                                await asyncio.wait_for(await ws.ping(), 1.5)
                                waits.append(time.monotonic() - t1)
                    except websockets.exceptions.ConnectionClosed:
                        pass
                    await asyncio.wait_for(ws.wait_closed(), 15)
                    return ws.close_code, ws.close_reason, waits

            code, reason, waits = asyncio.run(twilio())
            assert code == 1011 and "unavailable" in reason, (code, reason)
            assert waits and max(waits) < 1.0, waits
            with urllib.request.urlopen(f"http://{host}/metrics", timeout=5) as resp:
                text = resp.read().decode()
            for source in ("audiohook", "twilio"):
                assert f'ser_gateway_session_errors_total{{source="{source}"}} 1.0' in text
                dropped = [ln for ln in text.splitlines()
                           if ln.startswith(f'ser_gateway_dropped_audio_seconds_total{{source="{source}"}}')]
                assert dropped and float(dropped[0].split()[-1]) > 0, text


class FakeTransport:
    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing


def test_connection_guard_limits_per_process_and_per_address_and_forgets_closed_ones() -> None:
    from gateway.guard import ConnectionGuard

    g = ConnectionGuard(max_connections=3, max_per_address=2, header_timeout_s=1.0)
    t = [FakeTransport() for _ in range(5)]
    assert g.admit("10.0.0.1", t[0]) is None and g.admit("10.0.0.1", t[1]) is None
    assert g.admit("10.0.0.1", t[2]) == "address"
    assert g.admit("10.0.0.2", t[2]) is None
    assert g.admit("10.0.0.3", t[3]) == "process" and g.total == 3
    g.release("10.0.0.1", t[0])
    g.release("10.0.0.1", t[0])  # released twice (HTTP, then WebSocket): counted once
    assert g.total == 2 and g.admit("10.0.0.3", t[3]) is None
    t[1].closing = True  # closed without a release: pruned once a limit is reached
    assert g.admit("10.0.0.4", t[4]) is None and g.total == 3
    unlimited = ConnectionGuard(max_connections=10, max_per_address=0, header_timeout_s=1.0)
    assert all(unlimited.admit("10.0.0.1", FakeTransport()) is None for _ in range(10))
