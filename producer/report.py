"""Self-contained HTML report of one call (emotion timeline per channel, summary, model) plus a
PNG of the timeline beside it (``call.html`` -> ``call.png``).

The HTML has no external URL: CSS and the script are inline, the records are embedded as JSON,
and the timeline SVG (one ``<rect class="segment">`` per classified segment, with a ``<title>``
tooltip of label, confidence and time) is built from them by the inline script. The PNG is also
embedded (base64) for viewers without JavaScript.

matplotlib (for the PNG) is imported only when a report is written, and is optional: it comes with
``.[train]``, not with a serving install (``pip install .``). Without it the HTML is written all the
same (the timeline is the inline SVG) and no PNG (:func:`write_report` returns ``None`` for it).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producer.summary import Summary, is_result, stretch_labels

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


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    spare = iter(FALLBACK_COLOURS * (len(labels) // len(FALLBACK_COLOURS) + 1))
    for lab in labels:
        out[lab] = LABEL_COLOURS.get(lab) or next(spare)
    return out


def has_matplotlib() -> bool:
    """Whether matplotlib can be imported (it is optional: ``.[train]`` brings it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a None entry in sys.modules, a broken install
        return False


def png_path_for(path_html: str | Path) -> Path:
    return Path(path_html).with_suffix(".png")


def _segments(records: Iterable[Mapping[str, Any]], channels: Sequence[str]) -> list[dict[str, Any]]:
    keep = set(channels)
    segs = [
        {
            "channel": str(r["channel"]), "seq": int(r.get("seq", 0)),
            "start_s": float(r["start_s"]), "end_s": float(r["end_s"]),
            "label": str(r["label"]), "confidence": float(r.get("confidence", 0.0)),
        }
        for r in records if is_result(r) and str(r["channel"]) in keep
    ]
    segs.sort(key=lambda s: (channels.index(s["channel"]), s["start_s"], s["seq"]))
    return segs


def write_timeline_png(
    path_png: str | Path, segments: Sequence[Mapping[str, Any]], *, channels: Sequence[str],
    labels: Sequence[str], duration_s: float, title: str = "",
) -> Path:
    """Timeline PNG: one row per channel, one bar per segment coloured by label, opacity by
    confidence."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = label_colours(labels)
    fig = Figure(figsize=(12, 1.0 + 0.8 * max(1, len(channels))), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for row, channel in enumerate(channels):
        y = len(channels) - 1 - row
        for s in segments:
            if s["channel"] != channel:
                continue
            ax.broken_barh([(s["start_s"], s["end_s"] - s["start_s"])], (y - 0.4, 0.8),
                           facecolors=colours.get(s["label"], "#444444"),
                           alpha=0.35 + 0.65 * max(0.0, min(1.0, s["confidence"])), edgecolor="none")
    ax.set_yticks(range(len(channels)), list(reversed(channels)))
    ax.set_xlim(0, max(duration_s, max((s["end_s"] for s in segments), default=0.0), 1e-3))
    ax.set_ylim(-0.6, len(channels) - 0.4)
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=colours[lab], label=lab) for lab in labels], loc="upper center",
              bbox_to_anchor=(0.5, -0.35 if len(channels) < 3 else -0.2), ncol=len(labels), frameon=False,
              fontsize=8)
    fig.tight_layout()
    out = Path(path_png)
    fig.savefig(out, format="png")
    return out


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
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.summaries{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:16px}
.channel-summary{border:1px solid #ddd;border-radius:4px;padding:10px;font-size:13px}
.sharebar{display:flex;height:12px;border-radius:3px;overflow:hidden;background:#eee;margin:6px 0}
.share{display:block;height:100%} table.shares{border-collapse:collapse;width:100%}
table.shares td{padding:1px 4px} table.shares td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.negative{margin:8px 0 0}
"""

# Builds the SVG timeline from the embedded JSON: one row per channel, one rect per segment.
_JS = r"""
(function () {
  var data = JSON.parse(document.getElementById("ser-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var svg = document.getElementById("timeline");
  var W = 1000, left = 110, right = 10, top = 10, rowH = 34, gap = 8, axisH = 24;
  var H = top + data.channels.length * (rowH + gap) + axisH;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  var end = data.duration_s;
  data.segments.forEach(function (s) { if (s.end_s > end) { end = s.end_s; } });
  if (!(end > 0)) { end = 1; }
  var scale = (W - left - right) / end;
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
  var axis = el("g", {"class": "axis"}, svg);
  var step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find(function (v) { return end / v <= 12; }) || 1200;
  var yAxis = top + data.channels.length * (rowH + gap);
  for (var t = 0; t <= end + 1e-9; t += step) {
    var x = left + t * scale;
    el("line", {"class": "tick", x1: x, x2: x, y1: top, y2: yAxis}, axis);
    el("text", {x: x, y: yAxis + 14, "text-anchor": "middle"}, axis).textContent = fmt(t);
  }
  data.channels.forEach(function (channel, row) {
    var y = top + row * (rowH + gap);
    var g = el("g", {"class": "channel", "data-channel": channel}, svg);
    el("text", {x: left - 8, y: y + rowH / 2 + 4, "text-anchor": "end"}, g).textContent = channel;
    el("rect", {"class": "lane", x: left, y: y, width: W - left - right, height: rowH, fill: "#eeeeee"}, g);
    data.segments.forEach(function (s) {
      if (s.channel !== channel) { return; }
      var r = el("rect", {
        "class": "segment", "data-channel": channel, "data-seq": s.seq, "data-label": s.label,
        x: (left + s.start_s * scale).toFixed(2), y: y,
        width: Math.max(1, (s.end_s - s.start_s) * scale).toFixed(2), height: rowH,
        fill: data.colours[s.label] || "#444444",
        "fill-opacity": (0.35 + 0.65 * Math.max(0, Math.min(1, s.confidence))).toFixed(3)
      }, g);
      el("title", {}, r).textContent = channel + " #" + s.seq + ": " + s.label + " " +
        Math.round(100 * s.confidence) + "% (" + fmt(s.start_s) + "\u2013" + fmt(s.end_s) + ")";
    });
  });
  svg.setAttribute("data-rendered", data.segments.length);
})();
"""


def write_report(
    path_html: str | Path, records: Iterable[Mapping[str, Any]], summary: Summary, *, model_id: str,
    channels: Sequence[str], labels: Sequence[str], duration_s: float, audio: str = "", stream_id: str = "",
) -> tuple[Path, Path | None]:
    """Write ``path_html`` and the timeline PNG beside it (same name, ``.png``); return both paths
    (the PNG's is ``None`` without matplotlib).

    ``records``: the call's result records (``channel``, ``seq``, ``start_s``, ``end_s``,
    ``label``, ``confidence`` ...; failure/end records are ignored here). ``summary``: as
    returned by :func:`producer.summary.summarise`, i.e. ``{channel: {"segments": int,
    "failed": int, "shares": {label: fraction}, "longest_negative": {"label", "start_s", "end_s",
    "segments"} | None}}``. ``model_id``: ``name@version``. ``channels``: display order (e.g.
    ``["agent", "customer"]``). ``labels``: the model's ordered labels (legend and colours).
    ``duration_s``: call length (the timeline's extent). ``audio``: what was classified (a path, or
    ``-`` for stdin) and ``stream_id``: the call's id, both in the title (the report file's own name
    when neither is given).
    """
    channels = list(channels)
    labels = list(labels)
    path_html = Path(path_html)
    segments = _segments(records, channels)
    colours = label_colours(labels + sorted({s["label"] for s in segments} - set(labels)))
    source = "stdin" if audio == "-" else Path(audio).name
    title = " ".join(p for p in (source, f"(stream {stream_id})" if stream_id else "") if p) or path_html.stem
    png: Path | None = None
    if has_matplotlib():
        png = write_timeline_png(png_path_for(path_html), segments, channels=channels, labels=labels,
                                     duration_s=duration_s, title=f"{title} - {model_id}")
        fallback = (f'<img alt="emotion timeline" style="max-width:100%" '
                    f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode("ascii")}">')
    else:
        fallback = "<p>The timeline needs JavaScript (no PNG: matplotlib was not installed).</p>"
    data = {"channels": channels, "labels": labels, "colours": colours, "duration_s": float(duration_s),
            "model": model_id, "segments": segments}
    # JSON inside <script>: "</" must not close the element.
    data_json = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    esc = html.escape
    legend = "".join(f'<span><span class="swatch" style="background:{colours[lab]}"></span>{esc(lab)}</span>'
                     for lab in labels)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Emotion report: {esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Emotion report: {esc(title)}</h1>
<p class="meta">Audio <code id="audio">{esc(audio or "?")}</code>
&middot; stream <code id="stream">{esc(stream_id or "?")}</code>
&middot; model <code id="model">{esc(model_id)}</code> &middot; duration {_fmt_time(duration_s)}
({duration_s:.1f} s) &middot; {len(segments)} classified segment(s) on {len(channels)} channel(s)
&middot; generated {generated}</p>
<h2>Timeline</h2>
<div class="legend">{legend}</div>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="emotion timeline per channel"></svg>
<noscript>{fallback}</noscript>
<p class="meta">Bar colour: predicted emotion; opacity: confidence. Hover a bar for details. Gaps: silence
(not classified) or failed segments.</p>
<h2>Summary per channel</h2>
<div class="summaries">
{_summary_html(summary, channels, labels, colours)}
</div>
<script type="application/json" id="ser-data">{data_json}</script>
<script>{_JS}</script>
</body>
</html>
"""
    path_html.write_text(page, encoding="utf-8")
    return path_html, png
