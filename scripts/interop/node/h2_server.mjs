// A WebSocket echo server over HTTP/2 (RFC 8441) made of Node's own `http2`: a peer nobody
// here wrote for the HTTP/2 side, with a minimal RFC 6455 frame codec on top (no
// extension is accepted, so messages go uncompressed).
//
// node h2_server.mjs
//   Listens on 127.0.0.1 on a free port with enableConnectProtocol (h2c), prints the port,
//   and for each extended CONNECT with :protocol websocket answers 200 (echoing the first
//   offered subprotocol) and echoes every message; a close frame is answered with the same
//   code and the stream ended. Any other request gets 400. Runs until killed.
import http2 from "node:http2";

function serverFrame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = 0x80 | opcode;
  if (len < 126) head[1] = len;
  else if (len < 65536) {
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, payload]);
}

// Reassembles masked client frames into messages.
function reader(onMessage, onError) {
  let buffered = Buffer.alloc(0);
  let parts = [];
  let first = null;
  return (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (;;) {
      if (buffered.length < 2) return;
      const b0 = buffered[0];
      const b1 = buffered[1];
      if (!(b1 & 0x80)) return onError("an unmasked client frame");
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
      if (buffered.length < at + 4 + len) return;
      const key = buffered.subarray(at, at + 4);
      const payload = Buffer.from(buffered.subarray(at + 4, at + 4 + len));
      for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
      buffered = buffered.subarray(at + 4 + len);
      const opcode = b0 & 0x0f;
      if (opcode >= 0x8) {
        onMessage(opcode, payload);
        continue;
      }
      if (opcode !== 0) first = opcode;
      parts.push(payload);
      if (b0 & 0x80) {
        onMessage(first, Buffer.concat(parts));
        parts = [];
      }
    }
  };
}

const server = http2.createServer({ settings: { enableConnectProtocol: true } });
server.on("stream", (stream, headers) => {
  if (headers[":method"] !== "CONNECT" || headers[":protocol"] !== "websocket") {
    stream.respond({ ":status": 400 });
    return stream.end("not a WebSocket\n");
  }
  const offered = (headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim());
  const response = { ":status": 200 };
  if (offered[0]) response["sec-websocket-protocol"] = offered[0];
  stream.respond(response);
  stream.on(
    "data",
    reader(
      (opcode, payload) => {
        if (opcode === 0x8) {
          stream.end(serverFrame(0x8, payload.subarray(0, 2)));
        } else if (opcode === 0x9) {
          stream.write(serverFrame(0xa, payload));
        } else if (opcode === 0x1 || opcode === 0x2) {
          stream.write(serverFrame(opcode, payload));
        }
      },
      (why) => stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR, () => console.error(why)),
    ),
  );
  stream.on("error", () => {});
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
