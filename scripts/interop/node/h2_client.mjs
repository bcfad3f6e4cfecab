// A WebSocket client over HTTP/2 (RFC 8441) made of Node's own `http2` and `zlib`: a peer
// nobody here wrote for the HTTP/2 side, with a minimal RFC 6455 frame codec on top.
//
// node h2_client.mjs URL
//   Connects to URL (http:// with prior knowledge, h2c, or https:// with ALPN h2; trust a
//   test certificate with NODE_EXTRA_CA_CERTS), checks that the server advertises
//   SETTINGS_ENABLE_CONNECT_PROTOCOL, opens an extended CONNECT (:protocol websocket)
//   offering permessage-deflate with server_no_context_takeover, expects 200, echoes a
//   text, 64 KiB of random binary and 1 MiB of compressible text (checked byte for byte),
//   then closes with 1000 and expects the server's 1000 and the end of the stream. Prints
//   one JSON line with what happened, then OK.
import http2 from "node:http2";
import { randomBytes } from "node:crypto";
import { encodeFrame, frameReader } from "./ws_frames.mjs";

const url = new URL(process.argv[2]);
const fail = (why) => {
  console.error(`h2_client: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 30_000).unref();

const frame = (opcode, payload) => encodeFrame(opcode, payload, { masked: true });

const session = http2.connect(url.origin);
session.on("error", (error) => fail(`session: ${error.message}`));
session.once("remoteSettings", (settings) => {
  if (!settings.enableConnectProtocol) fail("no SETTINGS_ENABLE_CONNECT_PROTOCOL");
  const stream = session.request(
    {
      ":method": "CONNECT",
      ":protocol": "websocket",
      ":scheme": url.protocol.slice(0, -1),
      ":path": url.pathname + url.search,
      ":authority": url.host,
      "sec-websocket-version": "13",
      "sec-websocket-extensions": "permessage-deflate; server_no_context_takeover",
    },
    { endStream: false },
  );
  const outcome = { http: 2 };
  const messages = [
    [0x1, Buffer.from("hello over HTTP/2 ✓")],
    [0x2, randomBytes(64 << 10)],
    [0x1, Buffer.from("compressible ".repeat(80_000))],
  ];
  let echoed = 0;
  stream.on("response", (headers) => {
    outcome.status = headers[":status"];
    outcome.extensions = headers["sec-websocket-extensions"] ?? null;
    if (outcome.status !== 200) fail(`status ${outcome.status}`);
    for (const [opcode, payload] of messages) stream.write(frame(opcode, payload));
  });
  stream.on(
    "data",
    frameReader({ masked: false, onError: fail, onMessage: (opcode, payload) => {
      if (opcode === 0x8) {
        outcome.close = payload.length >= 2 ? payload.readUInt16BE(0) : null;
        // The closing handshake is over: end our half of the stream, as a TCP client
        // would close its socket.
        stream.end();
        return;
      }
      if (opcode === 0x9) return stream.write(frame(0xa, payload));
      if (opcode === 0xa) return;
      const [wantOpcode, want] = messages[echoed];
      if (opcode !== wantOpcode || !payload.equals(want)) {
        fail(`echo ${echoed}: opcode ${opcode}, ${payload.length} bytes`);
      }
      echoed += 1;
      if (echoed === messages.length) {
        outcome.echoes = echoed;
        const close = Buffer.alloc(2);
        close.writeUInt16BE(1000);
        stream.write(frame(0x8, close));
      }
    } }),
  );
  stream.on("end", () => {
    if (outcome.close !== 1000) fail(`ended without the server's 1000: ${JSON.stringify(outcome)}`);
    console.log(JSON.stringify(outcome));
    console.log("OK");
    session.close();
  });
  stream.on("error", (error) => fail(`stream: ${error.message}`));
});
