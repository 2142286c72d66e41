// The /monitor console: overview with graphs, workers, queues, task search with each task's
// timeline, dead letters, schedules with their controls, and campaigns, from the gateway's API
// and live over its WebSocket. Each view loads on its own: a failing endpoint shows its error
// in its view and the others still load. Every value is put in the page as text
// (textContent), never as HTML, and every button gets its handler with addEventListener:
// nothing a task name or an error message carries can run. The token lives in this tab's
// session storage and travels only in the Authorization header; the WebSocket gets a
// short-lived ticket instead.
"use strict";

const api = "/api/v1";
const KEY = "adflux-token";
const SVG = "http://www.w3.org/2000/svg";
const UNFINISHED = ["PENDING", "SCHEDULED", "RETRY", "STARTED", "PROGRESS"];
const tasks = new Map();
let socket = null;
let retryTimer = null;
let view = "overview";
let nextCursor = null;
let detailId = null;

// An old version kept the token in localStorage and read it from the URL: drop both.
localStorage.removeItem(KEY);
if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);

const $ = id => document.getElementById(id);
const token = () => sessionStorage.getItem(KEY) || "";
const setStatus = text => { $("status").textContent = text; };

function headers() {
  return { "Authorization": "Bearer " + token(), "Content-Type": "application/json" };
}

// Signed in: the console shows; signed out (no token, or the token refused): the sign-in
// form with the reason, never a raw 401 above empty tables.
function signedIn(yes, reason) {
  $("console").hidden = !yes;
  $("nav").hidden = !yes;
  $("login").hidden = yes;
  if (reason) $("login-reason").textContent = reason;
  if (!yes) setStatus("sign in");
}

// One API call; resolves to the response (its JSON in `.body`), throws with the reason.
async function request(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(api + path, init);
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    signedIn(false, "That token was refused (401); enter a valid API token.");
    throw new Error("signed out");
  }
  let parsed = null;
  try { parsed = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) {
    const detail = parsed && parsed.detail !== undefined
      ? (typeof parsed.detail === "string" ? parsed.detail : JSON.stringify(parsed.detail)) : "";
    throw new Error(path + ": " + r.status + " " + detail);
  }
  return { body: parsed, headers: r.headers };
}
const call = async (method, path, body) => (await request(method, path, body)).body;

// el("td", {className: "x"}, "text", child, ...): an element with text children only.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function button(label, action, props) {
  const b = el("button", Object.assign({ type: "button" }, props || {}), label);
  b.addEventListener("click", async () => {
    try { await action(); setStatus("done: " + label); } catch (e) { setStatus(String(e.message || e)); }
    refresh();
  });
  return b;
}

const cell = value => el("td", null, value);
const code = value => el("td", null, el("code", null, value));
const stateCell = state => el("td", { className: "state " + String(state || "").replace(/[^A-Z]/g, "") }, state);
const path = (...parts) => parts.map(encodeURIComponent).join("/");
const utc = local => local ? local + ":00Z" : null;  // datetime-local inputs are read as UTC
const when = iso => iso ? String(iso).replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "";
function fill(id, rows) { $(id).replaceChildren(...rows); }

function openTask(taskId) {
  return el("button", { type: "button", className: "link", title: "open its timeline" }, taskId);
}
function taskLink(taskId) {
  const b = openTask(taskId);
  b.addEventListener("click", () => { show("tasks"); detail(taskId); });
  return el("td", null, b);
}

// --- overview: live counts, graphs, live tasks --------------------------------------------
function render() {
  const sorted = [...tasks.values()].sort((a, b) => String(b.updated_at || "").localeCompare(String(a.updated_at || ""))).slice(0, 100);
  fill("tasks", sorted.map(t => el("tr", { className: "task-row" },
    taskLink(t.task_id), cell(t.name), stateCell(t.state),
    cell(t.attempts), cell(t.progress == null ? "" : t.progress + "%"),
    cell(when(t.next_attempt_at)), cell(when(t.updated_at)),
    el("td", null, UNFINISHED.includes(t.state)
      ? button("revoke", () => call("POST", "/tasks/" + path(t.task_id) + "/revoke")) : ""))));
  const counts = new Map();
  for (const t of tasks.values()) counts.set(t.state, (counts.get(t.state) || 0) + 1);
  fill("counts", [...counts].map(([state, n]) =>
    el("div", { className: "card " + String(state || "").replace(/[^A-Z]/g, "") }, state, el("b", null, n))));
}

// A line chart of `series` ([{key, values}]) over `minutes`, drawn as inline SVG.
function chart(minutes, series) {
  const w = 560, h = 160, pad = 28;
  const all = series.flatMap(s => s.values.filter(v => v != null));
  const top = Math.max(1, ...all);
  const x = i => pad + (w - pad - 8) * (minutes.length > 1 ? i / (minutes.length - 1) : 0);
  const y = v => h - pad - (h - 2 * pad) * (v / top);
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", class: "chart" });
  root.append(svg("line", { x1: pad, y1: h - pad, x2: w - 8, y2: h - pad, class: "axis" }));
  root.append(svg("line", { x1: pad, y1: pad, x2: pad, y2: h - pad, class: "axis" }));
  root.append(svg("text", { x: 2, y: pad + 4, class: "tick" }, Number(top.toFixed(2))));
  root.append(svg("text", { x: 2, y: h - pad, class: "tick" }, 0));
  if (minutes.length) {
    root.append(svg("text", { x: pad, y: h - 8, class: "tick" }, when(minutes[0]).slice(11, 16)));
    root.append(svg("text", { x: w - 48, y: h - 8, class: "tick" }, when(minutes[minutes.length - 1]).slice(11, 16)));
  }
  for (const s of series) {
    const points = s.values.map((v, i) => v == null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`).filter(Boolean);
    if (points.length) root.append(svg("polyline", { points: points.join(" "), class: "line k-" + s.key }));
  }
  return root;
}

async function loadGraphs() {
  const minutes = await call("GET", "/stats/tasks?minutes=60");
  const stamps = minutes.map(m => m.minute);
  $("graph-tasks").replaceChildren(chart(stamps, ["succeeded", "failed", "retried"].map(key =>
    ({ key, values: minutes.map(m => m[key]) }))));
  $("graph-latency").replaceChildren(chart(stamps, [
    { key: "p50", values: minutes.map(m => m.publish_latency_p50) },
    { key: "max", values: minutes.map(m => m.publish_latency_max) }]));
}

async function loadLiveTasks() {
  for (const t of await call("GET", "/tasks?limit=500")) tasks.set(t.task_id, t);
  render();
}

// --- workers and queues --------------------------------------------------------------------
// ["a[0]", "a[1]", "b[0]"] -> "a[0,1] b[0]": one entry per topic.
function byTopic(partitions) {
  const topics = new Map();
  for (const p of partitions) {
    const m = /^(.*)\[(\d+)\]$/.exec(p);
    const [topic, n] = m ? [m[1], m[2]] : [p, ""];
    if (!topics.has(topic)) topics.set(topic, []);
    topics.get(topic).push(n);
  }
  return [...topics].map(([t, ns]) => t + "[" + ns.join(",") + "]").join("  ");
}

async function loadWorkers() {
  const workers = await call("GET", "/workers");
  fill("workers", workers.flatMap(w => (w.members.length ? w.members : [null]).map(m => el("tr", null,
    cell(w.service), cell(w.ready == null ? "unknown" : (w.ready ? "ready" : "NOT READY")),
    cell(w.readiness && w.readiness.in_flight ? Object.values(w.readiness.in_flight).reduce((a, b) => a + b, 0) : ""),
    cell(m ? m.group : "(no member)"), code(m ? m.client_id : ""), cell(m ? m.host : ""),
    cell(m ? byTopic(m.partitions) : "")))));
}

async function loadThrottles() {
  const blocks = await call("GET", "/platforms/throttles");
  fill("throttles", blocks.length ? blocks.map(b => el("tr", null,
    cell(b.platform), code(b.account), cell(b.blocked ? "BLOCKED" : "open"), cell(when(b.until)),
    cell(b.blocked ? b.remaining_seconds.toFixed(1) + " s" : ""), cell(b.reason)))
    : [el("tr", null, cell("no block signalled"))]);
}

async function loadQueues() {
  const queues = await call("GET", "/queues");
  fill("kafka-queues", queues.filter(q => q.partitions > 0).map(q => el("tr", null,
    code(q.physical), cell(q.kind), cell(q.partitions), cell(q.waiting),
    cell(q.oldest_waiting_seconds == null ? "" : q.oldest_waiting_seconds.toFixed(1)),
    cell(q.lags.map(l => l.group + "[" + l.partition + "]=" + l.lag).join(", ")))));
}

// --- tasks: search, bulk actions, detail with timeline -------------------------------------
function filters() {
  const form = new FormData($("search"));
  const chosen = {};
  for (const [k, v] of form) if (v) chosen[k] = (k === "since" || k === "until") ? utc(v) : v;
  return chosen;
}

async function search(more) {
  const query = new URLSearchParams(filters());
  query.set("limit", "50");
  if (more && nextCursor) query.set("cursor", nextCursor);
  const r = await request("GET", "/tasks?" + query);
  nextCursor = r.headers.get("X-Next-Cursor");
  $("more").hidden = !nextCursor;
  const rows = r.body.map(t => el("tr", null,
    taskLink(t.task_id), cell(t.name), stateCell(t.state), cell(t.attempts), code(t.campaign_id),
    cell(when(t.updated_at)), cell(t.error ? (t.error.error_class || "") + ": " + (t.error.message || "") : ""),
    el("td", null, UNFINISHED.includes(t.state)
      ? button("revoke", () => call("POST", "/tasks/" + path(t.task_id) + "/revoke")) : "")));
  if (more) $("results").append(...rows); else fill("results", rows);
}

async function bulk(action) {
  const chosen = filters();
  const dry = await call("POST", "/tasks/" + action, chosen);
  if (!dry.matched) { setStatus("no task matches to " + action); return; }
  if (!window.confirm(`${action} ${dry.matched} task(s) matching these filters?`)) return;
  const done = await call("POST", "/tasks/" + action, Object.assign({ confirm: dry.matched }, chosen));
  setStatus(`${action}: ${done.done} of ${done.matched}`);
}

async function detail(taskId) {
  detailId = taskId;
  const h = await call("GET", "/tasks/" + path(taskId) + "/history");
  $("detail").hidden = false;
  $("detail-id").textContent = h.task_id + " (" + h.name + ")";
  $("detail-state").textContent = h.state;
  $("detail-state").className = "state " + String(h.state).replace(/[^A-Z]/g, "");
  fill("timeline", h.transitions.map(t => el("li", { className: "step " + String(t.state).replace(/[^A-Z]/g, "") },
    el("b", null, t.state), " ", when(t.at), " · attempt ", t.attempt,
    t.worker ? " · " + t.worker : "", t.duration != null ? ` · ${t.duration.toFixed(2)} s` : "",
    t.progress != null ? ` · ${t.progress}%` : "", t.replay ? " · replay" : "",
    t.error ? el("div", { className: "err" }, t.error) : "")));
  $("detail-input").textContent = JSON.stringify({ args: h.args, kwargs: h.kwargs, options: h.options }, null, 2);
  $("detail-output").textContent = JSON.stringify({ result: h.result, error: h.error }, null, 2);
}

// --- dead letters --------------------------------------------------------------------------
async function loadDead() {
  const dead = await call("GET", "/dead-letters?include_replayed=true");
  fill("dead", dead.map(d => el("tr", { className: "dead-row" },
    code(d.id), cell(d.original_topic), cell(d.reason),
    cell((d.error_class || "") + ": " + (d.error_message || "")), d.task_id ? taskLink(d.task_id) : cell(""),
    cell(when(d.replayed_at)),
    el("td", null, d.replayed_at ? "" : button("replay", () => call("POST", "/dead-letters/" + path(d.id) + "/replay"))))));
}

async function loadRefused() {
  const refused = await call("GET", "/outbox/refused");
  fill("refused", refused.map(r => el("tr", null,
    cell(r.id), cell(r.topic), cell(r.event_type), code(r.task_id), cell(r.size), cell(r.reason), cell(when(r.refused_at)))));
}

// --- schedules -----------------------------------------------------------------------------
async function loadSchedules() {
  const schedules = await call("GET", "/schedules");
  const control = (s, action) => () => call("POST", "/schedules/" + path(s.name) + "/" + action);
  fill("schedules", schedules.map(s => el("tr", { className: "schedule-row" },
    cell(s.name), cell(s.task), code(s.cron), cell(s.overlap),
    el("td", { className: s.paused ? "paused" : "" }, s.paused ? "paused" : "active"),
    cell(when(s.next_run_at)), cell(s.last_run ? when(s.last_run.slot) : "never"),
    s.last_run ? stateCell(s.last_run.state || "unknown") : cell(""),
    el("td", null,
      button("run now", control(s, "run")),
      s.paused ? button("resume", control(s, "resume")) : button("pause", control(s, "pause"))))));
  const select = $("backfill-schedule");
  const chosen = select.value;
  select.replaceChildren(...schedules.map(s => el("option", { value: s.name }, s.name)));
  if (chosen) select.value = chosen;
}

// --- campaigns -----------------------------------------------------------------------------
async function loadCampaigns() {
  const campaigns = await call("GET", "/campaigns");
  const pairs = obj => Object.entries(obj || {}).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(", ");
  fill("campaigns", campaigns.map(c => el("tr", null,
    code(c.id), cell(c.name), cell(c.platform), stateCell(c.status), cell(pairs(c.external_ids)),
    cell(pairs(c.metrics)), c.task_id ? taskLink(c.task_id) : cell(""), cell(when(c.updated_at)))));
}

// --- loading: each part on its own ---------------------------------------------------------
const LOADERS = {
  overview: [["overview-error", loadLiveTasks], ["overview-error", loadGraphs]],
  workers: [["workers-error", loadWorkers], ["throttles-error", loadThrottles]],
  queues: [["queues-error", loadQueues]],
  tasks: [["search-error", () => search(false)]],
  dead: [["dead-error", loadDead], ["refused-error", loadRefused]],
  schedules: [["schedules-error", loadSchedules]],
  campaigns: [["campaigns-error", loadCampaigns]],
};

async function loadView(name) {
  const parts = LOADERS[name];
  const errors = new Map(parts.map(([id]) => [id, []]));
  await Promise.all(parts.map(async ([id, load]) => {
    try { await load(); } catch (e) { if (token()) errors.get(id).push(String(e.message || e)); }
  }));
  for (const [id, messages] of errors) $(id).textContent = messages.join("; ");
}

async function refresh() {
  if (!token()) { signedIn(false); return; }
  signedIn(true);
  await loadView(view);
  if (view === "tasks" && detailId) {
    try { await detail(detailId); } catch (e) { $("search-error").textContent = String(e.message || e); }
  }
}

function show(name) {
  view = name;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + name;
  for (const b of document.querySelectorAll("#nav [data-view]")) b.classList.toggle("active", b.dataset.view === name);
  refresh();
}

async function connect() {
  clearTimeout(retryTimer);
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
  if (!token()) return;
  let ticket;
  try { ticket = (await call("POST", "/tickets")).ticket; } catch (e) { setStatus(String(e.message || e)); return; }
  const proto = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${proto}://${location.host}${api}/tasks/stream?ticket=${encodeURIComponent(ticket)}`);
  socket.onopen = () => setStatus("live");
  socket.onclose = () => { setStatus("disconnected, retrying…"); retryTimer = setTimeout(connect, 3000); };
  socket.onmessage = ev => {
    const u = JSON.parse(ev.data);
    const t = tasks.get(u.task_id) || { task_id: u.task_id, name: u.name, attempts: u.attempt };
    Object.assign(t, { state: u.state, progress: u.progress, attempts: u.attempt, updated_at: u.at || new Date().toISOString() });
    tasks.set(u.task_id, t);
    render();
    if (u.task_id === detailId && view === "tasks") detail(detailId).catch(() => {});
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", ev => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value);
    $("token").value = "";
    refresh();
    connect();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    tasks.clear();
    render();
    signedIn(false, "Signed out. Enter an API token to sign in again.");
  });
  for (const b of document.querySelectorAll("#nav [data-view]")) b.addEventListener("click", () => show(b.dataset.view));
  $("search").addEventListener("submit", ev => { ev.preventDefault(); detailId = null; $("detail").hidden = true; loadView("tasks"); });
  $("more").addEventListener("click", () => search(true).catch(e => { $("search-error").textContent = String(e.message || e); }));
  $("bulk-revoke").addEventListener("click", () => bulk("revoke").catch(e => setStatus(String(e.message || e))));
  $("bulk-replay").addEventListener("click", () => bulk("replay").catch(e => setStatus(String(e.message || e))));
  $("backfill").addEventListener("submit", async ev => {
    ev.preventDefault();
    const form = new FormData($("backfill"));
    try {
      const r = await call("POST", "/schedules/" + path(form.get("schedule")) + "/backfill",
        { start: utc(form.get("start")), end: utc(form.get("end")) });
      setStatus(`backfill of ${r.schedule}: ${r.slots} slot(s) requested`);
    } catch (e) { setStatus(String(e.message || e)); }
  });
  show("overview");
  if (token()) connect(); else signedIn(false);
  setInterval(refresh, 5000);
});
