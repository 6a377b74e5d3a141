"""``python -m bench``: the project's one throughput/latency benchmark (see docs/benchmark.md).

Modules: :mod:`bench.server` (a private redis-server on a free port), :mod:`bench.load`
(end to end through Redis and one worker process), :mod:`bench.inprocess` (features + inference
only), :mod:`bench.baseline` (seed-style librosa "kitchen sink" + Keras ``model.predict``),
:mod:`bench.report` (machine facts and the table).

Simulated calls and VAD measurements (docs/vad.md): :mod:`bench.calls` (``python -m bench.calls
make|score``: call simulator with ground truth; signals in :mod:`bench.callsignals`),
:mod:`bench.callscore` (scores ``ser-produce --format jsonl`` output against it),
:mod:`bench.vad_eval` (``python -m bench.vad_eval``: VAD candidates; detectors and metrics in
:mod:`bench.vads`).
"""
