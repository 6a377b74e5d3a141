"""Genesys Cloud AudioHook (protocol version 2) on ``/audiohook``.

Text messages carry ``version``, ``id`` (the session id of the upgrade request), ``type``, ``seq``
(1, 2, ... per side), ``serverseq`` / ``clientseq`` (the last seq seen from the other side),
``position`` and ``parameters``. The client sends ``open``, ``ping``, ``update``, ``paused``,
``resumed``, ``discarded``, ``error``, ``close``; the server answers ``opened``, ``pong``, ``closed``
and ends a session itself with ``disconnect`` (then waits for the client's ``close``): the TCP
connection is never dropped without it. Binary frames are PCMU, interleaved when stereo
(``external`` = customer, ``internal`` = agent); ``position`` counts samples. A ``discarded``
span becomes silence (the time line stays true). An ``open`` with the null conversation id is a
connection probe: ``opened`` with no media, no call.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import numpy as np
from starlette.websockets import WebSocket

from gateway.hub import Hub, LiveCall, failure_reason
from gateway.settings import CLOSE_WAIT_S, MAX_GAP_S
from gateway.stream_ids import CallRefused
from gateway.wsio import CLOSE_NORMAL, BadInput, close, parse_json, receive
from models.audio import ulaw_decode

log = logging.getLogger("ser.gateway.audiohook")
RATE = 8000
NULL_UUID = "00000000-0000-0000-0000-000000000000"
STEREO = ["external", "internal"]
NAMES = {"external": "customer", "internal": "agent"}
_DURATION = re.compile(r"^PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")


def duration_s(value: Any) -> float:
    """ISO 8601 ``PT..H..M..S`` (AudioHook's positions and durations) in seconds."""
    m = _DURATION.match(str(value))
    if m is None:
        raise BadInput(f"bad duration {value!r}", what="bad_message")
    h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    return h * 3600 + mi * 60 + s


def choose_media(offers: Any) -> dict[str, Any] | None:
    """The stereo ``[external, internal]`` PCMU 8 kHz offer, else the best mono PCMU 8 kHz one."""
    ok = [o for o in offers or [] if isinstance(o, dict) and o.get("type") == "audio"
          and o.get("format") == "PCMU" and o.get("rate") == RATE and isinstance(o.get("channels"), list)]
    for o in ok:
        if o["channels"] == STEREO:
            return o
    for want in (["external"], ["internal"]):
        for o in ok:
            if o["channels"] == want:
                return o
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def open_params(params: dict[str, Any], *, session_id: str) -> dict[str, str]:
    """``call_started.params`` of an ``open``: ``organizationId`` (the archive's tenant), ``audiohookSessionId``,
    ``language``, the participant as ``participant.id``/``.ani``/``.aniName``/``.dnis`` and every ``customConfig``
    entry under its own name (e.g. ``agent``, ``queue``, ``direction``: the archive's columns; last wins).
    Values that are not text are kept as JSON; absent (null) ones are left out."""
    out = {"organizationId": str(params.get("organizationId", "")), "audiohookSessionId": session_id}
    if isinstance(params.get("language"), str):
        out["language"] = params["language"]
    participant = params.get("participant")
    if isinstance(participant, dict):
        out.update({f"participant.{k}": _text(v) for k, v in participant.items() if v is not None})
    custom = params.get("customConfig")
    if isinstance(custom, dict):
        out.update({str(k): _text(v) for k, v in custom.items() if v is not None})
    return out


class Session:
    def __init__(self, ws: WebSocket, hub: Hub, session_id: str) -> None:
        self.ws, self.hub, self.id = ws, hub, session_id
        self.seq = 0  # our last seq
        self.clientseq = 0  # the client's last seq
        self.call: LiveCall | None = None
        self.channels: list[str] = []
        self.samples = 0  # per channel, received or discarded
        self.paused = False
        self.closed = False

    async def send(self, type_: str, parameters: dict[str, Any] | None = None) -> None:
        self.seq += 1
        msg = {"version": "2", "type": type_, "seq": self.seq, "clientseq": self.clientseq, "id": self.id,
               "parameters": parameters or {}}
        await self.ws.send_text(json.dumps(msg, separators=(",", ":")))

    def position(self) -> str:
        return f"PT{self.samples / RATE:.3f}S"

    async def disconnect(self, reason: str, info: str) -> None:
        """Our end of the session: ``disconnect``, the client's ``close`` (bounded wait), ``closed``."""
        try:
            await self.send("disconnect", {"reason": reason, "info": info[:200]})
            while True:
                m = await receive(self.ws, timeout_s=CLOSE_WAIT_S)
                if m.kind in ("gone", "idle"):
                    break
                if m.kind == "text":
                    try:
                        msg = json.loads(m.text)
                    except ValueError:
                        continue
                    if isinstance(msg, dict) and msg.get("type") == "close":
                        self.clientseq = int(msg.get("seq", self.clientseq) or self.clientseq)
                        await self.send("closed")
                        break
        except Exception:  # the client is gone or sent junk: we said disconnect, the rest is theirs
            pass
        await close(self.ws, CLOSE_NORMAL)

    async def on_open(self, msg: dict[str, Any]) -> None:
        if self.channels or self.call is not None:
            raise BadInput("a second open", what="bad_message")
        params = msg.get("parameters") or {}
        conversation = str(params.get("conversationId") or "")
        if conversation == NULL_UUID:  # Genesys's connection probe
            await self.send("opened", {"startPaused": False, "media": []})
            return
        if not conversation:
            raise BadInput("open without a conversationId", what="bad_message")
        media = choose_media(params.get("media"))
        if media is None:
            raise BadInput(f"no PCMU 8 kHz offer among {params.get('media')!r}", what="format")
        self.channels = list(media["channels"])
        names = [NAMES[c] for c in self.channels]
        try:
            self.call = await self.hub.open(call_id=conversation, source="audiohook", names=names, in_rate=RATE,
                                            params=open_params(params, session_id=self.id))
        except CallRefused as exc:
            raise BadInput(str(exc), what="duplicate_call") from None
        await self.call.start()
        await self.send("opened", {"startPaused": False, "media": [media]})

    async def on_audio(self, data: bytes) -> None:
        if self.call is None:
            raise BadInput("audio before open", what="media_before_start")
        n = len(self.channels)
        if len(data) % n:
            raise BadInput(f"a {len(data)}-byte frame is not whole {n}-channel PCMU samples", what="bad_payload")
        y = ulaw_decode(data).reshape(-1, n).T
        self.samples += y.shape[1]
        await self.call.push(np.ascontiguousarray(y))

    async def on_discarded(self, params: dict[str, Any]) -> None:
        gap = round(duration_s(params.get("discarded", "PT0S")) * RATE)
        if gap > MAX_GAP_S * RATE:
            raise BadInput(f"discarded {gap} samples", what="gap")
        if self.call is not None and gap > 0:
            self.samples += gap
            await self.call.push(np.zeros((len(self.channels), gap), dtype=np.float32))

    async def handle(self, msg: dict[str, Any]) -> bool:
        """One text message; True when the session is over (``close``)."""
        if msg.get("version") != "2" or msg.get("id") != self.id:
            raise BadInput(f"message version {msg.get('version')!r} / id {msg.get('id')!r} does not match",
                           what="bad_message")
        seq = msg.get("seq")
        if not isinstance(seq, int) or seq != self.clientseq + 1:
            raise BadInput(f"seq {seq!r} after {self.clientseq}", what="bad_seq")
        serverseq = msg.get("serverseq", 0)
        if not isinstance(serverseq, int) or serverseq > self.seq:
            raise BadInput(f"serverseq {serverseq!r} ahead of our {self.seq}", what="bad_seq")
        self.clientseq = seq
        kind = msg.get("type")
        raw = msg.get("parameters")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if kind == "open":
            await self.on_open(msg)
        elif kind == "ping":
            await self.send("pong")
        elif kind == "close":
            await self.send("closed")
            return True
        elif kind in ("paused", "resumed"):
            self.paused = kind == "paused"
        elif kind == "discarded":
            await self.on_discarded(params)
        elif kind == "update":
            log.info("audiohook %s: update %s", self.id, json.dumps(params)[:200])
        elif kind == "error":
            log.warning("audiohook %s: client error %s", self.id, json.dumps(params)[:200])
        else:
            raise BadInput(f"unknown message type {kind!r}", what="unknown_event")
        if self.call is not None:
            await self.call.tick()
        return False


async def serve(ws: WebSocket, hub: Hub, session_id: str) -> None:
    s = Session(ws, hub, session_id)
    reason: str | None = None
    try:
        while True:
            m = await receive(ws, timeout_s=hub.settings.idle_timeout_s, check=s.call.check if s.call else None)
            if m.kind == "gone":
                log.warning("audiohook %s: client vanished without close", s.id)
                reason = "disconnected"
                break
            if m.kind == "idle":
                log.warning("audiohook %s: no message for %g s", s.id, hub.settings.idle_timeout_s)
                reason = "disconnected"
                await s.disconnect("error", "idle timeout")
                break
            if m.kind == "bytes":
                await s.on_audio(m.data)
                continue
            msg = parse_json(m.text)
            if not isinstance(msg, dict):
                raise BadInput("a JSON message that is not an object", what="json")
            if await s.handle(msg):
                await close(ws, CLOSE_NORMAL)
                break
    except BadInput as exc:
        hub.metrics.bad_input.labels("audiohook", exc.what).inc()
        log.warning("audiohook %s: %s: %s", s.id, "closed" if exc.closed else "disconnecting", exc)
        if not exc.closed:
            await s.disconnect("error", str(exc))
        reason = "error"
    except Exception as exc:  # Redis gone for good while pushing: this session only
        await s.disconnect("error", failure_reason(exc))
        if s.call is not None:
            await s.call.abort(f"{type(exc).__name__}: {exc}")
        else:
            log.error("audiohook %s: disconnected: %s: %s", s.id, type(exc).__name__, exc)
        return
    if s.call is not None:
        await s.call.finish(reason)
