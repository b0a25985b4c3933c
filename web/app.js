// Delineate's page: start downloads and watch them live.
// One multiplexed WebSocket carries every job; if it cannot connect the page follows each job
// over SSE, and if that fails too, it polls. Jobs live in localStorage with their last seq, so
// a reload resumes exactly where it was; a bar never moves backwards.

const STORE_KEY = "delineate.jobs.v1";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const ERROR_WORDS = {
  no_files_available: "None of the requested files exist.",
  storage_unavailable: "The file store could not be reached. Please try again in a moment.",
  storage_error: "The file store refused the request.",
  internal_error: "Something went wrong on our side.",
};

const jobs = new Map(); // jobId -> job (see newJob)
const $ = (sel, root = document) => root.querySelector(sel);

// --- HTTP with W3C trace context ------------------------------------------------------------

function hex(bytes) {
  const a = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(method, path, body) {
  const traceId = hex(16);
  const headers = { traceparent: `00-${traceId}-${hex(8)}-01` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (auth.key) headers["x-api-key"] = auth.key;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (res.status === 401) auth.ask(data && data.message);
  return { res, data, traceId, requestId: res.headers.get("x-request-id") || "" };
}

// --- who we are (only when the server has auth on) --------------------------------------------
// The API key stays in this tab (sessionStorage) and goes on fetches as X-API-Key. WebSocket and
// EventSource cannot carry headers, so they get a short-lived stream token in the URL instead;
// with auth off the server issues one anyway and ignores it, so the page needs no special case.

const KEY_STORE = "delineate.apiKey";

class AuthNeeded extends Error {}

const auth = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  token: null,
  expiresAt: 0,

  async streamToken() {
    if (this.token && Date.now() / 1000 < this.expiresAt - 30) return this.token;
    const { res, data } = await api("POST", "/v1/stream-token").catch(() => ({}));
    if (res && res.status === 401) throw new AuthNeeded();
    if (!res || !res.ok) return null; // unreachable: connect anyway, the retry asks again
    this.token = data.token;
    this.expiresAt = data.expiresAt;
    return this.token;
  },

  ask(message) {
    const form = $("#key-form");
    $("#key-error").textContent = this.key ? (message || "That key was not accepted.") : "";
    $("#key-error").hidden = !this.key;
    form.hidden = false;
    live.show("sign-in needed", "down");
  },

  use(event) {
    event.preventDefault();
    this.key = $("#api-key").value.trim();
    sessionStorage.setItem(KEY_STORE, this.key);
    this.token = null;
    $("#key-form").hidden = true;
    $("#api-key").value = "";
    live.restart();
  },
};

function withToken(path, token, params = {}) {
  const query = new URLSearchParams(params);
  if (token) query.set("token", token);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

// --- jobs and their cards -----------------------------------------------------------------

function newJob(saved) {
  const job = {
    jobId: saved.jobId,
    fileIds: saved.fileIds || [],
    requestId: saved.requestId || "",
    traceId: saved.traceId || "",
    lastSeq: saved.lastSeq ?? -1,
    shown: saved.shown || 0, // the highest percent ever drawn: the bar never goes back
    doc: saved.doc || { status: "queued", progress: 0, bytesDone: 0, bytesTotal: 0, files: [] },
    startedAt: saved.startedAt || Date.now(),
    rate: null,
    card: null,
  };
  job.card = makeCard(job);
  jobs.set(job.jobId, job);
  render(job);
  return job;
}

function makeCard(job) {
  const card = $("#job-template").content.firstElementChild.cloneNode(true);
  card.dataset.jobId = job.jobId;
  $(".job-title", card).textContent = `Files ${job.fileIds.join(", ") || job.jobId}`;
  $(".bar", card).setAttribute("aria-label", `Progress of download ${job.jobId}`);
  $(".request-id", card).textContent = job.requestId || "–";
  $(".trace-id", card).textContent = job.traceId || "–";
  $(".cancel", card).addEventListener("click", () => cancel(job));
  $(".forget", card).addEventListener("click", () => forget(job));
  $("#jobs").prepend(card);
  $("#no-jobs").hidden = true;
  return card;
}

function save() {
  const plain = [...jobs.values()].map(({ card, rate, ...rest }) => rest);
  localStorage.setItem(STORE_KEY, JSON.stringify(plain));
}

function humanBytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function render(job) {
  const { doc, card } = job;
  job.shown = Math.max(job.shown, doc.status === "completed" ? 100 : doc.progress || 0);
  const pct = Math.round(job.shown * 10) / 10;
  card.className = `card job ${doc.status}`;
  $(".job-status", card).textContent = doc.status;
  const bar = $(".bar", card);
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-valuetext", `${pct}% (${doc.status})`);
  $(".bar-fill", card).style.width = `${pct}%`;
  $(".percent", card).textContent = `${pct}%`;
  $(".bytes", card).textContent = `${humanBytes(doc.bytesDone)} / ${humanBytes(doc.bytesTotal)}`;
  $(".elapsed", card).textContent = `${Math.round((Date.now() - job.startedAt) / 1000)}s`;
  $(".eta", card).textContent = eta(job);
  $(".files", card).replaceChildren(...(doc.files || []).map((f) => {
    const li = document.createElement("li");
    li.className = f.state;
    li.textContent = `${f.fileId}: ${f.state}${f.size != null ? ` (${humanBytes(f.size)})` : ""}`;
    return li;
  }));
  const done = TERMINAL.has(doc.status);
  const link = $(".download", card);
  link.hidden = !(doc.status === "completed" && doc.downloadUrl);
  if (!link.hidden) {
    link.href = new URL(doc.downloadUrl, location.href).href;
    link.setAttribute("download", `${job.jobId}.zip`);
  }
  const error = $(".error-text", card);
  error.hidden = doc.status !== "failed";
  if (doc.error) error.textContent = ERROR_WORDS[doc.error.code] || doc.error.message;
  $(".cancel", card).hidden = done;
  $(".forget", card).hidden = !done;
}

function eta(job) {
  const { doc } = job;
  if (TERMINAL.has(doc.status)) return "–";
  const now = Date.now();
  if (!job.rate || doc.bytesDone < job.rate.bytes) job.rate = { at: now, bytes: doc.bytesDone };
  const seconds = (now - job.rate.at) / 1000;
  const perSecond = (doc.bytesDone - job.rate.bytes) / seconds;
  if (!(perSecond > 0)) return "–";
  return `${Math.max(0, Math.round((doc.bytesTotal - doc.bytesDone) / perSecond))}s`;
}

// Frames update the job's document; anything at or below the last seq is already applied.
function apply(job, frame) {
  if (frame.seq <= job.lastSeq && frame.type !== "snapshot") return;
  if (frame.type === "snapshot" && frame.seq < job.lastSeq) return;
  job.lastSeq = Math.max(job.lastSeq, frame.seq);
  const doc = job.doc;
  switch (frame.type) {
    case "snapshot": job.doc = frame.job; break;
    case "status": doc.status = frame.status; break;
    case "progress":
      Object.assign(doc, { progress: frame.progress, bytesDone: frame.bytesDone,
        bytesTotal: frame.bytesTotal, filesDone: frame.filesDone });
      break;
    case "file":
      doc.files = (doc.files || []).map((f) => (f.fileId === frame.file.fileId ? frame.file : f));
      break;
    case "completed":
      Object.assign(doc, { status: "completed", progress: 100, downloadUrl: frame.downloadUrl, size: frame.size });
      break;
    case "failed": Object.assign(doc, { status: "failed", error: frame.error }); break;
    case "cancelled": doc.status = "cancelled"; break;
    default: return;
  }
  render(job);
  save();
  if (TERMINAL.has(job.doc.status)) live.finished(job);
}

// --- live updates: WebSocket, then SSE, then polling ----------------------------------------

const live = {
  mode: "websocket",
  ws: null,
  wsFailures: 0,
  sources: new Map(),
  pollTimer: null,

  active() { return [...jobs.values()].filter((j) => !TERMINAL.has(j.doc.status)); },

  show(text, level) {
    const pill = $("#transport");
    pill.textContent = text;
    pill.className = `pill ${level}`;
    pill.dataset.mode = this.mode;
  },

  follow(job) {
    if (TERMINAL.has(job.doc.status)) return;
    if (this.mode === "websocket") this.wsSubscribe(job);
    else if (this.mode === "sse") this.sseFollow(job);
    else this.startPolling();
  },

  finished(job) {
    const source = this.sources.get(job.jobId);
    if (source) { source.close(); this.sources.delete(job.jobId); }
  },

  // After a new API key: start over with WebSocket.
  restart() {
    if (this.ws) { const old = this.ws; this.ws = null; old.close(); }
    for (const source of this.sources.values()) source.close();
    this.sources.clear();
    clearInterval(this.pollTimer);
    this.pollTimer = null;
    this.mode = "websocket";
    this.wsFailures = 0;
    this.connect();
  },

  // One socket for every job.
  async connect() {
    let token;
    try { token = await auth.streamToken(); } catch (e) { if (e instanceof AuthNeeded) return; throw e; }
    const base = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
    const ws = new WebSocket(withToken(`${base}/v1/ws`, token));
    let opened = false;
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.wsFailures = 0;
      this.show("live: WebSocket", "live");
      for (const job of this.active()) this.wsSubscribe(job);
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "ack" || message.type === "pong") return;
      if (message.type === "error") {
        if (message.code === "not_found" && jobs.has(message.jobId)) {
          const job = jobs.get(message.jobId);
          apply(job, { type: "failed", seq: job.lastSeq + 1, error: { code: "gone", message: "This download no longer exists on the server." } });
        }
        return;
      }
      const job = jobs.get(message.jobId);
      if (job) apply(job, message);
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.mode !== "websocket") return;
      this.ws = null;
      if (!opened) this.wsFailures += 1;
      if (this.wsFailures >= 2) return this.fallBack("sse");
      this.show("reconnecting…", "degraded");
      const delay = Math.random() * Math.min(5000, 250 * 2 ** this.wsFailures);
      setTimeout(() => this.connect(), delay);
    };
  },

  wsSubscribe(job) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return; // onopen subscribes all
    const op = { op: "subscribe", jobId: job.jobId };
    if (job.lastSeq >= 0) op.since = job.lastSeq;
    this.ws.send(JSON.stringify(op));
  },

  fallBack(mode) {
    this.mode = mode;
    if (mode === "sse") {
      this.show("live: SSE (WebSocket unavailable)", "degraded");
      for (const job of this.active()) this.sseFollow(job);
    } else {
      for (const source of this.sources.values()) source.close();
      this.sources.clear();
      this.show("polling (no live connection)", "down");
      this.startPolling();
    }
  },

  // One EventSource per job; it reconnects by itself with Last-Event-ID.
  async sseFollow(job) {
    if (this.sources.has(job.jobId)) return;
    let token;
    try { token = await auth.streamToken(); } catch { return; }
    if (this.sources.has(job.jobId)) return;
    const since = job.lastSeq >= 0 ? { since: job.lastSeq } : {};
    const source = new EventSource(withToken(`/v1/download/stream/${job.jobId}`, token, since));
    let heard = false;
    const onFrame = (event) => { heard = true; apply(job, JSON.parse(event.data)); };
    for (const type of ["snapshot", "status", "progress", "file", "completed", "failed", "cancelled"]) {
      source.addEventListener(type, onFrame);
    }
    source.onerror = () => {
      if (TERMINAL.has(job.doc.status)) return this.finished(job);
      if (!heard && source.readyState === EventSource.CLOSED) this.fallBack("polling");
    };
    this.sources.set(job.jobId, source);
  },

  startPolling() {
    if (this.pollTimer) return;
    const tick = async () => {
      for (const job of this.active()) {
        const { res, data } = await api("GET", `/v1/download/status/${job.jobId}`).catch(() => ({}));
        if (res && res.ok) apply(job, { type: "snapshot", seq: data.seq, job: data });
      }
    };
    this.pollTimer = setInterval(tick, 1500);
    tick();
  },
};

// --- actions ------------------------------------------------------------------------------

function parseIds(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  const ids = parts.map(Number);
  if (!parts.length) throw new Error("Enter at least one file id.");
  if (ids.some((n) => !Number.isInteger(n) || n < 10000 || n > 100000000)) {
    throw new Error("File ids are whole numbers from 10000 to 100000000.");
  }
  return ids;
}

async function start(event) {
  event.preventDefault();
  const error = $("#form-error");
  error.hidden = true;
  let ids;
  try { ids = parseIds($("#file-ids").value); } catch (e) { error.textContent = e.message; error.hidden = false; return; }
  const button = $("#start");
  button.disabled = true;
  try {
    const { res, data, traceId, requestId } = await api("POST", "/v1/download/initiate", { file_ids: ids });
    if (!res.ok) throw new Error((data && data.message) || `The server answered ${res.status}.`);
    const job = newJob({ jobId: data.jobId, fileIds: ids, requestId, traceId });
    save();
    live.follow(job);
    $("#file-ids").value = "";
  } catch (e) {
    error.textContent = e.message || "Could not reach the server.";
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function cancel(job) {
  const { res, data } = await api("POST", `/v1/download/cancel/${job.jobId}`);
  if (res.ok) apply(job, { type: "snapshot", seq: data.seq, job: data });
}

function forget(job) {
  live.finished(job);
  jobs.delete(job.jobId);
  job.card.remove();
  $("#no-jobs").hidden = jobs.size > 0;
  save();
}

async function health() {
  const pill = $("#health");
  try {
    const { data } = await api("GET", "/health");
    const checks = Object.entries(data.checks).map(([k, v]) => `${k} ${v}`).join(", ");
    pill.textContent = `health: ${data.status} (${checks})`;
    pill.className = `pill ${data.status === "healthy" ? "live" : "down"}`;
  } catch {
    pill.textContent = "health: unreachable";
    pill.className = "pill down";
  }
}

// --- start-up -------------------------------------------------------------------------------

for (const saved of JSON.parse(localStorage.getItem(STORE_KEY) || "[]").reverse()) newJob(saved);
$("#start-form").addEventListener("submit", start);
$("#key-form").addEventListener("submit", (event) => auth.use(event));
setInterval(() => { for (const job of live.active()) render(job); }, 1000);
health();
setInterval(health, 10000);
live.show("connecting…", "degraded");
live.connect();
window.delineate = { jobs, live };
