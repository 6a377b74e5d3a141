"""The "Conversation" section of a call's page: talk time and share per speaker, non-talk time,
silences and overtalk on a strip over the call's time line (server-side SVG: no script needed).

``dyn`` is the call's dynamics as the ``end`` record and ``call_ended`` carry them
(``producer.dynamics.Dynamics.episodes_summary``; schema: docs/pipeline.md, "Call events").
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

SILENCE_COLOUR = "#9e9e9e"
OVERTALK_COLOUR = "#d32f2f"


def _strip(dyn: Mapping[str, Any], duration_s: float) -> str:
    if duration_s <= 0:
        return ""
    rects = []
    for kind, colour, spans in (("silence", SILENCE_COLOUR, dyn.get("silences") or []),
                                ("overtalk", OVERTALK_COLOUR, dyn.get("overtalks") or [])):
        for a, b in spans:
            x, w = 100 * a / duration_s, max(0.2, 100 * (b - a) / duration_s)
            rects.append(f'<rect class="{kind}" x="{x:.3f}%" y="0" width="{w:.3f}%" height="14" fill="{colour}">'
                         f"<title>{kind} {a:.1f}&ndash;{b:.1f} s ({b - a:.1f} s)</title></rect>")
    return ('<svg id="conversation-strip" width="100%" height="14" role="img" '
            'aria-label="silences and overtalk over the call" style="background:#e8f5e9;border-radius:3px">'
            + "".join(rects) + "</svg>")


def dynamics_html(dyn: Mapping[str, Any] | None, channels: Sequence[str], *, duration_s: float) -> str:
    """The section's HTML, or "" when the call has no dynamics (an older producer)."""
    if not dyn:
        return ""
    esc = html.escape
    rows = []
    two = "overtalk" in dyn
    for name in channels:
        ch = (dyn.get("channels") or {}).get(name)
        if ch is None:
            continue
        extra = (f"<td>{ch.get('interruptions', 0)}</td><td>{ch.get('yielded', 0)}</td>" if two else "")
        level = ch.get("level_db")
        rate = ch.get("rate_sps")
        extra += (f'<td class="level">{"&ndash;" if level is None else f"{level:.1f} LKFS"}</td>'
                  f'<td class="raised">{ch.get("raised_s", 0.0):.1f} s</td>'
                  f'<td class="rate">{"&ndash;" if rate is None else f"{rate:.1f}"}</td>')
        rows.append(f'<tr data-channel="{esc(name)}"><td>{esc(name)}</td><td class="talk">{ch["talk_s"]:.1f} s</td>'
                    f'<td class="share"><span class="talkbar" style="width:{100 * ch["talk_share"]:.1f}px"></span> '
                    f'{100 * ch["talk_share"]:.0f}%</td>{extra}</tr>')
    head = ("<th>interruptions made</th><th>the other yielded</th>" if two else "") + \
        "<th>speech level</th><th>raised voice</th><th>syllables/s</th>"
    sil = dyn["silence"]
    facts = [f'non-talk <b id="non-talk">{dyn["non_talk_s"]:.1f} s</b>',
             f'<b id="silence-count">{sil["count"]}</b> silence(s) of {sil["min_s"]:g} s or more '
             f'({sil["total_s"]:.1f} s, longest {sil["longest_s"]:.1f} s)']
    if two:
        facts.append(f'<b id="overtalk-count">{dyn["overtalk"]["count"]}</b> overtalk(s) '
                     f'({dyn["overtalk"]["total_s"]:.1f} s)')
    legend = (f'<span><span class="swatch" style="background:{SILENCE_COLOUR}"></span>silence</span>'
              + (f'<span><span class="swatch" style="background:{OVERTALK_COLOUR}"></span>overtalk</span>'
                 if two else ""))
    return (f'<section id="conversation"><h2>Conversation</h2>\n<table class="talk"><thead><tr><th>speaker</th>'
            f"<th>talk time</th><th>share of the call</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>\n"
            f'<p class="meta">{"; ".join(facts)}.</p>\n<div class="legend">{legend}</div>\n'
            f"{_strip(dyn, duration_s)}</section>\n")
