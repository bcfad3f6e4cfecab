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
import { encodeFrame, frameReader } from "./ws_frames.mjs";

const serverFrame = (opcode, payload) => encodeFrame(opcode, payload, { masked: false });

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
    frameReader({
      masked: true,
      onMessage: (opcode, payload) => {
        if (opcode === 0x8) {
          stream.end(serverFrame(0x8, payload.subarray(0, 2)));
        } else if (opcode === 0x9) {
          stream.write(serverFrame(0xa, payload));
        } else if (opcode === 0x1 || opcode === 0x2) {
          stream.write(serverFrame(opcode, payload));
        }
      },
      onError: (why) => stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR, () => console.error(why)),
    }),
  );
  stream.on("error", () => {});
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
