/* ser-dashboard call page: the --report page (reports/html.py) made live. New result and turn
   records extend the timeline and its turn band (window.serTimeline.draw), events update the alerts and the negativity
   trend; when the call ends the page reloads into its final rendering. Segments are de-duplicated
   on (channel, seq); the SSE id carries both stream positions, so a reconnect resumes exactly. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("ser-data").textContent);
  var seen = {};
  data.segments.forEach(function (s) { seen[s.channel + "\u0000" + s.seq] = true; });
  data.turns = data.turns || [];
  data.turns.forEach(function (t) { seen["turn\u0000" + t.channel + "\u0000" + t.seq] = true; });
  var alerts = [];   // {rule, channel, since_s, until_s?, score, ...}
  var trends = {};   // channel -> [trend events]
  var fmt = window.serTimeline.fmt;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function renderAlerts() {
    var ul = document.getElementById("alerts");
    ul.replaceChildren();
    if (!alerts.length) { ul.appendChild(el("li", {"class": "none"}, "No alert.")); return; }
    alerts.forEach(function (a) {
      var open = a.until_s === undefined;
      var li = el("li", {"class": open ? "alert-open" : "alert-closed", "data-state": open ? "open" : "closed",
                         "data-rule": a.rule, "data-channel": a.channel});
      li.textContent = (open ? "OPEN " : "CLOSED ") + a.rule + " on " + a.channel + ": opened at " + fmt(a.since_s) +
        " (score " + a.opened_score.toFixed(2) + " \u2265 " + a.open_at + " over " + a.window_s + " s)" +
        (open ? "" : ", closed at " + fmt(a.until_s) + (a.reason === "call_ended" ? " (call ended)" :
          " (score " + (a.score === null ? "-" : a.score.toFixed(2)) + " \u2264 " + a.threshold + ")"));
      ul.appendChild(li);
    });
  }

  function renderTrends() {
    var box = document.getElementById("trends");
    box.replaceChildren();
    data.channels.forEach(function (ch) {
      var list = trends[ch] || [];
      var fig = el("figure", {"class": "trend", "data-channel": ch});
      var last = list[list.length - 1];
      var cap = el("figcaption", {}, ch + ": " + (last ? "negativity " + Math.round(100 * last.negativity) +
        "% over the last " + last.window_s + " s (at " + fmt(last.at_s) + ")" : "no trend yet"));
      fig.appendChild(cap);
      var NS = "http://www.w3.org/2000/svg";
      var svg = document.createElementNS(NS, "svg");
      svg.setAttribute("viewBox", "0 0 300 60");
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", ch + " negativity over time");
      var end = Math.max(1, data.duration_s, last ? last.at_s : 0);
      var pts = list.map(function (t) { return (300 * t.at_s / end).toFixed(1) + "," + (58 - 56 * t.negativity).toFixed(1); });
      var base = document.createElementNS(NS, "rect");
      base.setAttribute("width", 300); base.setAttribute("height", 60); base.setAttribute("fill", "#f4f4f4");
      svg.appendChild(base);
      var line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("fill", "none"); line.setAttribute("stroke", "#b22222"); line.setAttribute("stroke-width", 2);
      svg.appendChild(line);
      fig.appendChild(svg);
      if (last) {
        var shares = Object.keys(last.shares).filter(function (k) { return last.shares[k] > 0; })
          .map(function (k) { return k + " " + Math.round(100 * last.shares[k]) + "%"; });
        fig.appendChild(el("p", {"class": "shares"}, shares.join(", ")));
      }
      box.appendChild(fig);
    });
  }

  // The conversation's dynamics (producer/dynamics.py), from the newest dynamics event: talk time and
  // share per speaker, non-talk time, silences, overtalk. The ended page has them server-rendered.
  function renderDynamics(ev) {
    var box = document.getElementById("conversation");
    if (!box) { return; }
    box.replaceChildren(el("h2", {}, "Conversation"));
    var two = ev.overtalk !== undefined;
    var table = el("table", {"class": "talk"});
    var head = el("tr");
    ["speaker", "talk time", "share of the call"].concat(two ? ["interruptions made", "the other yielded"] : [])
      .forEach(function (h) { head.appendChild(el("th", {}, h)); });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    data.channels.forEach(function (name) {
      var ch = ev.channels[name];
      if (!ch) { return; }
      var tr = el("tr", {"data-channel": name});
      tr.appendChild(el("td", {}, name));
      tr.appendChild(el("td", {"class": "talk"}, ch.talk_s.toFixed(1) + " s"));
      var share = el("td", {"class": "share"});
      var bar = el("span", {"class": "talkbar"});
      bar.style.width = (100 * ch.talk_share).toFixed(1) + "px";
      share.appendChild(bar);
      share.appendChild(document.createTextNode(" " + Math.round(100 * ch.talk_share) + "%"));
      tr.appendChild(share);
      if (two) { tr.appendChild(el("td", {}, ch.interruptions)); tr.appendChild(el("td", {}, ch.yielded)); }
      body.appendChild(tr);
    });
    box.appendChild(table);
    var p = el("p", {"class": "meta"});
    p.appendChild(document.createTextNode("non-talk "));
    p.appendChild(el("b", {id: "non-talk"}, ev.non_talk_s.toFixed(1) + " s"));
    p.appendChild(document.createTextNode("; "));
    p.appendChild(el("b", {id: "silence-count"}, ev.silence.count));
    p.appendChild(document.createTextNode(" silence(s) of " + ev.silence.min_s + " s or more" +
      (two ? "; " : " (first " + fmt(ev.at_s) + " of the call).")));
    if (two) {
      p.appendChild(el("b", {id: "overtalk-count"}, ev.overtalk.count));
      p.appendChild(document.createTextNode(" overtalk(s) (first " + fmt(ev.at_s) + " of the call)."));
    }
    box.appendChild(p);
    box.setAttribute("data-at", ev.at_s);
  }

  function applyEvent(ev) {
    if (ev.kind === "alert_opened") {
      alerts.push({rule: ev.rule, channel: ev.channel, since_s: ev.since_s, window_s: ev.window_s,
                   opened_score: ev.score, open_at: ev.threshold});
    } else if (ev.kind === "alert_closed") {
      for (var i = alerts.length - 1; i >= 0; i--) {
        var a = alerts[i];
        if (a.rule === ev.rule && a.channel === ev.channel && a.until_s === undefined && a.since_s === ev.since_s) {
          a.until_s = ev.until_s; a.score = ev.score; a.threshold = ev.threshold; a.reason = ev.reason;
          break;
        }
      }
    } else if (ev.kind === "trend") {
      (trends[ev.channel] = trends[ev.channel] || []).push(ev);
    } else if (ev.kind === "dynamics" && data.live) {
      renderDynamics(ev);
    }
  }
  data.events.forEach(applyEvent);
  renderAlerts();
  renderTrends();
  if (!data.live) { return; }

  var pending = false;
  var duplicates = 0;
  function redraw() {
    if (pending) { return; }
    pending = true;
    window.setTimeout(function () {
      pending = false;
      window.serTimeline.draw(data);
      document.getElementById("segment-count").textContent = data.segments.length;
      var tc = document.getElementById("turn-count");
      if (tc) { tc.textContent = data.turns.length; }
      document.getElementById("duration").textContent = fmt(data.duration_s) + " (" + data.duration_s.toFixed(1) + " s)";
    }, 100);
  }
  var conn = document.getElementById("conn");
  var source = new EventSource("/sse/call?id=" + encodeURIComponent(data.call_id) + "&r=" +
    encodeURIComponent(data.results_id) + "&e=" + encodeURIComponent(data.events_id));
  source.addEventListener("open", function () { conn.textContent = "live"; conn.className = "status ok"; });
  source.addEventListener("error", function () { conn.textContent = "reconnecting\u2026"; conn.className = "status bad"; });
  source.addEventListener("up", function () { conn.textContent = "live"; conn.className = "status ok"; });
  source.addEventListener("down", function (m) {
    conn.textContent = JSON.parse(m.data).error + " unreachable, retrying\u2026"; conn.className = "status bad";
  });
  source.addEventListener("record", function (m) {
    var r = JSON.parse(m.data);
    if (r.kind === "turn" && data.channels.indexOf(r.channel) >= 0) {  // a re-published turn is drawn once
      var tk = "turn\u0000" + r.channel + "\u0000" + r.seq;
      if (seen[tk]) { return; }
      seen[tk] = true;
      data.turns.push({channel: r.channel, seq: r.seq, start_s: r.start_s, end_s: r.end_s, label: r.label,
                       confidence: r.confidence, uncertain: !!r.uncertain, segments: r.segments});
      if (!data.colours[r.label]) { data.colours[r.label] = "#444444"; }
      redraw();
      return;
    }
    if (r.kind !== "result" || data.channels.indexOf(r.channel) < 0) { return; }
    var key = r.channel + "\u0000" + r.seq;
    if (seen[key]) {  // counted so that tests can tell a resume that repeats itself
      duplicates += 1;
      document.body.setAttribute("data-duplicate-records", duplicates);
      return;
    }
    seen[key] = true;
    var s = {channel: r.channel, seq: r.seq, start_s: r.start_s, end_s: r.end_s, label: r.label, confidence: r.confidence};
    if (r.uncertain !== undefined) { s.uncertain = !!r.uncertain; }
    data.segments.push(s);
    if (!data.colours[r.label]) { data.colours[r.label] = "#444444"; }
    data.duration_s = Math.max(data.duration_s, r.end_s);
    redraw();
  });
  source.addEventListener("ev", function (m) {
    var ev = JSON.parse(m.data);
    applyEvent(ev);
    if (ev.kind === "trend") { data.duration_s = Math.max(data.duration_s, ev.at_s); renderTrends(); }
    if (ev.kind === "alert_opened" || ev.kind === "alert_closed") { renderAlerts(); }
    if (ev.kind === "call_ended") {
      source.close();
      conn.textContent = "call ended";
      window.setTimeout(function () { window.location.reload(); }, 1500);
    }
  });
})();
