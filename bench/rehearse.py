"""Rehearse a live platform call locally: stream a stereo file to ``ser-gateway`` as Twilio would.

    python -m bench.rehearse examples/call.wav --gateway ws://127.0.0.1:8080 [--realtime]

Plays the simulated Twilio Media Streams client of :mod:`bench.platforms` (the one the gateway tests
use): signs the upgrade with ``SER_TWILIO_AUTH_TOKEN`` as Twilio does (the URL the gateway sees:
``--public-url`` if it has one, else ``wss://<host>/twilio``), sends the file's ``--customer``
channel as the inbound track and the other as the outbound one, 20 ms mu-law frames, then ``stop``.
With ``SER_REDIS_URL`` set (the gateway's Redis) it then waits for the call's records and prints one
line per segment, as the gateway's pool published them. Exit 0 when the call ended with its records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from urllib.parse import urlsplit

from bench.platforms import FRAME, RATE, connect, twilio_messages, twilio_signature


def _load(path: str) -> tuple[object, float]:
    import numpy as np

    from models.audio import decode

    y, _ = decode(path, sr=RATE)
    y = np.asarray(y, dtype=np.float32)
    if y.shape[0] != 2:
        raise SystemExit(f"{path}: a stereo file is needed (one speaker per channel), it has {y.shape[0]}")
    return y, y.shape[1] / RATE


async def _send(url: str, signed_url: str, token: str, msgs: list[str], realtime: bool) -> None:
    sig = twilio_signature(token, signed_url)
    async with await connect(url, {"X-Twilio-Signature": sig}) as ws:
        start = time.monotonic()
        frames = 0
        for m in msgs:
            await ws.send(m)
            if realtime and '"track": "outbound"' in m:  # one 20 ms frame of both tracks sent
                frames += 1
                delay = start + frames * FRAME / RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await asyncio.wait_for(ws.wait_closed(), 30)


def _follow(redis_url: str, call_sid: str, timeout: float) -> int:
    import redis

    from workers.contract import decode_entry, results_key

    client = redis.Redis.from_url(redis_url)
    last, deadline, n = "0", time.monotonic() + timeout, 0
    try:
        while time.monotonic() < deadline:
            for _, entries in client.xread({results_key(call_sid): last}, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    rec = decode_entry(fields)
                    if rec["kind"] == "result":
                        n += 1
                        print(f"{rec['channel']:>9} {rec['start_s']:7.2f}–{rec['end_s']:6.2f} s  {rec['label']:<9} "
                              f"{rec['confidence']:.2f}{'  (uncertain)' if rec.get('uncertain') else ''}")
                    elif rec["kind"] == "end":  # the call's last record: every result came before it
                        print(f"call {call_sid}: ended, {n} segment record(s)", file=sys.stderr)
                        return 0 if n else 1
        print(f"call {call_sid}: no end record within {timeout:g} s", file=sys.stderr)
        return 1
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rehearse", description=__doc__.split("\n")[0])
    parser.add_argument("audio", help="a stereo file (e.g. examples/call.wav: agent left, customer right)")
    parser.add_argument("--gateway", default="ws://127.0.0.1:8080", help="the gateway's base URL [%(default)s]")
    parser.add_argument("--public-url", default=os.environ.get("SER_PUBLIC_URL"),
                        help="the gateway's --public-url, if it has one [env SER_PUBLIC_URL]")
    parser.add_argument("--customer", type=int, default=1, help="the customer's channel (Twilio's inbound "
                        "track) [%(default)s]")
    parser.add_argument("--realtime", action="store_true", help="pace the frames at real time, as a call is")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the records")
    args = parser.parse_args(argv)
    token = os.environ.get("SER_TWILIO_AUTH_TOKEN")
    if not token:
        print("SER_TWILIO_AUTH_TOKEN is not set (the token the gateway checks Twilio's signatures with)",
              file=sys.stderr)
        return 2
    y, seconds = _load(args.audio)
    call_sid = "CA" + uuid.uuid4().hex
    rows = [args.customer, 1 - args.customer]
    msgs = twilio_messages(y[rows], call_sid=call_sid, params={"source": os.path.basename(args.audio)})  # type: ignore[index]
    url = args.gateway.rstrip("/") + "/twilio"
    host = urlsplit(args.public_url).netloc if args.public_url else urlsplit(url).netloc
    try:
        asyncio.run(_send(url, f"wss://{host}/twilio", token, msgs, args.realtime))
    except (TimeoutError, OSError) as exc:
        print(f"cannot stream to {url}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # websockets' InvalidStatus: the gateway refused the upgrade
        print(f"{url} refused the call: {exc}", file=sys.stderr)
        return 1
    print(f"call {call_sid}: {seconds:.1f} s of stereo audio sent to {url}", file=sys.stderr)
    redis_url = os.environ.get("SER_REDIS_URL")
    if not redis_url:
        return 0
    return _follow(redis_url, call_sid, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
