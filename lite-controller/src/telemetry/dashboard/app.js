// pimesh dashboard: workloads, topology and history charts from the
// controller's /v1 API, drawn as SVG. No framework, no network but the API.
"use strict";
const $ = (s) => document.querySelector(s);
const NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 5000;

function svg(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(v, digits) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }
function pct(v) { return v === null || v === undefined ? "-" : (v * 100).toFixed(2) + "%"; }
function ms(v) { return v === null || v === undefined ? "-" : Math.round(v) + "ms"; }
async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
// An id cell ("id") may be cut short with an ellipsis: its title keeps the text.
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (cls === "id") td.title = text;
  tr.appendChild(td);
  return td;
}
const win = () => $("#window").value;
// A table's one row saying why it has no others (loading, nothing yet, an error).
function emptyRow(body, text) {
  const tr = document.createElement("tr");
  tr.className = "empty";
  cell(tr, text).colSpan = body.parentNode.tHead.rows[0].cells.length;
  body.replaceChildren(tr);
}
function noData(text) {
  const s = document.body.dataset.scrapeSeconds;
  return text + " — proxies are scraped every " + (s ? s + " s" : "few seconds");
}
// A line of grey text in the middle of an SVG.
function note(root, text) {
  root.replaceChildren();
  svg("text", { x: +root.getAttribute("width") / 2, y: +root.getAttribute("height") / 2,
    "text-anchor": "middle", class: "axis" }, root).textContent = text;
}

async function overview() {
  const [stat, edges] = await Promise.all([
    get("/v1/stat?resource=deploy&window=" + win()),
    get("/v1/edges?resource=deploy&window=" + win()),
  ]);
  const body = $("#workloads tbody");
  body.replaceChildren();
  if (!stat.rows.length) emptyRow(body, noData("no data yet"));
  for (const r of stat.rows) {
    const tr = document.createElement("tr");
    tr.dataset.name = r.namespace + "/" + r.name;
    cell(tr, r.namespace, "id");
    const a = document.createElement("a");
    a.href = "#/w/" + r.namespace + "/" + r.name;
    a.textContent = r.name;
    cell(tr, "", "id").appendChild(a);
    a.title = r.name;
    const [up, total] = r.meshed.split("/");
    cell(tr, r.meshed, up !== total ? "bad" : "");
    cell(tr, pct(r.success), r.success !== null && r.success < 0.95 ? "bad" : "");
    cell(tr, fmt(r.rps, 1) + (r.rps === null ? "" : "rps"));
    cell(tr, ms(r.latency_ms_p50));
    cell(tr, ms(r.latency_ms_p95));
    cell(tr, ms(r.latency_ms_p99));
    cell(tr, String(r.tcp_open_connections));
    body.appendChild(tr);
  }
  topology(stat.rows, edges.rows);
}

function topology(workloads, edges) {
  const root = $("#topology");
  root.replaceChildren();
  if (!workloads.length && !edges.length) return note(root, noData("no workloads yet"));
  const W = +root.getAttribute("width"), H = +root.getAttribute("height");
  const names = new Map();
  const add = (ns, n) => { const k = ns + "/" + n; if (!names.has(k)) names.set(k, { ns, n }); return k; };
  for (const w of workloads) add(w.namespace, w.name);
  for (const e of edges) { add(e.src_namespace, e.src); add(e.dst_namespace, e.dst); }
  const keys = [...names.keys()];
  const pos = new Map();
  const R = Math.min(W, H) / 2 - 60;
  keys.forEach((k, i) => {
    const a = (2 * Math.PI * i) / Math.max(keys.length, 1) - Math.PI / 2;
    pos.set(k, [W / 2 + R * Math.cos(a), H / 2 + R * Math.sin(a)]);
  });
  const defs = svg("defs", {}, root);
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 22, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
  svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#888" }, marker);
  for (const e of edges) {
    const [x1, y1] = pos.get(e.src_namespace + "/" + e.src);
    const [x2, y2] = pos.get(e.dst_namespace + "/" + e.dst);
    const p = svg("path", { d: `M ${x1} ${y1} L ${x2} ${y2}`, "marker-end": "url(#arrow)",
      class: "edge" + (e.secured ? " secured" : "") }, root);
    p.dataset.src = e.src; p.dataset.dst = e.dst;
    const t = svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, class: "elabel", "text-anchor": "middle" }, root);
    t.textContent = (e.secured ? "mTLS " : "") + fmt(e.rps, 1) + " rps";
  }
  for (const k of keys) {
    const [x, y] = pos.get(k);
    const g = svg("g", { class: "node", transform: `translate(${x},${y})` }, root);
    g.dataset.name = k;
    svg("circle", { r: 14 }, g);
    const t = svg("text", { y: 30, "text-anchor": "middle" }, g);
    t.textContent = k;
  }
}

function chart(id, series, lines, opts) {
  const root = $(id);
  root.replaceChildren();
  // Several lines: a key in the caption, in the lines' colours.
  const legend = root.parentNode.querySelector(".legend");
  if (legend) {
    legend.replaceChildren(...lines.map((l) => {
      const k = document.createElement("span");
      k.className = "key";
      k.dataset.key = l.key;
      const i = document.createElement("i");
      i.style.background = l.color;
      k.append(i, l.key);
      return k;
    }));
  }
  const W = +root.getAttribute("width"), H = +root.getAttribute("height"), L = 40, B = 18;
  const pts = series.points;
  if (!pts.length) return note(root, noData("no history yet"));
  const t0 = pts[0].t, t1 = Math.max(pts[pts.length - 1].t, t0 + series.step_seconds);
  let max = opts.max || 0;
  for (const p of pts) for (const l of lines) max = Math.max(max, p[l.key] || 0);
  if (max === 0) max = 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - 8);
  const y = (v) => H - B - (v / max) * (H - B - 8);
  svg("text", { x: 2, y: 12, class: "axis" }, root).textContent = opts.fmt(max);
  svg("text", { x: 2, y: H - B, class: "axis" }, root).textContent = opts.fmt(0);
  svg("text", { x: L, y: H - 4, class: "axis" }, root).textContent = new Date(t0 * 1000).toLocaleTimeString();
  svg("text", { x: W - 8, y: H - 4, class: "axis", "text-anchor": "end" }, root).textContent = new Date(t1 * 1000).toLocaleTimeString();
  for (const l of lines) {
    const d = pts.filter((p) => p[l.key] !== null && p[l.key] !== undefined)
      .map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p[l.key]).toFixed(1)).join(" ");
    if (d) svg("path", { d, fill: "none", stroke: l.color, "stroke-width": 1.5, class: "line" }, root).dataset.key = l.key;
  }
}

async function workload(ns, name) {
  $("#wtitle").textContent = "deploy/" + name + " (" + ns + ")";
  const key = ns + "/" + name;
  const [series, edges, authz] = await Promise.all([
    get("/v1/history?workload=" + encodeURIComponent(key) + "&step=" + $("#step").value),
    get("/v1/edges?resource=deploy&window=" + win()),
    get("/v1/authz?resource=deploy&namespace=" + encodeURIComponent(ns) + "&name=" +
      encodeURIComponent(name) + "&window=" + win()),
  ]);
  authzRows(authz.rows);
  chart("#chart-rps", series, [{ key: "rps", color: "#4a90d9" }], { fmt: (v) => v.toFixed(1) });
  chart("#chart-success", series, [{ key: "success", color: "#2a9d4b" }], { max: 1, fmt: (v) => (v * 100).toFixed(0) + "%" });
  chart("#chart-latency", series, [{ key: "p50", color: "#4a90d9" }, { key: "p95", color: "#e67e22" },
    { key: "p99", color: "#c0392b" }], { fmt: (v) => Math.round(v) + "ms" });
  chart("#chart-tcp", series, [{ key: "tcp", color: "#8e44ad" }], { fmt: (v) => v.toFixed(0) });
  const body = $("#wedges tbody");
  body.replaceChildren();
  const mine = edges.rows.filter((e) => (e.src_namespace + "/" + e.src) === key || (e.dst_namespace + "/" + e.dst) === key);
  if (!mine.length) emptyRow(body, noData("no edges in the last " + win()));
  for (const e of mine) {
    const tr = document.createElement("tr");
    cell(tr, e.src_namespace + "/" + e.src, "id");
    cell(tr, e.dst_namespace + "/" + e.dst, "id");
    cell(tr, e.client_id, "id");
    cell(tr, e.server_id, "id");
    cell(tr, e.secured ? "✓" : "✗");
    cell(tr, fmt(e.rps, 1));
    cell(tr, pct(e.success));
    body.appendChild(tr);
  }
}

// The workload's authorization decisions per server, as `pimesh authz`:
// the denials' row (no authorization) marked, HTTP in requests and TCP in
// connections per second.
function authzRows(rows) {
  const body = $("#wauthz tbody");
  body.replaceChildren();
  if (!rows.length) emptyRow(body, noData("no authorization decisions in the last " + win()));
  for (const r of rows) {
    const tr = document.createElement("tr");
    const unit = r.protocol === "http" ? "rps" : "cps";
    tr.dataset.server = r.server_name;
    cell(tr, r.route === null ? "-" : r.route);
    cell(tr, r.server_kind === "default" ? "default:" + r.server_name : r.server_name, "id");
    cell(tr, r.authz_kind ? r.authz_kind + "/" + (r.authz_name || "") : "", "id");
    cell(tr, fmt(r.denied_rate, 1) + unit, r.denied > 0 ? "bad" : "");
    cell(tr, fmt(r.allowed_rate, 1) + unit);
    cell(tr, String(r.allowed));
    cell(tr, String(r.denied), r.denied > 0 ? "bad" : "");
    if (r.denied > 0) tr.classList.add("denials");
    body.appendChild(tr);
  }
}

// Live tap of the shown workload: the controller's /v1/tap stream (NDJSON,
// loopback clients only), newest first, the last 50 exchanges.
let tapping = null;
function stopTap() {
  if (tapping) tapping.abort();
  tapping = null;
  $("#tap-toggle").textContent = "start";
}
function tapRow(ev) {
  const body = $("#tap tbody");
  const tr = document.createElement("tr");
  cell(tr, new Date(ev.ts_ms).toLocaleTimeString());
  cell(tr, ev.direction);
  cell(tr, ev.client_id || ev.server_id || "-", "id");
  cell(tr, ev.method);
  cell(tr, ev.authority);
  cell(tr, ev.path);
  cell(tr, ev.status === undefined ? "-" : String(ev.status), ev.status >= 500 || ev.error ? "bad" : "");
  cell(tr, (ev.latency_us / 1000).toFixed(1) + "ms");
  body.prepend(tr);
  while (body.rows.length > 50) body.deleteRow(-1);
}
async function startTap(ns, name) {
  stopTap();
  const ctl = new AbortController();
  tapping = ctl;
  $("#tap-toggle").textContent = "stop";
  $("#tap-status").textContent = "connecting";
  try {
    const r = await fetch("/v1/tap?resource=deploy%2F" + encodeURIComponent(name) +
      "&namespace=" + encodeURIComponent(ns) + "&max_rps=20", { signal: ctl.signal, cache: "no-store" });
    if (!r.ok) {
      const e = await r.json().catch(() => ({ message: "HTTP " + r.status }));
      throw new Error(e.message);
    }
    $("#tap-status").textContent = "live";
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line) tapRow(JSON.parse(line));
      }
    }
    $("#tap-status").textContent = "ended";
  } catch (e) {
    if (e.name !== "AbortError") $("#tap-status").textContent = "error: " + e.message;
  } finally {
    if (tapping === ctl) stopTap();
  }
}
$("#tap-toggle").addEventListener("click", () => {
  const m = location.hash.match(/^#\/w\/([^/]+)\/(.+)$/);
  if (tapping) stopTap();
  else if (m) startTap(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
});
window.addEventListener("hashchange", () => { stopTap(); $("#tap tbody").replaceChildren(); $("#tap-status").textContent = ""; });

async function refresh() {
  const m = location.hash.match(/^#\/w\/([^/]+)\/(.+)$/);
  $("#overview").hidden = !!m;
  $("#workload").hidden = !m;
  try {
    if (m) await workload(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    else await overview();
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (e) {
    $("#status").textContent = "error: " + e.message;
    for (const td of document.querySelectorAll("tr.empty td")) td.textContent = "cannot load: " + e.message;
  }
}

window.addEventListener("hashchange", refresh);
$("#window").addEventListener("change", refresh);
$("#step").addEventListener("change", refresh);
for (const s of document.querySelectorAll(".charts svg")) note(s, "loading…");
refresh();
setInterval(refresh, REFRESH_MS);
