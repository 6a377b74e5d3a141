"""producer.summary_lines.summarise (pure) and producer.report_writer.write_report, rendered in a real
headless Chromium (skipped where the ``chromium`` binary is absent)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sysdeps

from producer.report_writer import png_path_for, write_report
from producer.summary_lines import summarise
from producer.turns import TurnBuilder

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def rec(channel: str, seq: int, label: str, conf: float = 0.8, **extra: Any) -> dict[str, Any]:
    return {"stream_id": "call-1", "channel": channel, "seq": seq, "start_s": 3.0 * seq,
            "end_s": 3.0 * seq + 3.0, "label": label, "confidence": conf,
            "probs": {lab: (conf if lab == label else (1 - conf) / 6) for lab in LABELS},
            "model": "tiny@1.0.0", "kind": "result", **extra}


AGENT = ["neutral", "neutral", "happy", "angry", "neutral", "neutral"]
# customer: angry/sad run of 3 (seq 1-3), seq 4 skipped (silence), sad/fearful run of 2 (5-6)
CUSTOMER = {0: "neutral", 1: "angry", 2: "sad", 3: "angry", 5: "sad", 6: "fearful", 7: "happy"}


def records() -> list[dict[str, Any]]:
    out = [rec("agent", i, lab) for i, lab in enumerate(AGENT)]
    out += [rec("customer", i, lab, conf=0.5 + 0.05 * i) for i, lab in CUSTOMER.items()]
    out.append({"stream_id": "call-1", "channel": "customer", "seq": 8, "start_s": 24.0, "end_s": 27.0,
                "kind": "failure", "error": "boom", "model": "tiny@1.0.0"})
    out.append({"stream_id": "call-1", "channel": "customer", "kind": "end"})
    return out


def test_summarise_hand_made_records() -> None:
    s = summarise(reversed(records()), LABELS)  # order of arrival does not matter for the stretch
    assert set(s) == {"agent", "customer"}
    agent, customer = s["agent"], s["customer"]
    assert agent["segments"] == 6 and agent["failed"] == 0
    assert list(agent["shares"]) == list(LABELS)
    assert agent["shares"]["neutral"] == pytest.approx(4 / 6)
    assert agent["shares"]["angry"] == pytest.approx(1 / 6) and agent["shares"]["sad"] == 0
    assert sum(agent["shares"].values()) == pytest.approx(1)
    assert agent["longest_negative"] == {"label": "angry", "start_s": 9.0, "end_s": 12.0, "segments": 1,
                                         "labels": {"angry": 1}}
    assert customer["segments"] == 7 and customer["failed"] == 1
    assert customer["shares"]["angry"] == pytest.approx(2 / 7)
    # The gap at seq 4 splits the negative run; the longer one is seq 1-3, mostly angry.
    assert customer["longest_negative"] == {"label": "angry", "start_s": 3.0, "end_s": 12.0, "segments": 3,
                                            "labels": {"angry": 2, "sad": 1}}


def test_summarise_edge_cases() -> None:
    assert summarise([], LABELS) == {}
    only_fail = summarise([{"channel": "agent", "kind": "failure", "seq": 0}], LABELS)
    assert only_fail["agent"]["segments"] == 0 and only_fail["agent"]["failed"] == 1
    assert set(only_fail["agent"]["shares"].values()) == {0.0}
    assert only_fail["agent"]["longest_negative"] is None
    # Custom negative set, unknown label, ties broken by the earliest stretch / label order.
    s = summarise([rec("a", 0, "sad"), rec("a", 1, "angry"), rec("a", 2, "neutral"), rec("a", 3, "bored"),
                   rec("a", 4, "bored")], LABELS, negative=("sad", "angry", "bored"))["a"]
    assert list(s["shares"])[-1] == "bored"
    assert s["longest_negative"] == {"label": "sad", "start_s": 0.0, "end_s": 6.0, "segments": 2,
                                    "labels": {"sad": 1, "angry": 1}}
    # Records without seq are joined by time contiguity.
    no_seq = [{k: v for k, v in rec("a", i, "angry").items() if k != "seq"} for i in (0, 1, 3)]
    assert summarise(no_seq, LABELS)["a"]["longest_negative"]["end_s"] == 6.0  # type: ignore[index]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    turns = TurnBuilder()  # agent: one turn (seq 0-5); customer: seq 0-3, then 5-7 after the 3 s gap
    recs = turns.interleave(records()) + turns.finish()
    path = tmp_path_factory.mktemp("report") / "call.html"
    html_path, png = write_report(path, recs, summarise(recs, LABELS), model_id="tiny@1.0.0",
                                  channels=["agent", "customer"], labels=LABELS, duration_s=27.5)
    assert html_path == path and png == png_path_for(path) == path.with_name("call.png")
    return path


def test_report_files(report: Path) -> None:
    text = report.read_text()
    png = report.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert "tiny@1.0.0" in text and 'id="ser-data"' in text
    # Self-contained: no external resources.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "<link" not in text and "@import" not in text
    # The static page has no segment rects: the script must build them.
    assert 'class="segment"' not in text
    assert '<p class="turns">1 turn(s): neutral 100%</p>' in text
    assert '<p class="turns">2 turn(s): happy 50%, angry 50%</p>' in text and 'id="turn-count">3<' in text


def _chromium() -> str:
    return sysdeps.binary("chromium", "chromium-browser", "google-chrome",
                          hint="bash .ci/install-system-deps.sh installs Debian's chromium")


def _run_chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    binary = _chromium()
    proc = _run_chromium(binary, tmp_path, "--dump-dom", report.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert 'data-rendered="13"' in dom, dom[:2000]  # the inline script ran to the end
    rects = re.findall(r'<rect class="segment" data-channel="(\w+)" data-seq="(\d+)" data-label="(\w+)"', dom)
    assert sorted(rects) == sorted(
        [("agent", str(i), lab) for i, lab in enumerate(AGENT)]
        + [("customer", str(i), lab) for i, lab in CUSTOMER.items()]
    )
    assert len(re.findall(r'<g class="channel" data-channel="', dom)) == 2
    assert 'data-turns="3"' in dom
    turns = re.findall(r'<rect class="turn" data-channel="(\w+)" data-seq="(\d+)" data-label="(\w+)"', dom)
    assert sorted(turns) == [("agent", "0", "neutral"), ("customer", "0", "angry"), ("customer", "1", "happy")]
    assert "<title>customer #3: angry 65% (0:09.0\u20130:12.0)</title>" in dom
    assert dom.count('class="channel-summary"') == 2

    shot = tmp_path / "shot.png"
    proc = _run_chromium(binary, tmp_path, f"--screenshot={shot}", "--window-size=1200,900",
                         "--hide-scrollbars", report.as_uri())
    assert proc.returncode == 0 and shot.read_bytes().startswith(b"\x89PNG"), proc.stderr[-2000:]


def test_report_has_the_conversation_section(tmp_path: Path) -> None:
    """The dynamics (producer.dynamics) of a hand-made conversation, on the page."""
    from producer.dynamics import Dynamics

    dyn = Dynamics(channels=["agent", "customer"], lag_s=0.0)
    for c, a, b in [(0, 0.0, 6.0), (1, 5.0, 9.0), (0, 14.0, 20.0), (1, 19.0, 21.0)]:
        dyn.speech(c, start_s=a, end_s=b)
    dyn.finish(duration_s=27.5)
    summary = dyn.episodes_summary()
    path = tmp_path / "call.html"
    write_report(path, [], {}, model_id="tiny@1.0.0", channels=["agent", "customer"], labels=LABELS,
                 duration_s=27.5, dynamics=summary)
    text = path.read_text()
    rows = dict(re.findall(r'<tr data-channel="(\w+)"><td>\w+</td><td class="talk">([\d.]+) s', text))
    assert rows == {"agent": "12.0", "customer": "6.0"}
    assert 'id="silence-count">2<' in text and 'id="overtalk-count">2<' in text  # 9-14 s and 21-27.5 s
    xs = re.findall(r'<rect class="silence" x="([\d.]+)%', text)
    assert xs == [f"{100 * 9 / 27.5:.3f}", f"{100 * 21 / 27.5:.3f}"]
    assert len(re.findall(r'<rect class="overtalk"', text)) == 2
    write_report(path, [], {}, model_id="tiny@1.0.0", channels=["agent"], labels=LABELS, duration_s=1.0)
    assert 'id="conversation"' not in path.read_text()  # no dynamics (an older producer): no section
