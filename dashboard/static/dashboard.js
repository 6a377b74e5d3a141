/* ser-dashboard overview: live calls, recently ended calls, pool health.
   State comes from the embedded snapshot and then from /sse/overview (events of every call).
   Everything from a call is inserted with textContent, never as HTML. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("overview-data").textContent);
  var colours = data.colours || {};
  var active = {};   // call id -> state
  var ended = [];    // newest first
  //: a live call not heard of (event or heartbeat) for this long is marked quiet; the server moves
  //: a call whose producer stopped its heartbeat for LOST_AFTER_S to "Recently ended" as lost
  var QUIET_S = 60;
  data.active.forEach(function (c) {
    c.last_ts = Math.max(c.started, c.alive || 0);
    Object.keys(c.trends).forEach(function (k) { c.last_ts = Math.max(c.last_ts, c.trends[k].ts); });
    c.alerts.forEach(function (a) { c.last_ts = Math.max(c.last_ts, a.ts); });
    active[c.call_id] = c;
  });
  ended = data.ended.slice();

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(t) {
    t = Math.max(0, t);
    var h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = Math.floor(t % 60);
    return (h ? h + ":" + (m < 10 ? "0" : "") : "") + m + ":" + (s < 10 ? "0" : "") + s;
  }
  function callLink(id, raw) {
    // Linked by the key id; shown as the platform's own id when that differs (raw_call_id).
    var a = el("a", {href: "/calls/" + encodeURIComponent(id), "class": "call-id"}, raw || id);
    return a;
  }
  function badge(channel, trend) {
    var b = el("span", {"class": "badge", "data-channel": channel});
    if (!trend || !trend.last) {
      b.classList.add("badge-wait");
      b.textContent = channel + ": \u2026";
      return b;
    }
    var last = trend.last;
    b.setAttribute("data-label", last.label);
    b.style.borderColor = colours[last.label] || "#444";
    var sw = el("span", {"class": "swatch", "aria-hidden": "true"});
    sw.style.background = colours[last.label] || "#444";
    b.appendChild(sw);
    b.appendChild(document.createTextNode(channel + ": " + last.label + " " +
      Math.round(100 * last.confidence) + "%" + (last.uncertain ? " (uncertain)" : "")));
    b.title = channel + ": negativity " + Math.round(100 * trend.negativity) + "% over the last " + trend.window_s + " s";
    return b;
  }
  function durationText(started, last, now) {
    return fmt(now - started) + (now - last >= QUIET_S ? " (no update for " + fmt(now - last) + ")" : "");
  }
  function alertText(a) {
    return "ALERT " + a.rule + " on " + a.channel + " since " + fmt(a.since_s) + " (score " + a.score.toFixed(2) + ")";
  }

  function renderActive() {
    var tbody = document.querySelector("#live tbody");
    var calls = Object.keys(active).map(function (k) { return active[k]; });
    calls.sort(function (a, b) {
      var d = (b.alerts.length > 0) - (a.alerts.length > 0);
      return d || (b.started - a.started);
    });
    var rows = document.createDocumentFragment();
    var now = Date.now() / 1000;
    calls.forEach(function (c) {
      var tr = el("tr", {"data-call-id": c.call_id});
      if (c.alerts.length) { tr.className = "alerting"; }
      var td = el("td"); td.appendChild(callLink(c.call_id, c.raw_call_id)); tr.appendChild(td);
      tr.appendChild(el("td", {}, c.source));
      tr.appendChild(el("td", {"class": "duration", "data-started": c.started, "data-last": c.last_ts},
                        durationText(c.started, c.last_ts, now)));
      var sp = el("td", {"class": "speakers"});
      c.channels.forEach(function (ch) { sp.appendChild(badge(ch, c.trends[ch])); sp.appendChild(document.createTextNode(" ")); });
      tr.appendChild(sp);
      var al = el("td", {"class": "alerts"});
      if (!c.alerts.length) { al.textContent = "none"; }
      c.alerts.forEach(function (a) { al.appendChild(el("span", {"class": "alert-open", role: "status"}, alertText(a))); });
      tr.appendChild(al);
      rows.appendChild(tr);
    });
    tbody.replaceChildren(rows);
    document.getElementById("live-empty").hidden = calls.length > 0;
    document.getElementById("live-count").textContent = "(" + calls.length + ")";
  }

  function renderEnded() {
    var tbody = document.querySelector("#ended tbody");
    var rows = document.createDocumentFragment();
    ended.forEach(function (c) {
      var e = c.ended || {};
      var tr = el("tr", {"data-call-id": c.call_id});
      var td = el("td"); td.appendChild(callLink(c.call_id, c.raw_call_id)); tr.appendChild(td);
      tr.appendChild(el("td", {}, c.source));
      tr.appendChild(el("td", {}, fmt(e.duration_s || 0)));
      tr.appendChild(el("td", {}, e.ts ? new Date(e.ts * 1000).toLocaleTimeString() : ""));
      tr.appendChild(el("td", {}, e.reason === "lost" ? "lost: no heartbeat from its producer since then" :
        (e.reason || "?") + ", " + (e.segments || 0) + " segment(s)" + (e.failed ? ", " + e.failed + " failed" : "")));
      rows.appendChild(tr);
    });
    tbody.replaceChildren(rows);
    document.getElementById("ended-empty").hidden = ended.length > 0;
  }

  function renderPool(p) {
    var box = document.getElementById("pool");
    box.replaceChildren();
    if (p.error) { box.appendChild(el("p", {"class": "error"}, "Redis: " + p.error)); return; }
    var q = p.queue;
    box.appendChild(el("p", {"id": "queue"}, "Queue " + q.name + ": " + q.depth + " queued (oldest " +
      (q.oldest_age_s === null ? "-" : q.oldest_age_s.toFixed(1) + " s") + "), " + q.started + " running, " +
      q.failed + " failed"));
    var models = Object.keys(p.models);
    if (models.length > 1) { box.appendChild(el("p", {"class": "error"}, "Warning: the pool runs more than one model version")); }
    var t = el("table", {"class": "workers"});
    var head = el("tr");
    ["Worker", "State", "Model", "Host", "Current job"].forEach(function (h) { head.appendChild(el("th", {scope: "col"}, h)); });
    t.appendChild(el("thead")).appendChild(head);
    var body = t.appendChild(el("tbody"));
    p.workers.forEach(function (w) {
      var tr = el("tr");
      [w.name, w.state, w.model || "unknown", w.host, w.current_job || "-"].forEach(function (v) { tr.appendChild(el("td", {}, v)); });
      body.appendChild(tr);
    });
    box.appendChild(el("p", {}, p.workers.length + " worker(s)"));
    box.appendChild(t);
  }

  function endAs(c, ev) {
    delete active[c.call_id];
    c.ended = ev;
    ended = [c].concat(ended.filter(function (e) { return e.call_id !== c.call_id; })).slice(0, 50);
  }
  // heartbeats: when each live call's producer was last heard of; the server says which are lost
  function revive(id) {  // a call shown as lost is heard of again: live after all
    var was = ended.filter(function (e) { return e.call_id === id && e.ended && e.ended.reason === "lost"; })[0];
    if (!was) { return undefined; }
    was.ended = null;
    active[id] = was;
    ended = ended.filter(function (e) { return e.call_id !== id; });
    return was;
  }
  function beats(b) {
    Object.keys(b.alive).forEach(function (id) {
      var c = active[id] || (b.lost.indexOf(id) < 0 ? revive(id) : undefined);
      if (c) { c.last_ts = Math.max(c.last_ts || 0, b.alive[id]); }
    });
    b.lost.forEach(function (id) {
      var c = active[id];
      if (c) {
        endAs(c, {kind: "call_ended", call_id: id, reason: "lost", ts: b.alive[id],
                  duration_s: Math.max(0, b.alive[id] - c.started)});
      }
    });
  }

  function apply(ev) {
    var c = active[ev.call_id];
    if (!c && ev.kind !== "call_started") { c = revive(ev.call_id); }
    if (ev.kind === "call_started") {
      active[ev.call_id] = {call_id: ev.call_id, raw_call_id: ev.raw_call_id, source: ev.source, channels: ev.channels, params: ev.params,
                            model: ev.model, started: ev.ts, last_ts: ev.ts, trends: {}, alerts: [], ended: null};
      ended = ended.filter(function (e) { return e.call_id !== ev.call_id; });
    } else if (!c) {
      return;
    }
    if (c) { c.last_ts = Math.max(c.last_ts || 0, ev.ts); }
    if (ev.kind === "trend") {
      c.trends[ev.channel] = ev;
    } else if (ev.kind === "alert_opened") {
      c.alerts = c.alerts.filter(function (a) { return !(a.rule === ev.rule && a.channel === ev.channel); });
      c.alerts.push(ev);
    } else if (ev.kind === "alert_closed") {
      c.alerts = c.alerts.filter(function (a) { return !(a.rule === ev.rule && a.channel === ev.channel); });
    } else if (ev.kind === "call_ended") {
      endAs(c, ev);
    }
  }

  var dirty = false;
  function schedule() {
    if (!dirty) { dirty = true; window.setTimeout(function () { dirty = false; renderActive(); renderEnded(); }, 100); }
  }
  renderActive();
  renderEnded();
  window.setInterval(function () {  // durations tick locally; nothing is fetched
    var now = Date.now() / 1000;
    document.querySelectorAll("#live td.duration").forEach(function (td) {
      td.textContent = durationText(parseFloat(td.getAttribute("data-started")),
                                    parseFloat(td.getAttribute("data-last")), now);
    });
  }, 1000);

  var conn = document.getElementById("conn");
  var source = new EventSource("/sse/overview?last=" + encodeURIComponent(data.last_id));
  source.addEventListener("open", function () { conn.textContent = "live"; conn.className = "status ok"; });
  source.addEventListener("error", function () { conn.textContent = "reconnecting\u2026"; conn.className = "status bad"; });
  source.addEventListener("up", function () { conn.textContent = "live"; conn.className = "status ok"; });
  source.addEventListener("down", function (m) {
    conn.textContent = JSON.parse(m.data).error + " unreachable, retrying\u2026"; conn.className = "status bad";
  });
  source.addEventListener("ev", function (m) { apply(JSON.parse(m.data)); schedule(); });
  source.addEventListener("pool", function (m) { renderPool(JSON.parse(m.data)); });
  source.addEventListener("alive", function (m) { beats(JSON.parse(m.data)); schedule(); });
})();
