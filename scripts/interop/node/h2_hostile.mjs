// Hostile and heavy HTTP/2 input for a WebSocket server (RFC 8441, RFC 9113), from Node's own
// `http2`: nobody here wrote the HTTP/2 side.
//
// node h2_hostile.mjs URL STREAMS
//   Against URL (http://, h2c), on one connection unless said otherwise:
//   - a CONNECT without :protocol, and one with :protocol webtransport: their :status;
//   - a WebSocket stream reset (RST_STREAM CANCEL) in the middle of a frame, then another
//     stream on the same connection that must still echo;
//   - STREAMS WebSocket streams opened at once, each echoing one message and closing: how
//     many echoed and how many were refused, then one more stream that must echo;
//   - 10,000 SETTINGS frames on a new connection, then a stream on it (or a new
//     connection, if the server ended that one) that must echo.
//   Prints one JSON line with what happened, then OK; exits 1 when an echo that must work
//   does not.
import http2 from "node:http2";
import { randomBytes } from "node:crypto";
import { encodeFrame } from "./ws_frames.mjs";

const url = new URL(process.argv[2]);
const streams = Number(process.argv[3] ?? 1000);
const fail = (why) => {
  console.error(`h2_hostile: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 60_000).unref();

const frame = (opcode, payload, fin = true) => encodeFrame(opcode, payload, { masked: true, fin });

let maxConcurrentStreams;
const connect = () =>
  new Promise((resolve, reject) => {
    const session = http2.connect(url.origin);
    session.once("remoteSettings", (settings) => {
      maxConcurrentStreams = settings.maxConcurrentStreams;
      resolve(session);
    });
    session.once("error", reject);
  });

const websocket = (session) =>
  session.request(
    {
      ":method": "CONNECT",
      ":protocol": "websocket",
      ":scheme": "http",
      ":path": url.pathname,
      ":authority": url.host,
      "sec-websocket-version": "13",
    },
    { endStream: false },
  );

// Opens a WebSocket stream, sends `text`, resolves with the echoed text (or rejects).
const echo = (session, text) =>
  new Promise((resolve, reject) => {
    const stream = websocket(session);
    let got = Buffer.alloc(0);
    stream.on("response", (headers) => {
      if (headers[":status"] !== 200) reject(new Error(`status ${headers[":status"]}`));
      else stream.write(frame(0x1, Buffer.from(text)));
    });
    stream.on("data", (chunk) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 2 && got.length >= 2 + (got[1] & 0x7f)) {
        const payload = got.subarray(2, 2 + (got[1] & 0x7f)).toString();
        const close = Buffer.alloc(2);
        close.writeUInt16BE(1000);
        stream.end(frame(0x8, close));
        resolve(payload);
      }
    });
    stream.on("error", reject);
    stream.on("close", () => reject(new Error(`closed, code ${stream.rstCode}`)));
  });

const status = (session, headers) =>
  new Promise((resolve) => {
    const stream = session.request(headers, { endStream: false });
    stream.on("response", (h) => {
      resolve(h[":status"]);
      stream.close();
    });
    stream.on("error", (error) => resolve(`error ${error.code}`));
  });

const outcome = {};
const session = await connect();
outcome.maxConcurrentStreams = maxConcurrentStreams;
outcome.connectWithoutProtocol = await status(session, {
  ":method": "CONNECT",
  ":authority": url.host,
});
outcome.otherProtocol = await status(session, {
  ":method": "CONNECT",
  ":protocol": "webtransport",
  ":scheme": "http",
  ":path": url.pathname,
  ":authority": url.host,
  "sec-websocket-version": "13",
});

// A reset in the middle of a frame.
await new Promise((resolve) => {
  const stream = websocket(session);
  stream.on("response", () => {
    const whole = frame(0x2, randomBytes(1000));
    stream.write(whole.subarray(0, 500), () => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      resolve();
    });
  });
  stream.on("error", () => {});
});
outcome.afterReset = (await echo(session, "after a reset")) === "after a reset";
if (!outcome.afterReset) fail("no echo after a reset");

// Many streams at once.
const results = await Promise.allSettled(
  Array.from({ length: streams }, (_, i) => echo(session, `stream ${i}`)),
);
outcome.streams = streams;
outcome.echoed = results.filter((r, i) => r.status === "fulfilled" && r.value === `stream ${i}`).length;
outcome.refused = results.filter((r) => r.status === "rejected").length;
outcome.refusedReasons = [...new Set(results.filter((r) => r.status === "rejected").map((r) => r.reason.message))].slice(0, 3);
outcome.afterMany = (await echo(session, "after many")) === "after many";
if (!outcome.afterMany) fail("no echo after many streams");
session.close();

// A SETTINGS flood.
const flooded = await connect();
let ended = false;
flooded.on("goaway", (code) => {
  outcome.goaway = code;
  ended = true;
});
flooded.on("error", () => {
  ended = true;
});
for (let i = 0; i < 10_000 && !ended; i++) {
  try {
    flooded.settings({ initialWindowSize: 65535 + (i % 2) });
  } catch {
    ended = true;
  }
}
await new Promise((resolve) => setTimeout(resolve, 500));
const after = ended || flooded.destroyed ? await connect() : flooded;
outcome.afterFlood = (await echo(after, "after a flood")) === "after a flood";
if (!outcome.afterFlood) fail("no echo after a SETTINGS flood");
after.close();
if (!flooded.destroyed) flooded.destroy();

console.log(JSON.stringify(outcome));
console.log("OK");
