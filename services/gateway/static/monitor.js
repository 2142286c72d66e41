// The /monitor page: tasks, queues, dead letters, refused records and schedules, from the
// gateway's API. Every value is put in the page as text (textContent), never as HTML, and
// every button gets its handler with addEventListener: nothing a task name or an error
// message carries can run. The token lives in this tab's session storage and travels only
// in the Authorization header; the WebSocket gets a short-lived ticket instead.
"use strict";

const api = "/api/v1";
const KEY = "adflux-token";
const tasks = new Map();
let socket = null;
let retryTimer = null;

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
  $("login").hidden = yes;
  if (reason) $("login-reason").textContent = reason;
  setStatus(yes ? "signed in" : "sign in");
}

async function call(method, path) {
  const r = await fetch(api + path, { method, headers: headers() });
  if (r.status === 401) {
    sessionStorage.removeItem(KEY);
    signedIn(false, "That token was refused (401); enter a valid API token.");
    throw new Error("signed out");
  }
  if (!r.ok) {
    let detail = String(r.status);
    try { const body = await r.json(); detail += " " + (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)); } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + detail);
  }
  return r.json();
}

// el("td", {className: "x"}, "text", child, ...): an element with text children only.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function button(label, action) {
  const b = el("button", { type: "button" }, label);
  b.addEventListener("click", async () => {
    try { await action(); setStatus("done: " + label); } catch (e) { setStatus(String(e.message || e)); }
    refresh();
  });
  return b;
}

const cell = value => el("td", null, value);
const code = value => el("td", null, el("code", null, value));
const path = (...parts) => parts.map(encodeURIComponent).join("/");

function fill(id, rows) { $(id).replaceChildren(...rows); }

function render() {
  const sorted = [...tasks.values()].sort((a, b) => String(b.updated_at || "").localeCompare(String(a.updated_at || ""))).slice(0, 100);
  fill("tasks", sorted.map(t => el("tr", null,
    code(t.task_id), cell(t.name),
    el("td", { className: "state " + String(t.state || "").replace(/[^A-Z]/g, "") }, t.state),
    cell(t.attempts), cell(t.progress == null ? "" : t.progress + "%"),
    cell(t.next_attempt_at), cell(t.updated_at),
    el("td", null, ["PENDING", "SCHEDULED", "RETRY", "STARTED", "PROGRESS"].includes(t.state)
      ? button("revoke", () => call("POST", "/tasks/" + path(t.task_id) + "/revoke")) : ""))));
  const counts = new Map(), queues = new Map();
  for (const t of tasks.values()) {
    counts.set(t.state, (counts.get(t.state) || 0) + 1);
    if (!queues.has(t.name)) queues.set(t.name, { PENDING: 0, SCHEDULED: 0, RUNNING: 0, RETRY: 0 });
    const q = queues.get(t.name);
    if (t.state === "STARTED" || t.state === "PROGRESS") q.RUNNING++; else if (t.state in q) q[t.state]++;
  }
  fill("counts", [...counts].map(([state, n]) =>
    el("div", { className: "card " + String(state || "").replace(/[^A-Z]/g, "") }, state, el("b", null, n))));
  fill("queues", [...queues].map(([name, q]) =>
    el("tr", null, cell(name), cell(q.PENDING), cell(q.SCHEDULED), cell(q.RUNNING), cell(q.RETRY))));
}

async function refresh() {
  if (!token()) { signedIn(false); return; }
  try {
    for (const t of await call("GET", "/tasks?limit=500")) tasks.set(t.task_id, t);
    signedIn(true);
    render();
    const dead = await call("GET", "/dead-letters");
    fill("dead", dead.map(d => el("tr", null,
      code(d.id), cell(d.original_topic), cell(d.reason),
      cell((d.error_class || "") + ": " + (d.error_message || "")), code(d.task_id),
      el("td", null, button("replay", () => call("POST", "/dead-letters/" + path(d.id) + "/replay"))))));
    const refused = await call("GET", "/outbox/refused");
    fill("refused", refused.map(r => el("tr", null,
      cell(r.id), cell(r.topic), cell(r.event_type), code(r.task_id), cell(r.size), cell(r.reason), cell(r.refused_at))));
    const workers = await call("GET", "/workers");
    fill("workers", workers.flatMap(w => (w.members.length ? w.members : [null]).map(m => el("tr", null,
      cell(w.service), cell(w.ready == null ? "unknown" : (w.ready ? "ready" : "NOT READY")),
      cell(w.readiness && w.readiness.in_flight ? Object.values(w.readiness.in_flight).reduce((a, b) => a + b, 0) : ""),
      cell(m ? m.group : "(no member)"), code(m ? m.client_id : ""), cell(m ? m.host : ""),
      cell(m ? m.partitions.join(", ") : "")))));
    const kafkaQueues = await call("GET", "/queues");
    fill("kafka-queues", kafkaQueues.filter(q => q.partitions > 0).map(q => el("tr", null,
      code(q.physical), cell(q.kind), cell(q.partitions), cell(q.waiting),
      cell(q.oldest_waiting_seconds == null ? "" : q.oldest_waiting_seconds.toFixed(1)),
      cell(q.lags.map(l => l.group + "[" + l.partition + "]=" + l.lag).join(", ")))));
    const schedules = await call("GET", "/schedules");
    fill("schedules", schedules.map(s => el("tr", null,
      cell(s.name), cell(s.task), code(s.cron), cell(s.next_run_at),
      el("td", null, button("run now", () => call("POST", "/schedules/" + path(s.name) + "/run"))))));
  } catch (e) { if (token()) setStatus(String(e.message || e)); }
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
    Object.assign(t, { state: u.state, progress: u.progress, attempts: u.attempt, updated_at: new Date().toISOString() });
    tasks.set(u.task_id, t);
    render();
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
  if (token()) { refresh(); connect(); } else signedIn(false);
  setInterval(refresh, 5000);
});
