"""Conversation dynamics end to end: synthetic speech-like audio (bench/speechlike.py) through
``ser-produce`` with the Silero bundle: the printed summary (embedded), and the events, the
``call_ended`` summary, the ``end`` record and the aggregate metrics (distributed, a real Redis)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import redis

#: (channel, start s, seconds): the customer cuts in at 2.7 s and the agent stops 0.8 s later
#: (yielded); 6 s of silence; the customer cuts in at 14 s and gives up after 1 s (the agent goes on).
UTTERANCES = ((0, 0.5, 3.0), (1, 2.7, 3.3), (0, 12.0, 4.0), (1, 14.0, 1.0), (0, 17.0, 2.0))
SECONDS = 21.0
TALK = {"agent": 9.0, "customer": 4.3}


@pytest.fixture
def dyn_call(tmp_path: Path) -> Path:
    from bench.speechlike import stereo, write_wav

    utts = [(c, int(a * 8000), sec, 40 + k) for k, (c, a, sec) in enumerate(UTTERANCES)]
    write_wav(tmp_path / "dyn.wav", stereo(SECONDS, utts, floor_seed=3), sr=8000)
    return tmp_path / "dyn.wav"


def check(dyn: dict) -> None:
    for name, talk in TALK.items():  # the VAD's speech (it ends the agent's second utterance early)
        assert dyn["channels"][name]["talk_s"] == pytest.approx(talk, abs=1.0), (name, dyn)
    assert dyn["duration_s"] == SECONDS
    assert dyn["silence"]["count"] == 1 and dyn["silence"]["longest_s"] == pytest.approx(6.0, abs=0.5)
    assert dyn["overtalk"]["count"] == 2 and dyn["overtalk"]["total_s"] == pytest.approx(1.8, abs=0.5)
    assert dyn["channels"]["customer"]["interruptions"] == 2 and dyn["channels"]["customer"]["yielded"] == 1
    assert dyn["channels"]["agent"]["interruptions"] == 0
    for ch in dyn["channels"].values():  # speechlike.vowels at -26 dBFS RMS, K-weighted; never raised
        assert -32.0 < ch["level_db"] < -24.0 and ch["raised_s"] == 0.0
        assert 4.0 <= ch["rate_sps"] <= 6.0  # speechlike.vowels: a syllable every 0.2 s


def test_ser_produce_prints_the_dynamics(dyn_call: Path, silero_bundle_dir: Path) -> None:
    from test_producer import produce

    code, out, err = produce([str(dyn_call), "--model", str(silero_bundle_dir), "--channel-names", "agent,customer"])
    assert code == 0, err
    talk = dict(re.findall(r"^(\w+): .*\n(?:  .*\n)*?  talk: ([\d.]+) s", out, flags=re.M))
    assert set(talk) == {"agent", "customer"}, out
    speech = dict(re.findall(r"^(\w+): \d+ speech segment\(s\), ([\d.]+) s of speech", out, flags=re.M))
    for name, seconds in TALK.items():  # the speech the VAD found, counted once
        assert float(talk[name]) == pytest.approx(seconds, abs=1.0)
        assert talk[name] == speech[name]
    assert "interrupted the other 2 time(s) (1 yielded); level -" in out and "LKFS, raised voice 0.0 s" in out
    line = [x for x in out.splitlines() if x.startswith("dynamics:")]
    assert len(line) == 1 and "1 silence(s) >= 3 s" in line[0] and "2 overtalk(s)" in line[0], out
    code, _, err = produce([str(dyn_call), "--model", str(silero_bundle_dir), "--format", "jsonl"])
    assert code == 0 and "dynamics: non-talk" in err  # jsonl/csv: the summary on stderr


def test_distributed_call_publishes_dynamics(redis_url: str, dyn_call: Path, silero_bundle_dir: Path) -> None:
    from test_pipeline_redis import QUEUE_KEY, producer_proc, wait_for, work_in_process

    from callevents.schema import decode_event, events_key
    from models.bundle import load_bundle
    from models.runtime import EmotionModel
    from producer.metrics import DYNAMICS_FIELDS, PRODUCER_METRICS_KEY

    client = redis.Redis.from_url(redis_url)
    prod = producer_proc(redis_url, str(dyn_call), "--model", str(silero_bundle_dir), "--stream-id", "dyn1",
                         "--channel-names", "agent,customer", "--format", "jsonl", "--batch", "16")
    wait_for(lambda: client.llen(QUEUE_KEY) >= 2)  # both channels' batch (--batch 16) queued at the end of input
    assert client.exists("ser:call:dyn1") and client.xlen(events_key("dyn1")) > 3  # events before any result
    work_in_process(redis_url, EmotionModel(load_bundle(silero_bundle_dir), threads=1))
    out, err = prod.communicate(timeout=60)
    assert prod.returncode == 0, err
    events = [decode_event(f) for _, f in client.xrange(events_key("dyn1"))]
    kinds = [e["kind"] for e in events]
    assert kinds.count("silence") == 1 and kinds.count("overtalk") == 2 and kinds.count("dynamics") >= 4
    over = [e for e in events if e["kind"] == "overtalk"]
    assert [(e["by"], e["over"], e["yielded"]) for e in over] == [("customer", ["agent"], True),
                                                                   ("customer", ["agent"], False)]
    ended = events[-1]
    assert ended["kind"] == "call_ended"
    check(ended["dynamics"])
    assert len(ended["dynamics"]["silences"]) == 1 and len(ended["dynamics"]["overtalks"]) == 2
    dyn = [e for e in events if e["kind"] == "dynamics"]
    assert json.loads(client.hget("ser:call:dyn1", "dynamics"))["at_s"] == dyn[-1]["at_s"] == SECONDS
    end = [json.loads(f[b"record"]) for _, f in client.xrange("ser:results:dyn1") if f[b"kind"] == b"end"]
    assert len(end) == 1 and end[0]["dynamics"] == ended["dynamics"]
    fields = {k.decode(): float(v) for k, v in client.hgetall(PRODUCER_METRICS_KEY).items()}
    assert {f"dynamics:{k}" for k in DYNAMICS_FIELDS} <= set(fields) | {"dynamics:non_talk_seconds"}
    assert fields["dynamics:interruptions"] == 2 and fields["dynamics:overtalks"] == 2
    assert fields["dynamics:talk_seconds"] == pytest.approx(sum(TALK.values()), abs=1.0)


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def test_dynscore_measures_against_the_truth(silero_bundle_dir: Path) -> None:
    """bench.dynscore on one short seeded call. The truth it scores against is what the call holds
    (re-derived here from the utterance spans: each side's talk seconds, the silences of 3 s or more,
    the overtalks of 0.5 s or more, the raised seconds), and the live session finds every episode and
    no other (each interruption credited to the side that cut in), each side's talk time within 10 %
    and the raised speech within 0.5 s."""
    from click.testing import CliRunner

    from bench.dynscore import NAMES, conversation, main, truth_of

    utts, seconds = conversation(0, seconds=45.0)
    talk = {name: _union([(a, a + sec) for c, a, sec in utts if c == i]) for i, name in enumerate(NAMES)}
    anyone = _union(talk["agent"] + talk["customer"])
    gaps = zip([b for _, b in anyone], [a for a, _ in anyone[1:]] + [seconds], strict=True)
    silences = [(a, b) for a, b in gaps if b - a >= 3.0]
    both = [(max(a, c), min(b, d)) for a, b in talk["agent"] for c, d in talk["customer"]]
    overtalks = [(a, b) for a, b in both if b - a >= 0.5]
    raised_s = sum(sec for c, a, sec in utts if c == 1 and seconds / 3 <= a < 2 * seconds / 3)
    assert len(silences) >= 2 and len(overtalks) >= 2 and raised_s >= 1.0  # the call holds each kind

    truth = truth_of(utts, seconds)
    for name in NAMES:
        assert truth["channels"][name]["talk_s"] == pytest.approx(sum(b - a for a, b in talk[name]), abs=0.01)
    for key, spans in (("silences", silences), ("overtalks", overtalks)):
        assert len(truth[key]) == len(spans) and np.allclose(truth[key], spans, atol=0.01), (key, truth[key], spans)

    res = CliRunner().invoke(main, ["--calls", "1", "--seconds", "45", "--levels=-20,-20", "--raise-db", "12",
                                    "--model", str(silero_bundle_dir)])
    assert res.exit_code == 0, res.output
    counts = {k: (int(tp), int(found), int(true)) for k, tp, found, tp2, true in re.findall(
        r"^(\w+): precision [\d.]+ \((\d+)/(\d+)\), recall [\d.]+ \((\d+)/(\d+)\)", res.output, flags=re.M)
        if tp == tp2}
    n = {"silence": len(silences), "overtalk": len(overtalks), "interruption": len(overtalks)}
    assert counts == {k: (v, v, v) for k, v in n.items()}, res.output
    errs = {name: float(x) for name, x in re.findall(r"talk-time error (\w+): median ([\d.]+) %", res.output)}
    assert set(errs) == set(NAMES) and all(e < 10 for e in errs.values()), res.output
    got, true = (float(x) for x in re.search(r"customer ([\d.]+) s measured of ([\d.]+) s raised", res.output).groups())
    assert true == pytest.approx(raised_s, abs=0.05) and abs(got - true) <= 0.5, res.output
    assert "sides never raised 0.0 s" in res.output, res.output
