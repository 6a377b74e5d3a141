"""Simulated call-platform clients for ser-gateway's tests and bench.gateway, written from the public
protocol docs with the ``websockets`` library: Twilio Media Streams, Genesys AudioHook v2, the
generic stream; plus a synthetic two-speaker call and a gateway server in a thread."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import soundfile as sf
import websockets

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


def synth_stereo(*, seconds: float = 18.0, seed: int = 0) -> np.ndarray:
    """``(2, n)`` float32 at 8 kHz: customer (row 0) noise 0-6 s, agent (row 1) noise 6-12 s, a tone
    on both at 12-15 s, silence elsewhere (3 s windows: customer voiced seq 0,1,4; agent 2,3,4)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    y = np.zeros((2, n), dtype=np.float32)
    noise = rng.standard_normal((2, n)).astype(np.float32)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype(np.float32)
    y[0, : 6 * RATE] = 0.3 * noise[0, : 6 * RATE]
    y[1, 6 * RATE : 12 * RATE] = 0.25 * noise[1, 6 * RATE : 12 * RATE]
    y[:, 12 * RATE : 15 * RATE] = tone[12 * RATE : 15 * RATE]
    return np.clip(y, -1, 1)


def ulaw_encode(y: np.ndarray) -> bytes:
    """Mono float32 -> G.711 mu-law bytes (libsndfile)."""
    buf = io.BytesIO()
    sf.write(buf, y, RATE, format="RAW", subtype="ULAW")
    return buf.getvalue()


# --- Twilio Media Streams -------------------------------------------------------------------------------
def twilio_signature(token: str, url: str) -> str:
    return base64.b64encode(hmac.new(token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def twilio_messages(y: np.ndarray, *, call_sid: str, params: dict[str, str] | None = None,
                    duplicate_every: int = 0, drop: tuple[int, ...] = ()) -> list[str]:
    """The messages of one stream: connected, start, media (inbound then outbound per 20 ms), stop.
    ``duplicate_every``: send every n-th inbound frame twice; ``drop``: outbound frame numbers never sent."""
    stream_sid = "MZ" + uuid.uuid4().hex
    inbound, outbound = ulaw_encode(y[0]), ulaw_encode(y[1])
    out = [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
           json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": {
               "accountSid": "AC" + "0" * 32, "streamSid": stream_sid, "callSid": call_sid,
               "tracks": ["inbound", "outbound"], "customParameters": params or {},
               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})]
    seq = 2
    for i in range(len(inbound) // FRAME):
        for track, data in (("inbound", inbound), ("outbound", outbound)):
            if track == "outbound" and i in drop:
                continue
            msg = json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": stream_sid,
                              "media": {"track": track, "chunk": str(i + 1), "timestamp": str(i * 20),
                                        "payload": base64.b64encode(data[i * FRAME : (i + 1) * FRAME]).decode()}})
            out.append(msg)
            seq += 1
            if track == "inbound" and duplicate_every and i % duplicate_every == 0:
                out.append(msg)
    out.append(json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": stream_sid,
                           "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid}}))
    return out


# --- Genesys AudioHook v2 ------------------------------------------------------------------------------------
def audiohook_headers(*, api_key: str, secret_b64: str, host: str, path: str, session_id: str,
                      created: int | None = None) -> dict[str, str]:
    """The upgrade headers of an AudioHook client, signed as Genesys signs them (RFC 9421, HMAC-SHA256)."""
    created = int(time.time()) if created is None else created
    h = {"audiohook-organization-id": "d7934305-0972-4844-938e-9060eef73d05", "audiohook-session-id": session_id,
         "audiohook-correlation-id": str(uuid.uuid4()), "x-api-key": api_key}
    comps = ["@request-target", "@authority", *h]
    params = ("(" + " ".join(f'"{c}"' for c in comps) + f');keyid="{api_key}";nonce="{uuid.uuid4().hex}";'
              f'alg="hmac-sha256";created={created};expires={created + 300}')
    values = {"@request-target": path, "@authority": host, **h}
    base = "\n".join([*(f'"{c}": {values[c]}' for c in comps), f'"@signature-params": {params}'])
    sig = base64.b64encode(hmac.new(base64.b64decode(secret_b64), base.encode(), hashlib.sha256).digest()).decode()
    return {**h, "signature-input": f"sig1={params}", "signature": f"sig1=:{sig}:"}


class AudioHookClient:
    """Keeps ``seq``/``serverseq`` as the protocol asks."""

    def __init__(self, ws: Any, session_id: str) -> None:
        self.ws, self.id, self.seq, self.serverseq = ws, session_id, 0, 0

    async def send(self, type_: str, parameters: dict[str, Any] | None = None, position: float = 0.0) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({"version": "2", "type": type_, "seq": self.seq, "serverseq": self.serverseq,
                                       "id": self.id, "position": f"PT{position:.2f}S",
                                       "parameters": parameters or {}}))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.serverseq = msg["seq"]
        return msg


def open_parameters(conversation_id: str, media: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    stereo = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
    mono = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
    return {"organizationId": "d7934305-0972-4844-938e-9060eef73d05", "conversationId": conversation_id,
            "participant": {"id": str(uuid.uuid4()), "ani": "+15555550100", "aniName": "", "dnis": "+15555550199"},
            "media": media if media is not None else [mono, stereo], "language": "en-US"}


def interleaved_pcmu(y: np.ndarray) -> bytes:
    a, b = np.frombuffer(ulaw_encode(y[0]), np.uint8), np.frombuffer(ulaw_encode(y[1]), np.uint8)
    return np.stack([a, b], axis=1).tobytes()


# --- the server --------------------------------------------------------------------------------------------
@contextmanager
def serve_gateway(settings: Any, port: int) -> Iterator[str]:
    """ser-gateway's app under uvicorn in a thread on 127.0.0.1:port; yields ``127.0.0.1:port``."""
    import uvicorn

    from gateway.app import create_app, server_config

    srv = uvicorn.Server(server_config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                       graceful_s=2))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


async def connect(url: str, headers: dict[str, str] | None = None) -> Any:
    return await websockets.connect(url, additional_headers=headers or {}, max_size=2**20, open_timeout=10)
