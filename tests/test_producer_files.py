"""``ser-produce`` with several files (paths and globs) in one command, embedded: each call's records in
turn, a line per failed file, exit 3, the model loaded once, one progress bar; and ``--meta`` checks."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import synth_call
from test_progress import on_terminal

import models.runtime
import producer.pipeline
from producer.cli import EXIT_INCOMPLETE, main


def produce(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, env={"SER_REDIS_URL": "", "SER_ARCHIVE_URL": ""})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def calls(tmp_path: Path) -> dict[str, Path]:
    """Two good calls in calls/, a third beside them, and one that is not audio."""
    (tmp_path / "calls").mkdir()
    good = {name: synth_call(tmp_path / "calls" / f"{name}.wav", seed=i, seconds=9.0)
            for i, name in enumerate(("a", "b"))}
    good["c"] = synth_call(tmp_path / "c.wav", seed=5, seconds=9.0)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file" * 40)
    return {**good, "bad": bad}


def test_several_files_and_a_glob_one_bad_the_rest_go_on_exit_3(calls: dict[str, Path], tiny_bundle_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    loads = {"bundle": 0, "model": 0}
    real_load, real_init = producer.pipeline.load_bundle, models.runtime.EmotionModel.__init__

    def counting_load(*a, **k):  # type: ignore[no-untyped-def]
        loads["bundle"] += 1
        return real_load(*a, **k)

    def counting_init(self, *a, **k):  # type: ignore[no-untyped-def]
        loads["model"] += 1
        real_init(self, *a, **k)

    monkeypatch.setattr(producer.pipeline, "load_bundle", counting_load)
    monkeypatch.setattr(models.runtime.EmotionModel, "__init__", counting_init)
    glob = str(calls["a"].parent / "*.wav")
    code, out, err = produce([glob, str(calls["bad"]), str(calls["c"]), "--model", str(tiny_bundle_dir),
                              "--format", "jsonl"])
    assert code == EXIT_INCOMPLETE, err
    assert loads == {"bundle": 1, "model": 1}  # once per command, not per file
    records = [json.loads(line) for line in out.splitlines()]
    streams = list(dict.fromkeys(r["stream_id"] for r in records))
    assert [s.split("-")[0] for s in streams] == ["a", "b", "c"]  # the glob's matches sorted, then the others
    for s in streams:  # each call's records follow one another
        idx = [i for i, r in enumerate(records) if r["stream_id"] == s]
        assert idx == list(range(idx[0], idx[-1] + 1))
        assert sum(1 for i in idx if records[i]["kind"] == "result") == 3  # 9 s: ch0 seq 0, 1; ch1 seq 2
    fails = [line for line in err.splitlines() if line.startswith(str(calls["bad"]) + ": ")]
    assert len(fails) == 1 and "cannot" in fails[0], err
    assert "2 of 4 file(s) done" not in err and "3 of 4 file(s) done, 1 failed" in err
    assert sum(1 for line in err.splitlines() if line.startswith("stream ")) == 3  # each call's own line


def test_one_good_file_alone_exits_0_and_one_bad_file_alone_exits_1_as_before(calls: dict[str, Path],
                                                                            tiny_bundle_dir: Path) -> None:
    code, _, err = produce([str(calls["a"]), "--model", str(tiny_bundle_dir), "--format", "jsonl"])
    assert code == 0 and "file(s) done" not in err
    code, _, err = produce([str(calls["bad"]), "--model", str(tiny_bundle_dir)])
    assert code == 1 and err.startswith("Error: ") and len(err.strip().splitlines()) == 1


def test_table_has_a_header_line_per_file_and_csv_one_header_row(calls: dict[str, Path],
                                                                 tiny_bundle_dir: Path) -> None:
    args = [str(calls["a"]), str(calls["b"]), "--model", str(tiny_bundle_dir)]
    code, out, _ = produce(args)
    assert code == 0
    heads = re.findall(r"^== (.+) \(stream (\S+)\)$", out, flags=re.M)
    assert [Path(h[0]).name for h in heads] == ["a.wav", "b.wav"] and out.startswith("== ")
    assert out.count("    start       end  channel") == 2  # each call's table as today
    code, out, _ = produce([*args, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and out.count("stream_id,channel") == 1
    assert [s.split("-")[0] for s in dict.fromkeys(r["stream_id"] for r in rows)] == ["a", "b"]


@pytest.mark.parametrize("extra,named", [
    (["{nomatch}"], "matches no file"),
    (["-"], "- (stdin) cannot be combined"),
    (["--stream-id", "x"], "--stream-id names one call"),
    (["--report", "{tmp}/r.html"], "{stem}"),
    (["--meta", "agent"], "want key=value"),
    (["--meta", "bad key=1"], "'bad key'"),
    (["--meta", "queue=" + "x" * 257], "'queue'"),
])
def test_usage_errors_name_the_problem(calls: dict[str, Path], tiny_bundle_dir: Path, tmp_path: Path,
                                       extra: list[str], named: str) -> None:
    extra = [e.replace("{nomatch}", str(tmp_path / "none" / "*.wav")).replace("{tmp}", str(tmp_path)) for e in extra]
    code, out, err = produce([str(calls["a"]), str(calls["b"]), *extra, "--model", str(tiny_bundle_dir)])
    assert code == 2 and named in err and out == "", err


def test_report_per_call_from_a_stem_template(calls: dict[str, Path], tiny_bundle_dir: Path, tmp_path: Path) -> None:
    code, _, err = produce([str(calls["a"]), str(calls["b"]), "--model", str(tiny_bundle_dir), "--format", "jsonl",
                            "--report", str(tmp_path / "reports-{stem}.html")])
    assert code == 0, err
    assert (tmp_path / "reports-a.html").is_file() and (tmp_path / "reports-b.html").is_file()


def test_one_progress_bar_over_the_files_on_a_terminal(calls: dict[str, Path], tiny_bundle_dir: Path) -> None:
    code, out, tty = on_terminal([sys.executable, "-m", "producer.cli", str(calls["a"]), str(calls["bad"]),
                                  str(calls["b"]), "--model", str(tiny_bundle_dir), "--format", "jsonl"])
    assert code == EXIT_INCOMPLETE
    bars = re.findall(r"(\d)/(\d) files, ([\d.]+)/([\d.]+) s of audio, (\d+) segments classified", tty)
    assert bars, tty[:3000]
    assert {b[1] for b in bars} == {"3"} and {b[3] for b in bars} == {"18.0"}  # one bar: 3 files, 2 x 9 s
    assert bars[-1][:3] == ("3", "3", "18.0") and int(bars[-1][4]) == out.count('"kind":"result"') == 6
    assert "segments classified]" not in re.sub(r"files, .*?segments classified", "", tty)  # no per-file bar
    assert f"{calls['bad']}: " in tty and "2 of 3 file(s) done, 1 failed" in tty


def test_an_output_that_cannot_be_written_stops_every_file(calls: dict[str, Path], tiny_bundle_dir: Path) -> None:
    code, _, err = produce([str(calls["a"]), str(calls["b"]), "--model", str(tiny_bundle_dir), "-o", "/dev/full"])
    lines = err.strip().splitlines()
    assert code == 1 and lines == ["Error: cannot write the output to /dev/full: No space left on device"], err
