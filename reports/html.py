"""The HTML page of one call: emotion timeline per channel, summary per channel, model.

:func:`render_call` is pure (records in, one self-contained HTML string out: CSS and script
inline, the records embedded as JSON, no external URL). ``ser-produce --report`` writes it (with
a PNG of the timeline for viewers without JavaScript); ``ser-dashboard`` serves the same page for
a call, live while it runs (its script redraws the timeline through ``window.serTimeline.draw``
as segments arrive) and final once it has ended.

The timeline is an SVG built by the inline script: one ``<rect class="segment">`` per classified
segment (coloured by label, opacity by confidence, a short text label when it fits, a ``<title>``
tooltip of label, confidence and time, focusable with the keyboard). A record with
``"uncertain": true`` is drawn as class ``segment uncertain`` (hatched, dashed outline, "uncertain"
in its tooltip and label). Under each channel's lane a thin band shows its turns (``turn`` records,
:mod:`producer.turns`): one ``<rect class="turn">`` per turn, coloured by the turn's label, hatched
when uncertain, with a tooltip of label, confidence, segment count and time. When the embedded
data has ``marks`` (:func:`reports.dynamics.timeline_marks`: the call's silences and overtalks),
a row under the lanes, on the same time axis, holds one ``<rect class="mark silence">`` or
``<rect class="mark overtalk">`` per mark (tooltip: time, length, and for an interruption who came
in over whom); the SVG's ``data-end`` is the axis' extent in seconds.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reports.summary import Summary, is_result, is_turn, stretch_labels

#: Fixed colours for the known labels; others get one from FALLBACK_COLOURS.
LABEL_COLOURS = {
    "neutral": "#9e9e9e",
    "happy": "#f2b705",
    "sad": "#3b6fb6",
    "angry": "#d62728",
    "fearful": "#8e44ad",
    "disgust": "#2e8b57",
    "surprised": "#ff7f0e",
}
FALLBACK_COLOURS = ("#17becf", "#bcbd22", "#e377c2", "#8c564b", "#7f7f7f", "#1f77b4")
#: The timeline's silence and overtalk marks: unlike any label's colour (the Conversation strip's grey
#: and red are neutral's and nearly angry's, which would read as emotions on the timeline).
MARK_COLOURS = {"silence": "#b0bec5", "overtalk": "#212121"}


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    spare = iter(FALLBACK_COLOURS * (len(labels) // len(FALLBACK_COLOURS) + 1))
    for lab in labels:
        out[lab] = LABEL_COLOURS.get(lab) or next(spare)
    return out


def segment(record: Mapping[str, Any]) -> dict[str, Any]:
    """The compact segment the timeline draws (``uncertain`` only when the record has it)."""
    seg = {"channel": str(record["channel"]), "seq": int(record.get("seq", 0)),
           "start_s": float(record["start_s"]), "end_s": float(record["end_s"]),
           "label": str(record["label"]), "confidence": float(record.get("confidence", 0.0))}
    if "uncertain" in record:
        seg["uncertain"] = bool(record["uncertain"])
    return seg


def segments(records: Iterable[Mapping[str, Any]], channels: Sequence[str]) -> list[dict[str, Any]]:
    """Classified segments of ``channels``, one per (channel, seq), sorted by channel then time."""
    keep = set(channels)
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        if is_result(r) and str(r["channel"]) in keep:
            s = segment(r)
            seen.setdefault((s["channel"], s["seq"]), s)
    segs = list(seen.values())
    segs.sort(key=lambda s: (channels.index(s["channel"]), s["start_s"], s["seq"]))
    return segs


def turns(records: Iterable[Mapping[str, Any]], channels: Sequence[str]) -> list[dict[str, Any]]:
    """Turns of ``channels`` for the timeline's turn band, one per (channel, seq), by channel then time."""
    keep = set(channels)
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        if is_turn(r) and str(r["channel"]) in keep:
            t = {**segment(r), "segments": int(r.get("segments", 0))}
            seen.setdefault((t["channel"], t["seq"]), t)
    out = list(seen.values())
    out.sort(key=lambda t: (channels.index(t["channel"]), t["start_s"], t["seq"]))
    return out


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<`` never closes the element."""
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")


def _fmt_time(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60.0)
    return f"{int(m)}:{s:04.1f}"


def _summary_html(summary: Summary, channels: Sequence[str], labels: Sequence[str], colours: dict[str, str]) -> str:
    esc = html.escape
    parts = []
    for channel in channels:
        ch = summary.get(channel)
        parts.append(f'<section class="channel-summary" data-channel="{esc(channel)}"><h3>{esc(channel)}</h3>')
        if ch is None:
            parts.append("<p>No results for this channel.</p></section>")
            continue
        failed = f", {ch['failed']} failed" if ch.get("failed") else ""
        parts.append(f"<p>{ch['segments']} classified segment(s){failed}.</p>")
        if ch.get("turns"):
            tshares = sorted(((v, lab) for lab, v in (ch.get("turn_shares") or {}).items() if v > 0),
                             key=lambda t: -t[0])
            unsure = ch.get("turns_uncertain", 0)
            parts.append(f'<p class="turns">{ch["turns"]} turn(s): '
                         + (", ".join(f"{esc(lab)} {100 * v:.0f}%" for v, lab in tshares) or "none confident")
                         + (f" ({unsure} uncertain)" if unsure else "") + "</p>")
        shares = ch["shares"]
        bar = "".join(
            f'<span class="share" style="width:{100 * shares[lab]:.2f}%;background:{colours.get(lab, "#444")}" '
            f'title="{esc(lab)} {100 * shares[lab]:.0f}%"></span>'
            for lab in shares if shares[lab] > 0
        )
        parts.append(f'<div class="sharebar">{bar}</div><table class="shares"><tbody>')
        for lab in shares:
            parts.append(f'<tr><td><span class="swatch" style="background:{colours.get(lab, "#444")}"></span>'
                         f"{esc(lab)}</td><td>{100 * shares[lab]:.1f}%</td></tr>")
        parts.append("</tbody></table>")
        stretch = ch.get("longest_negative")
        if stretch:
            parts.append(
                f'<p class="negative">Longest negative stretch: '
                f'{_fmt_time(stretch["start_s"])}&ndash;{_fmt_time(stretch["end_s"])} '
                f'({stretch["end_s"] - stretch["start_s"]:.1f} s, {stretch.get("segments", "?")} segment(s): '
                f'<b>{esc(stretch_labels(stretch))}</b>)</p>')
        else:
            parts.append('<p class="negative">Longest negative stretch: none</p>')
        parts.append("</section>")
    return "\n".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px} h3{font-size:14px;margin:0 0 6px}
.meta{color:#555;font-size:13px} .meta code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
#timeline{width:100%;height:auto;border:1px solid #ddd;border-radius:4px;background:#fafafa}
#timeline text{font-size:12px;fill:#333} #timeline .axis text{font-size:10px;fill:#666}
#timeline .tick{stroke:#ddd} #timeline rect.segment:hover{stroke:#000;stroke-width:1}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;margin:6px 0}
.talkbar{display:inline-block;height:10px;background:#1976d2;vertical-align:-1px}
table.talk{border-collapse:collapse;font-size:13px} table.talk td,table.talk th{padding:2px 10px 2px 0;text-align:left}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.summaries{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:16px}
.channel-summary{border:1px solid #ddd;border-radius:4px;padding:10px;font-size:13px}
.sharebar{display:flex;height:12px;border-radius:3px;overflow:hidden;background:#eee;margin:6px 0}
.share{display:block;height:100%} table.shares{border-collapse:collapse;width:100%}
table.shares td{padding:1px 4px} table.shares td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.negative{margin:8px 0 0}
#timeline text.seglabel{font-size:10px;fill:#111;pointer-events:none}
#timeline rect.segment:focus{outline:none;stroke:#000;stroke-width:2}
.uncertain-swatch{background:repeating-linear-gradient(45deg,#fff 0 2px,#555 2px 4px);border:1px dashed #555}
#timeline text.marklabel{font-size:10px;fill:#555}
#timeline rect.mark:focus{outline:none;stroke:#000;stroke-width:2}
""" + "".join(f"#timeline rect.mark.{kind}{{fill:{colour}}}\n" for kind, colour in MARK_COLOURS.items())


# Draws the SVG timeline from the embedded JSON; window.serTimeline.draw(data) redraws it.
_JS = r"""
(function () {
  var NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    parent.appendChild(e);
    return e;
  }
  function fmt(t) {
    var m = Math.floor(t / 60); var s = (t - 60 * m).toFixed(1);
    return m + ":" + (s < 10 ? "0" : "") + s;
  }
  function draw(data) {
    var svg = document.getElementById("timeline");
    while (svg.lastChild) { svg.removeChild(svg.lastChild); }
    var defs = el("defs", {}, svg);
    var pat = el("pattern", {id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
                             patternTransform: "rotate(45)"}, defs);
    el("rect", {width: 6, height: 6, fill: "#ffffff"}, pat);
    el("line", {x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#555555", "stroke-width": 2}, pat);
    var W = 1000, left = 110, right = 10, top = 10, rowH = 34, turnH = 8, gap = 8, axisH = 24;
    var turns = data.turns || [];
    var marks = data.marks;  // silences and overtalks (reports.dynamics.timeline_marks), when the page has them
    var markH = marks ? 14 : 0, markGap = marks ? gap : 0;
    var lanesH = data.channels.length * (rowH + turnH + gap);
    var H = top + lanesH + markH + markGap + axisH;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var end = data.duration_s;
    data.segments.forEach(function (s) { if (s.end_s > end) { end = s.end_s; } });
    (marks || []).forEach(function (m) { if (m.end_s > end) { end = m.end_s; } });
    if (!(end > 0)) { end = 1; }
    var scale = (W - left - right) / end;
    var axis = el("g", {"class": "axis"}, svg);
    var step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find(function (v) { return end / v <= 12; }) || 1200;
    var yAxis = top + lanesH + markH + markGap;
    for (var t = 0; t <= end + 1e-9; t += step) {
      var x = left + t * scale;
      el("line", {"class": "tick", x1: x, x2: x, y1: top, y2: yAxis}, axis);
      el("text", {x: x, y: yAxis + 14, "text-anchor": "middle"}, axis).textContent = fmt(t);
    }
    data.channels.forEach(function (channel, row) {
      var y = top + row * (rowH + turnH + gap);
      var g = el("g", {"class": "channel", "data-channel": channel}, svg);
      el("text", {x: left - 8, y: y + rowH / 2 + 4, "text-anchor": "end"}, g).textContent = channel;
      el("rect", {"class": "lane", x: left, y: y, width: W - left - right, height: rowH, fill: "#eeeeee"}, g);
      data.segments.forEach(function (s) {
        if (s.channel !== channel) { return; }
        var w = Math.max(1, (s.end_s - s.start_s) * scale);
        var tip = channel + " #" + s.seq + ": " + s.label + " " + Math.round(100 * s.confidence) + "% (" +
          fmt(s.start_s) + "\u2013" + fmt(s.end_s) + ")" + (s.uncertain ? " uncertain" : "");
        var r = el("rect", {
          "class": s.uncertain ? "segment uncertain" : "segment", "data-channel": channel, "data-seq": s.seq,
          "data-label": s.label, x: (left + s.start_s * scale).toFixed(2), y: y, width: w.toFixed(2),
          height: rowH, fill: s.uncertain ? "url(#hatch)" : (data.colours[s.label] || "#444444"),
          "fill-opacity": (0.35 + 0.65 * Math.max(0, Math.min(1, s.confidence))).toFixed(3),
          tabindex: 0, "aria-label": tip
        }, g);
        if (s.uncertain) { r.setAttribute("stroke", data.colours[s.label] || "#444444");
                           r.setAttribute("stroke-dasharray", "4 2"); r.setAttribute("stroke-width", 2); }
        el("title", {}, r).textContent = tip;
        if (w >= 30) {
          el("text", {"class": "seglabel", x: (left + s.start_s * scale + 3).toFixed(2), y: y + rowH / 2 + 4,
                      "aria-hidden": "true"}, g).textContent = (s.uncertain ? "?" : "") + s.label.slice(0, 3);
        }
      });
    });
    data.channels.forEach(function (channel, row) {
      var y = top + row * (rowH + turnH + gap) + rowH + 1;
      var g = el("g", {"class": "turns", "data-channel": channel}, svg);
      turns.forEach(function (t) {
        if (t.channel !== channel) { return; }
        var tip = channel + " turn " + t.seq + ": " + t.label + " " + Math.round(100 * t.confidence) + "%, " +
          t.segments + " segment(s) (" + fmt(t.start_s) + "\u2013" + fmt(t.end_s) + ")" +
          (t.uncertain ? " uncertain" : "");
        var r = el("rect", {
          "class": t.uncertain ? "turn uncertain" : "turn", "data-channel": channel, "data-seq": t.seq,
          "data-label": t.label, x: (left + t.start_s * scale).toFixed(2), y: y,
          width: Math.max(1, (t.end_s - t.start_s) * scale).toFixed(2), height: turnH - 2,
          fill: t.uncertain ? "url(#hatch)" : (data.colours[t.label] || "#444444"), "aria-label": tip
        }, g);
        el("title", {}, r).textContent = tip;
      });
    });
    if (marks) {
      var ym = top + lanesH;
      var gm = el("g", {"class": "marks"}, svg);
      el("text", {"class": "marklabel", x: left - 8, y: ym + markH - 3, "text-anchor": "end"}, gm).textContent =
        "silence / overtalk";
      el("rect", {"class": "marklane", x: left, y: ym, width: W - left - right, height: markH, fill: "#f4f4f4"}, gm);
      marks.forEach(function (m) {
        var tip = m.kind + " " + fmt(m.start_s) + "\u2013" + fmt(m.end_s) + " (" + (m.end_s - m.start_s).toFixed(1) +
          " s)" + (m.by ? ": " + m.by + " came in over " + (m.over || []).join(", ") +
          (m.yielded ? ", who yielded" : "") : "");
        var r = el("rect", {
          "class": "mark " + m.kind, "data-kind": m.kind, "data-start": m.start_s, "data-end": m.end_s,
          x: (left + m.start_s * scale).toFixed(2), y: ym, width: Math.max(1, (m.end_s - m.start_s) * scale).toFixed(2),
          height: markH, tabindex: 0, "aria-label": tip
        }, gm);
        el("title", {}, r).textContent = tip;
      });
    }
    svg.setAttribute("data-end", end);
    svg.setAttribute("data-marks", marks ? marks.length : 0);
    svg.setAttribute("data-rendered", data.segments.length);
    svg.setAttribute("data-turns", turns.length);
  }
  window.serTimeline = {draw: draw, fmt: fmt};
  draw(JSON.parse(document.getElementById("ser-data").textContent));
})();
"""


def render_call(
    records: Iterable[Mapping[str, Any]], summary: Summary | None, *, title: str, model_id: str,
    channels: Sequence[str], labels: Sequence[str], duration_s: float, generated: str = "",
    png_b64: str | None = None, nonce: str | None = None, head_extra: str = "", body_top: str = "",
    after_meta: str = "", body_extra: str = "", data_extra: Mapping[str, Any] | None = None,
) -> str:
    """The page of one call as an HTML string.

    ``records``: the call's records (``channel``, ``seq``, ``start_s``, ``end_s``, ``label``,
    ``confidence``, optional ``uncertain``; ``turn`` records feed the turn band; failure/end records
    are ignored). ``summary``: as
    :func:`reports.summary.summarise` returns, or None while the call runs. ``title`` is text
    (escaped here). ``png_b64``: a PNG of the timeline for the ``<noscript>`` fallback.
    ``nonce``: CSP nonce put on the inline script. ``head_extra``/``body_top``/``after_meta``/``body_extra``:
    trusted HTML the caller built (and escaped) itself. ``data_extra``: more keys for the
    embedded JSON (``#ser-data``).
    """
    channels = list(channels)
    labels = list(labels)
    records = list(records)
    segs = segments(records, channels)
    turn_list = turns(records, channels)
    colours = label_colours(labels + sorted({s["label"] for s in segs + turn_list} - set(labels)))
    data = {"channels": channels, "labels": labels, "colours": colours, "duration_s": float(duration_s),
            "model": model_id, "segments": segs, "turns": turn_list, **(data_extra or {})}
    esc = html.escape
    nonce_attr = f' nonce="{esc(nonce)}"' if nonce else ""
    legend = "".join(f'<span><span class="swatch" style="background:{colours[lab]}"></span>{esc(lab)}</span>'
                     for lab in labels)
    legend += '<span><span class="swatch uncertain-swatch"></span>uncertain (hatched, dashed)</span>'
    marks_note = ""
    if "marks" in data:
        legend += "".join(f'<span><span class="swatch" style="background:{colour}"></span>{kind}</span>'
                          for kind, colour in MARK_COLOURS.items())
        marks_note = (" The row under the lanes: silences (nobody speaking) and overtalk (two or more speaking"
                      " at once), added as each one ends.")
    noscript = (f'<noscript><img alt="emotion timeline" style="max-width:100%" src="data:image/png;base64,{png_b64}">'
                "</noscript>\n" if png_b64 else
                "<noscript><p>The timeline needs JavaScript (no PNG: matplotlib was not installed).</p></noscript>\n")
    if summary is None:
        summary_block = ('<p class="meta" id="summary-pending">The call is in progress: the summary appears when '
                         "it ends.</p>")
    else:
        summary_block = f'<div class="summaries">\n{_summary_html(summary, channels, labels, colours)}\n</div>'
    generated_html = f" &middot; generated {esc(generated)}" if generated else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Emotion report: {esc(title)}</title>
<style>{_CSS}</style>
{head_extra}</head>
<body>
{body_top}<h1>Emotion report: <span id="call-title">{esc(title)}</span></h1>
<p class="meta">Model <code id="model">{esc(model_id)}</code> &middot; duration
<span id="duration">{_fmt_time(duration_s)} ({duration_s:.1f} s)</span> &middot;
<span id="segment-count">{len(segs)}</span> classified segment(s) in <span id="turn-count">{len(turn_list)}</span>
turn(s) on {len(channels)} channel(s){generated_html}</p>
{after_meta}<h2>Timeline</h2>
<div class="legend">{legend}</div>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="emotion timeline per channel"></svg>
{noscript}<p class="meta">Bar colour and text: predicted emotion; opacity: confidence. Hover or focus (Tab) a bar for
details. Gaps: silence (not classified) or failed segments. The thin band under each channel: its turns
(consecutive segments without a long pause), coloured by the turn's duration-weighted emotion.{marks_note}</p>
<h2>Summary per channel</h2>
{summary_block}
{body_extra}<script type="application/json" id="ser-data">{script_json(data)}</script>
<script{nonce_attr}>{_JS}</script>
</body>
</html>
"""
