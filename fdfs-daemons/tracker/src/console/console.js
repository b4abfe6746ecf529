// The tracker's console: polls /api/cluster and redraws; no reloads, no libraries.
"use strict";

const POLL_MS = 2000;
const KEEP = 90; // samples kept for the charts (three minutes)
const COLORS = ["#2f6fdb", "#1f7a3a", "#b3261e", "#a86400", "#7b3fb5", "#00838f"];

const history = []; // {t: seconds, d: /api/cluster}
const storagePage = decodeURIComponent((location.pathname.match(/^\/storage\/(.+)$/) || [])[1] || "");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function mb(v) {
  if (v >= 1048576) return (v / 1048576).toFixed(1) + " TB";
  if (v >= 1024) return (v / 1024).toFixed(1) + " GB";
  return v + " MB";
}

function storages(d) {
  return d.groups.flatMap(g => g.storages.map(s => Object.assign({ group: g.name }, s)));
}

// Per second change of `pick(sample)` between consecutive samples.
function rates(pick) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1], b = history[i], dt = b.t - a.t;
    const va = pick(a.d), vb = pick(b.d);
    out.push(dt > 0 && va !== undefined && vb !== undefined ? Math.max(0, (vb - va) / dt) : 0);
  }
  return out;
}

// histogram_quantile over the change of a latency histogram between two samples: each
// side is {buckets: [[le, cumulative count]...], count}.
function histQuantile(q, a, b) {
  if (!a || !b) return 0;
  const total = b.count - a.count;
  if (total <= 0) return 0;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  const delta = b.buckets.map((x, i) => [x[0], x[1] - ((a.buckets[i] || [0, 0])[1])]);
  for (const [le, count] of delta) {
    if (count >= rank) {
      const inBucket = count - prevCount;
      return inBucket > 0 ? prevLe + (le - prevLe) * (rank - prevCount) / inBucket : le;
    }
    prevLe = le; prevCount = count;
  }
  return prevLe;
}

function trackerHist(d) {
  return { buckets: d.requests.latency_buckets.map(x => [x[0], x[1]]), count: d.requests.count };
}

// The latency histogram of `command` summed over `list` storages (null if none has one).
function storageHist(list, command) {
  let out = null;
  for (const s of list) {
    const h = s.latency && s.latency[command];
    if (!h) continue;
    if (!out) out = { buckets: h.buckets.map(x => [x[0], 0]), count: 0 };
    h.buckets.forEach((x, i) => { if (out.buckets[i]) out.buckets[i][1] += x[1]; });
    out.count += h.count;
  }
  return out;
}

// ms per sample of quantile q of the histogram pick(sample) gives.
function latencySeries(q, pick) {
  return history.slice(1).map((s, i) => 1000 * histQuantile(q, pick(history[i].d), pick(s.d)));
}

function sumCommands(d, test) {
  let n = 0;
  for (const [k, v] of Object.entries(d.requests.by_command)) if (test(k)) n += v;
  return n;
}

// A line chart of `series` ([{name, values}]); `floor`: the least top of the y axis.
function drawChart(id, series, floor = 1) {
  const canvas = document.getElementById(id);
  if (!canvas) return;
  canvas.dataset.last = JSON.stringify(Object.fromEntries(series.map(s => [s.name, s.values.at(-1) ?? null])));
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, padL = 44, padB = 16, padT = 18;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(floor, ...series.flatMap(s => s.values));
  const top = niceCeil(max);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#d9dde3"; ctx.fillStyle = "#6b7380";
  for (let i = 0; i <= 2; i++) {
    const y = padT + (h - padT - padB) * i / 2;
    ctx.beginPath(); ctx.moveTo(padL, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(fmt(top * (2 - i) / 2), 2, y + 4);
  }
  let x = padL;
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    ctx.fillStyle = color; ctx.fillText(s.name, x, 11); x += ctx.measureText(s.name).width + 14;
    ctx.strokeStyle = color; ctx.lineWidth = 1.6; ctx.beginPath();
    const n = s.values.length;
    s.values.forEach((v, j) => {
      const px = padL + (w - padL) * (n > 1 ? j / (n - 1) : 1);
      const py = padT + (h - padT - padB) * (1 - v / top);
      if (j === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
  });
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

function renderProblems(d) {
  const box = document.getElementById("problems");
  box.replaceChildren();
  const list = storagePage ? d.problems.filter(p => p.subject === storagePage) : d.problems;
  if (list.length === 0) box.append(el("div", { class: "problem none", text: "No problems." }));
  for (const p of list) box.append(el("div", { class: "problem " + p.level, "data-subject": p.subject, text: p.text }));
}

function renderCluster(d) {
  const tl = document.getElementById("trackers");
  tl.replaceChildren(...d.trackers.map(t => el("li", { "data-tracker": t.host },
    t.host + (t.is_leader ? " (leader)" : "") + (t.is_active ? "" : " — inactive"))));
  const all = storages(d);
  const active = all.filter(s => s.active).length;
  document.getElementById("storage-count").textContent = active + " of " + all.length + " active";
  const total = d.groups.reduce((n, g) => n + g.total_mb, 0), free = d.groups.reduce((n, g) => n + g.free_mb, 0);
  document.getElementById("space").textContent = mb(free) + " free of " + mb(total);

  const box = document.getElementById("groups");
  box.replaceChildren();
  for (const g of d.groups) {
    const head = el("tr", {}, ...["Storage", "Address", "Status", "Role", "Free / total", "Uploads", "Downloads", "Lag (s)", "Heartbeat"]
      .map(t => el("th", { text: t })));
    const rows = [...g.storages].sort((a, b) => (a.active - b.active) || a.id.localeCompare(b.id)).map(s => {
      const role = s.rw + (s.trunk_server ? ", trunk server" : "");
      const beat = s.last_heartbeat ? (d.now - s.last_heartbeat) + " s ago" : "never";
      return el("tr", { class: s.active ? "" : "bad", "data-storage-id": s.id, "data-status": s.status },
        el("td", {}, el("a", { href: "/storage/" + encodeURIComponent(s.id), text: s.id })),
        el("td", { text: s.ip + ":" + s.port }),
        el("td", { class: "status " + s.status, text: s.status }),
        el("td", { text: role }),
        el("td", { class: "num", text: mb(s.free_mb) + " / " + mb(s.total_mb) }),
        el("td", { class: "num", text: String(s.uploads) }),
        el("td", { class: "num", text: String(s.downloads) }),
        el("td", { class: "num", text: s.synced_delay < 0 ? "never synced" : String(s.synced_delay) }),
        el("td", { text: beat }));
    });
    const trunk = g.trunk_free_mb === null ? "" : ", trunk free " + mb(g.trunk_free_mb);
    box.append(el("h2", { "data-group": g.name, text: g.name + ": " + g.active_count + " of " + g.storage_count +
      " active, " + mb(g.free_mb) + " free of " + mb(g.total_mb) + trunk }));
    box.append(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
  }

  const counter = key => d2 => storages(d2).reduce((n, s) => n + s[key], 0);
  drawChart("chart-ops", [
    { name: "uploads", values: rates(counter("uploads")) },
    { name: "downloads", values: rates(counter("downloads")) },
    { name: "deletes", values: rates(counter("deletes")) },
  ]);
  drawChart("chart-requests", [
    { name: "store queries", values: rates(x => sumCommands(x, k => k.startsWith("query_store"))) },
    { name: "fetch queries", values: rates(x => sumCommands(x, k => k.startsWith("query_fetch") || k === "query_update")) },
    { name: "storages", values: rates(x => sumCommands(x, k => k.startsWith("storage_"))) },
  ]);
  drawChart("chart-latency", [
    { name: "p50", values: latencySeries(0.5, trackerHist) },
    { name: "p99", values: latencySeries(0.99, trackerHist) },
  ], 0.1);
  const charted = all.some(s => s.latency);
  document.getElementById("storage-latency").hidden = !charted;
  if (charted) {
    drawChart("chart-storage-latency", [
      { name: "upload p99", values: latencySeries(0.99, x => storageHist(storages(x), "upload_file")) },
      { name: "download p99", values: latencySeries(0.99, x => storageHist(storages(x), "download_file")) },
    ], 0.1);
  }
  drawChart("chart-lag", d.groups.map(g => ({
    name: g.name,
    values: history.map(s => {
      const grp = s.d.groups.find(x => x.name === g.name);
      return grp ? Math.max(0, ...grp.storages.map(x => x.synced_delay)) : 0;
    }),
  })));
}

function renderStorage(d) {
  const s = storages(d).find(x => x.id === storagePage);
  const title = document.getElementById("storage-title");
  const facts = document.getElementById("storage-facts");
  if (!s) {
    title.textContent = "Storage " + storagePage + " is not known to this tracker";
    facts.replaceChildren();
    return;
  }
  title.textContent = s.id + " (" + s.group + ")";
  title.setAttribute("data-status", s.status);
  const when = t => t ? new Date(t * 1000).toISOString().replace(".000Z", "Z") : "never";
  const rows = [
    ["Status", s.status], ["Address", s.ip + ":" + s.port], ["Role", s.rw + (s.trunk_server ? ", trunk server" : "")],
    ["Version", s.version], ["Joined", when(s.join_time)], ["Up since", when(s.up_time)],
    ["Space", mb(s.free_mb) + " free of " + mb(s.total_mb) + " (" + mb(s.reserved_mb) + " reserved)"],
    ["Store paths", String(s.store_path_count)], ["Last heartbeat", when(s.last_heartbeat)],
    ["Replication lag", s.synced_delay < 0 ? "never synced" : s.synced_delay + " s"],
    ["Connections", String(s.connections)], ["Uploads", String(s.uploads)], ["Downloads", String(s.downloads)],
    ["Deletes", String(s.deletes)], ["Bytes in / out", s.upload_bytes + " / " + s.download_bytes],
    ["Replication bytes in / out", s.sync_in_bytes + " / " + s.sync_out_bytes],
  ];
  facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  const mine = key => x => { const t = storages(x).find(y => y.id === storagePage); return t ? t[key] : undefined; };
  drawChart("chart-storage-ops", [
    { name: "uploads", values: rates(mine("uploads")) },
    { name: "downloads", values: rates(mine("downloads")) },
  ]);
  drawChart("chart-storage-lag", [{ name: "lag", values: history.map(x => Math.max(0, mine("synced_delay")(x.d) || 0)) }]);
  document.getElementById("one-storage-latency").hidden = !s.latency;
  if (s.latency) {
    const hist = command => x => storageHist(storages(x).filter(y => y.id === storagePage), command);
    drawChart("chart-one-storage-latency", [
      { name: "upload p50", values: latencySeries(0.5, hist("upload_file")) },
      { name: "upload p99", values: latencySeries(0.99, hist("upload_file")) },
      { name: "download p50", values: latencySeries(0.5, hist("download_file")) },
      { name: "download p99", values: latencySeries(0.99, hist("download_file")) },
    ], 0.1);
  }
}

async function poll() {
  try {
    const r = await fetch("/api/cluster", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const d = await r.json();
    history.push({ t: performance.now() / 1000, d });
    while (history.length > KEEP) history.shift();
    document.getElementById("where").textContent = "tracker " + (d.tracker || "?") + ", leader " + (d.leader || "none");
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.setAttribute("data-updated", String(d.now));
    renderProblems(d);
    if (storagePage) renderStorage(d); else renderCluster(d);
  } catch (e) {
    document.getElementById("problems").replaceChildren(
      el("div", { class: "problem error", text: "cannot reach the tracker: " + e.message }));
  }
  setTimeout(poll, POLL_MS);
}

if (storagePage) {
  document.getElementById("cluster-view").hidden = true;
  document.getElementById("storage-view").hidden = false;
}
poll();
