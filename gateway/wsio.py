"""Small helpers shared by the protocol handlers: bounded receives and bad-input closes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from gateway.settings import MAX_FRAME_BYTES

#: WebSocket close codes (RFC 6455).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_BAD_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011


class BadInput(Exception):
    """A message the protocol does not allow; ``code`` is the WebSocket close code, ``what`` a metric label."""

    def __init__(self, message: str, *, what: str, code: int = CLOSE_POLICY, closed: bool = False) -> None:
        super().__init__(message)
        self.what, self.code = what, code
        self.closed = closed  # the connection is closed already (nothing more can be sent)


@dataclass
class Message:
    kind: str  # "text", "bytes", "gone" (the client closed or vanished), "idle" (nothing for a while)
    text: str = ""
    data: bytes = b""


#: While waiting for a message, run the caller's ``check`` this often (seconds).
CHECK_EVERY_S = 0.5


async def receive(ws: WebSocket, *, timeout_s: float, check: Callable[[], None] | None = None) -> Message:
    """The next message; ``idle`` after ``timeout_s`` without one; BadInput for one over MAX_FRAME_BYTES.
    ``check`` runs every :data:`CHECK_EVERY_S` while waiting (it raises to end the wait: a failed session)."""
    waited = 0.0
    while True:
        step = min(CHECK_EVERY_S, timeout_s - waited) if check is not None else timeout_s
        try:  # asyncio.timeout, not wait_for: no task per frame (~100 frames/s per stereo call)
            async with asyncio.timeout(step):
                msg = await ws.receive()
            break
        except TimeoutError:
            waited += step
            if check is not None:
                check()
            if waited >= timeout_s:
                return Message("idle")
    if msg["type"] == "websocket.disconnect":
        if msg.get("code") == CLOSE_TOO_BIG:  # the server's parser refused a frame over ws_max_size unread
            raise BadInput(f"a frame over the server's limit ({msg.get('reason') or 'too big'})", what="oversized",
                           code=CLOSE_TOO_BIG, closed=True)
        return Message("gone")
    if msg.get("bytes") is not None:
        data = msg["bytes"]
        if len(data) > MAX_FRAME_BYTES:
            raise BadInput(f"a {len(data)}-byte frame (limit {MAX_FRAME_BYTES})", what="oversized",
                           code=CLOSE_TOO_BIG)
        return Message("bytes", data=data)
    text = msg.get("text") or ""
    if len(text) > MAX_FRAME_BYTES:
        raise BadInput(f"a {len(text)}-character message (limit {MAX_FRAME_BYTES})", what="oversized",
                       code=CLOSE_TOO_BIG)
    return Message("text", text=text)


#: A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 5.5: 125-byte payload, 2 for the code).
MAX_REASON_BYTES = 123


def parse_json(text: str) -> Any:
    """A JSON message; BadInput (1007) when malformed, or nested so deep that the parser gives up
    (``RecursionError``: thousands of ``[``; no platform nests beyond a few levels)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadInput("malformed JSON", what="json", code=CLOSE_BAD_DATA) from None


def close_reason(reason: str) -> str:
    """``reason`` cut to :data:`MAX_REASON_BYTES` bytes of UTF-8 on a character boundary."""
    return reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore")


async def close(ws: WebSocket, code: int = CLOSE_NORMAL, reason: str = "") -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code=code, reason=close_reason(reason))
        except Exception:  # the client is gone already
            pass
