"""``python -m bench``: the project's one throughput/latency benchmark (see docs/benchmark.md).

Modules: :mod:`bench.server` (a private redis-server on a free port), :mod:`bench.load`
(end to end through Redis and one worker process), :mod:`bench.inprocess` (features + inference
only), :mod:`bench.baseline` (seed-style librosa "kitchen sink" + Keras ``model.predict``),
:mod:`bench.report` (machine facts and the table).
"""
