"""ser-gateway with a Silero bundle: a Twilio call's records are the utterance segments that the
offline segmenter cuts from the same (mu-law decoded) audio, per speaker (one segmenter for
ser-produce, the embedded path, the gateway and training)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_gateway import TWILIO_TOKEN, gateway_pool, results, wait_ended

from bench.platforms import connect, twilio_messages, twilio_signature, ulaw_encode
from bench.speechlike import stereo
from models.audio import ulaw_decode
from models.bundle import load_bundle
from models.utterances import utterance_segments

#: (channel: 0 customer / 1 agent, start s, seconds)
UTTERANCES = ((0, 0.5, 1.5), (1, 2.6, 1.2), (0, 4.4, 2.0), (1, 7.4, 1.4))


@pytest.fixture(scope="module")
def silero_pool(tmp_path_factory: pytest.TempPathFactory, silero_bundle_dir: Path) -> Iterator[tuple[str, str]]:
    with gateway_pool(tmp_path_factory.mktemp("gwu-redis"), silero_bundle_dir) as p:
        yield p


def test_twilio_records_are_the_utterance_segments(silero_pool: tuple[str, str], silero_bundle_dir: Path) -> None:
    url, host = silero_pool
    y = stereo(10.0, [(c, int(start * 8000), sec, 30 + k) for k, (c, start, sec) in enumerate(UTTERANCES)])
    call_sid = "CA" + uuid.uuid4().hex

    async def run() -> None:
        sig = twilio_signature(TWILIO_TOKEN, f"wss://{host}/twilio")
        async with await connect(f"ws://{host}/twilio", {"X-Twilio-Signature": sig}) as ws:
            for m in twilio_messages(y, call_sid=call_sid):
                await ws.send(m)
            await asyncio.wait_for(ws.wait_closed(), 10)

    asyncio.run(run())
    wait_ended(redis.Redis.from_url(url), call_sid)
    recs = [r for r in results(redis.Redis.from_url(url), call_sid) if r["kind"] == "result"]
    spec = load_bundle(silero_bundle_dir).spec
    for c, name in enumerate(("customer", "agent")):
        want = [(round(u.start / 8000, 3), round(u.end / 8000, 3)) for u in utterance_segments(
            y=ulaw_decode(ulaw_encode(y[c])), sr=8000, segment=spec.segment, params=spec.vad)]  # type: ignore[arg-type]
        got = [(r["start_s"], r["end_s"]) for r in recs if r["channel"] == name]
        assert got == want and len(got) >= 2, (name, got, want)
