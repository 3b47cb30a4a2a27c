"use strict";
// The edge status page: polls api/status for stats and scores, api/events for new events, and
// shows the MJPEG preview. Plain DOM, no libraries: the device may be offline.

const token = new URLSearchParams(location.search).get("token");
const withToken = (path) =>
  token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
const $ = (id) => document.getElementById(id);
const HISTORY_S = 30;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const fmt = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

async function getJSON(path) {
  const r = await fetch(path, {
    headers: token ? { Authorization: "Bearer " + token } : {},
    cache: "no-store",
  });
  if (!r.ok) throw new Error(r.status + " " + (await r.text()).trim());
  return r.json();
}

// ---------------------------------------------------------------- preview

let previewFps = 5;
let snapshotTimer = null;

function startPreview() {
  const img = $("preview");
  img.onerror = () => {
    // The stream failed (a proxy that buffers, too many viewers): poll single JPEGs instead.
    if (snapshotTimer) return;
    snapshotTimer = setInterval(() => {
      img.src = withToken("snapshot.jpg?t=" + Date.now());
    }, 1000 / previewFps);
  };
  img.src = withToken("stream.mjpg");
}

// ---------------------------------------------------------------- header and stats

function renderHeader(s) {
  $("device").textContent = s.device;
  document.title = "edge · " + s.device;
  const h = $("health");
  h.textContent = s.health.ok ? "healthy" : "unhealthy: " + s.health.reason;
  h.title = s.health.reason;
  h.className = "badge " + (s.health.ok ? "ok" : "bad");
  const m = s.model;
  const parts = [
    m.model,
    `${m.backend} ${m.backend_version}`,
    m.xnnpack ? `XNNPACK ${m.xnnpack_partitions} partition${m.xnnpack_partitions === 1 ? "" : "s"}`
      : "XNNPACK off",
    `${m.threads} thread${m.threads === 1 ? "" : "s"}`,
  ];
  if (m.input) parts.push(`${m.input.shape[2]}×${m.input.shape[1]} ${m.input.dtype}`);
  $("model").textContent = parts.join(" · ");
}

function renderStats(s) {
  const st = s.stats;
  const sys = s.system || {};
  const thr = sys.throttled;
  const tiles = [
    ["capture", fmt(st.capture_fps) + " fps"],
    ["classify", fmt(st.classify_fps) + " fps"],
    ["frames", String(st.frames_classified)],
    ["dropped", String(st.frames_dropped)],
    ["invoke p50 / p99", `${fmt(st.invoke_ms_p50)} / ${fmt(st.invoke_ms_p99)} ms`],
    ["latency p50 / p99", `${fmt(st.latency_ms_p50)} / ${fmt(st.latency_ms_p99)} ms`],
    ["cpu / frame", fmt(st.cpu_ms_per_frame) + " ms"],
    ["temperature", sys.cpu_temperature_c == null ? "n/a" : fmt(sys.cpu_temperature_c) + " °C"],
    ["throttling", thr == null ? "n/a" : thr.flags.length ? thr.flags.join(", ") : "none",
      thr && thr.flags.length],
    ["source", st.source_state + (st.source_error ? ": " + st.source_error : ""),
      st.source_state !== "running"],
    ["uptime", fmt(st.uptime_s / 60) + " min"],
    ["viewers", String(s.web.viewers)],
  ];
  const box = $("stats");
  if (box.children.length !== tiles.length) {
    box.replaceChildren(...tiles.map(() => {
      const t = el("div", "tile");
      t.append(el("div", "k"), el("div", "v"));
      return t;
    }));
  }
  tiles.forEach(([k, v, warn], i) => {
    const t = box.children[i];
    t.className = "tile" + (warn ? " warn" : "");
    t.children[0].textContent = k;
    t.children[1].textContent = v;
    t.title = v;
  });
  const body = $("sinks").tBodies[0];
  body.replaceChildren(...Object.entries(s.sinks).map(([name, x]) => {
    const tr = el("tr");
    for (const v of [name, x.state, `${x.queued}/${x.capacity}`, x.sent, x.dropped, x.errors]) {
      tr.append(el("td", "", String(v)));
    }
    return tr;
  }));
  $("sinks").hidden = body.children.length === 0;
}

// ---------------------------------------------------------------- score bars

const history = new Map(); // "roi|label" -> [[t, score], ...] for the last HISTORY_S seconds

function remember(key, t, score) {
  let h = history.get(key);
  if (!h) history.set(key, (h = []));
  h.push([t, score]);
  while (h.length && h[0][0] < t - HISTORY_S) h.shift();
  return h;
}

function buildRow(label, levels) {
  const row = el("div", "row");
  row.dataset.label = label;
  const name = el("div", "name", label);
  name.title = label;
  const lv = el("div", "lv");
  if (levels.enter != null) {
    lv.append(el("span", "enter", `enter ≥ ${fmt(levels.enter, 2)}`),
      el("span", "exit", `exit < ${fmt(levels.exit, 2)}`));
  }
  const bar = el("div", "bar");
  bar.append(el("div", "fill"));
  for (const kind of ["enter", "exit"]) {
    if (levels[kind] == null) continue;
    const m = el("div", "mark " + kind);
    m.style.left = levels[kind] * 100 + "%";
    m.title = `${kind} ${fmt(levels[kind], 2)}`;
    bar.append(m);
  }
  const peak = el("div", "mark peak");
  bar.append(peak);
  const spark = el("canvas", "spark");
  spark.width = 600;
  spark.height = 72;
  row.append(name, bar, el("div", "val"), lv, spark);
  return row;
}

function drawSpark(canvas, h, levels, now) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, ht = canvas.height;
  const x = (t) => ((t - (now - HISTORY_S)) / HISTORY_S) * w;
  const y = (v) => ht - 2 - v * (ht - 4);
  ctx.clearRect(0, 0, w, ht);
  ctx.fillStyle = "#0d1014";
  ctx.fillRect(0, 0, w, ht);
  ctx.lineWidth = 2;
  for (const [kind, color, dash] of [["enter", "#f0f3f6", []], ["exit", "#f0883e", [6, 4]]]) {
    if (levels[kind] == null) continue;
    ctx.strokeStyle = color;
    ctx.setLineDash(dash);
    ctx.beginPath();
    ctx.moveTo(0, y(levels[kind]));
    ctx.lineTo(w, y(levels[kind]));
    ctx.stroke();
  }
  ctx.setLineDash([]);
  ctx.strokeStyle = "#4f8fd6";
  ctx.lineWidth = 3;
  ctx.beginPath();
  h.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
}

function renderRegions(regions) {
  const box = $("regions");
  const now = Date.now() / 1000;
  const seen = new Set();
  for (const r of regions) {
    const roi = r.name ?? "";
    seen.add(roi);
    let card = [...box.children].find((c) => c.dataset.roi === roi);
    if (!card) {
      card = el("div", "roi");
      card.dataset.roi = roi;
      card.append(el("h3", "", r.name ? `ROI ${r.name}` : "whole frame"), el("div", "top muted"),
        el("div", "rows"));
      box.append(card);
    }
    card.querySelector(".top").textContent = "now: " + (r.top.length
      ? r.top.slice(0, 3).map(([l, s]) => `${l} ${fmt(s, 2)}`).join(" · ") : "–");
    // Watched labels (named by the chain) with their levels; without a chain, the top labels.
    const watched = Object.keys(r.watched).length;
    const top = r.top_levels || {};
    const levels = watched ? r.watched : Object.fromEntries(r.top.map(([l]) => [l, top[l] || {}]));
    const scores = watched ? r.scores : Object.fromEntries(r.top);
    const rows = card.querySelector(".rows");
    const want = JSON.stringify(levels); // rebuilt when a reload changes labels or levels
    if (rows.dataset.labels !== want) {
      rows.dataset.labels = want;
      rows.replaceChildren(...Object.entries(levels).map(([l, lv]) => buildRow(l, lv)));
    }
    for (const row of rows.children) {
      const label = row.dataset.label;
      const lv = levels[label];
      const v = scores[label] ?? 0;
      const h = remember(roi + "|" + label, now, v);
      const peak = Math.max(...h.map((p) => p[1]));
      const active = r.active.includes(label);
      row.className = "row" + (active ? " on" : lv.exit != null && v >= lv.exit ? " mid" : "");
      row.querySelector(".fill").style.width = (v * 100).toFixed(1) + "%";
      row.querySelector(".peak").style.left = (peak * 100).toFixed(1) + "%";
      row.querySelector(".val").textContent = fmt(v, 2);
      drawSpark(row.querySelector(".spark"), h, lv, now);
    }
  }
  for (const c of [...box.children]) if (!seen.has(c.dataset.roi)) c.remove();
}

// ---------------------------------------------------------------- events

let lastEvent = 0;

function eventItem(e) {
  const li = el("li");
  li.dataset.id = e.id;
  if (e.snapshot_url) {
    const a = el("a");
    a.href = withToken(e.snapshot_url);
    a.target = "_blank";
    const img = el("img");
    img.loading = "lazy";
    img.alt = e.label;
    img.src = withToken(e.snapshot_url);
    img.onerror = () => a.remove(); // not written (yet), or removed by the disk budget
    a.append(img);
    li.append(a);
  }
  const text = el("div");
  const when = new Date(e.ts).toLocaleTimeString();
  text.append(el("span", "type " + e.type, e.type), " ", el("b", "", e.label), " ",
    el("span", "", fmt(e.score, 2)), el("div", "muted small",
      `${when}${e.roi ? " · ROI " + e.roi : ""} · #${e.seq}`));
  li.append(text);
  return li;
}

async function pollEvents() {
  try {
    let data = await getJSON(`api/events?since=${lastEvent}`);
    const list = $("events");
    if (data.last < lastEvent) {  // the service restarted: its event ids start again
      lastEvent = 0;
      list.replaceChildren();
      data = await getJSON("api/events?since=0");
    }
    if (data.events.length) list.querySelector(".empty")?.remove();
    for (const e of data.events) list.prepend(eventItem(e));
    while (list.children.length > 50) list.lastChild.remove();
    lastEvent = Math.max(lastEvent, data.last);
  } catch (err) {
    /* shown by the status poll */
  }
  setTimeout(pollEvents, 1000);
}

// ---------------------------------------------------------------- main loop

async function pollStatus() {
  if (!document.hidden) {
    try {
      const s = await getJSON("api/status");
      if (s.web.preview_fps !== previewFps) previewFps = s.web.preview_fps;
      renderHeader(s);
      renderStats(s);
      renderRegions(s.regions);
    } catch (err) {
      const h = $("health");
      h.textContent = "no answer: " + err.message;
      h.className = "badge bad";
    }
  }
  setTimeout(pollStatus, 250);
}

for (const a of document.querySelectorAll("footer a")) a.href = withToken(a.dataset.href);
// The stream never finishes loading: start it after the load event so the page counts as loaded.
if (document.readyState === "complete") startPreview();
else window.addEventListener("load", startPreview);
pollStatus();
pollEvents();
