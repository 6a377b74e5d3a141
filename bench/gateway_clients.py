"""The simulated call platform of ``python -m bench.gateway``, run as its own process (so the
gateway's CPU is the gateway's alone): N Twilio Media Streams clients in one asyncio loop, each
sending both tracks of a speech-like two-speaker call (:func:`turn_call`) in 20 ms frames at real
time. Prints one JSON object: ``{"started": {call sid: wall time its audio started}, "lags": [worst
lateness per call, s], "closes": {close code: count}}``.

    python -m bench.gateway_clients --host 127.0.0.1:8080 --token T --calls 50 --seconds 30 --ramp 5
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import click
import numpy as np

from bench.platforms import FRAME, RATE, twilio_signature, ulaw_encode
from bench.speechlike import stereo

#: A turn: this long speaking, then this long of silence, the other speaker next.
TURN_S, PAUSE_S = 3.5, 1.0


def turn_call(seconds: float, seed: int) -> np.ndarray:
    """``(2, n)`` at 8 kHz: speech-like turns (:func:`bench.speechlike.vowels`, which the Silero VAD
    calls speech), customer first, over each channel's quiet noise floor."""
    utterances, t, who, k = [], 0.25, 0, 0
    while t < seconds:
        utterances.append((who, int(t * RATE), min(TURN_S, seconds - t), seed * 1000 + k))
        t += TURN_S + PAUSE_S
        who, k = 1 - who, k + 1
    return np.clip(stereo(seconds, utterances, floor_seed=seed), -1, 1)


def frames(y: np.ndarray) -> list[tuple[str, str]]:
    """Base64 mu-law payloads of each 20 ms frame, ``(inbound, outbound)``, encoded ahead of time."""
    a, b = ulaw_encode(y[0]), ulaw_encode(y[1])
    return [(base64.b64encode(a[i : i + FRAME]).decode(), base64.b64encode(b[i : i + FRAME]).decode())
            for i in range(0, len(a) - FRAME + 1, FRAME)]


async def one_call(host: str, token: str, payloads: list[tuple[str, str]], call_sid: str) -> tuple[float, float, int]:
    """Stream one call at real time: ``(wall time its audio started, worst lateness, close code)``.
    Frame i leaves at ``t0 + (i + 1) * 20 ms``, once its last sample has been spoken."""
    import websockets

    sig = twilio_signature(token, f"wss://{host}/twilio")
    async with websockets.connect(f"ws://{host}/twilio", additional_headers={"X-Twilio-Signature": sig},
                                  open_timeout=60, ping_interval=None) as ws:
        sid = "MZ" + uuid.uuid4().hex
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "start": {
            "streamSid": sid, "callSid": call_sid, "tracks": ["inbound", "outbound"], "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        t0 = time.time()
        worst = 0.0
        for i, (inbound, outbound) in enumerate(payloads):
            delay = t0 + (i + 1) * FRAME / RATE - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                worst = max(worst, -delay)
            for track, payload in (("inbound", inbound), ("outbound", outbound)):
                await ws.send(f'{{"event":"media","streamSid":"{sid}","media":{{"track":"{track}",'
                              f'"chunk":"{i + 1}","timestamp":"{i * 20}","payload":"{payload}"}}}}')
        await ws.send(json.dumps({"event": "stop", "streamSid": sid, "stop": {"callSid": call_sid}}))
        await asyncio.wait_for(ws.wait_closed(), 120)
        return t0, worst, ws.close_code or 0


async def run_calls(host: str, token: str, calls: int, seconds: float, ramp_s: float, prefix: str) -> dict[str, Any]:
    audio = [frames(turn_call(seconds, k)) for k in range(min(calls, 8))]  # 8 distinct calls, reused

    async def delayed(k: int) -> tuple[str, float, float, int]:
        await asyncio.sleep(ramp_s * k / max(1, calls))
        sid = f"CA{prefix}{k:04d}{uuid.uuid4().hex[:8]}"
        t0, worst, code = await one_call(host, token, audio[k % len(audio)], sid)
        return sid, t0, worst, code

    done = await asyncio.gather(*(delayed(k) for k in range(calls)))
    closes: dict[str, int] = {}
    for _, _, _, code in done:
        closes[str(code)] = closes.get(str(code), 0) + 1
    return {"started": {sid: t0 for sid, t0, _, _ in done}, "lags": [w for _, _, w, _ in done], "closes": closes}


@click.command()
@click.option("--host", required=True)
@click.option("--token", required=True)
@click.option("--calls", type=click.IntRange(1), required=True)
@click.option("--seconds", type=click.FloatRange(1), required=True)
@click.option("--ramp", "ramp_s", type=click.FloatRange(0), default=5.0)
@click.option("--prefix", default="bench")
def main(host: str, token: str, calls: int, seconds: float, ramp_s: float, prefix: str) -> None:
    print(json.dumps(asyncio.run(run_calls(host, token, calls, seconds, ramp_s, prefix))))


if __name__ == "__main__":
    main()
