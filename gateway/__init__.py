"""``ser-gateway``: live call audio from call platforms' media WebSockets (Twilio Media Streams,
Genesys AudioHook, a generic stream) into the shared ingestion core (:mod:`producer.session`).

It imports models, the ingestion core (producer.session and what it hands down), callevents and
the job/result contract of workers only (pyproject.toml, import-linter).
"""
