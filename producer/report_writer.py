"""``ser-produce --report``: the self-contained HTML page of one call plus a PNG of the timeline
beside it (``call.html`` -> ``call.png``).

The page is :func:`reports.html.render_call`, the very rendering ``ser-dashboard`` serves for a
call (see :mod:`reports` for why it lives there); the PNG is also embedded (base64) for viewers
without JavaScript.

matplotlib (for the PNG) is imported only when a report is written.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reports.dynamics import dynamics_html
from reports.html import label_colours, render_call, segments
from reports.summary import Summary

__all__ = ["has_matplotlib", "label_colours", "png_path_for", "write_report", "write_timeline_png"]


def has_matplotlib() -> bool:
    """Whether matplotlib can be imported (it is optional: ``.[train]`` brings it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a None entry in sys.modules, a broken install
        return False


def png_path_for(path_html: str | Path) -> Path:
    return Path(path_html).with_suffix(".png")


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


def write_report(
    path_html: str | Path, records: Iterable[Mapping[str, Any]], summary: Summary, *, model_id: str,
    channels: Sequence[str], labels: Sequence[str], duration_s: float, audio: str = "", stream_id: str = "",
    dynamics: Mapping[str, Any] | None = None,
) -> tuple[Path, Path | None]:
    """Write ``path_html`` and the timeline PNG beside it (same name, ``.png``); return both paths
    (the PNG's is ``None`` without matplotlib). The page's title names ``audio`` (a path, or ``-``
    for stdin) and ``stream_id`` when given, else the report's file name.

    ``records``: the call's result records (``channel``, ``seq``, ``start_s``, ``end_s``,
    ``label``, ``confidence`` ...; failure/end records are ignored here). ``summary``: as
    returned by :func:`producer.summary_lines.summarise`, i.e. ``{channel: {"segments": int,
    "failed": int, "shares": {label: fraction}, "longest_negative": {"label", "start_s", "end_s",
    "segments"} | None}}``. ``model_id``: ``name@version``. ``channels``: display order (e.g.
    ``["agent", "customer"]``). ``labels``: the model's ordered labels (legend and colours).
    ``duration_s``: call length (the timeline's extent). ``dynamics``: the call's conversation
    dynamics (``producer.dynamics``), shown as the "Conversation" section.
    """
    channels = list(channels)
    labels = list(labels)
    path_html = Path(path_html)
    records = list(records)
    segs = segments(records, channels)
    source = "" if not audio else "stdin" if audio == "-" else Path(audio).name
    title = " ".join(p for p in (source, f"(stream {stream_id})" if stream_id else "") if p) or path_html.stem
    png: Path | None = None
    png_b64 = None
    if has_matplotlib():
        png = write_timeline_png(png_path_for(path_html), segs, channels=channels, labels=labels,
                                 duration_s=duration_s, title=f"{title} - {model_id}")
        png_b64 = base64.b64encode(png.read_bytes()).decode("ascii")
    esc = html.escape
    source_line = (f'<p class="meta">Audio <code id="audio">{esc(audio or "?")}</code> &middot; stream '
                   f'<code id="stream">{esc(stream_id or "?")}</code></p>\n' if audio or stream_id else "")
    page = render_call(records, summary, title=title, model_id=model_id, channels=channels, labels=labels,
                       duration_s=duration_s, generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                       png_b64=png_b64, after_meta=source_line,
                       body_extra=dynamics_html(dynamics, channels, duration_s=duration_s))
    path_html.write_text(page, encoding="utf-8")
    return path_html, png
