"""Frozen settings of one ``ser-gateway`` process (built by :mod:`gateway.cli` from options/env)."""

from __future__ import annotations

from dataclasses import dataclass

from callevents.rules import EventSettings
from workers.contract import DEFAULT_QUEUE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Seconds without any message from a platform before its call ends (``reason: disconnected``).
DEFAULT_IDLE_TIMEOUT_S = 30.0
#: Seconds without progress (Redis unreachable, no result) before a call gives up.
DEFAULT_TIMEOUT_S = 60.0
#: Threads running the blocking parts of the sessions (segmenting, enqueueing, backpressure).
DEFAULT_THREADS = 16
#: Largest WebSocket message accepted (bytes): more closes the session (1009). uvicorn itself drops
#: anything over 1 MiB (ws_max_size) without a close frame.
MAX_FRAME_BYTES = 64 * 1024
#: uvicorn's own limit (ws_max_size): a frame over it is refused by the parser unread (closed 1009).
MAX_WS_MESSAGE_BYTES = 1 << 20
#: Audio is pushed into a session in blocks of this many seconds (the producer's block length).
PUSH_BLOCK_S = 0.1
#: One track may run ahead of the other by this much before the late one is filled with silence (s).
MAX_TRACK_LAG_S = 1.0
#: A timestamp/position jump beyond this (s) is refused as bad input (it would be a huge silence).
MAX_GAP_S = 60.0
#: Concurrent TCP connections one process holds (all routes; more are refused with 503), and per
#: source address (0: no per-address limit; behind a proxy every client has the proxy's address).
DEFAULT_MAX_CONNECTIONS = 2000
DEFAULT_MAX_PER_ADDRESS = 200
#: Seconds a new connection has to send a complete request head (else 408 and closed).
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Seconds an AudioHook client has to answer our ``disconnect`` with ``close``.
CLOSE_WAIT_S = 5.0
#: Seconds a signed AudioHook request stays fresh after its ``created`` (and its clock may lead ours).
SIGNATURE_MAX_AGE_S = 300.0
SIGNATURE_SKEW_S = 30.0
#: Most AudioHook signatures remembered at once (replay protection, per process).
REPLAY_CAPACITY = 100_000
#: Environment variables holding credentials (never options: they would show in argv).
TWILIO_TOKEN_ENV = "SER_TWILIO_AUTH_TOKEN"
AUDIOHOOK_KEY_ENV = "SER_AUDIOHOOK_API_KEY"
AUDIOHOOK_SECRET_ENV = "SER_AUDIOHOOK_CLIENT_SECRET"
STREAM_TOKEN_ENV = "SER_GATEWAY_TOKEN"


@dataclass(frozen=True)
class Credentials:
    twilio_auth_token: str | None = None
    audiohook_api_key: str | None = None
    audiohook_secret: bytes | None = None  # base64-decoded
    stream_token: str | None = None
    insecure_no_auth: bool = False  # local experiments only: every route accepts everyone


@dataclass(frozen=True)
class GatewaySettings:
    credentials: Credentials
    model_dir: str | None = None
    redis_url: str | None = None  # None: embedded (classify in-process, nothing written to Redis)
    queue: str = DEFAULT_QUEUE
    public_url: str | None = None  # e.g. https://ser.example.com: its host is the one signatures cover
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    resend_after_s: float = 30.0
    max_pending: int = 256
    threads: int = DEFAULT_THREADS
    events: EventSettings | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
