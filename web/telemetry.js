// The browser side of the trace, and error reports, with no SDK and no build step.
// - Submitting the start form opens a span ("click Start download"); the page's
//   POST /v1/download/initiate carries that span's id in `traceparent` (the page's own header
//   is adopted; one is added when missing), so one trace holds the click, the request,
//   job.run on whichever replica runs the job, and its storage calls.
// - Spans leave as OTLP/HTTP JSON to /telemetry/traces: the replica relays them with its own
//   (to OTEL_EXPORTER_OTLP_ENDPOINT) and keeps them for the dashboard's waterfall.
// - Failed API calls (network errors and 5xx) and uncaught errors go to Sentry's envelope
//   endpoint, tagged with the trace id, when /telemetry/config names a browser DSN; a small
//   dialog then asks the person what happened and sends it as a user report.
// A few dozen lines instead of @sentry/browser + @opentelemetry/sdk-trace-web: they need a
// bundler, and the page needs one span and two kinds of report.

const SERVICE = "delineate-web";
const send = window.fetch.bind(window);
const config = send("/telemetry/config").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
let clickStart = null;
let lastTraceId = "";
const queue = [];

const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
// Epoch nanoseconds as a string: microseconds fit a double exactly, nanoseconds do not.
const nanos = () => `${Math.round((performance.timeOrigin + performance.now()) * 1000)}000`;

function parent(header) {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/.exec(header || "");
  return m ? { traceId: m[1], spanId: m[2] } : null;
}

document.addEventListener("submit", (e) => { if (e.target.id === "start-form") clickStart = nanos(); }, true);

window.fetch = async (input, init = {}) => {
  const path = new URL(typeof input === "string" ? input : input.url, location.href).pathname;
  if (!path.startsWith("/v1/")) return send(input, init);
  const headers = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
  let ctx = parent(headers.get("traceparent"));
  if (!ctx) {
    ctx = { traceId: hex(16), spanId: hex(8) };
    headers.set("traceparent", `00-${ctx.traceId}-${ctx.spanId}-01`);
  }
  lastTraceId = ctx.traceId;
  const method = (init.method || "GET").toUpperCase();
  const click = method === "POST" && path === "/v1/download/initiate" ? clickStart : null;
  if (click) clickStart = null;
  const start = click || nanos();
  let res = null, error = null;
  try {
    res = await send(input, { ...init, headers });
    return res;
  } catch (e) {
    error = e;
    throw e;
  } finally {
    const failed = error !== null || res.status >= 500;
    if (click || failed) {
      span(ctx, click ? "click Start download" : `${method} ${path}`, start, failed, {
        "http.request.method": method, "url.path": path, "http.response.status_code": res ? res.status : 0,
      });
    }
    if (failed) {
      const why = error ? `${error.message}` : `answered ${res.status}`;
      report("ApiError", `${method} ${path}: ${why}`, ctx.traceId, res && res.headers.get("x-request-id"));
    }
  }
};

function span(ctx, name, start, failed, attrs) {
  const attributes = Object.entries(attrs).map(([key, v]) =>
    ({ key, value: typeof v === "number" ? { intValue: v } : { stringValue: String(v) } }));
  queue.push({ traceId: ctx.traceId, spanId: ctx.spanId, name, kind: 3, startTimeUnixNano: start,
    endTimeUnixNano: nanos(), attributes, status: { code: failed ? 2 : 0 } });
  setTimeout(flush, 200);
}

async function flush() {
  if (!queue.length || !(await config).traces) return;
  const spans = queue.splice(0, 64);
  const resource = { attributes: [{ key: "service.name", value: { stringValue: SERVICE } }] };
  const body = JSON.stringify({ resourceSpans: [{ resource, scopeSpans: [{ scope: { name: SERVICE }, spans }] }] });
  send("/telemetry/traces", { method: "POST", headers: { "content-type": "application/json" }, body, keepalive: true })
    .catch(() => {});
}
addEventListener("pagehide", flush);

// --- Sentry: the envelope endpoint, by hand ----------------------------------------------------

function envelopeUrl(dsn) {
  const u = new URL(dsn);
  const project = u.pathname.split("/").filter(Boolean).pop();
  const prefix = u.pathname.slice(0, u.pathname.lastIndexOf("/"));
  return `${u.protocol}//${u.host}${prefix}/api/${project}/envelope/?sentry_version=7&sentry_key=${u.username}`;
}

async function envelope(header, type, item) {
  const { sentryDsn } = await config;
  if (!sentryDsn) return false;
  const body = [JSON.stringify({ ...header, dsn: sentryDsn, sent_at: new Date().toISOString() }),
    JSON.stringify({ type }), JSON.stringify(item)].join("\n");
  // text/plain and no-cors: a simple request, no preflight (Sentry reads the envelope anyway).
  await send(envelopeUrl(sentryDsn), { method: "POST", body, mode: "no-cors", keepalive: true }).catch(() => {});
  return true;
}

async function report(type, message, traceId, requestId, stack) {
  const eventId = hex(16);
  const event = {
    event_id: eventId, timestamp: Date.now() / 1000, platform: "javascript", level: "error",
    logger: SERVICE, release: "delineate@1.0.0", request: { url: location.href },
    exception: { values: [{ type, value: message, ...(stack ? { stacktrace: { frames: stack } } : {}) }] },
    tags: { trace_id: traceId || lastTraceId || "none", request_id: requestId || "none", page: location.pathname },
    contexts: { trace: { trace_id: traceId || lastTraceId, span_id: hex(8) } },
  };
  if (await envelope({ event_id: eventId }, "event", event)) feedback(eventId, event.tags.trace_id);
}

addEventListener("error", (e) => report(e.error ? e.error.name : "Error", e.message, "", "", null));
addEventListener("unhandledrejection", (e) => {
  const reason = e.reason || {};
  report(reason.name || "UnhandledRejection", String(reason.message || reason), "", "", null);
});

// --- the feedback dialog -----------------------------------------------------------------------

let lastDialog = 0;

function feedback(eventId, traceId) {
  if (Date.now() - lastDialog < 30000 || document.querySelector("#feedback[open]")) return;
  lastDialog = Date.now();
  const dialog = document.querySelector("#feedback") || document.body.appendChild(document.createElement("dialog"));
  dialog.id = "feedback";
  dialog.setAttribute("aria-labelledby", "feedback-title");
  dialog.innerHTML = `<style>#feedback { max-width: 32rem; border: 1px solid #d6dbe0; border-radius: .5rem; }
    #feedback textarea, #feedback input { width: 100%; box-sizing: border-box; font: inherit; margin-bottom: .5rem; }</style>
  <form method="dialog">
    <h2 id="feedback-title">Something went wrong</h2>
    <p>It has been reported. If you tell us what you were doing, it helps us fix it.</p>
    <label for="feedback-text">What happened?</label>
    <textarea id="feedback-text" rows="3"></textarea>
    <label for="feedback-email">Email (optional)</label>
    <input id="feedback-email" type="email" autocomplete="email">
    <p class="hint">Trace <code></code></p>
    <p class="actions"><button value="send">Send</button> <button value="close" class="cancel">Close</button></p>
  </form>`;
  dialog.querySelector("code").textContent = traceId;
  dialog.onclose = () => {
    const comments = dialog.querySelector("#feedback-text").value.trim();
    if (dialog.returnValue !== "send" || !comments) return;
    envelope({ event_id: eventId }, "user_report", {
      event_id: eventId, name: "page user", email: dialog.querySelector("#feedback-email").value.trim(), comments,
    });
  };
  dialog.showModal();
}
