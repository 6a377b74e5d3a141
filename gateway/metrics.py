"""The gateway's Prometheus metrics (``GET /metrics``), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("ser_gateway_active_calls", "Live calls", ["source"], registry=r)
        self.connections = Counter("ser_gateway_connections_total", "WebSocket connections by route and outcome",
                                   ["route", "outcome"], registry=r)
        self.audio_seconds = Counter("ser_gateway_audio_seconds_total", "Seconds of call audio received",
                                     ["source"], registry=r)
        self.records = Counter("ser_gateway_records_total", "Result and failure records received", registry=r)
        self.bad_input = Counter("ser_gateway_bad_input_total", "Sessions ended or messages ignored for bad input",
                                 ["route", "what"], registry=r)
        self.dropped_seconds = Counter("ser_gateway_dropped_audio_seconds_total",
                                       "Seconds of call audio dropped (kept as silence) while a call's backlog "
                                       "was full", ["source"], registry=r)
        self.streams = Counter("ser_gateway_reused_call_ids_total",
                               "Sessions for a call id used before (each became a stream <id>#n)", ["source"],
                               registry=r)
        self.guard = Counter("ser_gateway_refused_sockets_total",
                             "TCP connections refused or dropped before a request (limits, header timeout)",
                             ["why"], registry=r)
        self.errors = Counter("ser_gateway_session_errors_total", "Sessions ended by an error (Redis gone)",
                              ["source"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
