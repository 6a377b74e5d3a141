"""The gateway benchmark's calls are speech to the shipped bundle's Silero VAD (issue 26: the old
benchmark fed noise the VAD rightly ignored: 50/50 calls, 0 result records)."""

from __future__ import annotations

import numpy as np

from bench.gateway_clients import PAUSE_S, TURN_S, turn_call
from bench.platforms import RATE, ulaw_encode
from models.audio import ulaw_decode
from models.bundle import load_bundle
from producer.segmenter import make_segmenter


def test_turn_call_is_speech_in_each_speakers_turns_only() -> None:
    spec = load_bundle(None).spec  # the shipped bundle: Silero VAD, utterance-aligned segments
    seconds = 4 * (TURN_S + PAUSE_S)
    y = turn_call(seconds, seed=0)
    decoded = np.stack([ulaw_decode(ulaw_encode(ch)) for ch in y])  # what the gateway hears
    seg = make_segmenter(spec=spec, in_rate=RATE, channels=2)
    cuts = [*seg.feed(decoded), *seg.finish()]
    turns = {0: [0, 2], 1: [1, 3]}  # customer speaks turns 0 and 2, the agent 1 and 3
    for channel, own in turns.items():
        mine = [c for c in cuts if c.channel == channel]
        mid = [(c.speech_start + c.speech_end) / 2 / spec.sample_rate for c in mine]
        heard = {int((t - 0.25) // (TURN_S + PAUSE_S)) for t in mid}
        assert heard == set(own), (channel, [(c.speech_start, c.speech_end) for c in mine])
