// A minimal RFC 6455 frame codec for the HTTP/2 peers (h2_client.mjs, h2_server.mjs,
// h2_hostile.mjs): Node has HTTP/2 but no WebSocket over it.
import { randomBytes } from "node:crypto";
import { constants, inflateRawSync } from "node:zlib";

/** One frame: FIN (unless `fin` is false), `opcode`, `payload`; masked when `masked`. */
export function encodeFrame(opcode, payload, { masked, fin = true }) {
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = (fin ? 0x80 : 0) | opcode;
  const mask = masked ? 0x80 : 0;
  if (len < 126) head[1] = mask | len;
  else if (len < 65536) {
    head[1] = mask | 126;
    head.writeUInt16BE(len, 2);
  } else {
    head[1] = mask | 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  if (!masked) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  const out = Buffer.alloc(len);
  for (let i = 0; i < len; i++) out[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([head, key, out]);
}

/**
 * A `data` listener that reassembles frames into messages: `onMessage(opcode, payload)` for
 * each control frame and each whole data message (inflated when its RSV1 is set, as
 * permessage-deflate with no context takeover sends them). `masked`: whether the frames
 * must be masked (what a server reads) or must not be (what a client reads).
 */
export function frameReader({ masked, onMessage, onError }) {
  let buffered = Buffer.alloc(0);
  let parts = [];
  let first = null;
  return (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    for (;;) {
      if (buffered.length < 2) return;
      const b0 = buffered[0];
      const b1 = buffered[1];
      if (Boolean(b1 & 0x80) !== masked) return onError(masked ? "an unmasked frame" : "a masked frame");
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
      const keyLen = masked ? 4 : 0;
      if (buffered.length < at + keyLen + len) return;
      const payload = Buffer.from(buffered.subarray(at + keyLen, at + keyLen + len));
      if (masked) {
        const key = buffered.subarray(at, at + 4);
        for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
      }
      buffered = buffered.subarray(at + keyLen + len);
      const opcode = b0 & 0x0f;
      if (opcode >= 0x8) {
        onMessage(opcode, payload);
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
        onMessage(first & 0x0f, whole);
        parts = [];
      }
    }
  };
}
