// Delineate's page: start downloads and watch them live.
// The transport is a ladder: one multiplexed WebSocket for every job, then an EventSource per
// job (SSE), then polling. A rung that proves nothing for SILENCE_MS has failed and the page
// steps down; from a lower rung it keeps probing the WebSocket in the background and climbs
// back. Jobs live in localStorage with their stream position (epoch, seq), so a reload resumes
// where it was; a bar never moves backwards.

const STORE_KEY = "delineate.jobs.v1";
const KEY_STORE = "delineate.apiKey";
const SILENCE_MS = 4000;
const POLL_MS = 2000;
const CLIMB_MS = [2000, 4000, 8000, 15000]; // probes spaced out while the WebSocket stays away
const RUNGS = ["websocket", "sse", "polling"];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const FRAME_TYPES = ["snapshot", "status", "progress", "file", "completed", "failed", "cancelled"];
const MAX_IDS = 1000;

// Every state has its own colour (app.css), icon and words: never colour alone.
const STATES = {
  queued: ["◷", "Waiting"],
  processing: ["↓", "Downloading"],
  completed: ["✓", "Ready"],
  partial: ["!", "Ready, files missing"],
  failed: ["✕", "Failed"],
  cancelled: ["■", "Cancelled"],
  gone: ["?", "Gone"],
};
const SUMMARY_WORDS = [["processing", "running"], ["queued", "waiting"], ["completed", "ready"],
  ["partial", "ready with files missing"], ["failed", "failed"], ["cancelled", "cancelled"], ["gone", "gone"]];
const ERROR_WORDS = {
  no_files_available: "None of the requested files exist.",
  storage_unavailable: "The file store could not be reached. Please try again in a moment.",
  storage_error: "The file store refused the request.",
  bundle_too_large: "These files are too large for one bundle; ask for fewer at once.",
  internal_error: "Something went wrong on our side.",
};
const GONE_TEXT = "The server no longer has this download (it may have restarted). Start it again if you still need it.";

const jobs = new Map(); // jobId -> job (see newJob)
const $ = (sel, root = document) => root.querySelector(sel);

// --- HTTP with W3C trace context ------------------------------------------------------------

class Offline extends Error {
  constructor() { super("Can't reach the server. Check your connection and try again."); }
}

function hex(bytes) {
  const a = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(method, path, body, extra = {}) {
  const traceId = hex(16);
  const headers = { traceparent: `00-${traceId}-${hex(8)}-01`, ...extra };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (auth.key) headers["x-api-key"] = auth.key;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new Offline();
  }
  const data = await res.json().catch(() => null);
  if (res.status === 401) auth.ask(data && data.message);
  return { res, data, traceId, requestId: res.headers.get("x-request-id") || "" };
}

// Server messages are for developers; people get these.
function startError(res) {
  const wait = res.headers.get("retry-after");
  switch (res.status) {
    case 400: case 415: return `Those file ids were not accepted. Use up to ${MAX_IDS} whole numbers from 10000 to 100000000.`;
    case 401: return "Sign in first: enter your API key above.";
    case 409: return "That request was already used for another download. Try again.";
    case 422: return ERROR_WORDS.bundle_too_large;
    case 429: return `Too many downloads or requests at once. Try again${wait ? ` in ${wait} s` : " in a moment"}.`;
    default: return "The server could not start the download just now. Try again in a moment.";
  }
}

// --- who we are (only when the server has auth on) --------------------------------------------
// The API key stays in this tab (sessionStorage) and goes on fetches as X-API-Key. WebSocket and
// EventSource cannot carry headers, so they get a short-lived stream token in the URL instead;
// with auth off the server issues one anyway and ignores it, so the page needs no special case.

class AuthNeeded extends Error {}

const auth = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  token: null,
  expiresAt: 0,
  blocked: false,

  async streamToken() {
    if (this.token && Date.now() / 1000 < this.expiresAt - 30) return this.token;
    const { res, data } = await api("POST", "/v1/stream-token").catch(() => ({}));
    if (res && res.status === 401) throw new AuthNeeded();
    if (!res || !res.ok) return null; // unreachable: connect anyway, the ladder decides
    this.token = data.token;
    this.expiresAt = data.expiresAt;
    return this.token;
  },

  ask(message) {
    $("#key-error").textContent = this.key ? (message || "That key was not accepted.") : "";
    $("#key-error").hidden = !this.key;
    $("#key-form").hidden = false;
    this.blocked = true;
    live.show();
  },

  use(event) {
    event.preventDefault();
    this.key = $("#api-key").value.trim();
    sessionStorage.setItem(KEY_STORE, this.key);
    this.token = null;
    this.blocked = false;
    $("#key-form").hidden = true;
    $("#api-key").value = "";
    live.switchTo(0);
  },
};

// A WebSocket or EventSource URL with a stream token; null when the server wants a key first.
async function streamUrl(path) {
  let token;
  try { token = await auth.streamToken(); } catch (e) { if (e instanceof AuthNeeded) return null; throw e; }
  const url = token ? `${path}?token=${encodeURIComponent(token)}` : path;
  return path === "/v1/ws" ? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${url}` : url;
}

// --- words and numbers ----------------------------------------------------------------------

function humanBytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function humanSeconds(s) {
  s = Math.max(0, Math.round(s));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function listIds(ids, keep = 3) {
  if (ids.length <= keep) return ids.join(", ");
  return `${ids.slice(0, keep).join(", ")} and ${ids.length - keep} more`;
}

const jobName = (job) => (job.fileIds.length === 1 ? `file ${job.fileIds[0]}` : `${job.fileIds.length} files (${listIds(job.fileIds)})`);

function bundleName(job) {
  const ids = job.fileIds;
  const tail = ids.length <= 3 ? ids.join("-") : `${ids[0]}-and-${ids.length - 1}-more`;
  return `delineate-${tail}.zip`;
}

function stateOf(job) {
  const { doc } = job;
  if (job.gone || (doc.error && doc.error.code === "job_lost")) return "gone";
  if (doc.status === "completed" && missingFiles(job).length) return "partial";
  return doc.status;
}

const isDone = (job) => TERMINAL.has(job.doc.status) || job.gone;
const missingFiles = (job) => (job.doc.files || []).filter((f) => f.state === "unavailable").map((f) => f.fileId);

function elapsed(job) {
  const { doc } = job;
  const from = Date.parse(doc.createdAt) || job.addedAt;
  const to = isDone(job) ? (Date.parse(doc.finishedAt) || job.endedAt || from) : Date.now();
  return humanSeconds((to - from) / 1000);
}

function eta(job) {
  const { doc } = job;
  const now = Date.now();
  if (!job.rate || doc.bytesDone < job.rate.bytes) job.rate = { at: now, bytes: doc.bytesDone };
  const seconds = (now - job.rate.at) / 1000;
  const perSecond = (doc.bytesDone - job.rate.bytes) / seconds;
  if (seconds < 2 || !(perSecond > 0)) return ""; // a guess from the first frames jumps about
  return `${humanSeconds((doc.bytesTotal - doc.bytesDone) / perSecond)} left`;
}

function queuePosition(job) {
  const waiting = [...jobs.values()].filter((j) => stateOf(j) === "queued").sort((a, b) => a.addedAt - b.addedAt);
  const n = waiting.indexOf(job) + 1;
  return n > 1 ? `#${n} of your waiting downloads` : "";
}

// Each figure is one unbreakable span ("28 s left" never splits over two lines).
function figures(job, state, pct) {
  const { doc } = job;
  switch (state) {
    case "queued": return [`waiting ${elapsed(job)}`, queuePosition(job)];
    case "processing":
      if (!doc.bytesTotal) return ["checking files…", `${elapsed(job)} elapsed`];
      return [`${pct}%`, `${humanBytes(doc.bytesDone)} of ${humanBytes(doc.bytesTotal)}`, eta(job), `${elapsed(job)} elapsed`];
    case "completed": case "partial": return [`${humanBytes(doc.size)} bundle`, `took ${elapsed(job)}`];
    case "failed": return [`failed after ${elapsed(job)}`];
    case "cancelled": return [`stopped at ${pct}%`, `after ${elapsed(job)}`];
    default: return [`lost at ${pct}%`, `after ${elapsed(job)}`];
  }
}

function note(job, state) {
  const { doc } = job;
  if (state === "queued") return ["info", "No worker is free yet; it starts on its own."];
  if (state === "gone") return ["warn", GONE_TEXT];
  if (state === "failed") return ["bad", ERROR_WORDS[doc.error && doc.error.code] || "This download failed. Try starting it again."];
  if (state === "partial") {
    const missing = missingFiles(job);
    const total = doc.files.length;
    return ["warn", `${missing.length} of ${total} files did not exist (${listIds(missing, 5)}); the bundle holds the other ${total - missing.length}.`];
  }
  return null;
}

// The runner writes available files in order, so bytes past the finished ones belong to the
// first unfinished available file; the rest are up next.
function fileRows(job) {
  const { doc } = job;
  const files = doc.files && doc.files.length ? doc.files : job.fileIds.map((fileId) => ({ fileId, state: "pending" }));
  let spare = doc.bytesDone - files.filter((f) => f.state === "done").reduce((sum, f) => sum + (f.size || 0), 0);
  return files.map((f) => {
    if (f.state === "done") return [f.fileId, `done · ${humanBytes(f.size)}`, 100, "done"];
    if (f.state === "unavailable") return [f.fileId, "does not exist", 0, "missing"];
    if (doc.status === "queued") return [f.fileId, "waiting", 0, ""];
    if (doc.status !== "processing" || job.gone) return [f.fileId, "not downloaded", 0, ""];
    const got = f.state === "processing" ? f.bytesDone : Math.max(0, spare);
    spare = 0;
    if (!got) return [f.fileId, "up next", 0, ""];
    const pct = f.size ? Math.min(100, Math.floor((got / f.size) * 100)) : 0;
    return [f.fileId, f.size ? `downloading · ${pct}%` : `downloading · ${humanBytes(got)}`, pct, "active"];
  });
}

// --- jobs and their cards -----------------------------------------------------------------

function newJob(saved, { atTop = true } = {}) {
  const job = {
    jobId: saved.jobId,
    fileIds: saved.fileIds || [],
    requestId: saved.requestId || "",
    traceId: saved.traceId || "",
    addedAt: saved.addedAt || Date.now(),
    epoch: saved.epoch ?? null,
    lastSeq: saved.lastSeq ?? -1,
    shown: saved.shown || 0, // the highest percent ever drawn: the bar never goes back
    gone: saved.gone || false,
    endedAt: saved.endedAt || 0,
    doc: saved.doc || { status: "queued", progress: 0, bytesDone: 0, bytesTotal: 0, files: [] },
    rate: null,
    card: null,
  };
  job.card = makeCard(job, atTop);
  jobs.set(job.jobId, job);
  render(job);
  return job;
}

function makeCard(job, atTop) {
  const card = $("#job-template").content.firstElementChild.cloneNode(true);
  const name = jobName(job);
  card.dataset.jobId = job.jobId;
  $(".job-title", card).textContent = name[0].toUpperCase() + name.slice(1);
  $(".bar", card).setAttribute("aria-label", `Download of ${name}`);
  $(".download", card).setAttribute("aria-label", `Download bundle of ${name}`);
  $(".cancel", card).setAttribute("aria-label", `Cancel download of ${name}`);
  $(".forget", card).setAttribute("aria-label", `Remove ${name} from this list`);
  $(".confirm-text", card).textContent = `Cancel the download of ${name}?`;
  $(".job-id", card).textContent = job.jobId;
  $(".request-id", card).textContent = job.requestId || "–";
  $(".trace-id", card).textContent = job.traceId || "–";
  $(".files", card).open = job.fileIds.length <= 5;
  $(".files", card).addEventListener("toggle", () => render(job));
  $(".download", card).addEventListener("click", (event) => download(event, job));
  $(".cancel", card).addEventListener("click", () => confirmCancel(job, true));
  $(".confirm-no", card).addEventListener("click", () => confirmCancel(job, false));
  $(".confirm-yes", card).addEventListener("click", () => cancel(job));
  $(".confirm", card).addEventListener("keydown", (e) => { if (e.key === "Escape") confirmCancel(job, false); });
  $(".forget", card).addEventListener("click", () => forget([job]));
  if (atTop) $("#jobs").prepend(card); else $("#jobs").append(card);
  return card;
}

let saveTimer = null;
function save(now = false) {
  clearTimeout(saveTimer);
  if (!now) { saveTimer = setTimeout(() => save(true), 300); return; }
  const plain = [...jobs.values()].sort((a, b) => a.addedAt - b.addedAt).map(({ card, rate, sizesAsked, ...rest }) => rest);
  localStorage.setItem(STORE_KEY, JSON.stringify(plain));
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function render(job) {
  const { doc, card } = job;
  const state = stateOf(job);
  const focused = card.contains(document.activeElement) ? document.activeElement : null;
  job.shown = Math.max(job.shown, doc.status === "completed" ? 100 : doc.progress || 0);
  const pct = Math.floor(job.shown * 10) / 10;
  const [icon, label] = STATES[state] || ["", state];
  card.className = `card job ${doc.status}`;
  card.dataset.state = state;
  setText($(".badge-icon", card), icon);
  setText($(".badge-text", card), label);
  const bar = $(".bar", card);
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-valuetext", `${pct}%, ${label.toLowerCase()}`);
  $(".bar-fill", card).style.width = `${pct}%`;
  renderFigures($(".numbers", card), figures(job, state, pct));
  const said = note(job, state);
  const noteEl = $(".note", card);
  noteEl.hidden = !said;
  if (said) { noteEl.className = `note ${said[0]}`; setText(noteEl, said[1]); }
  renderFiles(job);
  renderActions(job, state);
  setText($(".worker", card), doc.worker || "–");
  // A person whose focused button just disappeared stays on this card.
  if (focused && (focused.hidden || focused.closest("[hidden]"))) focusCard(job);
}

function renderFigures(el, list) {
  const text = list.filter(Boolean);
  if (el.dataset.text === text.join("|")) return;
  el.dataset.text = text.join("|");
  el.replaceChildren(...text.flatMap((t, i) => {
    const span = document.createElement("span");
    span.className = "fig";
    span.textContent = t;
    return i ? [" · ", span] : [span];
  }));
}

function renderFiles(job) {
  const { doc, card } = job;
  const count = job.fileIds.length;
  const missing = missingFiles(job).length;
  const parts = [`${count} ${count === 1 ? "file" : "files"}`];
  if (doc.bytesTotal) parts.push(humanBytes(doc.bytesTotal));
  if (missing) parts.push(`${missing} missing`);
  setText($(".files-summary", card), parts.join(", "));
  if (!$(".files", card).open) return;
  const rows = fileRows(job);
  const list = $(".file-list", card);
  while (list.children.length < rows.length) {
    const li = document.createElement("li");
    li.innerHTML = '<span class="fid"></span> <span class="fstate"></span><span class="mini" aria-hidden="true"><span></span></span>';
    list.append(li);
  }
  rows.forEach(([id, words, pct, kind], i) => {
    const li = list.children[i];
    li.className = kind;
    setText($(".fid", li), String(id));
    setText($(".fstate", li), words);
    $(".mini span", li).style.width = `${pct}%`;
  });
}

function renderActions(job, state) {
  const { doc, card } = job;
  const ready = state === "completed" || state === "partial";
  const link = $(".download", card);
  link.hidden = !ready;
  if (ready && doc.downloadUrl) link.href = withName(doc.downloadUrl, bundleName(job));
  const expiry = $(".expiry", card);
  const expires = Date.parse(doc.expiresAt);
  expiry.hidden = !ready || !expires;
  if (!expiry.hidden) {
    const at = new Date(expires).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    setText(expiry, expires > Date.now() ? `link valid until ${at}` : "link expired; a click fetches a new one");
  }
  const asking = !$(".confirm", card).hidden;
  $(".cancel", card).hidden = isDone(job) || asking;
  if (isDone(job)) $(".confirm", card).hidden = true;
  $(".forget", card).hidden = !isDone(job);
}

function focusCard(job) {
  const target = [".cancel", ".forget", ".download"].map((s) => $(s, job.card)).find((el) => !el.hidden);
  (target || $(".job-title", job.card)).focus();
}

function summarize() {
  const counts = {};
  for (const job of jobs.values()) { const s = stateOf(job); counts[s] = (counts[s] || 0) + 1; }
  const parts = SUMMARY_WORDS.filter(([s]) => counts[s]).map(([s, word]) => `${counts[s]} ${word}`);
  setText($("#summary"), parts.length ? parts.join(", ") : "No downloads yet.");
  const running = (counts.processing || 0) + (counts.queued || 0);
  document.title = running ? `(${running}) Delineate downloads` : "Delineate downloads";
  $("#clear").hidden = ![...jobs.values()].some(isDone);
}

// A frame is a duplicate only in the epoch we hold and at or below our seq (a snapshot may
// repeat our seq). A new epoch means the server lost the job's history: take it as it comes.
function isDuplicate(kept, frame) {
  if ((frame.epoch ?? null) !== kept.epoch) return false;
  return frame.type === "snapshot" ? frame.seq < kept.lastSeq : frame.seq <= kept.lastSeq;
}

// Where to resume: `<epoch>:<seq>` once the server names epochs, a plain seq before.
const streamPosition = (job) => (job.epoch ? `${job.epoch}:${job.lastSeq}` : job.lastSeq);

// Frames update the job's document.
function apply(job, frame) {
  if (job.gone || isDuplicate(job, frame)) return;
  job.epoch = frame.epoch ?? null;
  job.lastSeq = frame.seq;
  const doc = job.doc;
  const at = frame.ts ? new Date(frame.ts).toISOString() : new Date().toISOString();
  switch (frame.type) {
    case "snapshot": job.doc = { ...frame.job, finishedAt: frame.job.finishedAt || doc.finishedAt }; break;
    case "status":
      doc.status = frame.status;
      if (frame.status === "processing") doc.startedAt = doc.startedAt || at;
      break;
    case "progress":
      Object.assign(doc, { progress: frame.progress, bytesDone: frame.bytesDone,
        bytesTotal: frame.bytesTotal, filesDone: frame.filesDone });
      learnSizes(job);
      break;
    case "file":
      doc.files = (doc.files || []).map((f) => (f.fileId === frame.file.fileId ? frame.file : f));
      break;
    case "completed":
      Object.assign(doc, { status: "completed", progress: 100, downloadUrl: frame.downloadUrl,
        expiresAt: frame.expiresAt, size: frame.size });
      break;
    case "failed": Object.assign(doc, { status: "failed", error: frame.error }); break;
    case "cancelled": doc.status = "cancelled"; break;
    default: return;
  }
  if (TERMINAL.has(job.doc.status)) job.doc.finishedAt = job.doc.finishedAt || at;
  changed(job);
}

function changed(job) {
  render(job);
  summarize();
  if (isDone(job)) { live.finished(job); save(true); } else save();
}

function markGone(job) {
  if (job.gone) return;
  job.gone = true;
  job.endedAt = Date.now();
  changed(job);
}

// Live frames name a file's size only once it is done; one status read fills them in, so
// the file list can show per-file progress.
async function learnSizes(job) {
  if (job.sizesAsked || !job.doc.bytesTotal) return;
  job.sizesAsked = true;
  const { res, data } = await api("GET", `/v1/download/status/${job.jobId}`).catch(() => ({}));
  if (!res || !res.ok) return;
  const sizes = new Map(data.files.map((f) => [f.fileId, f]));
  job.doc.files = (job.doc.files || []).map((f) => (f.size == null && sizes.get(f.fileId) ? { ...f, size: sizes.get(f.fileId).size } : f));
  render(job);
}

// The latest document over HTTP: used by polling, and to tell a lost job from a lost stream.
async function refresh(job) {
  const { res, data } = await api("GET", `/v1/download/status/${job.jobId}`);
  if (res.status === 404) markGone(job);
  else if (res.ok) apply(job, { type: "snapshot", seq: data.seq, epoch: data.epoch, job: data });
  return res.ok || res.status === 404;
}

// --- live updates: the transport ladder ---------------------------------------------------

const live = {
  rung: 0,
  heard: false, // something arrived on this rung since it started: only then is it "live"
  since: 0, // when the current wait for proof began
  lastHeard: 0,
  offline: false,
  ws: null,
  wsFailures: 0,
  sources: new Map(),
  sseErrorAt: 0,
  pollTimer: null,
  climbTimer: null,
  climbs: 0,

  active() { return [...jobs.values()].filter((j) => !isDone(j)); },

  show() {
    let text = "polling every 2 s (no live connection)";
    let level = "degraded";
    if (auth.blocked) [text, level] = ["sign-in needed", "down"];
    else if (this.rung === 0 && this.heard) [text, level] = ["live · WebSocket", "live"];
    else if (this.rung === 0) text = this.wsFailures ? "reconnecting…" : "connecting…";
    else if (this.rung === 1 && this.heard) [text, level] = ["live · SSE (WebSocket unavailable)", "live"];
    else if (this.rung === 1) text = "SSE (WebSocket unavailable)";
    else if (this.offline) [text, level] = ["offline · retrying", "down"];
    const pill = $("#transport");
    setText(pill, text);
    pill.className = `pill ${level}`;
    pill.dataset.mode = RUNGS[this.rung];
    pill.dataset.live = String(this.heard && this.rung < 2);
  },

  hear(rung) {
    if (rung !== this.rung) return;
    this.lastHeard = Date.now();
    // Back to live: say so for the server too, rather than wait for the next health poll.
    if (!this.heard) { this.heard = true; this.show(); health(); }
  },

  follow(job) {
    if (isDone(job)) return;
    if (this.rung === 0) this.subscribe(job);
    else if (this.rung === 1) this.sseFollow(job);
    else this.poll();
  },

  finished(job) {
    const source = this.sources.get(job.jobId);
    if (source) { source.close(); this.sources.delete(job.jobId); }
  },

  switchTo(rung, ws = null) {
    this.stop();
    Object.assign(this, { rung, heard: false, since: Date.now(), offline: false, sseErrorAt: 0, wsFailures: 0 });
    if (rung === 0) { if (ws) { this.adopt(ws); this.hear(0); } else this.connect(); }
    if (rung === 1) for (const job of this.active()) this.sseFollow(job);
    if (rung === 2) { this.pollTimer = setInterval(() => this.poll(), POLL_MS); this.poll(); }
    if (rung > 0) this.scheduleClimb(); else this.climbs = 0;
    this.show();
  },

  stop() {
    if (this.ws) { const old = this.ws; this.ws = null; old.onclose = null; old.close(); }
    for (const source of this.sources.values()) source.close();
    this.sources.clear();
    clearInterval(this.pollTimer);
    clearTimeout(this.climbTimer);
    this.pollTimer = this.climbTimer = null;
  },

  stepDown() { this.switchTo(Math.min(this.rung + 1, RUNGS.length - 1)); },

  // Called every second: a rung that proved nothing for SILENCE_MS has failed.
  watch() {
    if (auth.blocked) return;
    const quiet = Date.now() - Math.max(this.lastHeard, this.since);
    if (this.rung === 0 && this.ws && this.ws.readyState === WebSocket.OPEN && quiet > SILENCE_MS / 2) {
      this.ws.send('{"op":"ping"}');
    }
    if (this.rung === 0 && this.ws && quiet > SILENCE_MS) this.wsFailed(this.ws, false);
    if (this.rung === 0 && !this.ws && quiet > 2 * SILENCE_MS) this.stepDown(); // never got a socket
    if (this.rung === 1 && this.active().length) {
      if ((!this.heard && quiet > SILENCE_MS) || (this.sseErrorAt && Date.now() - this.sseErrorAt > SILENCE_MS)) this.stepDown();
    }
  },

  // --- rung 0: one socket for every job
  async connect() {
    const url = await streamUrl("/v1/ws");
    if (url === null || this.rung !== 0 || this.ws) return;
    this.adopt(new WebSocket(url));
  },

  adopt(ws) {
    this.ws = ws;
    this.since = Date.now();
    let heard = false;
    const opened = () => {
      ws.send('{"op":"ping"}');
      for (const job of this.active()) this.subscribe(job);
    };
    if (ws.readyState === WebSocket.OPEN) opened(); else ws.onopen = opened;
    ws.onmessage = (event) => { heard = true; this.hear(0); this.onMessage(JSON.parse(event.data)); };
    ws.onclose = () => this.wsFailed(ws, heard);
  },

  // A socket that had worked gets one quick retry; two failures in a row step down.
  wsFailed(ws, heard) {
    if (this.ws !== ws) return;
    this.ws = null;
    ws.onclose = null;
    ws.close();
    this.heard = false;
    this.since = Date.now();
    this.wsFailures = heard ? 1 : this.wsFailures + 1;
    health();
    if (this.wsFailures >= 2) return this.stepDown();
    this.show();
    setTimeout(() => { if (this.rung === 0 && !this.ws) this.connect(); }, 200 + Math.random() * 600);
  },

  subscribe(job) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return; // opening subscribes all
    const op = { op: "subscribe", jobId: job.jobId };
    if (job.lastSeq >= 0) op.since = streamPosition(job);
    this.ws.send(JSON.stringify(op));
  },

  onMessage(message) {
    const job = jobs.get(message.jobId);
    if (message.type === "error" && message.code === "not_found" && job) return markGone(job);
    if (job && FRAME_TYPES.includes(message.type)) apply(job, message);
  },

  // --- rung 1: an EventSource per job. Opened without `since`, so its first event is a
  // snapshot that proves the stream works; it reconnects by itself with Last-Event-ID.
  async sseFollow(job) {
    if (this.sources.has(job.jobId)) return;
    const url = await streamUrl(`/v1/download/stream/${job.jobId}`);
    if (url === null || this.rung !== 1 || this.sources.has(job.jobId) || isDone(job)) return;
    if (!this.heard) this.since = Date.now();
    const source = new EventSource(url);
    const onFrame = (event) => { this.sseErrorAt = 0; this.hear(1); apply(job, JSON.parse(event.data)); };
    for (const type of FRAME_TYPES) source.addEventListener(type, onFrame);
    source.onerror = () => {
      if (isDone(job)) return this.finished(job);
      this.sseErrorAt = this.sseErrorAt || Date.now();
      if (source.readyState === EventSource.CLOSED) refresh(job).catch(() => {}); // a 404 means gone
    };
    this.sources.set(job.jobId, source);
  },

  // --- rung 2: status reads
  async poll() {
    let reached = true;
    for (const job of this.active()) reached = (await refresh(job).catch(() => false)) && reached;
    if (this.rung !== 2) return;
    this.offline = !reached;
    if (reached) this.hear(2); else this.show();
  },

  // --- climbing back: probe a fresh WebSocket; at the bottom, an EventSource too
  scheduleClimb() {
    clearTimeout(this.climbTimer);
    this.climbTimer = setTimeout(() => this.climb(), CLIMB_MS[Math.min(this.climbs, CLIMB_MS.length - 1)]);
  },

  async climb() {
    this.climbs += 1;
    const ws = await probeWebSocket();
    if (ws && this.rung > 0) return this.switchTo(0, ws);
    if (ws) ws.close();
    if (this.rung === 2 && this.active().length && (await probeSse(this.active()[0]))) return this.switchTo(1);
    if (this.rung > 0) this.scheduleClimb();
  },
};

function probeWebSocket() {
  return new Promise((resolve) => {
    streamUrl("/v1/ws").then((url) => {
      if (!url) return resolve(null);
      const ws = new WebSocket(url);
      const done = (result) => { clearTimeout(timer); ws.onopen = ws.onmessage = ws.onclose = null; if (!result) ws.close(); resolve(result); };
      const timer = setTimeout(() => done(null), SILENCE_MS);
      ws.onopen = () => ws.send('{"op":"ping"}');
      ws.onmessage = () => done(ws);
      ws.onclose = () => done(null);
    }, () => resolve(null));
  });
}

function probeSse(job) {
  return new Promise((resolve) => {
    streamUrl(`/v1/download/stream/${job.jobId}`).then((url) => {
      if (!url) return resolve(false);
      const source = new EventSource(url);
      const done = (ok) => { clearTimeout(timer); source.close(); resolve(ok); };
      const timer = setTimeout(() => done(false), SILENCE_MS);
      for (const type of FRAME_TYPES) source.addEventListener(type, () => done(true));
      source.onerror = () => done(false);
    }, () => resolve(false));
  });
}

// --- actions ------------------------------------------------------------------------------

function parseIds(text) {
  const parts = text.split(/[\s,;]+/).filter(Boolean);
  if (!parts.length) throw new Error("Enter at least one file id, for example 70000.");
  const bad = parts.find((p) => !/^\d+$/.test(p) || Number(p) < 10000 || Number(p) > 100000000);
  if (bad) throw new Error(`“${bad.slice(0, 20)}” is not a file id: use whole numbers from 10000 to 100000000.`);
  const ids = [...new Set(parts.map(Number))];
  if (ids.length > MAX_IDS) throw new Error(`At most ${MAX_IDS} files at once; you entered ${ids.length}.`);
  return ids;
}

let starting = false;

// The Idempotency-Key makes a retry after a lost answer safe: the server replays the first job.
async function start(event) {
  event.preventDefault();
  if (starting) return;
  const error = $("#form-error");
  error.hidden = true;
  let ids;
  try { ids = parseIds($("#file-ids").value); } catch (e) { error.textContent = e.message; error.hidden = false; return; }
  starting = true;
  $("#start").setAttribute("aria-busy", "true"); // not disabled: a disabled button drops focus
  const key = crypto.randomUUID();
  try {
    let answer;
    for (let attempt = 0; !answer; attempt += 1) {
      try { answer = await api("POST", "/v1/download/initiate", { file_ids: ids }, { "idempotency-key": key }); }
      catch (e) { if (attempt >= 1) throw e; }
    }
    const { res, data, traceId, requestId } = answer;
    if (!res.ok) throw new Error(startError(res));
    if (!jobs.has(data.jobId)) {
      const job = newJob({ jobId: data.jobId, fileIds: ids, requestId, traceId });
      job.doc.createdAt = data.createdAt;
      save(true);
      live.follow(job);
      summarize();
    }
    $("#file-ids").value = "";
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  } finally {
    starting = false;
    $("#start").removeAttribute("aria-busy");
  }
}

function confirmCancel(job, asking) {
  $(".confirm", job.card).hidden = !asking;
  render(job);
  if (asking) $(".confirm-yes", job.card).focus(); else focusCard(job);
}

async function cancel(job) {
  try {
    const { res, data } = await api("POST", `/v1/download/cancel/${job.jobId}`);
    if (res.ok) apply(job, { type: "snapshot", seq: data.seq, epoch: data.epoch, job: data });
    else if (res.status === 404) markGone(job);
    else await refresh(job); // 409: it finished first
  } catch (e) {
    setText($(".confirm-text", job.card), e.message);
    return;
  }
  confirmCancel(job, false);
}

// Links expire and signing keys change: every click asks the server for a fresh one.
async function download(event, job) {
  event.preventDefault();
  const expiry = $(".expiry", job.card);
  try {
    const { res, data } = await api("GET", `/v1/download/result/${job.jobId}`);
    if (res.status === 404) return markGone(job);
    if (!res.ok) throw new Error("The bundle is not available any more.");
    Object.assign(job.doc, { downloadUrl: data.downloadUrl, expiresAt: data.expiresAt });
    changed(job);
    const a = Object.assign(document.createElement("a"), { href: withName(data.downloadUrl, bundleName(job)), download: bundleName(job) });
    a.click();
  } catch (e) {
    expiry.hidden = false;
    setText(expiry, e.message);
  }
}

// The embedded store's links name the file they serve after `name`; other stores ignore it.
function withName(url, name) {
  const u = new URL(url, location.href);
  if (u.origin === location.origin && u.pathname.startsWith("/v1/files/")) u.searchParams.set("name", name);
  return u.href;
}

function forget(list) {
  const cards = [...$("#jobs").children];
  const next = cards.find((c, i) => i > cards.indexOf(list[0].card) && !list.some((j) => j.card === c))
    || cards.reverse().find((c) => !list.some((j) => j.card === c));
  for (const job of list) { live.finished(job); jobs.delete(job.jobId); job.card.remove(); }
  save(true);
  summarize();
  (next ? $(".job-title", next) : $("#jobs-title")).focus();
}

function clearFinished() {
  const done = [...jobs.values()].filter(isDone);
  if (done.length) forget(done);
}

async function health() {
  const pill = $("#health");
  try {
    const { data } = await api("GET", "/health");
    const bad = Object.entries(data.checks).filter(([, v]) => v !== "ok").map(([k]) => k);
    pill.textContent = bad.length ? `server: ${bad.join(", ")} failing` : "server: healthy";
    pill.className = `pill ${bad.length ? "down" : "live"}`;
    pill.title = Object.entries(data.checks).map(([k, v]) => `${k} ${v}`).join(", ");
  } catch {
    pill.textContent = "server: unreachable";
    pill.className = "pill down";
  }
}

// --- start-up -------------------------------------------------------------------------------

const stored = JSON.parse(localStorage.getItem(STORE_KEY) || "[]");
for (const saved of stored.sort((a, b) => (b.addedAt || 0) - (a.addedAt || 0))) newJob(saved, { atTop: false });
summarize();
$("#start-form").addEventListener("submit", start);
$("#key-form").addEventListener("submit", (event) => auth.use(event));
$("#clear").addEventListener("click", clearFinished);
addEventListener("pagehide", () => save(true));
setInterval(() => {
  for (const job of jobs.values()) render(job);
  live.watch();
}, 1000);
health();
setInterval(health, 10000);
live.switchTo(0);
window.delineate = { jobs, live, isDuplicate, streamPosition, stateOf };
