// The dashboard: polls this node's admin API every second and renders the datacenters on a
// map and in a table, the cluster, and the last changes; with a write token typed in, it
// drains, restores, reweights and rolls back. The token lives in this script's memory only
// (never in storage, a cookie or the URL). Every text from the API goes in as textContent.
"use strict";

(function () {
  const POLL_MS = 1000;
  const FETCH_TIMEOUT_MS = 4000;
  const SVG = "http://www.w3.org/2000/svg";
  const MAP_TOP = 84; // the map's top latitude (scripts/world-map.py)

  let token = "";
  let busy = false; // a write is under way: its buttons stay disabled
  let timer = null;
  let lastDcs = [];
  const rows = new Map(); // datacenter id -> its table row's parts

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function headers(json) {
    const h = {};
    if (token) h["Authorization"] = "Bearer " + token;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  // One API call: {status, body} (body parsed when JSON), never throws.
  async function call(method, path, body) {
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(path, {
        method,
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        signal: ctl.signal,
      });
      const text = await r.text();
      let parsed = text;
      try { parsed = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
      return { status: r.status, body: parsed };
    } catch (e) {
      return { status: 0, body: { error: "no answer from the node (" + e.name + ")" } };
    } finally {
      clearTimeout(t);
    }
  }

  function errorText(r) {
    if (r.body && typeof r.body === "object" && r.body.error) return r.body.error;
    return "HTTP " + r.status;
  }

  function say(text, isError) {
    const m = $("message");
    m.textContent = text;
    m.className = isError ? "error" : "";
    m.hidden = !text;
  }

  function fmtTime(rfc3339) {
    const d = new Date(rfc3339);
    if (isNaN(d)) return String(rfc3339 || "");
    const now = new Date();
    const time = d.toLocaleTimeString([], { hour12: false });
    return d.toDateString() === now.toDateString() ? time : d.toISOString().slice(0, 10) + " " + time;
  }

  function pct(share) {
    const v = Math.max(0, Math.min(1, Number(share) || 0));
    return (v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0) + "%";
  }

  // ---- map ------------------------------------------------------------------------

  function drawGraticule() {
    const g = $("graticule");
    for (let lon = -150; lon <= 150; lon += 30) {
      g.append(svg("line", { class: "grid", x1: lon + 180, x2: lon + 180, y1: 0, y2: 142 }));
    }
    for (let lat = -30; lat <= 60; lat += 30) {
      g.append(svg("line", { class: "grid", x1: 0, x2: 360, y1: MAP_TOP - lat, y2: MAP_TOP - lat }));
    }
  }

  // Labels are placed greedily, west to east: beside the marker, above or below it,
  // wherever the label overlaps the fewest markers and labels placed before and stays on
  // the map.
  function drawMarkers(dcs) {
    const g = $("markers");
    g.replaceChildren();
    const at = (dc) => [dc.location.lon + 180,
      MAP_TOP - Math.max(-58, Math.min(MAP_TOP, dc.location.lat))];
    const placed = dcs.map((dc) => {
      const [x, y] = at(dc);
      return { x: x - 3, y: y - 3, w: 6, h: 6 };
    });
    const hits = (b) => placed.filter((p) =>
      b.x < p.x + p.w && p.x < b.x + b.w && b.y < p.y + p.h && p.y < b.y + b.h).length;
    const sorted = [...dcs].sort((a, b) => a.location.lon - b.location.lon);
    for (const dc of sorted) {
      const [x, y] = at(dc);
      const cls = "marker " + dc.health + (dc.state === "drained" ? " drained" : "");
      const m = svg("g", { class: cls, "data-dc": dc.id });
      m.append(svg("title", {}, dc.id + ": " + dc.state + ", " + dc.health +
        ", weight " + dc.weight + ", share " + pct(dc.answers_share)));
      m.append(svg("circle", { cx: x, cy: y, r: 2.8 }));
      const line1 = dc.id;
      const line2 = dc.state + " · " + dc.health + " · " + pct(dc.answers_share);
      const w = Math.max(line1.length * 2.7, line2.length * 1.8) + 1;
      const h = 8.6;
      const spots = [
        { x: x + 3.8, y: y - 4.3 }, { x: x - 3.8 - w, y: y - 4.3 },
        { x: x - w / 2, y: y - 4 - h }, { x: x - w / 2, y: y + 3.6 },
        { x: x + 3.2, y: y + 1.5 }, { x: x - 3.2 - w, y: y + 1.5 },
        { x: x + 3.2, y: y - 10 }, { x: x - 3.2 - w, y: y - 10 },
      ].filter((s) => s.x >= 0 && s.x + w <= 360 && s.y >= 0 && s.y + h <= 142);
      let best = null;
      for (const s of spots) {
        const n = hits({ x: s.x, y: s.y, w, h });
        if (best === null || n < best.n) best = { ...s, n };
        if (n === 0) break;
      }
      const spot = best || { x: x + 3.8, y: y - 4.3 };
      placed.push({ x: spot.x, y: spot.y, w, h });
      const anchor = spot.x + w / 2 < x - 1 ? "end" : spot.x > x ? "start" : "middle";
      const tx = anchor === "start" ? spot.x : anchor === "end" ? spot.x + w : spot.x + w / 2;
      m.append(svg("text", { x: tx, y: spot.y + 4, "text-anchor": anchor }, line1));
      m.append(svg("text", { x: tx, y: spot.y + 8, "text-anchor": anchor, class: "sub" }, line2));
      g.append(m);
    }
  }

  // ---- datacenter table -------------------------------------------------------------

  function makeRow(id) {
    const weight = el("input", { class: "weight", type: "number", min: "0", max: "1000",
      "aria-label": "new weight for " + id });
    weight.addEventListener("input", () => { weight.dataset.dirty = "1"; });
    const drain = el("button", { class: "drain", type: "button",
      onclick: () => patch(id, { state: "drained" }, id + " drained") }, "Drain");
    const restore = el("button", { class: "restore", type: "button",
      onclick: () => patch(id, { state: "active" }, id + " restored") }, "Restore");
    const reweight = el("button", { class: "reweight", type: "button", onclick: () => {
      const w = Number(weight.value);
      if (weight.value === "" || !Number.isInteger(w) || w < 0 || w > 1000) {
        say("weight must be a whole number from 0 to 1000", true);
        return;
      }
      weight.dataset.dirty = "";
      patch(id, { weight: w }, id + " weight set to " + w);
    } }, "Set weight");
    const cells = {
      id: el("td", { class: "id" }, id),
      state: el("td", { class: "state" }),
      health: el("td", { class: "health" }),
      weight: el("td", { class: "weight" }),
      share: el("td", { class: "share" }),
      opinions: el("td", { class: "opinions" }),
      actions: el("td", { class: "actions" }, drain, " ", restore, " ", weight, " ", reweight),
    };
    const tr = el("tr", { "data-dc": id }, ...Object.values(cells));
    return { tr, cells, drain, restore, weight, reweight };
  }

  function renderTable(dcs) {
    const body = document.querySelector("#dcs tbody");
    const seen = new Set();
    for (const dc of dcs) {
      seen.add(dc.id);
      let row = rows.get(dc.id);
      if (!row) {
        row = makeRow(dc.id);
        rows.set(dc.id, row);
      }
      body.append(row.tr); // keeps the API's order
      row.cells.state.replaceChildren(el("span", { class: "tag " + dc.state }, dc.state));
      row.cells.health.replaceChildren(el("span", { class: "tag " + dc.health }, dc.health));
      row.cells.weight.textContent = String(dc.weight);
      const fill = el("i");
      fill.style.width = pct(dc.answers_share); // CSSOM: allowed by the page's CSP
      row.cells.share.replaceChildren(el("span", { class: "bar" }, fill), pct(dc.answers_share));
      const ops = (dc.opinions || []).map((o) => el("div", {},
        "node " + o.node + ": ", el("span", { class: o.up ? "up" : "down" }, o.up ? "up" : "down"),
        " " + fmtTime(o.at) + (o.reason && !o.up ? " (" + o.reason + ")" : "")));
      row.cells.opinions.replaceChildren(...(ops.length ? ops : [el("span", { class: "muted" },
        dc.health_check ? "no opinion yet" : "no health check")]));
      if (document.activeElement !== row.weight && !row.weight.dataset.dirty) {
        row.weight.value = String(dc.weight);
      }
      row.drain.hidden = dc.state === "drained";
      row.restore.hidden = dc.state !== "drained";
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    updateButtons();
  }

  function updateButtons() {
    const why = token ? "" : "type a write token first";
    for (const row of rows.values()) {
      for (const b of [row.drain, row.restore, row.reweight]) {
        b.disabled = !token || busy;
        b.title = why;
      }
    }
    for (const b of document.querySelectorAll("button.rollback")) {
      b.disabled = !token || busy;
      b.title = why;
    }
  }

  // ---- writes -----------------------------------------------------------------------

  async function write(method, path, body, done) {
    if (!token) {
      say("type a write token in the token field first", true);
      return;
    }
    busy = true;
    updateButtons();
    const r = await call(method, path, body);
    busy = false;
    updateButtons();
    if (r.status >= 200 && r.status < 300) {
      say(done, false);
    } else if (r.status === 401) {
      say("refused: wrong token (" + errorText(r) + ")", true);
    } else if (r.status === 403) {
      say("refused: this token may only read (" + errorText(r) + ")", true);
    } else {
      say("failed: " + errorText(r), true);
    }
    refresh();
  }

  function patch(id, body, done) {
    return write("PATCH", "/api/v1/datacenters/" + encodeURIComponent(id), body, done);
  }

  function rollback(index) {
    if (!window.confirm("Roll every datacenter, zone and service back to right after change #" +
      index + "?")) return;
    write("POST", "/api/v1/rollback", { to: index }, "rolled back to #" + index);
  }

  // ---- cluster and history ------------------------------------------------------------

  function renderCluster(c) {
    $("node").textContent = "node " + c.node_id;
    const dl = $("cluster");
    const yesNo = (v) => el("span", { class: v ? "yes" : "no" }, v ? "yes" : "no");
    const items = [
      ["this node", String(c.node_id)],
      ["leader", c.leader === null || c.leader === undefined ? "none" : String(c.leader)],
      ["term", String(c.term)],
      ["quorum", yesNo(c.quorum)],
      ["applied", String(c.last_applied ?? "—") + " / log " + String(c.last_log_index ?? "—")],
    ];
    dl.replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-k": k }, v)]));
    const body = document.querySelector("#members tbody");
    body.replaceChildren(...(c.members || []).map((m) => el("tr", { "data-member": String(m.id) },
      el("td", {}, String(m.id) + (m.id === c.leader ? " ★" : "") + (m.id === c.node_id ? " (this)" : "")),
      el("td", {}, m.addr || "—"),
      el("td", {}, m.admin || "—"),
      el("td", {}, m.voter ? "yes" : "no"),
      el("td", { class: "lag" }, m.lag === null || m.lag === undefined ? "—" : String(m.lag)))));
  }

  function renderHistory(r) {
    const note = $("history-note");
    const list = $("history");
    if (r.status === 404 || r.status === 405) {
      note.textContent = "history not available on this node";
      note.hidden = false;
      list.replaceChildren();
      return;
    }
    if (r.status !== 200 || !Array.isArray(r.body)) {
      note.textContent = "history: " + errorText(r);
      note.hidden = false;
      return;
    }
    note.hidden = r.body.length > 0;
    note.textContent = "no changes yet";
    list.replaceChildren(...r.body.map((h) => el("li", { "data-index": String(h.index) },
      el("span", { class: "index" }, "#" + h.index),
      el("span", {}, fmtTime(h.time) + " · " + (h.actor || "?") + " · " + (h.kind || "") +
        (h.target ? " " + h.target : "")),
      el("button", { class: "rollback", type: "button", onclick: () => rollback(h.index) },
        "Rollback"),
      el("span", { class: "summary" }, h.summary || ""))));
    updateButtons();
  }

  // ---- polling ----------------------------------------------------------------------

  function setLive(ok, text) {
    const l = $("live");
    l.className = "live " + (ok ? "ok" : "bad");
    l.textContent = text;
  }

  function lock(locked) {
    $("locked").hidden = !locked;
    $("content").hidden = locked;
  }

  async function refresh() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    const [cluster, dcs, history] = await Promise.all([
      call("GET", "/api/v1/cluster"),
      call("GET", "/api/v1/datacenters"),
      call("GET", "/api/v1/history?limit=20"),
    ]);
    const needToken = [cluster, dcs].some((r) => r.status === 401);
    if (needToken) {
      lock(true);
      rows.clear();
      document.querySelector("#dcs tbody").replaceChildren();
      $("markers").replaceChildren();
      setLive(false, token ? "token refused" : "token needed");
    } else if (cluster.status === 200 && dcs.status === 200 && Array.isArray(dcs.body)) {
      lock(false);
      renderCluster(cluster.body);
      lastDcs = dcs.body;
      renderTable(lastDcs);
      drawMarkers(lastDcs);
      renderHistory(history);
      setLive(true, "live · " + new Date().toLocaleTimeString([], { hour12: false }));
    } else {
      const bad = cluster.status !== 200 ? cluster : dcs;
      setLive(false, "no data: " + errorText(bad));
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  function start() {
    drawGraticule();
    const input = $("token");
    input.addEventListener("input", () => {
      token = input.value.trim();
      updateButtons();
    });
    input.addEventListener("change", () => refresh());
    $("auth").addEventListener("submit", (e) => {
      e.preventDefault();
      refresh();
    });
    refresh();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
