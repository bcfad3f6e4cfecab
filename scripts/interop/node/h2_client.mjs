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
import { constants, inflateRawSync } from "node:zlib";

const url = new URL(process.argv[2]);
const fail = (why) => {
  console.error(`h2_client: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 30_000).unref();

function frame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = 0x80 | opcode;
  if (len < 126) head[1] = 0x80 | len;
  else if (len < 65536) {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  const key = randomBytes(4);
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([head, key, masked]);
}

// Reassembles server frames into messages: { opcode, payload } (inflated when RSV1 is set).
function reader(onMessage) {
  let buffered = Buffer.alloc(0);
  let parts = [];
  let first = null;
  return (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (;;) {
      if (buffered.length < 2) return;
      const b0 = buffered[0];
      const b1 = buffered[1];
      if (b1 & 0x80) fail("a masked server frame");
      let len = b1 & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buffered.length < 4) return;
        len = buffered.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buffered.length < 10) return;
        len = Number(buffered.readBigUInt64BE(2));
        at = 10;
      }
      if (buffered.length < at + len) return;
      const payload = buffered.subarray(at, at + len);
      buffered = buffered.subarray(at + len);
      const opcode = b0 & 0x0f;
      if (opcode >= 0x8) {
        onMessage({ opcode, payload });
        continue;
      }
      if (opcode !== 0) first = b0;
      parts.push(payload);
      if (b0 & 0x80) {
        let whole = Buffer.concat(parts);
        if (first & 0x40) {
          // RFC 7692 §7.2.2: append the empty block the sender removed; no final block.
          whole = inflateRawSync(Buffer.concat([whole, Buffer.from([0, 0, 0xff, 0xff])]), {
            finishFlush: constants.Z_SYNC_FLUSH,
          });
        }
        onMessage({ opcode: first & 0x0f, payload: whole });
        parts = [];
      }
    }
  };
}

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
    reader(({ opcode, payload }) => {
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
    }),
  );
  stream.on("end", () => {
    if (outcome.close !== 1000) fail(`ended without the server's 1000: ${JSON.stringify(outcome)}`);
    console.log(JSON.stringify(outcome));
    console.log("OK");
    session.close();
  });
  stream.on("error", (error) => fail(`stream: ${error.message}`));
});
