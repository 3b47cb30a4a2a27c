"use strict";
// The Teach view: label the frames the collect output saved, train, look at the results,
// deploy. Everything goes through /api/teach (docs/web.md); state-changing requests carry the
// X-Edge-Teach header, which a form or another site's page cannot send. Plain DOM, no libraries.

const token = new URLSearchParams(location.search).get("token");
const withToken = (path) =>
  token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
const $ = (id) => document.getElementById(id);
const UNL = "unlabelled";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function api(path, body) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const opts = { headers, cache: "no-store" };
  if (body !== undefined) {
    opts.method = "POST";
    headers["Content-Type"] = "application/json";
    headers["X-Edge-Teach"] = "1";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data;
  try {
    data = await r.json();
  } catch (e) {
    data = { error: r.status + " " + r.statusText };
  }
  if (!r.ok) throw new Error(data.error || String(r.status));
  return data;
}

function say(text, bad) {
  const m = $("message");
  m.textContent = text;
  m.className = "small " + (bad ? "bad" : "muted");
}

const st = {
  overview: null,
  folder: UNL, // what the grid shows: unlabelled or a class
  region: null,
  groups: [],
  selected: new Set(), // indices into groups
  cursor: 0,
  anchor: 0,
  undo: [], // [{pairs: [{from, to}]}], newest last
  training: false,
};

const pct = (v) => (v === null || v === undefined ? "–" : Math.round(v * 100) + "%");
const classes = () => (st.overview ? st.overview.classes : []);
const imageUrl = (id, size = 192) =>
  withToken(`api/teach/image?id=${encodeURIComponent(id)}&size=${size}` +
    (st.region ? `&region=${encodeURIComponent(st.region)}` : ""));

// ---------------------------------------------------------------- overview and classes

async function loadOverview() {
  const o = await api(withToken("api/teach"));
  st.overview = o;
  $("dataset").textContent = `dataset ${o.dataset} · model ${o.model}`;
  $("unl-count").textContent = o.unlabelled;
  const reg = $("region");
  if (o.regions.length > 1 || o.regions[0].name !== null) {
    if (!reg.options.length) {
      for (const r of o.regions) reg.append(new Option(r.name || "whole frame", r.name || ""));
      st.region = reg.value || null;
    }
    reg.hidden = false;
  }
  renderClasses();
  renderDeploy();
  if (o.train && o.train.state !== "idle") showTrain(o.train);
  return o;
}

function renderClasses() {
  const box = $("class-buttons");
  box.replaceChildren();
  const tbody = $("class-table").querySelector("tbody");
  tbody.replaceChildren();
  classes().forEach((c, i) => {
    const b = el("button", "cls " + (c.enough ? "ok" : "few"));
    b.dataset.cls = c.name;
    b.title = (c.advice || "enough images") + (i < 9 ? ` · key ${i + 1}` : "");
    b.append(el("span", "", (i < 9 ? `${i + 1} ` : "") + c.name), el("span", "n", String(c.count)));
    if (st.folder === c.name) b.classList.add("viewing");
    b.onclick = () => (st.selected.size ? assign(c.name) : showFolder(c.name));
    box.append(b);
    const tr = el("tr");
    tr.dataset.cls = c.name;
    const name = el("td", "", c.name);
    const tip = c.enough ? "✓ enough" : c.advice ? c.advice.replace(/^[^:]+: /, "") : "more would help";
    const acts = el("td");
    const view = el("button", "", "view");
    view.onclick = () => showFolder(c.name);
    const ren = el("button", "", "rename");
    ren.onclick = () => renameInline(tr, name, c.name);
    const del = el("button", "", "delete");
    del.title = "delete the class: its frames go back to unlabelled";
    del.onclick = () => act(() => api(withToken("api/teach/class/delete"), { name: c.name }),
      `deleted class ${c.name}; its frames are unlabelled again`);
    acts.append(view, ren, del);
    tr.append(name, el("td", "", String(c.count)), el("td", c.enough ? "" : "muted", tip), acts);
    tbody.append(tr);
  });
  $("view-unlabelled").classList.toggle("viewing", st.folder === UNL);
}

function renameInline(tr, cell, old) {
  const input = el("input");
  input.value = old;
  input.maxLength = 48;
  input.setAttribute("aria-label", "new name");
  const ok = el("button", "", "OK");
  const go = () => act(() => api(withToken("api/teach/class/rename"), { name: old, to: input.value.trim() }),
    `renamed ${old} to ${input.value.trim()}`).then(() => {
    if (st.folder === old) st.folder = input.value.trim();
  });
  ok.onclick = go;
  input.onkeydown = (e) => { if (e.key === "Enter") go(); e.stopPropagation(); };
  cell.replaceChildren(input, ok);
  input.focus();
}

// body[data-busy] while a change and its refresh run (scripts and tests wait for it to go)
function busy(n) {
  const v = Number(document.body.dataset.busy || 0) + n;
  if (v > 0) document.body.dataset.busy = String(v);
  else delete document.body.dataset.busy;
}

async function act(fn, done, onOk) {
  busy(1);
  try {
    const r = await fn();
    if (onOk) onOk(r); // before the refresh: an undo pressed meanwhile finds it
    if (done) say(done);
    await refresh();
    return r;
  } catch (e) {
    say(e.message, true);
    await refresh();
    return null;
  } finally {
    busy(-1);
  }
}

// ---------------------------------------------------------------- the grid

async function loadFrames() {
  const q = `api/teach/frames?folder=${encodeURIComponent(st.folder)}&limit=400` +
    (st.region ? `&region=${encodeURIComponent(st.region)}` : "");
  const r = await api(withToken(q));
  st.groups = r.groups;
  st.selected = new Set([...st.selected].filter((i) => i < st.groups.length));
  st.cursor = Math.min(st.cursor, Math.max(0, st.groups.length - 1));
  renderGrid();
}

function renderGrid() {
  const grid = $("grid");
  grid.replaceChildren();
  st.groups.forEach((g, i) => {
    const t = el("div", "tile-frame");
    t.dataset.index = i;
    t.dataset.id = g.id;
    const img = el("img");
    img.alt = g.name;
    img.loading = "lazy";
    img.src = imageUrl(g.id);
    const top = g.top && g.top.length ? `${g.top[0][0]} ${Number(g.top[0][1]).toFixed(2)}` : g.name;
    t.title = `${g.name}\nuncertainty ${g.uncertainty.toFixed(2)}` +
      (g.members.length > 1 ? `\n${g.members.length} near-duplicates` : "");
    t.append(img, el("div", "cap", top));
    if (g.members.length > 1) t.append(el("span", "dup", "×" + g.members.length));
    t.onclick = (e) => clickTile(i, e);
    grid.append(t);
  });
  $("empty").hidden = st.groups.length > 0;
  paintSelection();
}

function paintSelection() {
  for (const t of $("grid").children) {
    const i = Number(t.dataset.index);
    t.classList.toggle("selected", st.selected.has(i));
    t.classList.toggle("cursor", i === st.cursor);
  }
}

function selectRange(a, b) {
  st.selected = new Set();
  for (let i = Math.min(a, b); i <= Math.max(a, b); i++) st.selected.add(i);
}

function clickTile(i, e) {
  if (e.shiftKey) selectRange(st.anchor, i);
  else if (e.ctrlKey || e.metaKey) {
    if (st.selected.has(i)) st.selected.delete(i);
    else st.selected.add(i);
    st.anchor = i;
  } else {
    st.selected = new Set([i]);
    st.anchor = i;
  }
  st.cursor = i;
  paintSelection();
}

function columns() {
  const tiles = $("grid").children;
  if (tiles.length < 2) return 1;
  const top = tiles[0].offsetTop;
  let n = 0;
  while (n < tiles.length && tiles[n].offsetTop === top) n++;
  return Math.max(1, n);
}

function moveCursor(delta, extend) {
  if (!st.groups.length) return;
  st.cursor = Math.max(0, Math.min(st.groups.length - 1, st.cursor + delta));
  if (extend) selectRange(st.anchor, st.cursor);
  else {
    st.selected = new Set([st.cursor]);
    st.anchor = st.cursor;
  }
  paintSelection();
  const t = $("grid").children[st.cursor];
  if (t) t.scrollIntoView({ block: "nearest" });
}

function selectedIds() {
  const sel = st.selected.size ? [...st.selected] : [];
  return sel.sort((a, b) => a - b).flatMap((i) => st.groups[i].members);
}

async function assign(to) {
  const ids = selectedIds();
  if (!ids.length) return say("select a frame first", true);
  const first = Math.min(...st.selected);
  const r = await act(() => api(withToken("api/teach/move"), { ids, to }),
    `${ids.length} frame${ids.length > 1 ? "s" : ""} → ${to}`,
    (got) => { if (got.moved.length) st.undo.push({ pairs: got.moved }); });
  if (r) {
    st.cursor = Math.min(first, Math.max(0, st.groups.length - 1));
    st.selected = st.groups.length ? new Set([st.cursor]) : new Set();
    st.anchor = st.cursor;
    paintSelection();
  }
}

async function undo() {
  const last = st.undo.pop();
  if (!last) return say("nothing to undo");
  const back = {};
  for (const p of last.pairs) (back[p.from.split("/")[0]] ||= []).push(p.to);
  for (const [folder, ids] of Object.entries(back)) {
    await act(() => api(withToken("api/teach/move"), { ids, to: folder }),
      `undone: ${last.pairs.length} frame${last.pairs.length > 1 ? "s" : ""} back`);
  }
}

async function remove() {
  const ids = selectedIds();
  if (!ids.length) return;
  await act(() => api(withToken("api/teach/delete"), { ids }),
    `deleted ${ids.length} frame${ids.length > 1 ? "s" : ""} (this cannot be undone)`);
  st.selected = new Set(st.groups.length ? [Math.min(st.cursor, st.groups.length - 1)] : []);
  paintSelection();
}

function showFolder(name) {
  st.folder = name;
  st.selected = new Set();
  st.cursor = st.anchor = 0;
  say(name === UNL ? "unlabelled frames, most uncertain and most distinct first" :
    `class ${name}: select frames and press a digit to move them, 0 for unlabelled`);
  busy(1);
  refresh().finally(() => busy(-1));
}

document.addEventListener("keydown", (e) => {
  if (e.target.closest && e.target.closest("input, select, textarea")) return;
  const k = e.key;
  if (k === "ArrowRight" || k === "ArrowLeft") moveCursor(k === "ArrowRight" ? 1 : -1, e.shiftKey);
  else if (k === "ArrowDown" || k === "ArrowUp") moveCursor((k === "ArrowDown" ? 1 : -1) * columns(), e.shiftKey);
  else if (/^[1-9]$/.test(k) && classes()[Number(k) - 1]) assign(classes()[Number(k) - 1].name);
  else if (k === "0") assign(UNL);
  else if (k === "Delete" || k === "Backspace") remove();
  else if ((k === "z" && (e.ctrlKey || e.metaKey)) || k === "u") undo();
  else return;
  e.preventDefault();
});

// ---------------------------------------------------------------- training and results

function showTrain(t) {
  const p = t.progress;
  const stage = p ? `${p.stage} ${p.done}/${p.total}` : "";
  const text = {
    running: `training… ${stage} (${t.seconds} s)`,
    done: `trained in ${t.seconds} s (${(t.classes || []).join(", ")}, base ${t.base})`,
    failed: `training failed: ${t.error || ""}`,
  }[t.state] || "not trained yet";
  $("train-state").textContent = text;
  $("train-state").className = "small" + (t.state === "failed" ? " bad" : "");
  $("train-bar").style.width = t.state === "done" ? "100%" :
    p ? `${Math.round((100 * p.done) / Math.max(1, p.total))}%` : "0";
  $("train-output").textContent = (t.output || []).join("\n");
  $("train").disabled = t.state === "running";
}

async function train() {
  try {
    const t = await api(withToken("api/teach/train"), { region: st.region });
    st.training = true;
    showTrain(t);
    pollTrain();
  } catch (e) {
    say(e.message, true);
  }
}

async function pollTrain() {
  let t;
  try {
    t = await api(withToken("api/teach/train"));
  } catch (e) {
    say(e.message, true);
    setTimeout(pollTrain, 2000);
    return;
  }
  showTrain(t);
  if (t.state === "running") {
    setTimeout(pollTrain, 400);
    return;
  }
  st.training = false;
  if (t.state === "done") await loadResults();
  await refresh();
}

async function loadResults() {
  let r;
  try {
    r = await api(withToken("api/teach/results"));
  } catch (e) {
    return; // none yet
  }
  $("results").hidden = false;
  $("accuracy").textContent = `accuracy ${pct(r.accuracy)} · ${r.method}`;
  const tb = $("metrics").querySelector("tbody");
  tb.replaceChildren();
  for (const c of r.classes) {
    const tr = el("tr");
    tr.append(el("td", "", c.name), el("td", "", String(c.images)), el("td", "", pct(c.precision)),
      el("td", "", pct(c.recall)));
    tb.append(tr);
  }
  const cm = $("confusion");
  cm.replaceChildren();
  const head = el("tr");
  head.append(el("th", "", ""));
  for (const c of r.classes) head.append(el("th", "", c.name));
  cm.append(head);
  r.confusion.forEach((row, i) => {
    const tr = el("tr");
    tr.append(el("th", "", r.classes[i].name));
    row.forEach((v) => tr.append(el("td", "", String(v))));
    cm.append(tr);
  });
  const wrong = $("wrong");
  wrong.replaceChildren();
  $("wrong-count").textContent = `(${r.wrong.length})`;
  for (const w of r.wrong) {
    const f = el("figure");
    const img = el("img");
    img.alt = w.path;
    if (w.exists) img.src = imageUrl(w.id, 128);
    f.append(img, el("figcaption", "", `${w.true} → ${w.predicted}`));
    wrong.append(f);
  }
  if (!r.wrong.length) wrong.append(el("span", "muted small", "none"));
  renderDeploy(true);
}

function renderDeploy(trained) {
  const o = st.overview;
  if (!o) return;
  const can = o.deploy_possible;
  if (trained !== undefined) st.trained = trained;
  $("deploy").disabled = !(can && st.trained);
  $("rollback").disabled = !(can && o.rollback);
  const note = !can ? o.deploy_blocker :
    o.rollback ? `rollback restores ${o.rollback.model}` :
    st.region ? `deploy writes the model into the model directory and sets region ${st.region}'s model` :
    "deploy writes the model into the model directory and sets model.path (the whole frame)";
  if (!$("deploy-state").dataset.sticky) $("deploy-state").textContent = note;
}

async function deploy() {
  const name = $("model-name").value.trim();
  $("deploy").disabled = true;
  $("deploy-state").textContent = "deploying…";
  try {
    const r = await api(withToken("api/teach/deploy"), { name, region: st.region });
    $("deploy-state").textContent = `deployed ${r.deployed}: now running, labels ${r.labels.join(", ")}`;
    $("deploy-state").dataset.sticky = "1";
  } catch (e) {
    $("deploy-state").textContent = e.message;
  }
  await refresh();
}

async function rollback() {
  try {
    const r = await api(withToken("api/teach/rollback"), {});
    $("deploy-state").textContent = `rolled back to ${r.model}`;
    $("deploy-state").dataset.sticky = "1";
  } catch (e) {
    $("deploy-state").textContent = e.message;
  }
  await refresh();
}

// ---------------------------------------------------------------- start

async function refresh() {
  try {
    await loadOverview();
    await loadFrames();
  } catch (e) {
    say(e.message, true);
  }
}

for (const a of document.querySelectorAll("a[data-href]")) a.href = withToken(a.dataset.href);
$("view-unlabelled").onclick = () => (st.selected.size && st.folder !== UNL ? assign(UNL) : showFolder(UNL));
$("add-class").onclick = () => {
  const name = $("new-class").value.trim();
  act(() => api(withToken("api/teach/class"), { name }), `class ${name} added`).then(() => {
    $("new-class").value = "";
  });
};
$("new-class").addEventListener("keydown", (e) => { if (e.key === "Enter") $("add-class").click(); });
$("train").onclick = train;
$("deploy").onclick = deploy;
$("rollback").onclick = rollback;
$("region").onchange = () => { st.region = $("region").value || null; refresh(); };
refresh().then(async () => {
  const t = st.overview && st.overview.train;
  if (t && t.state === "running") pollTrain();
  await loadResults();
});
