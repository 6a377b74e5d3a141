"""Turns (producer.turns): aggregation rules with exact numbers, the session's wiring (embedded and
distributed through a real redis-server give the same output, turns in the results stream), the
writers, the summary and the report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from callevents.rules import Engine
from producer.cli import main as produce_main
from producer.collector import Collector
from producer.output import CSV_HEAD, CSV_TAIL, make_writer
from producer.summary_lines import ChannelStats, channel_lines, summarise
from producer.turns import DEFAULT_TURN_GAP_S, TurnBuilder
from reports.html import render_call
from workers.contract import decode_entry, encode_entry, results_key

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
EXPECTED = [("ch0", 0), ("ch0", 1), ("ch1", 2), ("ch1", 3), ("ch0", 4), ("ch1", 4)]


def res(channel: str, seq: int, start: float, end: float, probs: dict[str, float], **extra: Any) -> dict[str, Any]:
    label = max(probs, key=lambda lab: probs[lab])
    return {"kind": "result", "stream_id": "c1", "channel": channel, "seq": seq, "start_s": start, "end_s": end,
            "label": label, "confidence": probs[label], "uncertain": False, "probs": probs, "model": "m@1", **extra}


A = {"a": 0.9, "b": 0.1}
B = {"a": 0.2, "b": 0.8}


def fail(channel: str, seq: int, start: float, end: float) -> dict[str, Any]:
    return {"kind": "failure", "stream_id": "c1", "channel": channel, "seq": seq, "start_s": start, "end_s": end,
            "error": "boom", "model": "m@1"}


# --- aggregation --------------------------------------------------------------------------------------
def test_gap_splits_turns_at_the_named_threshold() -> None:
    assert DEFAULT_TURN_GAP_S == 2.0
    b = TurnBuilder(gap_s=1.0)
    assert b.feed(res("x", 0, 0.0, 3.0, A)) == []
    assert b.feed(res("x", 1, 3.5, 6.0, A)) == []  # a 0.5 s pause
    assert b.feed(res("x", 2, 7.0, 9.0, A)) == []  # exactly the gap: still the same turn
    closed = b.feed(res("x", 3, 10.001, 12.0, A))  # 1.001 s: a new turn
    assert [(t["seq"], t["start_s"], t["end_s"], t["segments"]) for t in closed] == [(0, 0.0, 9.0, 3)]
    last = b.finish()
    assert [(t["seq"], t["start_s"], t["end_s"], t["segments"]) for t in last] == [(1, 10.001, 12.0, 1)]
    assert b.finish() == [] and b.open_turns == 0
    wide = TurnBuilder()  # the default: 2 s
    wide.feed(res("x", 0, 0.0, 3.0, A))
    assert wide.feed(res("x", 1, 4.9, 6.0, A)) == [] and len(wide.finish()) == 1


def test_probabilities_are_averaged_with_duration_weights() -> None:
    b = TurnBuilder()
    b.feed(res("x", 0, 0.0, 1.0, A))  # weight 1
    b.feed(res("x", 1, 1.0, 4.0, B))  # weight 3
    (turn,) = b.finish()
    # a: (1 * 0.9 + 3 * 0.2) / 4 = 0.375; b: (1 * 0.1 + 3 * 0.8) / 4 = 0.625 (a plain mean would say 0.55/0.45)
    assert turn == {"kind": "turn", "stream_id": "c1", "channel": "x", "seq": 0, "start_s": 0.0, "end_s": 4.0,
                    "segments": 2, "label": "b", "confidence": 0.625, "uncertain": False,
                    "probs": {"a": 0.375, "b": 0.625}, "model": "m@1"}
    # the longer segment wins even though the first one is more confident
    b2 = TurnBuilder()
    b2.feed(res("x", 0, 0.0, 3.0, A))
    b2.feed(res("x", 1, 3.0, 4.0, B))
    (t2,) = b2.finish()
    assert t2["probs"] == {"a": pytest.approx(0.725), "b": pytest.approx(0.275)} and t2["label"] == "a"


def test_overlapping_windows_extend_the_turn_and_each_counts_in_full() -> None:
    b = TurnBuilder()
    b.feed(res("x", 0, 0.0, 3.0, A))
    b.feed(res("x", 1, 2.0, 5.0, B))  # overlaps: negative gap
    b.feed(res("x", 2, 2.5, 4.0, B))  # inside the turn: the end stays 5.0
    assert b.feed(res("x", 3, 5.9, 6.4, A)) == []  # 0.9 s after 5.0, not after 4.0
    (turn,) = b.finish()
    assert (turn["start_s"], turn["end_s"], turn["segments"]) == (0.0, 6.4, 4)
    w = 3.0 + 3.0 + 1.5 + 0.5
    assert turn["probs"]["a"] == round((3.0 * 0.9 + 3.0 * 0.2 + 1.5 * 0.2 + 0.5 * 0.9) / w, 6)


def test_hand_over_closes_a_turn_talk_over_does_not_and_turns_are_numbered_per_channel() -> None:
    b = TurnBuilder()
    out = b.interleave([res("agent", 0, 0.0, 3.0, A), res("cust", 0, 1.0, 2.0, B),  # cust talks over: no close
                        res("agent", 1, 3.5, 5.0, A),  # the agent goes on
                        res("cust", 1, 5.5, 7.0, B),  # the customer takes the floor: the agent's turn ends
                        res("cust", 2, 7.2, 8.0, B), res("agent", 2, 9.0, 10.0, A)])
    kinds = [(r["kind"], r["channel"], r["seq"]) for r in out]
    assert kinds == [("result", "agent", 0), ("result", "cust", 0),
                     ("result", "agent", 1), ("turn", "cust", 0),  # the back-channel was a turn of its own
                     ("result", "cust", 1), ("turn", "agent", 0), ("result", "cust", 2),
                     ("result", "agent", 2), ("turn", "cust", 1)]
    cust0, agent0, cust1 = out[3], out[5], out[8]
    assert (cust0["start_s"], cust0["end_s"], cust0["segments"]) == (1.0, 2.0, 1)
    assert (agent0["start_s"], agent0["end_s"], agent0["segments"]) == (0.0, 5.0, 2)  # cust's 1-2 s did not end it
    assert (cust1["start_s"], cust1["end_s"], cust1["segments"]) == (5.5, 8.0, 2)
    rest = b.finish()
    assert [(t["channel"], t["seq"], t["start_s"], t["end_s"], t["segments"]) for t in rest] == [
        ("agent", 1, 9.0, 10.0, 1)]
    both = TurnBuilder()  # finish: by start time
    both.interleave([res("agent", 0, 0.0, 3.0, A), res("cust", 0, 1.0, 4.0, B)])
    assert [t["channel"] for t in both.finish()] == ["agent", "cust"]


def test_failures_neither_break_nor_extend_a_turn() -> None:
    b = TurnBuilder()
    out = b.interleave([res("x", 0, 0.0, 3.0, A), fail("x", 1, 3.0, 6.0), res("x", 2, 3.5, 4.0, B),
                        fail("x", 3, 20.0, 23.0), {"kind": "end", "stream_id": "c1"}])
    assert [r["kind"] for r in out] == ["result", "failure", "result", "failure", "end"]  # nothing closed
    (turn,) = b.finish()
    assert (turn["end_s"], turn["segments"]) == (4.0, 2)  # the failures' 6.0 / 23.0 are not the turn's end
    b2 = TurnBuilder()
    b2.interleave([res("x", 0, 0.0, 3.0, A), fail("x", 1, 3.0, 6.0)])
    assert b2.feed(res("x", 2, 6.0, 9.0, A))[0]["end_s"] == 3.0  # 3 s after the last result: no bridge
    b3 = TurnBuilder()
    assert len(b3.interleave([fail("x", 0, 0.0, 3.0)])) == 1 and b3.finish() == []


def test_uncertain_segments_count_and_the_turn_is_judged_on_its_own_confidence() -> None:
    b = TurnBuilder(uncertain_below=0.7)
    b.feed(res("x", 0, 0.0, 1.0, A))
    b.feed({**res("x", 1, 1.0, 4.0, B), "uncertain": True})  # counted: weight 3
    (turn,) = b.finish()
    assert turn["probs"] == {"a": 0.375, "b": 0.625} and turn["uncertain"] is True  # 0.625 < 0.7
    b = TurnBuilder(uncertain_below=0.6)
    b.feed({**res("x", 0, 0.0, 1.0, {"a": 0.55, "b": 0.45}), "uncertain": True})
    b.feed({**res("x", 1, 1.0, 2.0, {"a": 0.75, "b": 0.25})})
    (turn,) = b.finish()
    assert turn["confidence"] == 0.65 and turn["uncertain"] is False


def test_zero_length_segments_and_bad_input() -> None:
    b = TurnBuilder()
    b.feed(res("x", 0, 1.0, 1.0, A))
    b.feed(res("x", 1, 1.0, 1.0, B))
    (turn,) = b.finish()
    assert turn["probs"] == {"a": 0.55, "b": 0.45}  # every weight 0: a plain mean
    with pytest.raises(ValueError, match=r"gap_s=-1"):
        TurnBuilder(gap_s=-1)
    with pytest.raises(ValueError, match=r"uncertain_below=1.5"):
        TurnBuilder(uncertain_below=1.5)
    with pytest.raises(ValueError, match="result x seq 7 has no probs"):
        TurnBuilder().feed({k: v for k, v in res("x", 7, 0.0, 1.0, A).items() if k != "probs"})


# --- readers of records ---------------------------------------------------------------------------
def turn_record() -> dict[str, Any]:
    b = TurnBuilder(uncertain_below=0.7)
    b.feed(res("ch0", 0, 0.0, 1.0, A))
    b.feed(res("ch0", 1, 1.0, 4.0, B))
    return b.finish()[0]


def test_contract_collector_and_call_events_take_turns_in_their_stride() -> None:
    turn = turn_record()
    assert decode_entry(encode_entry(turn)) == turn and encode_entry(turn)["kind"] == "turn"
    c = Collector()
    c.expect("ch0", 0)
    c.add(turn)  # a turn has seq 0 too: it must not count as segment ch0/0
    assert c.outstanding == 1 and c.pop_ready() == [] and c.duplicates == 0
    engine = Engine(channels=["ch0"])  # a trend every 5 s of audio: a record ending at 10 s would cause one
    assert engine.feed({**turn, "end_s": 10.0}) == [] and engine.window("ch0", 60.0) == []
    assert [e["kind"] for e in engine.feed(res("ch0", 0, 7.0, 10.0, A))] == ["trend"]  # a result does count


def test_writers_print_turns_distinctly() -> None:
    seg, turn = res("ch0", 1, 1.0, 4.0, B), turn_record()
    out = io.StringIO()
    w = make_writer("table", out, ("a", "b"))
    w.start()
    w.write(seg)
    w.write(turn)
    lines = out.getvalue().splitlines()
    assert lines[1].split() == ["1.00", "4.00", "ch0", "b", "0.80"]
    assert lines[2].split() == ["0.00", "4.00", "ch0", "TURN", "b", "0.62,", "2", "segment(s)", "uncertain"]
    out = io.StringIO()
    w = make_writer("jsonl", out, ("a", "b"))
    w.write(seg)
    w.write(turn)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [seg, turn]
    out = io.StringIO()
    w = make_writer("csv", out, ("a", "b"))
    w.start()
    w.write(seg)
    w.write(turn)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == [*CSV_HEAD, "p_a", "p_b", *CSV_TAIL]
    assert [(r["kind"], r["seq"], r["label"], r["p_a"], r["p_b"], r["segments"]) for r in rows] == [
        ("result", "1", "b", "0.2", "0.8", ""), ("turn", "0", "b", "0.375", "0.625", "2")]
    assert rows[1]["uncertain"] == "True" and rows[1]["start_s"] == "0.0" and rows[1]["end_s"] == "4.0"


def test_summary_and_report_show_turns() -> None:
    turn = turn_record()
    sure = {**turn, "seq": 1, "label": "a", "confidence": 0.9, "uncertain": False, "start_s": 9.0, "end_s": 10.0}
    recs = [res("ch0", 0, 0.0, 1.0, A), res("ch0", 1, 1.0, 4.0, B), turn, res("ch0", 2, 9.0, 10.0, A), sure,
            {**sure}]  # a re-published turn counts once
    s = summarise(recs, ("a", "b"))["ch0"]
    assert (s["segments"], s["turns"], s["turns_uncertain"], s["turn_shares"]) == (3, 2, 1, {"a": 1.0, "b": 0.0})
    assert summarise([res("ch0", 0, 0.0, 1.0, A)], ("a", "b"))["ch0"]["turns"] == 0
    lines = channel_lines(ChannelStats("ch0", cut=3, sent=3), s, hop_s=3.0)
    assert "  turns: 2: a 100% (of 1 confident; 1 uncertain)" in lines
    page = render_call(recs, summarise(recs, ("a", "b")), title="t", model_id="m@1", channels=["ch0"],
                       labels=["a", "b"], duration_s=10.0)
    data = json.loads(page.split('id="ser-data">', 1)[1].split("</script>", 1)[0])
    assert [(t["seq"], t["label"], t["segments"], t["uncertain"]) for t in data["turns"]] == [
        (0, "b", 2, True), (1, "a", 2, False)]
    assert len(data["segments"]) == 3
    assert '<p class="turns">2 turn(s): a 100% (1 uncertain)</p>' in page and 'id="turn-count">2<' in page


# --- the session: embedded and distributed ------------------------------------------------------
def produce(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(produce_main, args, env={"SER_REDIS_URL": ""})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def check_turns(records: list[dict[str, Any]], *, uncertain_below: float = 0.0) -> None:
    """The stereo_call fixture's records and turns in output order, the turns recomputed here."""
    segs = [r for r in records if r["kind"] == "result"]
    assert [(r["channel"], r["seq"]) for r in segs] == EXPECTED
    order = [(r["kind"], r["channel"], r["seq"]) for r in records]
    assert order == [("result", "ch0", 0), ("result", "ch0", 1),
                     ("result", "ch1", 2), ("turn", "ch0", 0),  # ch1 takes the floor at 6 s: ch0's turn ends
                     ("result", "ch1", 3), ("result", "ch0", 4), ("turn", "ch1", 0),  # and back at 12 s
                     ("result", "ch1", 4),  # both talk at 12-15 s: talk-over closes nothing
                     ("turn", "ch0", 1), ("turn", "ch1", 1)]  # the rest at the end, by start
    turns = {(r["channel"], r["seq"]): r for r in records if r["kind"] == "turn"}
    assert [(t["start_s"], t["end_s"], t["segments"]) for t in turns.values()] == [
        (0.0, 6.0, 2), (6.0, 12.0, 2), (12.0, 15.0, 1), (12.0, 15.0, 1)]
    for (channel, seq), members in ((("ch0", 0), segs[0:2]), (("ch1", 0), [segs[2], segs[3]]),
                                    (("ch0", 1), [segs[4]]), (("ch1", 1), [segs[5]])):
        t = turns[(channel, seq)]
        want = {lab: round(sum(m["probs"][lab] for m in members) / len(members), 6) for lab in LABELS}  # 3 s each
        assert t["probs"] == pytest.approx(want, abs=2e-6)
        assert t["label"] == max(t["probs"], key=t["probs"].get) and t["confidence"] == t["probs"][t["label"]]
        assert t["uncertain"] == (t["confidence"] < uncertain_below) and t["model"] == "tiny-test@0.0.1"


def test_embedded_output_and_summary_carry_turns(stereo_call: Path, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    args = [str(stereo_call), "--model", str(tiny_bundle_dir), "--stream-id", "emb"]
    code, out, err = produce([*args, "--format", "jsonl", "--report", str(tmp_path / "r.html")])
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    check_turns(records)
    assert err.count("  turns: 2: ") == 2  # each channel: 2 turns
    page = (tmp_path / "r.html").read_text()
    assert '<p class="turns">2 turn(s): ' in page and 'id="turn-count">4<' in page
    code, table, err = produce(args)
    assert code == 0, err
    assert sum(" TURN " in line for line in table.splitlines()) == 4


def test_turns_of_a_calibrated_model_are_flagged_on_its_threshold(stereo_call: Path, speaker_bundle_dir: Path) -> None:
    code, out, err = produce([str(stereo_call), "--model", str(speaker_bundle_dir), "--format", "jsonl"])
    assert code == 0, err
    check_turns([json.loads(line) for line in out.splitlines()], uncertain_below=0.705)


def test_distributed_output_equals_embedded_and_turns_are_in_the_stream(
        redis_url: str, stereo_call: Path, tiny_bundle_dir: Path) -> None:
    from test_pipeline_redis import QUEUE_KEY, producer_proc, stream_kinds, wait_for, work_in_process

    from models.bundle import load_bundle
    from models.runtime import EmotionModel

    client = redis.Redis.from_url(redis_url)
    args = [str(stereo_call), "--model", str(tiny_bundle_dir), "--format", "jsonl", "--stream-id", "turns1",
            "--batch", "2", "--timeout", "30"]
    prod = producer_proc(redis_url, *args)
    wait_for(lambda: client.llen(QUEUE_KEY) >= 4)  # every job queued (ch0: seq 0-1, 4; ch1: seq 2-3, 4)
    assert "end" not in stream_kinds(client, "turns1")  # not before the last record
    work_in_process(redis_url, EmotionModel(load_bundle(tiny_bundle_dir), threads=1))
    out, err = prod.communicate(timeout=60)
    assert prod.returncode == 0, err
    distributed = [json.loads(line) for line in out.splitlines()]
    code, emb_out, emb_err = produce(args)
    assert code == 0, emb_err
    assert distributed == [json.loads(line) for line in emb_out.splitlines()]
    check_turns(distributed)
    stream = [decode_entry(f) for _, f in client.xrange(results_key("turns1"))]
    assert sorted(r["kind"] for r in stream) == ["end"] + ["result"] * 6 + ["turn"] * 4
    assert stream[-1]["kind"] == "end"  # after every result and turn: a consumer may stop there
    assert [r for r in stream if r["kind"] == "turn"] == [r for r in distributed if r["kind"] == "turn"]
    client.close()
