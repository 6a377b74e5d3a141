"""Authentication of the upgrade requests, checked before a WebSocket is accepted.

* Twilio: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, the URL Twilio called)); the URL is
  ``wss://`` + the public host (``--public-url``, else the ``Host`` header) + path (+ ``?query``).
* Genesys AudioHook: ``X-API-KEY`` and an HTTP Message Signature (RFC 9421 as AudioHook uses it:
  label ``sig1``, components ``@request-target @authority audiohook-organization-id
  audiohook-session-id audiohook-correlation-id x-api-key``, ``alg="hmac-sha256"`` keyed with the
  base64-decoded client secret, ``keyid`` = the API key, ``created``/``expires`` fresh).
* Generic stream: ``Authorization: Bearer <SER_GATEWAY_TOKEN>``.

Every comparison of a secret is constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import re
import time
from collections.abc import Mapping

from gateway.settings import REPLAY_CAPACITY, SIGNATURE_MAX_AGE_S, SIGNATURE_SKEW_S

#: Components an AudioHook signature must cover.
AUDIOHOOK_COMPONENTS = ("@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
                        "audiohook-correlation-id", "x-api-key")
_INPUT = re.compile(r'^\s*(?P<label>[a-z0-9_-]+)=\((?P<components>[^)]*)\)(?P<params>(;[^;]*)*)\s*$')
_SIG = re.compile(r'^\s*(?P<label>[a-z0-9_-]+)=:(?P<value>[A-Za-z0-9+/=]+):\s*$')


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def twilio_signature(token: str, url: str) -> str:
    """Twilio's request signature of a GET (a WebSocket upgrade): base64 HMAC-SHA1 of the URL."""
    return base64.b64encode(hmac.new(token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def twilio_url(*, host: str, path: str, query: str) -> str:
    return f"wss://{host}{path}" + (f"?{query}" if query else "")


def twilio_ok(token: str, *, url: str, signature: str | None) -> bool:
    return bool(signature) and _eq(twilio_signature(token, url), signature or "")


def bearer_ok(token: str, authorization: str | None) -> bool:
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and bool(value) and _eq(value.strip(), token)


def signature_base(*, components: list[str], values: Mapping[str, str], params: str) -> str:
    """The signature base: one ``"name": value`` line per component, then ``"@signature-params"``."""
    lines = [f'"{name}": {values[name]}' for name in components]
    lines.append(f'"@signature-params": {params}')
    return "\n".join(lines)


class SignatureError(ValueError):
    """Why a signed request is refused (no secret in the message)."""


def audiohook_verify(*, api_key: str, secret: bytes, headers: Mapping[str, str], request_target: str,
                     authority: str, now: float | None = None) -> tuple[str, float]:
    """Raise :class:`SignatureError` unless the request carries ``api_key`` and a valid, fresh signature.
    ``headers``: lower-case names. Returns the signature value and the time (unix s) until which it
    would be accepted again (for :class:`ReplayGuard`)."""
    if not _eq(headers.get("x-api-key", ""), api_key):
        raise SignatureError("missing or wrong X-API-KEY")
    m = _INPUT.match(headers.get("signature-input", ""))
    s = _SIG.match(headers.get("signature", ""))
    if m is None or s is None:
        raise SignatureError("missing or malformed Signature/Signature-Input")
    if m["label"] != s["label"]:
        raise SignatureError("Signature and Signature-Input labels differ")
    components = [c.strip('"') for c in m["components"].split()]
    if sorted(components) != sorted(AUDIOHOOK_COMPONENTS) or len(set(components)) != len(components):
        raise SignatureError(f"signature covers {components}, not {list(AUDIOHOOK_COMPONENTS)}")
    params: dict[str, str] = {}
    for part in m["params"].split(";")[1:]:
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"')
    if params.get("alg", "hmac-sha256") != "hmac-sha256":
        raise SignatureError(f"unsupported signature alg {params.get('alg')!r}")
    if not _eq(params.get("keyid", ""), api_key):
        raise SignatureError("signature keyid is not the API key")
    now = time.time() if now is None else now
    try:
        created = int(params["created"])
        expires = int(params["expires"]) if "expires" in params else None
    except (KeyError, ValueError):
        raise SignatureError("signature without a valid created time") from None
    if created > now + SIGNATURE_SKEW_S or now - created > SIGNATURE_MAX_AGE_S:
        raise SignatureError(f"signature not fresh (created {created}, now {int(now)})")
    if expires is not None and expires < now:
        raise SignatureError(f"signature expired at {expires}")
    values = {"@request-target": request_target, "@authority": authority.lower(),
              **{c: headers.get(c, "").strip() for c in components if not c.startswith("@")}}
    base = signature_base(components=components, values=values, params=headers["signature-input"].strip()
                          [len(m["label"]) + 1:])
    want = base64.b64encode(hmac.new(secret, base.encode(), hashlib.sha256).digest()).decode()
    if not _eq(want, s["value"]):
        raise SignatureError("signature does not verify")
    until = created + SIGNATURE_MAX_AGE_S
    return s["value"], min(until, float(expires)) if expires is not None else until


class ReplayGuard:
    """The signatures accepted in this process, each remembered until it would expire anyway: a
    request presented again (a replay; a signature covers its nonce) is refused. At most
    ``capacity`` live entries (only verified signatures are added, so filling it needs the secret);
    when full, new ones are refused. Per process: a replay to another gateway is not seen."""

    def __init__(self, capacity: int = REPLAY_CAPACITY) -> None:
        self.capacity = capacity
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._until)

    def admit(self, value: str, until: float, now: float | None = None) -> str | None:
        """None: first use (now remembered); else why it is refused."""
        now = time.time() if now is None else now
        while self._heap and self._heap[0][0] < now:
            _, old = heapq.heappop(self._heap)
            if self._until.get(old, now) < now:
                del self._until[old]
        if value in self._until:
            return "signature already used (replay)"
        if len(self._until) >= self.capacity:
            return "too many fresh signatures to remember; try again later"
        self._until[value] = until + SIGNATURE_SKEW_S
        heapq.heappush(self._heap, (until + SIGNATURE_SKEW_S, value))
        return None
