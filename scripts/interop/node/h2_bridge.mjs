// A byte pipe between a WebSocket over HTTP/1.1 and the same WebSocket over HTTP/2
// (RFC 8441), made of Node's own `net` and `http2`, so that the Autobahn TestSuite (which
// speaks HTTP/1.1 only) can run its cases against wsline's HTTP/2 server and client
// (scripts/autobahn.py --http2-bridge). After the handshakes it copies bytes both ways and
// never looks at a frame: what the suite sees is what the far side sent.
//
// node h2_bridge.mjs to-h2 PORT
//   Listens for HTTP/1.1 WebSocket clients and opens each as an extended CONNECT stream
//   on one h2c connection (prior knowledge) to 127.0.0.1:PORT, forwarding the offered
//   extensions and subprotocols and answering 101 with what the server accepted (any other
//   status is passed on with its body).
// node h2_bridge.mjs to-h1 PORT
//   Listens as an h2c server with SETTINGS_ENABLE_CONNECT_PROTOCOL and opens each extended
//   CONNECT (:protocol websocket) as an HTTP/1.1 upgrade to 127.0.0.1:PORT, answering 200
//   with what that server accepted (another status is passed on).
//
// Both print the port they listen on (127.0.0.1, a free port), then run until killed. The
// end of a direction is passed on as the end of the other (FIN ↔ END_STREAM); a reset or
// an error on one side destroys the other.
import http2 from "node:http2";
import net from "node:net";
import { createHash, randomBytes } from "node:crypto";

const [mode, targetArg] = process.argv.slice(2);
const target = Number(targetArg);
if (!["to-h2", "to-h1"].includes(mode) || !Number.isInteger(target)) {
  console.error("usage: node h2_bridge.mjs to-h2|to-h1 PORT");
  process.exit(2);
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
// The suite sends messages of up to 16 MiB: windows that do not make each one wait for
// many WINDOW_UPDATE round trips.
const SETTINGS = { initialWindowSize: 8 << 20, maxFrameSize: 1 << 20 };
const MAX_HEAD = 64 << 10;
// Headers copied between the HTTP/1.1 head and the HTTP/2 header block.
const FORWARDED = ["sec-websocket-extensions", "sec-websocket-protocol", "origin"];

const acceptKey = (key) => createHash("sha1").update(key + GUID).digest("base64");

/// Reads an HTTP/1.1 head from `socket`; calls `done(head, rest)` with the parsed head and
/// the bytes after it, or destroys the socket on a head that is too long or cut short.
function readHead(socket, done) {
  let buffered = Buffer.alloc(0);
  const onData = (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    const end = buffered.indexOf("\r\n\r\n");
    if (end < 0) {
      if (buffered.length > MAX_HEAD) socket.destroy();
      return;
    }
    socket.off("data", onData);
    socket.pause();
    const [start, ...lines] = buffered.subarray(0, end).toString("latin1").split("\r\n");
    const headers = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon > 0) {
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
      }
    }
    done({ start: start.split(" "), headers }, buffered.subarray(end + 4));
  };
  socket.on("data", onData);
}

/// Copies bytes both ways between a TCP socket and an HTTP/2 stream, ends passed on.
function pipe(socket, stream, rest) {
  if (rest.length) stream.write(rest);
  socket.pipe(stream);
  stream.pipe(socket);
  socket.resume();
  const destroyBoth = () => {
    socket.destroy();
    if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
  };
  socket.on("error", destroyBoth);
  stream.on("error", destroyBoth);
  // A stream reset (or closed before its end was read) takes the socket down with it.
  stream.on("close", () => {
    if (stream.rstCode && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) socket.destroy();
    else socket.end();
  });
  socket.on("close", () => {
    if (!stream.destroyed) stream.end();
  });
}

function forwarded(from) {
  const out = {};
  for (const name of FORWARDED) if (from[name] !== undefined) out[name] = from[name];
  return out;
}

/// HTTP/1.1 in, HTTP/2 out: one h2c session to the target, made again once it ends.
function toH2() {
  let session = null;
  let ready = null;
  const connected = () => {
    if (session && !session.closed && !session.destroyed) return ready;
    session = http2.connect(`http://127.0.0.1:${target}`, { settings: SETTINGS });
    session.on("error", (error) => console.error(`h2_bridge: session: ${error.message}`));
    const current = session;
    ready = new Promise((resolve, reject) => {
      current.once("remoteSettings", (settings) =>
        settings.enableConnectProtocol
          ? resolve(current)
          : reject(new Error("no SETTINGS_ENABLE_CONNECT_PROTOCOL")),
      );
      current.once("close", () => reject(new Error("session closed")));
    });
    ready.catch(() => {});
    return ready;
  };
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => {});
    readHead(socket, async ({ start, headers }, rest) => {
      let h2;
      try {
        h2 = await connected();
      } catch (error) {
        socket.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n`);
        return;
      }
      const stream = h2.request(
        {
          ":method": "CONNECT",
          ":protocol": "websocket",
          ":scheme": "http",
          ":path": start[1],
          ":authority": headers.host ?? `127.0.0.1:${target}`,
          "sec-websocket-version": "13",
          ...forwarded(headers),
        },
        { endStream: false },
      );
      stream.on("error", () => socket.destroy());
      stream.once("response", (response) => {
        const status = response[":status"];
        if (status !== 200) {
          socket.write(`HTTP/1.1 ${status} Refused\r\nConnection: close\r\n\r\n`);
          stream.pipe(socket);
          return;
        }
        const lines = [
          "HTTP/1.1 101 Switching Protocols",
          "Upgrade: websocket",
          "Connection: Upgrade",
          `Sec-WebSocket-Accept: ${acceptKey(headers["sec-websocket-key"] ?? "")}`,
        ];
        for (const [name, value] of Object.entries(forwarded(response))) {
          lines.push(`${name}: ${value}`);
        }
        socket.write(lines.join("\r\n") + "\r\n\r\n");
        pipe(socket, stream, rest);
      });
    });
  });
  server.listen(0, "127.0.0.1", () => console.log(server.address().port));
}

/// HTTP/2 in, HTTP/1.1 out: each extended CONNECT gets a TCP connection of its own.
function toH1() {
  const server = http2.createServer({ settings: { ...SETTINGS, enableConnectProtocol: true } });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    if (headers[":method"] !== "CONNECT" || headers[":protocol"] !== "websocket") {
      stream.respond({ ":status": 400 });
      return stream.end("not a WebSocket\n");
    }
    const socket = net.connect(target, "127.0.0.1");
    socket.setNoDelay(true);
    socket.on("error", () => stream.close(http2.constants.NGHTTP2_CONNECT_ERROR));
    const lines = [
      `GET ${headers[":path"]} HTTP/1.1`,
      `Host: 127.0.0.1:${target}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}`,
      "Sec-WebSocket-Version: 13",
    ];
    for (const [name, value] of Object.entries(forwarded(headers))) lines.push(`${name}: ${value}`);
    socket.write(lines.join("\r\n") + "\r\n\r\n");
    readHead(socket, ({ start, headers: answer }, rest) => {
      const status = Number(start[1]);
      if (status !== 101) {
        stream.respond({ ":status": status || 502 });
        stream.end();
        socket.destroy();
        return;
      }
      stream.respond({ ":status": 200, ...forwarded(answer) });
      pipe(socket, stream, rest);
    });
  });
  server.listen(0, "127.0.0.1", () => console.log(server.address().port));
}

if (mode === "to-h2") toH2();
else toH1();
