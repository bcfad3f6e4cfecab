// Peer fan-out server: Node `ws` with the usual broadcast loop.
//
// The room protocol of bench/README.md: the request path names the room; every
// text or binary message a client sends goes to every OTHER open client in that
// room, unchanged (same opcode, same payload). No permessage-deflate.
//
// Usage: node fanout_ws.mjs --port PORT   (binds 127.0.0.1:PORT)
// Needs `npm install` in this directory (bench/run.py does it).

import { WebSocketServer, WebSocket } from "ws";

/** Parses `--port P` / `--port=P`; exits 2 on anything else. */
function parsePort(argv) {
  let port;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = arg === "--port" ? argv[++i] : arg.startsWith("--port=") ? arg.slice(7) : undefined;
    if (value === undefined || !/^\d+$/.test(value) || Number(value) > 65535) {
      console.error("usage: node fanout_ws.mjs --port PORT   (binds 127.0.0.1:PORT)");
      process.exit(2);
    }
    port = Number(value);
  }
  if (port === undefined) {
    console.error("usage: node fanout_ws.mjs --port PORT   (binds 127.0.0.1:PORT)");
    process.exit(2);
  }
  return port;
}

const port = parsePort(process.argv.slice(2));
/** room name (the request path) -> Set of its clients */
const rooms = new Map();

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024, // like the Rust peers (ws's default is 100 MiB)
  clientTracking: false, // the rooms track clients
  backlog: 4096,
});

wss.on("connection", (ws, req) => {
  const name = new URL(req.url, "http://x").pathname;
  let room = rooms.get(name);
  if (room === undefined) {
    room = new Set();
    rooms.set(name, room);
  }
  room.add(ws);
  ws.on("message", (data, isBinary) => {
    for (const c of room) {
      if (c !== ws && c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
    }
  });
  ws.on("close", () => {
    room.delete(ws);
    if (room.size === 0) rooms.delete(name);
  });
  // Abrupt disconnects at the end of a run are expected.
  ws.on("error", () => {});
});

wss.on("listening", () => {
  console.error(`fanout_ws (node ${process.version}) listening on 127.0.0.1:${port}`);
});
wss.on("error", (e) => {
  console.error(`fanout_ws: ${e.message}`);
  process.exit(1);
});
