// Node socket.io with its Redis adapter: the same reference server as
// bench/reference/socketio_server.py (rooms per channel, fan-out through Redis pub/sub), on
// the runtime and library most real-time services use.
//
// Clients speak Engine.IO 4 over WebSocket and emit("join", channel) (acknowledged); frames
// arrive as 42["frame","<json>"]. POST /publish {"channels": [...], "rate": 2, "seconds": 20}
// starts the same schedule as bench/reference/publisher.py; GET /health answers.
//   PORT=8000 REDIS_URL=redis://127.0.0.1:6379/0 NODE_PATH=.cache/npm/node_modules node server.js
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

function frame(channel, seq, steps) {
  return JSON.stringify({
    type: seq >= steps ? "completed" : "progress",
    jobId: channel,
    seq,
    ts: Date.now(),
    progress: Math.round((1000 * seq) / steps) / 10,
    bytesDone: seq * 26214,
    bytesTotal: steps * 26214,
    filesDone: 0,
    traceId: "0".repeat(32),
  });
}

// One channel's frames on a fixed schedule (seq 1..steps, then the terminal frame), each
// timer set against the start so a late one does not push the rest back.
function publishChannel(io, channel, rate, seconds, offsetS) {
  const steps = Math.max(1, Math.floor(rate * seconds));
  const start = Date.now() + offsetS * 1000;
  let seq = 1;
  const next = () => {
    io.to(channel).emit("frame", frame(channel, seq, steps + 1));
    seq += 1;
    if (seq <= steps + 1) {
      setTimeout(next, Math.max(0, start + ((seq - 1) * 1000) / rate - Date.now()));
    }
  };
  setTimeout(next, Math.max(0, start - Date.now()));
}

function reply(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

async function main() {
  const url = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  let io;
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/health") {
      return reply(res, 200, { status: "healthy" });
    }
    if (req.method === "POST" && req.url === "/publish") {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        const { channels, rate, seconds } = JSON.parse(body);
        channels.forEach((channel, i) => {
          const offset = i / Math.max(1, channels.length) / rate;
          publishChannel(io, channel, Number(rate), Number(seconds), offset);
        });
        reply(res, 202, { channels: channels.length });
      });
      return undefined;
    }
    return reply(res, 404, { error: "not_found" });
  });
  io = new Server(server, {
    adapter: createAdapter(pub, sub),
    transports: ["websocket"],
    cors: { origin: "*" },
    perMessageDeflate: false,
  });
  io.on("connection", (socket) => {
    socket.on("join", (channel, ack) => {
      socket.join(channel);
      if (typeof ack === "function") ack(true); // tells the client it is in the room
    });
  });
  const port = Number(process.env.PORT || 8000);
  server.listen(port, "127.0.0.1");
  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
