#!/usr/bin/env node
// WebSocket client built on Node's `ws` package: an interop peer for wsline's tests
// (crates/wsline/tests/interop_node.rs) that checks an echo server.
//
// Usage: node client.mjs URL (--deflate | --no-deflate) [--expect-deflate | --expect-no-deflate]
//                        [--close CODE REASON] [--expect-close CODE REASON] [--timeout SECONDS]
//
// ws's client offers permessage-deflate unless told not to (--deflate is that default); the
// tests always say which they want.
//
// By default it sends text (with non-ASCII), binary, 1 MiB of random binary, a large
// compressible text, an empty text, an empty binary and a text in three fragments that cut
// UTF-8 characters in two; checks that each comes back byte for byte and of the same type;
// pings and checks the pong's payload; then closes with CODE and REASON (default 1000 and
// none) and checks that the server's close frame carries the same code.
//
// With --expect-close it sends nothing and waits for the server to close with CODE and
// REASON.
//
// --expect-deflate / --expect-no-deflate check what the handshake negotiated.
//
// Prints OK and exits 0 if everything matched; otherwise prints a MISMATCH line for each
// difference (or FAILED for an error or timeout) and exits 1.

import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';

const MAX_MESSAGE_SIZE = 16 << 20;

function usage() {
  console.error(
    'usage: client.mjs URL (--deflate | --no-deflate) [--expect-deflate | --expect-no-deflate]\n' +
      '                  [--close CODE REASON] [--expect-close CODE REASON] [--timeout SECONDS]',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const args = {
    deflate: true,
    expectDeflate: null,
    close: [1000, ''],
    expectClose: null,
    timeout: 20,
  };
  const code = (text) => {
    const value = Number(text);
    if (!Number.isInteger(value)) usage();
    return value;
  };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--deflate':
        args.deflate = true;
        break;
      case '--no-deflate':
        args.deflate = false;
        break;
      case '--expect-deflate':
        args.expectDeflate = true;
        break;
      case '--expect-no-deflate':
        args.expectDeflate = false;
        break;
      case '--close':
        args.close = [code(argv[++i]), argv[++i] ?? usage()];
        break;
      case '--expect-close':
        args.expectClose = [code(argv[++i]), argv[++i] ?? usage()];
        break;
      case '--timeout':
        args.timeout = Number(argv[++i]);
        break;
      default:
        if (args.url !== undefined || argv[i].startsWith('--')) usage();
        args.url = argv[i];
    }
  }
  if (args.url === undefined) usage();
  return args;
}

let failed = false;

function mismatch(what) {
  failed = true;
  console.log(`MISMATCH ${what}`);
}

/** A short description of a message for a mismatch line. */
function describe(data, isBinary) {
  const head = data.subarray(0, 16).toString('hex');
  const more = data.length > 16 ? '...' : '';
  return `${isBinary ? 'binary' : 'text'} of ${data.length} bytes (${head}${more})`;
}

/** What the connection did, in order: 'open', 'message', 'pong', 'close', 'error'. */
class Events {
  constructor(ws) {
    this.queue = [];
    this.waiting = null;
    ws.on('open', () => this.push({ type: 'open' }));
    ws.on('message', (data, isBinary) => this.push({ type: 'message', data, isBinary }));
    ws.on('pong', (data) => this.push({ type: 'pong', data }));
    ws.on('close', (code, reason) => this.push({ type: 'close', code, reason: reason.toString() }));
    ws.on('error', (error) => this.push({ type: 'error', error }));
  }

  push(event) {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve(event);
    } else {
      this.queue.push(event);
    }
  }

  next() {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  /** The next event, which should be of `type`; `null` (after a FAILED line) if not. */
  async expect(type, step) {
    const event = await this.next();
    if (event.type === type) return event;
    failed = true;
    const detail =
      event.type === 'error'
        ? event.error.message
        : event.type === 'close'
          ? `close ${event.code} ${event.reason}`
          : event.type;
    console.log(`FAILED ${step}: expected ${type}, got ${detail}`);
    return null;
  }
}

/** The messages to echo: [name, fragments, isBinary]; a message of several fragments is sent
 * as a fragmented message. */
function messages() {
  const fragmented = Buffer.from('fragmenté ✓ 🦀 '.repeat(300));
  // Cut inside the two-byte "é" and inside the four-byte crab, so that no fragment is valid
  // UTF-8 on its own.
  const first = fragmented.indexOf('é') + 1;
  const second = fragmented.indexOf('🦀', 2048) + 2;
  return [
    ['non-ASCII text', [Buffer.from('héllo wörld ✓ 🦀')], false],
    ['small binary', [Buffer.from([0, 1, 0xff])], true],
    ['1 MiB binary', [randomBytes(1 << 20)], true],
    ['compressible text', [Buffer.from('compressible '.repeat(80_000))], false],
    ['empty text', [Buffer.alloc(0)], false],
    ['empty binary', [Buffer.alloc(0)], true],
    [
      'fragmented text',
      [
        fragmented.subarray(0, first),
        fragmented.subarray(first, second),
        fragmented.subarray(second),
      ],
      false,
    ],
  ];
}

async function exchange(ws, events) {
  for (const [name, fragments, isBinary] of messages()) {
    fragments.forEach((fragment, i) => {
      ws.send(fragment, { binary: isBinary, fin: i === fragments.length - 1 });
    });
    const event = await events.expect('message', `echo of ${name}`);
    if (!event) return;
    const sent = Buffer.concat(fragments);
    if (event.isBinary !== isBinary || !event.data.equals(sent)) {
      const got = describe(event.data, event.isBinary);
      mismatch(`${name}: sent ${describe(sent, isBinary)}, got ${got}`);
    }
  }
  const payload = randomBytes(8);
  ws.ping(payload);
  const pong = await events.expect('pong', 'pong');
  if (pong && !pong.data.equals(payload)) {
    mismatch(`pong: pinged ${payload.toString('hex')}, got ${pong.data.toString('hex')}`);
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const timer = setTimeout(() => {
    console.log(`FAILED timed out after ${args.timeout} s`);
    process.exit(1);
  }, args.timeout * 1000);
  const ws = new WebSocket(args.url, {
    perMessageDeflate: args.deflate,
    maxPayload: MAX_MESSAGE_SIZE,
  });
  const events = new Events(ws);
  if (await events.expect('open', 'open')) {
    const negotiated = ws.extensions.includes('permessage-deflate');
    if (args.expectDeflate !== null && negotiated !== args.expectDeflate) {
      const extensions = JSON.stringify(ws.extensions);
      mismatch(`negotiated extensions ${extensions}, expected deflate ${args.expectDeflate}`);
    }
    if (args.expectClose) {
      const [code, reason] = args.expectClose;
      const close = await events.expect('close', 'the server closes');
      if (close && (close.code !== code || close.reason !== reason)) {
        const got = `${close.code} ${JSON.stringify(close.reason)}`;
        mismatch(`server closed with ${got}, expected ${code} ${JSON.stringify(reason)}`);
      }
    } else {
      await exchange(ws, events);
      if (!failed) {
        const [code, reason] = args.close;
        ws.close(code, reason);
        const close = await events.expect('close', 'the closing handshake');
        if (close && close.code !== code) {
          const got = `${close.code} ${JSON.stringify(close.reason)}`;
          mismatch(`closed with ${code}, the server answered ${got}`);
        }
      }
    }
  }
  clearTimeout(timer);
  ws.terminate();
  if (failed) process.exit(1);
  console.log('OK');
}

main();
