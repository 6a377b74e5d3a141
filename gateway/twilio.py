"""Twilio Media Streams (``<Start><Stream track="both_tracks">``) on ``/twilio``.

Messages (JSON text): ``connected``; ``start`` (``streamSid``, ``callSid``, ``tracks``,
``mediaFormat`` audio/x-mulaw 8000 Hz mono, ``customParameters``); ``media`` (``track``
inbound|outbound, ``chunk``, ``timestamp`` ms since the stream started, base64 ``payload`` of
mu-law, 20 ms a frame); ``mark``; ``dtmf``; ``stop``. inbound is the customer, outbound the
agent; the call id is the ``callSid``. Tracks are aligned by ``timestamp`` (:class:`Aligner`).
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from starlette.websockets import WebSocket

from gateway.hub import Hub, LiveCall, failure_reason
from gateway.settings import MAX_GAP_S, MAX_TRACK_LAG_S
from gateway.stream_ids import CallRefused
from gateway.tracks import Aligner, GapError
from gateway.wsio import (
    CLOSE_BAD_DATA,
    CLOSE_ERROR,
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED,
    BadInput,
    close,
    parse_json,
    receive,
)
from models.audio import ulaw_decode

log = logging.getLogger("ser.gateway.twilio")
RATE = 8000
TRACKS = {"inbound": 0, "outbound": 1}
NAMES = ("customer", "agent")
#: Largest media payload (bytes = samples): Twilio sends 20 ms (160); one second is plenty.
MAX_CHUNK = RATE
#: Samples a chunk may overlap the previous one (timestamps are whole milliseconds).
OVERLAP_SLACK = 8


def _start(hub: Hub, msg: dict[str, Any]) -> tuple[str, dict[str, str]]:
    start = msg.get("start")
    if not isinstance(start, dict) or not isinstance(start.get("callSid"), str) or not start["callSid"]:
        raise BadInput("start without a callSid", what="bad_start")
    fmt = start.get("mediaFormat") or {}
    try:
        shape = (fmt.get("encoding"), int(fmt.get("sampleRate", 0) or 0), int(fmt.get("channels", 1) or 1))
    except (AttributeError, TypeError, ValueError):
        shape = None
    if shape != ("audio/x-mulaw", RATE, 1):
        raise BadInput(f"unsupported mediaFormat {fmt!r} (want audio/x-mulaw 8000 Hz mono)", what="format",
                       code=CLOSE_UNSUPPORTED)
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise BadInput("customParameters is not an object", what="bad_start")
    return start["callSid"], {str(k): str(v) for k, v in params.items()}


def _media(msg: dict[str, Any]) -> tuple[int, int, Any]:
    media = msg.get("media")
    if not isinstance(media, dict):
        raise BadInput("media without a media object", what="bad_media")
    track = TRACKS.get(str(media.get("track")))
    if track is None:
        raise BadInput(f"unknown track {media.get('track')!r}", what="bad_media")
    try:
        ts = int(media["timestamp"])
        payload = base64.b64decode(str(media["payload"]), validate=True)
    except (KeyError, ValueError, binascii.Error):
        raise BadInput("media with a bad timestamp or a payload that is not base64", what="bad_payload",
                       code=CLOSE_BAD_DATA) from None
    if ts < 0:
        raise BadInput(f"negative timestamp {ts}", what="bad_media")
    if not payload or len(payload) > MAX_CHUNK:
        raise BadInput(f"a media payload of {len(payload)} bytes (8 kHz mu-law: 1-{MAX_CHUNK})", what="bad_payload",
                       code=CLOSE_BAD_DATA)
    return track, ts * RATE // 1000, ulaw_decode(payload)


class Chunks:
    """Checks that each track's payload lengths agree with its timestamps (8 kHz mu-law: one byte
    a sample): a chunk that starts after the previous one (not a re-send) but before the previous
    one's samples end means the payloads are not what ``mediaFormat`` says (16-bit audio, 16 kHz...);
    it would be dropped as overlap, silently. :data:`OVERLAP_SLACK` samples of rounding are allowed."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[int, int]] = {}  # track -> (position, samples) of its newest chunk

    def check(self, track: int, position: int, n: int) -> None:
        prev = self.last.get(track)
        if prev is not None and prev[0] < position < prev[0] + prev[1] - OVERLAP_SLACK:
            raise BadInput(f"a {prev[1]}-byte media payload was followed {(position - prev[0]) * 1000 // RATE} ms "
                           "later: the payload does not match mediaFormat audio/x-mulaw 8000 Hz", what="bad_payload",
                           code=CLOSE_BAD_DATA)
        if prev is None or position > prev[0]:
            self.last[track] = (position, n)


async def serve(ws: WebSocket, hub: Hub) -> None:
    """One accepted Twilio stream, until ``stop``, a disconnect, idleness or bad input."""
    call: LiveCall | None = None
    aligner = Aligner(2, max_lag=int(MAX_TRACK_LAG_S * RATE), max_gap=int(MAX_GAP_S * RATE))
    chunks = Chunks()
    reason: str | None = None
    try:
        while True:
            m = await receive(ws, timeout_s=hub.settings.idle_timeout_s, check=call.check if call else None)
            if m.kind in ("gone", "idle"):
                log.warning("twilio stream %s: %s without stop", call.key if call else "-",
                            "client vanished" if m.kind == "gone" else "no message for "
                            f"{hub.settings.idle_timeout_s:g} s")
                reason = "disconnected"
                break
            if m.kind == "bytes":
                raise BadInput("a binary frame (Media Streams send JSON text)", what="binary", code=CLOSE_UNSUPPORTED)
            msg = parse_json(m.text)
            if not isinstance(msg, dict):
                raise BadInput("a JSON message that is not an object", what="json", code=CLOSE_BAD_DATA)
            event = msg.get("event")
            if event == "connected":
                continue
            if event == "start":
                if call is not None:
                    raise BadInput("a second start", what="bad_start")
                call_id, params = _start(hub, msg)
                try:
                    call = await hub.open(call_id=call_id, source="twilio", names=NAMES, in_rate=RATE, params=params)
                except CallRefused as exc:
                    raise BadInput(str(exc), what="duplicate_call") from None
                await call.start()
            elif event == "media":
                if call is None:
                    raise BadInput("media before start", what="media_before_start")
                track, position, samples = _media(msg)
                chunks.check(track, position, len(samples))
                try:
                    aligner.add(track, position, samples)
                except GapError as exc:
                    raise BadInput(str(exc), what="gap") from None
                block = aligner.take()
                if block is not None:
                    await call.push(block)
                else:
                    await call.tick()
            elif event == "stop":
                break
            elif event in ("mark", "dtmf"):
                log.debug("twilio call %s: %s %s", call.key if call else "-", event, str(msg.get(event))[:100])
            else:  # forward compatible: Twilio may add events
                hub.metrics.bad_input.labels("twilio", "unknown_event").inc()
                log.warning("twilio call %s: ignoring unknown event %r", call.key if call else "-", str(event)[:40])
    except BadInput as exc:
        hub.metrics.bad_input.labels("twilio", exc.what).inc()
        log.warning("twilio call %s: closing (%d): %s", call.key if call else "-", exc.code, exc)
        if not exc.closed:
            await close(ws, exc.code, str(exc))
        reason = "error"
    except Exception as exc:  # Redis gone for good while pushing: end this session only
        await close(ws, CLOSE_ERROR, failure_reason(exc))
        if call is not None:
            await call.abort(f"{type(exc).__name__}: {exc}")
        else:
            log.error("twilio stream: closed 1011: %s: %s", type(exc).__name__, exc)
        return
    await close(ws, CLOSE_NORMAL)
    if call is not None:
        try:
            block = aligner.take(final=True)
            if block is not None:
                await call.push(block)
        except Exception as exc:
            await call.abort(f"{type(exc).__name__}: {exc}")
            return
        await call.finish(reason)
