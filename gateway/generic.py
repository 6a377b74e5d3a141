"""The generic stream on ``/stream`` (the shape of jambonz ``listen`` and FreeSWITCH ``mod_audio_fork``):
one JSON text frame ``{"call_id", "sample_rate", "channels", "encoding": pcm16|mulaw|alaw,
"channel_names", "params"}`` (``params``: the call's custom parameters, an object of names to text,
numbers or booleans, as ``call_started.params``; :func:`callevents.schema.check_params`), then binary
frames of interleaved little-endian audio; the client closes the WebSocket (or sends
``{"event": "stop"}``) when the call ends."""

from __future__ import annotations

import logging
from typing import Any

from starlette.websockets import WebSocket

from callevents.schema import check_params
from gateway.hub import Hub, LiveCall, failure_reason
from gateway.stream_ids import CallRefused
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
from models.audio import RAW_ENCODINGS, decode_raw
from models.errors import SERError
from workers.contract import sanitize

log = logging.getLogger("ser.gateway.generic")
ENCODINGS = ("pcm16", "mulaw", "alaw")


def parse_params(head: dict[str, Any]) -> dict[str, str]:
    """The header's ``params`` (absent: none); :class:`BadInput` naming a bad one."""
    raw = head.get("params")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadInput("params must be an object of names to values", what="bad_start")
    try:
        return check_params(raw)
    except ValueError as exc:
        raise BadInput(str(exc), what="bad_start") from None


def parse_header(text: str) -> tuple[str, int, int, str, list[str], dict[str, str]]:
    try:
        head: Any = parse_json(text)
    except BadInput:
        raise BadInput("malformed JSON header", what="json", code=CLOSE_BAD_DATA) from None
    if not isinstance(head, dict) or not isinstance(head.get("call_id"), str) or not head["call_id"]:
        raise BadInput("the header needs a call_id", what="bad_start")
    rate, channels, encoding = head.get("sample_rate"), head.get("channels", 1), head.get("encoding", "pcm16")
    if not isinstance(rate, int) or not 8000 <= rate <= 48000:
        raise BadInput(f"sample_rate {rate!r} (8000-48000)", what="format", code=CLOSE_UNSUPPORTED)
    if not isinstance(channels, int) or not 1 <= channels <= 2:
        raise BadInput(f"channels {channels!r} (1 or 2)", what="format", code=CLOSE_UNSUPPORTED)
    if encoding not in ENCODINGS:
        raise BadInput(f"encoding {encoding!r} (one of {', '.join(ENCODINGS)})", what="format",
                       code=CLOSE_UNSUPPORTED)
    names = head.get("channel_names") or (["customer", "agent"][:channels] if channels == 2 else ["customer"])
    if (not isinstance(names, list) or len(names) != channels or len({sanitize(str(n)) for n in names}) != channels
            or not all(isinstance(n, str) and n for n in names)):
        raise BadInput(f"channel_names {names!r}: {channels} distinct names", what="bad_start")
    return head["call_id"], rate, channels, encoding, [sanitize(n) for n in names], parse_params(head)


async def serve(ws: WebSocket, hub: Hub) -> None:
    call: LiveCall | None = None
    reason: str | None = None
    try:
        first = await receive(ws, timeout_s=hub.settings.idle_timeout_s)
        if first.kind != "text":
            raise BadInput("the first frame must be the JSON header", what="media_before_start")
        call_id, rate, channels, encoding, names, params = parse_header(first.text)
        frame = RAW_ENCODINGS[encoding][1] * channels
        try:
            call = await hub.open(call_id=call_id, source="stream", names=names, in_rate=rate, params=params)
        except CallRefused as exc:
            raise BadInput(str(exc), what="duplicate_call") from None
        await call.start()
        while True:
            m = await receive(ws, timeout_s=hub.settings.idle_timeout_s, check=call.check if call else None)
            if m.kind in ("gone", "idle"):
                reason = "disconnected" if m.kind == "idle" else None  # a close is this protocol's stop
                break
            if m.kind == "text":
                msg = parse_json(m.text)
                if isinstance(msg, dict) and msg.get("event") == "stop":
                    break
                continue  # metadata: ignored
            if len(m.data) % frame:
                raise BadInput(f"a {len(m.data)}-byte frame is not whole {channels}-channel {encoding} samples",
                               what="bad_payload", code=CLOSE_BAD_DATA)
            try:
                y, _ = decode_raw(m.data, sr=rate, channels=channels, encoding=encoding)
            except SERError as exc:
                raise BadInput(str(exc), what="bad_payload", code=CLOSE_BAD_DATA) from None
            await call.push(y)
    except BadInput as exc:
        hub.metrics.bad_input.labels("stream", exc.what).inc()
        log.warning("stream %s: closing (%d): %s", call.key if call else "-", exc.code, exc)
        if not exc.closed:
            await close(ws, exc.code, str(exc))
        reason = "error"
    except Exception as exc:
        await close(ws, CLOSE_ERROR, failure_reason(exc))
        if call is not None:
            await call.abort(f"{type(exc).__name__}: {exc}")
        else:
            log.error("stream: closed 1011: %s: %s", type(exc).__name__, exc)
        return
    await close(ws, CLOSE_NORMAL)
    if call is not None:
        await call.finish(reason)
