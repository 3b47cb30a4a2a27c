"use strict";
// The edge status page: polls api/status for stats and scores, api/events for new events, and
// shows the MJPEG preview. Plain DOM, no libraries: the device may be offline.

const token = new URLSearchParams(location.search).get("token");
const withToken = (path) =>
  token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
const $ = (id) => document.getElementById(id);
const HISTORY_S = 30; // sparkline and peak window
const POLL_MS = 250; // api/status while connected
const GAP_S = 1.5; // no sample for this long: the sparkline breaks there
// The score bars: the labels the chain watches, then labels pinned by a click, then a sticky
// top-N. A label joins the sticky set when it is in the top with at least MIN_SCORE and there is
// room; it takes the place of the weakest member (by peak over HISTORY_S) only if it peaks
// MARGIN higher and that member has been shown HOLD_S; it leaves when it has not reached
// MIN_SCORE for HISTORY_S. Rows never move by score: the order changes only with the set.
const STICKY = { n: 3, alone: 5, minScore: 0.05, margin: 0.1, holdS: 10 };
const MAX_VISITS = 100;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

const fmt = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const pad2 = (n) => String(n).padStart(2, "0");

// One time format everywhere, 24-hour local like the preview overlay (edge/web.py render).
function hms(t) {
  const d = t instanceof Date ? t : new Date(t);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

// "0.4 s", "24 s", "3 min 12 s", "2 h 5 min", "3 d 4 h".
function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 10) return `${Math.max(0, s).toFixed(1)} s`;
  s = Math.floor(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

async function getJSON(path) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 5000); // a hung server counts as down
  try {
    const r = await fetch(path, {
      headers: token ? { Authorization: "Bearer " + token } : {},
      cache: "no-store",
      signal: abort.signal,
    });
    if (!r.ok) throw new Error(r.status + " " + (await r.text()).trim());
    return await r.json();
  } catch (err) {
    if (err.name === "AbortError") throw new Error("no answer in 5 s");
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------- connection

const conn = { since: null, failures: 0 };

function retryMs() {
  return conn.failures ? Math.min(10000, 500 * 2 ** (conn.failures - 1)) : POLL_MS;
}

function markDown(err) {
  conn.failures += 1;
  if (conn.since === null) {
    conn.since = new Date();
    document.body.classList.add("offline");
    stopPreview();
  }
  const box = $("offline");
  box.hidden = false;
  box.textContent = `disconnected since ${hms(conn.since)} (${err.message}) · ` +
    `retrying in ${fmtDuration(retryMs() / 1000)}`;
  const h = $("health");
  h.textContent = "disconnected";
  h.className = "badge bad";
}

function markUp() {
  conn.failures = 0;
  if (conn.since === null) return;
  conn.since = null;
  document.body.classList.remove("offline");
  $("offline").hidden = true;
  startPreview();
}

// ---------------------------------------------------------------- preview

let previewFps = 5;
let snapshotTimer = null;

function stopPreview() {
  clearInterval(snapshotTimer);
  snapshotTimer = null;
  $("preview").removeAttribute("src"); // closes the stream
}

function startPreview() {
  const img = $("preview");
  img.onerror = () => {
    // The stream failed (a proxy that buffers, too many viewers): poll single JPEGs instead.
    if (snapshotTimer || conn.since) return;
    snapshotTimer = setInterval(() => {
      img.src = withToken("snapshot.jpg?t=" + Date.now());
    }, 1000 / previewFps);
  };
  img.src = withToken("stream.mjpg?t=" + Date.now());
}

// ---------------------------------------------------------------- header and stats

function sourceText(src) {
  if (!src) return "";
  let what;
  if (src.kind === "files") what = src.path;
  else if (src.kind === "picamera2") what = `Pi camera ${src.device}`;
  else if (typeof src.device === "number") what = `camera ${src.device}`;
  else what = src.device;
  const size = src.width ? ` · ${src.width}×${src.height}` : "";
  return `source: ${what}${src.kind === "auto" ? " (auto)" : ""}${size}`;
}

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
  for (const [id, text] of [["model", parts.join(" · ")], ["source", sourceText(s.source)]]) {
    $(id).textContent = text;
    $(id).title = text;
  }
}

function renderStats(s) {
  const st = s.stats;
  const sys = s.system || {};
  const thr = sys.throttled;
  // [name, value, warn]; a null value hides the tile (temperature and throttling off a Pi)
  const tiles = [
    ["capture", fmt(st.capture_fps) + " fps"],
    ["classify", fmt(st.classify_fps) + " fps"],
    ["frames", String(st.frames_classified)],
    ["dropped", String(st.frames_dropped)],
    ["skipped (no motion)", st.frames_skipped ? String(st.frames_skipped) : null],
    ["invoke p50/p99", `${fmt(st.invoke_ms_p50)} / ${fmt(st.invoke_ms_p99)} ms`],
    ["latency p50/p99", `${fmt(st.latency_ms_p50)} / ${fmt(st.latency_ms_p99)} ms`],
    ["cpu / frame", fmt(st.cpu_ms_per_frame) + " ms"],
    ["temperature", sys.cpu_temperature_c == null ? null : fmt(sys.cpu_temperature_c) + " °C"],
    ["throttling", thr == null ? null : thr.flags.length ? thr.flags.join(", ") : "none",
      thr && thr.flags.length],
    ["source", st.source_state + (st.source_error ? ": " + st.source_error : ""),
      st.source_state !== "running"],
    ["uptime", fmtDuration(st.uptime_s)],
    ["viewers", String(s.web.viewers)],
  ];
  const box = $("stats");
  if (box.children.length !== tiles.length) {
    box.replaceChildren(...tiles.map(([k]) => {
      const t = el("div", "tile");
      t.dataset.key = k;
      t.append(el("div", "k", k), el("div", "v"));
      return t;
    }));
  }
  tiles.forEach(([k, v, warn], i) => {
    const t = box.children[i];
    t.hidden = v === null;
    t.className = "tile" + (warn ? " warn" : "");
    t.children[1].textContent = v ?? "";
    t.title = `${k}: ${v}`;
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

const history = new Map(); // "roi|label" -> [[t, score or null], ...], the last HISTORY_S s
const sticky = new Map(); // roi -> {slots: [label...], joined: Map(label -> t), levels: Map}
let setChanges = 0; // sticky set changes since the page loaded (the test reads it)
let polls = 0;

function remember(key, t, score) {
  let h = history.get(key);
  if (!h) history.set(key, (h = []));
  if (!h.length || h[h.length - 1][0] < t) h.push([t, score]);
  while (h.length && h[0][0] < t - HISTORY_S) h.shift();
  return h;
}

function peakOf(key, now) {
  let p = null;
  for (const [t, v] of history.get(key) || []) {
    if (v !== null && t >= now - HISTORY_S && (p === null || v > p)) p = v;
  }
  return p;
}

function loadPins() {
  try {
    return JSON.parse(localStorage.getItem("edge.pins") || "{}");
  } catch {
    return {};
  }
}

function togglePin(roi, label) {
  const pins = loadPins();
  const list = pins[roi] || [];
  pins[roi] = list.includes(label) ? list.filter((l) => l !== label) : [...list, label];
  localStorage.setItem("edge.pins", JSON.stringify(pins));
  lastStatus && renderRegions(lastStatus.regions);
}

function updateSticky(roi, r, exclude, now) {
  let st = sticky.get(roi);
  if (!st) sticky.set(roi, (st = { slots: [], joined: new Map(), levels: new Map() }));
  const n = Object.keys(r.watched).length ? STICKY.n : STICKY.alone;
  const peak = (l) => peakOf(roi + "|" + l, now) ?? 0;
  const kept = st.slots.filter((l) => !exclude.has(l) && peak(l) >= STICKY.minScore);
  if (kept.length !== st.slots.length) setChanges += 1;
  st.slots = kept;
  const candidates = r.top.filter(([l, v]) => !exclude.has(l) && !st.slots.includes(l) &&
    v >= STICKY.minScore);
  for (const [label] of candidates) {
    if (st.slots.length < n) {
      st.slots.push(label);
    } else {
      const old = st.slots.filter((l) => now - st.joined.get(l) >= STICKY.holdS);
      if (!old.length) break;
      const weakest = old.reduce((a, b) => (peak(b) < peak(a) ? b : a));
      if (peak(label) <= peak(weakest) + STICKY.margin) continue;
      st.slots[st.slots.indexOf(weakest)] = label; // same place: the others do not move
    }
    st.joined.set(label, now);
    setChanges += 1;
  }
  return st;
}

function buildRow(label, levels, kind) {
  const row = el("div", "row");
  row.dataset.label = label;
  row.dataset.kind = kind;
  const name = el("div", "name");
  name.append(el("span", "pin", kind === "pinned" ? "★" : kind === "sticky" ? "☆" : ""),
    el("span", "", label));
  name.title = label + (kind === "watched" ? " (watched by the chain)"
    : kind === "pinned" ? " (pinned: click to unpin)" : " (click to pin)");
  const lv = el("div", "lv");
  if (levels.enter != null) {
    lv.append(el("span", "enter", `enter ≥ ${fmt(levels.enter, 2)}`),
      el("span", "exit", `exit < ${fmt(levels.exit, 2)}`));
  }
  const bar = el("div", "bar");
  bar.append(el("div", "fill"));
  for (const k of ["enter", "exit"]) {
    if (levels[k] == null) continue;
    const m = el("div", "mark " + k);
    m.style.left = levels[k] * 100 + "%";
    m.title = `${k} ${fmt(levels[k], 2)}`;
    bar.append(m);
  }
  bar.append(el("div", "mark peak"));
  const spark = el("canvas", "spark");
  spark.width = 600;
  spark.height = 60;
  row.append(name, bar, el("div", "val"), lv, spark);
  return row;
}

// The history split where there was no data (a null sample, or none for GAP_S: a hidden tab,
// a lost connection): a line is drawn only between samples that really follow each other.
function segments(h) {
  const out = [];
  let cur = null;
  for (const [t, v] of h) {
    if (v === null) {
      cur = null;
      continue;
    }
    if (!cur || t - cur[cur.length - 1][0] > GAP_S) out.push((cur = []));
    cur.push([t, v]);
  }
  return out;
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
  ctx.fillStyle = "#4f8fd6";
  ctx.lineWidth = 3;
  for (const seg of segments(h)) {
    if (seg.length === 1) { // a lone sample: a dot, not nothing
      ctx.fillRect(x(seg[0][0]) - 2, y(seg[0][1]) - 2, 4, 4);
      continue;
    }
    ctx.beginPath();
    seg.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
  }
}

function renderRegions(regions) {
  const box = $("regions");
  const now = Date.now() / 1000;
  const pins = loadPins();
  const seen = new Set();
  for (const r of regions) {
    const roi = r.name ?? "";
    seen.add(roi);
    let card = [...box.children].find((c) => c.dataset.roi === roi);
    if (!card) {
      card = el("div", "roi");
      card.dataset.roi = roi;
      const head = el("div", "head");
      head.append(el("h3", "", r.name ? `ROI ${r.name}` : "whole frame"),
        el("div", "model muted"),
        el("div", "top muted"));
      card.append(head, el("div", "rows"));
      card.querySelector(".rows").addEventListener("click", (ev) => {
        const row = ev.target.closest(".row");
        if (row && ev.target.closest(".name") && row.dataset.kind !== "watched") {
          togglePin(roi, row.dataset.label);
        }
      });
      box.append(card);
    }
    const nowText = "now: " + (r.top.length
      ? r.top.slice(0, 3).map(([l, s]) => `${l} ${fmt(s, 2)}`).join(" · ") : "–");
    // which model classifies it and how often (a reload may change either)
    const modelText = [r.model, r.rate].filter(Boolean).join(" · ");
    card.querySelector(".model").textContent = modelText;
    card.querySelector(".model").title = modelText;
    card.querySelector(".top").textContent = nowText;
    card.querySelector(".top").title = nowText;
    // watched labels have the score the deciding stage saw every frame; others only while in
    // the top (null: no data, a gap in the sparkline)
    const scores = { ...Object.fromEntries(r.top), ...r.scores };
    for (const [l, v] of Object.entries(scores)) remember(roi + "|" + l, now, v);
    const watched = Object.keys(r.watched);
    const pinned = (pins[roi] || []).filter((l) => !watched.includes(l));
    const st = updateSticky(roi, r, new Set([...watched, ...pinned]), now);
    for (const [l, lv] of Object.entries(r.top_levels || {})) st.levels.set(l, lv);
    const rowsWanted = [
      ...watched.map((l) => [l, r.watched[l], "watched"]),
      ...pinned.map((l) => [l, st.levels.get(l) || {}, "pinned"]),
      ...st.slots.map((l) => [l, st.levels.get(l) || {}, "sticky"]),
    ];
    const rows = card.querySelector(".rows");
    const want = JSON.stringify(rowsWanted); // rebuilt when the set, a pin or the levels change
    if (rows.dataset.labels !== want) {
      rows.dataset.labels = want;
      rows.replaceChildren(...rowsWanted.map(([l, lv, kind]) => buildRow(l, lv, kind)));
    }
    for (const row of rows.children) {
      const label = row.dataset.label;
      const lv = rowsWanted.find(([l]) => l === label)[1];
      const v = scores[label] ?? null;
      const h = remember(roi + "|" + label, now, v);
      const peak = peakOf(roi + "|" + label, now);
      const active = r.active.includes(label);
      row.className = "row " + row.dataset.kind + (active ? " on"
        : v !== null && lv.exit != null && v >= lv.exit ? " mid" : "");
      row.querySelector(".fill").style.width = ((v ?? 0) * 100).toFixed(1) + "%";
      row.querySelector(".peak").style.left = ((peak ?? 0) * 100).toFixed(1) + "%";
      const val = row.querySelector(".val");
      val.textContent = v === null ? "–" : fmt(v, 2);
      val.title = v === null ? "not in the top labels now" : "";
      drawSpark(row.querySelector(".spark"), h, lv, now);
    }
  }
  for (const c of [...box.children]) if (!seen.has(c.dataset.roi)) c.remove();
  box.dataset.setChanges = setChanges;
  box.dataset.polls = ++polls;
}

// ---------------------------------------------------------------- visits

let lastEvent = 0;
let visits = []; // newest first: {key, label, roi, enter, exit, status, li}
const openVisits = new Map(); // "roi|label" -> the visit its enter opened

function thumb(e) {
  const a = el("a");
  a.href = withToken(e.snapshot_url);
  a.target = "_blank";
  const img = el("img");
  img.loading = "lazy";
  img.alt = e.label;
  img.src = withToken(e.snapshot_url);
  img.onerror = () => a.remove(); // not written (yet), or removed by the disk budget
  a.append(img);
  return a;
}

function renderVisit(v, now) {
  const li = v.li;
  const first = v.enter || v.exit || v.status;
  li.dataset.label = v.label;
  li.dataset.roi = v.roi ?? "";
  li.dataset.enter = v.enter ? v.enter.id : "";
  li.dataset.exit = v.exit ? v.exit.id : "";
  const text = el("div", "text");
  const name = el("b", "label", v.label);
  name.title = v.label;
  let kind, when;
  if (v.status) {
    kind = el("span", "type status", "status");
    when = hms(v.status.ts);
  } else if (v.enter && v.exit) {
    const d = (Date.parse(v.exit.ts) - Date.parse(v.enter.ts)) / 1000;
    kind = el("span", "type dur", fmtDuration(d));
    when = `${hms(v.enter.ts)} → ${hms(v.exit.ts)}`;
  } else if (v.enter) {
    kind = el("span", "type open", fmtDuration(now - Date.parse(v.enter.ts) / 1000));
    when = `since ${hms(v.enter.ts)}`;
  } else {
    kind = el("span", "type exit", "exit");
    when = `? → ${hms(v.exit.ts)} (entered before this list)`;
  }
  const score = v.enter ? ` · enter ${fmt(v.enter.score, 2)}` : "";
  text.append(name, " ", kind, el("div", "muted small when",
    `${when}${v.roi ? " · ROI " + v.roi : ""}${score} · #${first.seq}`));
  const shot = v.enter && v.enter.snapshot_url && !li.querySelector("a") ? thumb(v.enter) : null;
  li.querySelector(".text")?.remove();
  if (shot) li.prepend(shot);
  li.append(text);
}

function addEvent(e) {
  const key = (e.roi ?? "") + "|" + e.label;
  let v = e.type === "exit" ? openVisits.get(key) : null;
  if (v) {
    v.exit = e;
    openVisits.delete(key);
  } else {
    v = { key, label: e.label, roi: e.roi, enter: null, exit: null, status: null };
    v[e.type === "enter" ? "enter" : e.type === "exit" ? "exit" : "status"] = e;
    if (e.type === "enter") openVisits.set(key, v);
    v.li = el("li", "visit");
    visits.unshift(v);
    $("events").prepend(v.li);
  }
  v.dirty = true;
}

function addOption(select, value, text) {
  if ([...select.options].some((o) => o.value === value)) return;
  select.append(new Option(text, value));
}

function renderVisits() {
  const list = $("events");
  while (visits.length > MAX_VISITS) {
    const old = visits.pop();
    old.li.remove();
    if (openVisits.get(old.key) === old) openVisits.delete(old.key);
  }
  const now = Date.now() / 1000;
  const fl = $("filter-label"), fr = $("filter-roi");
  for (const v of visits) {
    addOption(fl, v.label, v.label);
    if (v.roi) addOption(fr, v.roi, "ROI " + v.roi);
    if (v.dirty || (v.enter && !v.exit)) renderVisit(v, now); // open ones: the duration grows
    v.dirty = false;
    v.li.hidden = (fl.value && v.label !== fl.value) || (fr.value && (v.roi ?? "") !== fr.value);
  }
  fr.hidden = fr.options.length <= 1;
  const shown = visits.some((v) => !v.li.hidden);
  let empty = list.querySelector(".empty");
  if (!shown && !empty) list.append((empty = el("li", "muted empty")));
  if (empty) {
    if (shown) empty.remove();
    else empty.textContent = visits.length ? "none for this filter" : "none yet";
  }
}

async function pollEvents() {
  if (conn.since === null) {
    try {
      let data = await getJSON(`api/events?since=${lastEvent}`);
      if (data.last < lastEvent) { // the service restarted: its event ids start again
        lastEvent = 0;
        visits = [];
        openVisits.clear();
        $("events").replaceChildren();
        data = await getJSON("api/events?since=0");
      }
      for (const e of data.events) addEvent(e);
      lastEvent = Math.max(lastEvent, data.last);
      renderVisits();
    } catch (err) {
      /* shown by the status poll */
    }
  }
  setTimeout(pollEvents, 1000);
}

// ---------------------------------------------------------------- main loop

let lastStatus = null;

async function pollStatus() {
  if (!document.hidden) {
    try {
      const s = await getJSON("api/status");
      markUp();
      lastStatus = s;
      if (s.web.preview_fps !== previewFps) previewFps = s.web.preview_fps;
      renderHeader(s);
      renderStats(s);
      renderRegions(s.regions);
    } catch (err) {
      markDown(err);
    }
  }
  setTimeout(pollStatus, retryMs());
}

for (const a of document.querySelectorAll("a[data-href]")) a.href = withToken(a.dataset.href);
for (const id of ["filter-label", "filter-roi"]) $(id).addEventListener("change", renderVisits);
// The stream never finishes loading: start it after the load event so the page counts as loaded.
if (document.readyState === "complete") startPreview();
else window.addEventListener("load", startPreview);
pollStatus();
pollEvents();
