/* ser-dashboard call page: the --report page (reports/html.py) made live. New result and turn
   records extend the timeline and its turn band (window.serTimeline.draw), silence and overtalk events
   add marks under its lanes, events update the alerts, the negativity trend and the speaking-rate and
   loudness trend; when the call ends the page reloads into its final rendering. Segments are de-duplicated
   on (channel, seq); the SSE id carries both stream positions, so a reconnect resumes exactly. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("ser-data").textContent);
  var seen = {};
  data.segments.forEach(function (s) { seen[s.channel + "\u0000" + s.seq] = true; });
  data.turns = data.turns || [];
  data.turns.forEach(function (t) { seen["turn\u0000" + t.channel + "\u0000" + t.seq] = true; });
  data.marks = data.marks || [];   // silences and overtalks (reports.dynamics.timeline_marks)
  data.speech = data.speech || []; // [{at_s, channels: {name: {rate_sps, level_db}}}] (dashboard.pages)
  function markKey(m) { return "mark\u0000" + m.kind + "\u0000" + m.start_s + "\u0000" + m.end_s; }
  data.marks.forEach(function (m) { seen[markKey(m)] = true; });
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
    if (!box) { return; }  // an archived call: its scores per quarter instead (trend events are not archived)
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

  // Speaking rate (syllables/s) and loudness (K-weighted level, LKFS) per speaker over the call, from the
  // dynamics events (producer/dynamics.py, producer/loudness.py): each point is the speaker's mean so far.
  // One scale per quantity for all speakers; the SVG's data-* attributes name the scales.
  function renderSpeech() {
    var box = document.getElementById("speech-trends");
    if (!box) { return; }
    box.replaceChildren();
    var pts = data.speech, NS = "http://www.w3.org/2000/svg";
    var last = pts[pts.length - 1];
    var end = Math.max(1, data.duration_s, last ? last.at_s : 0);
    var rmax = 8, lmin = Infinity, lmax = -Infinity;
    pts.forEach(function (p) {
      Object.keys(p.channels).forEach(function (c) {
        var v = p.channels[c];
        if (typeof v.rate_sps === "number") { rmax = Math.max(rmax, Math.ceil(v.rate_sps)); }
        if (typeof v.level_db === "number") { lmin = Math.min(lmin, v.level_db); lmax = Math.max(lmax, v.level_db); }
      });
    });
    if (lmin > lmax) { lmin = -30; lmax = -20; }
    lmin = 5 * Math.floor(lmin / 5) - 5; lmax = 5 * Math.ceil(lmax / 5) + 5;
    function svgEl(name, attrs, parent) {
      var e = document.createElementNS(NS, name);
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      parent.appendChild(e);
      return e;
    }
    data.channels.forEach(function (ch) {
      var fig = el("figure", {"class": "speech", "data-channel": ch});
      var now = null;
      pts.forEach(function (p) {
        var v = p.channels[ch];
        if (v && (typeof v.rate_sps === "number" || typeof v.level_db === "number")) { now = {at_s: p.at_s, v: v}; }
      });
      fig.appendChild(el("figcaption", {}, ch + ": " + (now ? [
        typeof now.v.rate_sps === "number" ? now.v.rate_sps.toFixed(1) + " syllables/s" : "rate -",
        typeof now.v.level_db === "number" ? now.v.level_db.toFixed(1) + " LKFS" : "level -"].join(", ") +
        " (mean so far, at " + fmt(now.at_s) + ")" : "no speech measured yet")));
      var svg = svgEl("svg", {viewBox: "0 0 300 60", role: "img", "aria-label": ch + " speaking rate and loudness over time",
                              "data-end": end, "data-rate-max": rmax, "data-level-min": lmin, "data-level-max": lmax}, fig);
      svgEl("rect", {width: 300, height: 60, fill: "#f4f4f4"}, svg);
      [["rate", "rate_sps", 0, rmax], ["level", "level_db", lmin, lmax]].forEach(function (q) {
        var xy = [];
        pts.forEach(function (p) {
          var v = p.channels[ch], y = v ? v[q[1]] : null;
          if (typeof y !== "number") { return; }
          var f = Math.max(0, Math.min(1, (y - q[2]) / (q[3] - q[2])));
          xy.push((300 * p.at_s / end).toFixed(1) + "," + (58 - 56 * f).toFixed(1));
        });
        svgEl("polyline", {"class": q[0], points: xy.join(" "), fill: "none", "stroke-width": 2, "data-points": xy.length}, svg);
        if (xy.length) {
          var xyl = xy[xy.length - 1].split(",");
          svgEl("circle", {"class": q[0], cx: xyl[0], cy: xyl[1], r: 2.5}, svg);
        }
      });
      var key = el("p", {"class": "speech-key"});
      key.appendChild(el("span", {"class": "key rate"}, "syllables/s (0\u2013" + rmax + ")"));
      key.appendChild(el("span", {"class": "key level"}, "speech level (" + lmin + " to " + lmax + " LKFS)"));
      fig.appendChild(key);
      box.appendChild(fig);
    });
  }

  function addMark(ev) {  // a silence or overtalk event -> a timeline mark; false when already drawn
    if (typeof ev.start_s !== "number" || typeof ev.end_s !== "number" || !(ev.end_s >= ev.start_s)) { return false; }
    var m = {kind: ev.kind, start_s: ev.start_s, end_s: ev.end_s};
    if (ev.kind === "overtalk" && ev.interruption) { m.by = String(ev.by); m.over = (ev.over || []).map(String); m.yielded = !!ev.yielded; }
    var k = markKey(m);
    if (seen[k]) { return false; }
    seen[k] = true;
    data.marks.push(m);
    return true;
  }

  function addPoint(ev) {  // a dynamics event -> a point of the speaking-rate and loudness trend
    var p = {at_s: ev.at_s, channels: {}};
    Object.keys(ev.channels || {}).forEach(function (c) {
      var v = ev.channels[c] || {};
      p.channels[c] = {rate_sps: v.rate_sps, level_db: v.level_db};
    });
    data.speech = data.speech.filter(function (q) { return q.at_s !== p.at_s; });
    data.speech.push(p);
    data.speech.sort(function (a, b) { return a.at_s - b.at_s; });
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
  renderSpeech();
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
    if ((ev.kind === "silence" || ev.kind === "overtalk") && addMark(ev)) { redraw(); }
    if (ev.kind === "dynamics" && typeof ev.at_s === "number") {
      addPoint(ev);
      data.duration_s = Math.max(data.duration_s, ev.at_s);
      renderSpeech();
    }
    if (ev.kind === "call_ended") {
      source.close();
      conn.textContent = "call ended";
      window.setTimeout(function () { window.location.reload(); }, 1500);
    }
  });
})();
