// The operations dashboard: polls GET /v1/ops/overview (every replica's heartbeat, recent jobs
// of all owners, recent errors) and draws health cards, live SVG charts, the job and error
// tables and, on request, a trace's waterfall from GET /v1/ops/traces/{id}. No build step.

const KEY_STORE = "delineate.apiKey"; // shared with the downloads page: one sign-in per tab
const POLL_MS = 2000;
const POINTS = 90;
const ROUTE_WINDOW_S = 30;
const COLORS = ["#1f6feb", "#1a7f37", "#bf3989", "#9a6700", "#8250df", "#0a7ea4"];
const $ = (sel, root = document) => root.querySelector(sel);
const series = new Map(); // replica -> [{ts, perf}]
let key = sessionStorage.getItem(KEY_STORE) || "";
let links = { trace: "", sentry: "" };
let shownTrace = "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

async function get(path) {
  const headers = key ? { "x-api-key": key } : {};
  const res = await fetch(path, { headers });
  const data = await res.json().catch(() => null);
  if (res.status === 401 || res.status === 403) throw Object.assign(new Error(data ? data.message : "refused"), { auth: res.status });
  if (!res.ok) throw new Error(data ? data.message : `HTTP ${res.status}`);
  return data;
}

// --- formatting -----------------------------------------------------------------------------

const ms = (v) => (v === null || v === undefined ? "–" : v < 10 ? `${v.toFixed(2)} ms` : `${Math.round(v)} ms`);
const secs = (v) => (v === null || v === undefined ? "–" : v < 60 ? `${v.toFixed(1)} s` : `${Math.floor(v / 60)} min ${Math.round(v % 60)} s`);
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");
const short = (id) => (id ? id.slice(0, 8) : "–");
const STATE_CLASS = { up: "ok", late: "warn", lost: "bad", completed: "ok", processing: "", queued: "",
  failed: "bad", cancelled: "warn", ok: "ok", error: "bad" };
const pill = (text) => el("span", { class: `pill ${STATE_CLASS[text] ?? ""}` }, text);
const fill = (template, values) => template.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(values[k] || ""));

// --- health ---------------------------------------------------------------------------------

function replicaCard({ state, ageS, beat }) {
  const sockets = Object.entries(beat.sockets).filter(([, n]) => n > 0).map(([t, n]) => `${t} ${n}`).join(", ") || "none";
  const checks = Object.entries(beat.checks).map(([name, v]) => el("span", {}, `${name} `, pill(v), " "));
  const row = (dt, ...dd) => [el("dt", {}, dt), el("dd", {}, ...dd)];
  return el("article", { class: "card replica", "data-replica": beat.replica },
    el("h3", {}, beat.replica, el("span", {}, pill(state), beat.draining ? pill("draining") : null)),
    el("dl", {},
      ...row("checks", ...checks),
      ...row("jobs running", `${beat.jobsRunning} of ${beat.concurrency}`),
      ...row("sockets", sockets),
      ...row("closes queued", String(beat.closesQueued)),
      ...row("broker reconnects", String(beat.brokerReconnects)),
      ...row("up for", secs(beat.ts - beat.startedAt)),
      ...row("last heartbeat", `${ageS.toFixed(1)} s ago`)));
}

// --- charts: plain SVG polylines, one per replica --------------------------------------------

const CHARTS = [
  ["Requests per second", (p) => p.requestsPerS, (v) => v.toFixed(1)],
  ["Failed requests (5xx) per second", (p) => p.routes.reduce((n, r) => n + r.serverErrors, 0) / p.intervalS, (v) => v.toFixed(2)],
  ["API p95 latency", (p) => Math.max(0, ...p.routes.map((r) => r.p95Ms || 0)), ms],
  ["Frames delivered per second", (p) => p.framesPerS, (v) => v.toFixed(0)],
  ["Fan-out delay p95", (p) => p.fanoutP95Ms || 0, ms],
  ["Event-loop lag (worst)", (p) => p.loopLagMs, ms],
];

function chart([title, pick, format], replicas) {
  const W = 300, H = 100;
  const lines = replicas.map((name) => (series.get(name) || []).map((pt) => [pt.ts, pick(pt.perf)]));
  const all = lines.flat();
  // The x axis spans the points kept, so a replica that just started fills the chart too.
  const t1 = Math.max(...all.map((p) => p[0]), 0), t0 = Math.min(...all.map((p) => p[0]), t1 - 1);
  const top = Math.max(...all.map((p) => p[1]), 1e-9) * 1.15;
  // Parsed from markup, so the elements land in the SVG namespace (createElement would not).
  const svg = el("div", { class: "plot" });
  svg.innerHTML = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${title}">` +
    `<line x1="0" y1="${H - 0.5}" x2="${W}" y2="${H - 0.5}" stroke="#d6dbe0"/>` + lines.map((pts, i) => {
    const d = pts.map(([t, v]) => `${(((t - t0) / (t1 - t0)) * W).toFixed(1)},${(H - (v / top) * (H - 4)).toFixed(1)}`).join(" ");
    const last = d.split(" ").pop().split(","), color = COLORS[i % COLORS.length];
    return `<polyline fill="none" stroke="${color}" stroke-width="1.5" vector-effect="non-scaling-stroke" points="${d}"/>` +
      (pts.length ? `<circle cx="${last[0]}" cy="${last[1]}" r="2" fill="${color}"/>` : "");
  }).join("") + "</svg>";
  const latest = lines.map((pts) => (pts.length ? pts[pts.length - 1][1] : 0));
  const legend = el("p", { class: "legend" }, ...replicas.map((name, i) =>
    el("span", {}, el("i", { style: `background:${COLORS[i % COLORS.length]}` }), `${name} ${format(latest[i] || 0)}`)));
  return el("figure", { class: "card chart", style: "margin:0" },
    el("h3", {}, title, el("span", { class: "now" }, `max ${format(top / 1.15)}`)), svg, legend);
}

function routeRows(now) {
  const routes = new Map();
  const since = now - ROUTE_WINDOW_S; // the server's clock, as the heartbeats' ts
  const recent = [...series.values()].flat().filter((pt) => pt.ts >= since);
  for (const { perf } of recent) {
    for (const r of perf.routes) {
      const sum = routes.get(r.route) || { requests: 0, c4: 0, c5: 0, p50: 0, p95: 0, p99: 0 };
      sum.requests += r.requests; sum.c4 += r.clientErrors; sum.c5 += r.serverErrors;
      sum.p50 = Math.max(sum.p50, r.p50Ms || 0); sum.p95 = Math.max(sum.p95, r.p95Ms || 0); sum.p99 = Math.max(sum.p99, r.p99Ms || 0);
      routes.set(r.route, sum);
    }
  }
  const num = (v) => el("td", { class: "num" }, v);
  return [...routes].map(([route, s]) => el("tr", {}, el("td", {}, el("code", {}, route)), num(String(s.requests)),
    num(`${(((s.requests - s.c5) / s.requests) * 100).toFixed(1)}%`), num(String(s.c4)), num(String(s.c5)),
    num(ms(s.p50)), num(ms(s.p95)), num(ms(s.p99))));
}

// --- jobs and errors ----------------------------------------------------------------------------

function traceLinks(traceId) {
  if (!traceId) return [];
  const out = [el("button", { class: "link", type: "button", onclick: () => showTrace(traceId) }, "spans")];
  if (links.trace) out.push(" · ", el("a", { href: fill(links.trace, { trace_id: traceId }), target: "_blank", rel: "noopener" }, "Jaeger"));
  return out;
}

function jobRow(job) {
  return el("tr", { "data-job-id": job.jobId, "data-status": job.status },
    el("td", {}, el("code", { title: job.jobId }, short(job.jobId))),
    el("td", {}, pill(job.status), job.status === "processing" ? ` ${job.progress.toFixed(0)}%` : "",
      job.errorCode ? el("div", { class: "hint" }, job.errorCode) : null),
    el("td", {}, job.owner || "–"), el("td", {}, job.replica || "–"), el("td", { class: "num" }, String(job.files)),
    el("td", { class: "num" }, secs(job.durationS)), el("td", {}, time(job.startedAt || job.createdAt)),
    el("td", { class: "trace" }, ...traceLinks(job.traceId)));
}

function errorRow(e) {
  const ids = [["request", e.requestId], ["job", e.jobId], ["trace", e.traceId]]
    .filter(([, v]) => v).map(([k, v]) => el("div", {}, `${k} `, el("code", {}, v)));
  const out = traceLinks(e.traceId);
  if (e.sentryEventId) {
    if (out.length) out.push(" · ");
    out.push(links.sentry
      ? el("a", { href: fill(links.sentry, { event_id: e.sentryEventId, trace_id: e.traceId }), target: "_blank", rel: "noopener", class: "sentry" }, "Sentry")
      : el("span", { class: "sentry" }, `Sentry ${short(e.sentryEventId)}`));
  }
  return el("tr", { "data-error-id": e.id },
    el("td", { class: "nowrap" }, new Date(e.ts * 1000).toLocaleTimeString()), el("td", { class: "nowrap" }, e.replica),
    el("td", {}, pill(e.kind)),
    el("td", { class: "msg" }, e.message, e.exception ? el("div", { class: "hint" }, e.exception) : null),
    el("td", { class: "ids" }, ...ids), el("td", { class: "nowrap" }, ...out));
}

// --- the waterfall ------------------------------------------------------------------------------

async function showTrace(traceId, scroll = true) {
  shownTrace = traceId;
  const { spans } = await get(`/v1/ops/traces/${traceId}`);
  $("#trace-id").textContent = traceId;
  const box = $("#waterfall");
  box.replaceChildren();
  $("#trace-hint").textContent = spans.length
    ? `${spans.length} spans · purple: the browser · blue: the server (replica named) · red: failed`
    : "This server kept no spans of this trace (see the trace UI).";
  if (!spans.length) return;
  const t0 = Math.min(...spans.map((s) => s.startMs)), t1 = Math.max(...spans.map((s) => s.endMs));
  const depth = new Map();
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const level = (s) => (depth.has(s.spanId) ? depth.get(s.spanId)
    : (depth.set(s.spanId, 0), depth.set(s.spanId, s.parentId && byId.has(s.parentId) ? level(byId.get(s.parentId)) + 1 : 0), depth.get(s.spanId)));
  for (const s of spans) {
    const left = ((s.startMs - t0) / (t1 - t0 || 1)) * 100, width = ((s.endMs - s.startMs) / (t1 - t0 || 1)) * 100;
    const where = s.replica || s.service;
    const kind = s.error ? "error" : s.service === "delineate-web" ? "browser" : "";
    box.append(el("div", { class: "span-row", role: "listitem", "data-span": s.name, "data-replica": where },
      el("span", { class: "span-name", style: `padding-left:${level(s)}rem`, title: `${s.name} (${where})` },
        s.name, el("span", { class: "hint" }, ` ${where}`)),
      el("span", { class: "span-track" },
        el("span", { class: `span-bar ${kind}`, style: `left:${left}%;width:${width}%` })),
      el("span", { class: "span-time" }, ms(s.endMs - s.startMs))));
  }
  if (scroll) $("#trace").scrollIntoView({ block: "nearest" });
}

// --- the poll loop --------------------------------------------------------------------------------

function record(views) {
  for (const { beat } of views) {
    const pts = series.get(beat.replica) || [];
    if (beat.perf && (!pts.length || pts[pts.length - 1].ts !== beat.ts)) pts.push({ ts: beat.ts, perf: beat.perf });
    series.set(beat.replica, pts.slice(-POINTS));
  }
}

function draw(data) {
  links = data.links;
  record(data.replicas);
  $("#replicas").replaceChildren(...data.replicas.map(replicaCard));
  const names = data.replicas.map((v) => v.beat.replica);
  $("#charts").replaceChildren(...CHARTS.map((c) => chart(c, names)));
  $("#routes").replaceChildren(...routeRows(data.now));
  $("#job-rows").replaceChildren(...data.jobs.map((j) => jobRow(j)));
  $("#no-jobs").hidden = data.jobs.length > 0;
  $("#error-rows").replaceChildren(...data.errors.map(errorRow));
  $("#no-errors").hidden = data.errors.length > 0;
  const feed = $("#feed");
  feed.textContent = `live · ${data.replicas.length} replica(s) · answered by ${data.replica}`;
  feed.className = "pill ok";
}

async function poll() {
  try {
    draw(await get("/v1/ops/overview"));
    if (shownTrace) await showTrace(shownTrace, false); // spans keep coming while a job runs
    $("#key-form").hidden = true;
    delete document.body.dataset.locked;
  } catch (e) {
    const feed = $("#feed");
    feed.className = "pill bad";
    feed.textContent = e.auth ? (e.auth === 403 ? "operator role needed" : "sign-in needed") : `unreachable: ${e.message}`;
    if (e.auth) {
      document.body.dataset.locked = "true"; // nothing to show until an operator signs in
      $("#key-form").hidden = false;
      $("#key-error").hidden = !key;
      $("#key-error").textContent = e.message;
    }
  }
  setTimeout(poll, POLL_MS);
}

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("#api-key").value.trim();
  sessionStorage.setItem(KEY_STORE, key);
  $("#api-key").value = "";
});

poll();
