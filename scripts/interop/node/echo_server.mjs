#!/usr/bin/env node
// WebSocket echo server built on Node's `ws` package: an interop peer for wsline's tests
// (crates/wsline/tests/interop_node.rs).
//
// Usage: node echo_server.mjs [--host HOST] [--port PORT] (--deflate | --no-deflate)
//
// ws's server leaves permessage-deflate off unless asked (--no-deflate is that default);
// the tests always say which they want. PORT 0 (the default) picks a free port.
//
// Prints, one line each:
//   echo server listening on ws://HOST:PORT   once it listens (the port it got)
//   open PATH EXTENSIONS                      when a connection opens (EXTENSIONS: the
//                                             negotiated ones, or "none")
//   close CODE REASON                         when it ends: the close frame it received
//                                             (1005: one without a code, 1006: none)
// and echoes every text message as text, every binary message as binary. A connection to a
// URL with `?close=CODE&reason=REASON` is closed by the server with that code and reason as
// soon as it opens, without echoing anything.

import { WebSocketServer } from 'ws';

const MAX_MESSAGE_SIZE = 16 << 20;

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 0, deflate: false };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--host':
        args.host = argv[++i];
        break;
      case '--port':
        args.port = Number(argv[++i]);
        break;
      case '--deflate':
        args.deflate = true;
        break;
      case '--no-deflate':
        args.deflate = false;
        break;
      default:
        console.error(
          'usage: echo_server.mjs [--host HOST] [--port PORT] (--deflate | --no-deflate)',
        );
        process.exit(2);
    }
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const server = new WebSocketServer({
  host: args.host,
  port: args.port,
  perMessageDeflate: args.deflate,
  maxPayload: MAX_MESSAGE_SIZE,
});

server.on('listening', () => {
  const { port } = server.address();
  console.log(`echo server listening on ws://${args.host}:${port}`);
});

server.on('connection', (ws, request) => {
  const url = new URL(request.url, 'ws://peer');
  console.log(`open ${url.pathname} ${ws.extensions || 'none'}`);
  ws.on('close', (code, reason) => console.log(`close ${code} ${reason.toString()}`));
  // A failure (a protocol error by the peer) also ends in 'close', with 1006 or the code sent.
  ws.on('error', (error) => console.error(`echo server: ${error.message}`));
  const close = url.searchParams.get('close');
  if (close !== null) {
    ws.close(Number(close), url.searchParams.get('reason') ?? '');
    return;
  }
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const ws of server.clients) ws.terminate();
    server.close(() => process.exit(0));
  });
}
