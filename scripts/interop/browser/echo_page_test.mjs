#!/usr/bin/env node
// Headless Chromium talks to running `wsline serve` echo servers, proving what the README
// promises: open crates/wsline/examples/echo.html in a browser and talk to the server.
//
// For each server it
//   1. opens the page and uses it as a person would: types the server's URL, clicks Connect,
//      types a message and clicks Send, types another and presses Enter, reconnects, and
//      waits for each echo to appear in the page's log;
//   2. uses the browser's own WebSocket from the page (page.evaluate): the negotiated
//      extensions (Chromium offers permessage-deflate, RFC 7692), non-ASCII text, empty
//      messages, 1 MiB of incompressible binary, 2 MiB of compressible text, a burst of small
//      messages, and a close with code 4000 and a reason that must come back (RFC 6455 §5.5.1).
//
// With --served https://HOST:PORT/, the page comes from the server itself over HTTPS (the
// server answers a plain GET / with it; its certificate is not checked): the page load must
// have used HTTP/2, the page's URL field must name the server that served it, and — seen
// through the DevTools protocol — every WebSocket must have opened with a 200 (an RFC 8441
// extended CONNECT over that HTTP/2 connection), not a 101.
//
// Usage:
//   node echo_page_test.mjs [--chromium PATH] [--timeout-ms N]
//       (--compressed URL | --uncompressed URL | --served URL)...
// --compressed: the server negotiates permessage-deflate; --uncompressed: it was started
// with --no-compression; --served: as --compressed, over HTTP/2 from its own page. Its
// --max-message-size must allow 2 MiB (the tests use 16 MiB).
//
// Prints one line per check. Exit status: 0 if every check passed, 1 if any failed (each
// mismatch printed), 2 on a usage error, a hang past --timeout-ms, or a browser that would
// not start.
//
// Needs Debian's chromium (/usr/bin/chromium) and `npm install` here (playwright-core, pinned
// in package.json); scripts/test.sh installs both. Playwright never downloads a browser here.

import { chromium } from "playwright-core";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ECHO_PAGE = join(HERE, "../../../crates/wsline/examples/echo.html");

// Flags that keep Chromium from reaching for the (closed) network or hanging on first run.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Longest any one step (an open, an echo, a close) may take, in milliseconds. */
const STEP_TIMEOUT_MS = 15_000;

function usage(problem) {
  console.error(`echo_page_test: ${problem}`);
  console.error(
    "usage: node echo_page_test.mjs [--chromium PATH] [--timeout-ms N] " +
      "(--compressed URL | --uncompressed URL)...",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const options = { chromium: "/usr/bin/chromium", timeoutMs: 90_000, servers: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) usage(`${flag} needs a value`);
    i += 1;
    switch (flag) {
      case "--chromium":
        options.chromium = value;
        break;
      case "--timeout-ms":
        options.timeoutMs = Number(value);
        if (!(options.timeoutMs > 0)) usage(`--timeout-ms ${value}: not a positive number`);
        break;
      case "--compressed":
      case "--uncompressed":
        if (!/^ws:\/\//.test(value)) usage(`${flag} ${value}: not a ws:// URL`);
        options.servers.push({ url: value, deflate: flag === "--compressed" });
        break;
      case "--served": {
        if (!/^https:\/\//.test(value)) usage(`${flag} ${value}: not an https:// URL`);
        const page = new URL(value);
        options.servers.push({ url: `wss://${page.host}/`, deflate: true, page: page.href });
        break;
      }
      default:
        usage(`unknown argument ${flag}`);
    }
  }
  if (options.servers.length === 0) usage("no server given");
  return options;
}

/** Records check results and prints each as it comes. */
class Report {
  constructor() {
    this.failed = [];
    this.passed = 0;
  }

  check(label, name, ok, detail = "") {
    if (ok) {
      this.passed += 1;
      console.log(`ok   ${label}: ${name}${detail ? ` (${detail})` : ""}`);
    } else {
      this.failed.push(`${label}: ${name}: ${detail}`);
      console.log(`FAIL ${label}: ${name}: ${detail}`);
    }
  }
}

/** Uses echo.html as a person would: the URL field, Connect, the message field, Send, Enter. */
async function drivePage(page, server, label, report) {
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  await page.goto(server.page ?? pathToFileURL(ECHO_PAGE).href);
  if (server.page) {
    const protocol = await page.evaluate(
      () => performance.getEntriesByType("navigation")[0].nextHopProtocol,
    );
    report.check(label, "page: loaded from the server over HTTP/2", protocol === "h2",
      `nextHopProtocol ${JSON.stringify(protocol)}`);
    const prefilled = await page.inputValue("#url");
    report.check(label, "page: its URL field names the server that served it",
      prefilled === server.url, `value ${JSON.stringify(prefilled)}`);
  }

  const logLines = (kind) =>
    page.$$eval(`#log .${kind}`, (entries) => entries.map((entry) => entry.textContent));
  const waitForLogLine = (kind, line) =>
    page
      .waitForFunction(
        ([kind, line]) =>
          [...document.querySelectorAll(`#log .${kind}`)].some((e) => e.textContent === line),
        [kind, line],
      )
      .then(
        () => true,
        () => false,
      );
  const connect = async () => {
    await page.fill("#url", server.url);
    await page.click("#connect button");
  };

  await connect();
  const connected = await waitForLogLine("sys", "connected");
  report.check(label, "page: Connect opens the socket", connected, `log: ${await logLines("sys")}`);
  if (!connected) return;

  const typed = "hello from Chromium, héllo wörld ✓";
  await page.locator("#text").pressSequentially(typed);
  await page.click("#send-button");
  const echoed = await waitForLogLine("in", `< ${typed}`);
  report.check(label, "page: a message sent with the Send button comes back", echoed,
    `in: ${JSON.stringify(await logLines("in"))}`);
  report.check(label, "page: the message field is cleared after sending",
    (await page.inputValue("#text")) === "", `value: ${JSON.stringify(await page.inputValue("#text"))}`);

  const entered = "second line, sent with Enter: 日本語 🎉";
  await page.locator("#text").pressSequentially(entered);
  await page.keyboard.press("Enter");
  const echoedEnter = await waitForLogLine("in", `< ${entered}`);
  const inLines = await logLines("in");
  report.check(label, "page: a message sent with Enter comes back, in order",
    echoedEnter && JSON.stringify(inLines) === JSON.stringify([`< ${typed}`, `< ${entered}`]),
    `in: ${JSON.stringify(inLines)}`);

  // Connect again: the page closes the old socket with 1000 "reconnecting" and opens a new one.
  await connect();
  const closedClean = await waitForLogLine("sys", "closed: 1000 reconnecting (clean: true)");
  report.check(label, "page: Connect again closes the old socket cleanly with 1000", closedClean,
    `sys: ${JSON.stringify(await logLines("sys"))}`);
  const reconnected = await page
    .waitForFunction(
      () => [...document.querySelectorAll("#log .sys")].filter((e) => e.textContent === "connected").length === 2,
    )
    .then(() => true, () => false);
  report.check(label, "page: Connect again opens a new socket", reconnected,
    `sys: ${JSON.stringify(await logLines("sys"))}`);
  const enabled = !(await page.isDisabled("#text")) && !(await page.isDisabled("#send-button"));
  report.check(label, "page: after reconnecting the message field and Send are enabled", enabled,
    `sys: ${JSON.stringify(await logLines("sys"))}`);
  if (enabled) {
    const after = "after reconnecting";
    await page.locator("#text").pressSequentially(after);
    await page.keyboard.press("Enter");
    report.check(label, "page: a message sent after reconnecting comes back",
      await waitForLogLine("in", `< ${after}`), `in: ${JSON.stringify(await logLines("in"))}`);
  }

  report.check(label, "page: no script errors", pageErrors.length === 0, pageErrors.join("; "));
}

/**
 * Runs in the page: the browser's WebSocket against the server. Returns check results; never
 * throws for a mismatch. Every wait is bounded by `stepMs`.
 */
async function browserWebSocketChecks({ url, deflate, stepMs }) {
  const results = [];
  const check = (name, ok, detail = "") => results.push({ name, ok, detail });
  const within = (promise, what) =>
    Promise.race([
      promise,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`${what}: nothing within ${stepMs} ms`)), stepMs)),
    ]);

  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const inbox = [];
  const waiting = [];
  let closeEvent = null;
  ws.addEventListener("message", (event) => {
    const waiter = waiting.shift();
    if (waiter) waiter.resolve(event.data);
    else inbox.push(event.data);
  });
  const closed = new Promise((resolve) => {
    ws.addEventListener("close", (event) => {
      closeEvent = event;
      for (const waiter of waiting.splice(0)) {
        waiter.reject(new Error(`closed early: ${event.code} ${event.reason}`));
      }
      resolve(event);
    });
  });
  const next = (what) =>
    within(
      inbox.length > 0
        ? Promise.resolve(inbox.shift())
        : closeEvent
          ? Promise.reject(new Error(`closed early: ${closeEvent.code} ${closeEvent.reason}`))
          : new Promise((resolve, reject) => waiting.push({ resolve, reject })),
      what,
    );
  // Where two byte arrays first differ, or -1.
  const firstDifference = (a, b) => {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i += 1) if (a[i] !== b[i]) return i;
    return a.length === b.length ? -1 : n;
  };
  const describeText = (sent, got) => {
    if (typeof got !== "string") return `expected text, got ${Object.prototype.toString.call(got)}`;
    if (got === sent) return `${sent.length} UTF-16 units`;
    let i = 0;
    while (i < sent.length && sent[i] === got[i]) i += 1;
    return `sent ${sent.length} units, got ${got.length}; first difference at ${i}: ` +
      `${JSON.stringify(sent.slice(i, i + 20))} vs ${JSON.stringify(got.slice(i, i + 20))}`;
  };
  const echoText = async (name, text) => {
    ws.send(text);
    const got = await next(name);
    check(name, got === text, describeText(text, got));
  };

  try {
    await within(
      new Promise((resolve, reject) => {
        ws.addEventListener("open", resolve);
        ws.addEventListener("error", () => reject(new Error("error event before open")));
      }),
      "open",
    );
    check("open", true, `protocol ${JSON.stringify(ws.protocol)}`);

    // RFC 7692 §5: the server's response names the extension it accepted.
    if (deflate) {
      check("the server accepted permessage-deflate", /^permessage-deflate\b/.test(ws.extensions),
        `Sec-WebSocket-Extensions: ${JSON.stringify(ws.extensions)}`);
    } else {
      check("the server (--no-compression) accepted no extension", ws.extensions === "",
        `Sec-WebSocket-Extensions: ${JSON.stringify(ws.extensions)}`);
    }

    await echoText("non-ASCII text echoes", "héllo wörld — Ελληνικά — 日本語 — 🎉🚀 — \u0000 end");
    await echoText("an empty text message echoes", "");

    ws.send(new ArrayBuffer(0));
    const empty = await next("empty binary");
    check("an empty binary message echoes",
      empty instanceof ArrayBuffer && empty.byteLength === 0,
      empty instanceof ArrayBuffer ? `${empty.byteLength} bytes` : `got ${typeof empty}`);

    // 1 MiB that deflate cannot shrink (xorshift32 noise).
    const noise = new Uint8Array(1 << 20);
    let state = 0x9e3779b9;
    for (let i = 0; i < noise.length; i += 1) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      noise[i] = state & 0xff;
    }
    ws.send(noise.buffer);
    const noiseBack = await next("1 MiB binary");
    if (noiseBack instanceof ArrayBuffer) {
      const at = firstDifference(noise, new Uint8Array(noiseBack));
      check("1 MiB of random binary echoes byte for byte", at === -1,
        at === -1 ? `${noiseBack.byteLength} bytes` :
          `sent ${noise.length} bytes, got ${noiseBack.byteLength}; first difference at ${at}`);
    } else {
      check("1 MiB of random binary echoes byte for byte", false, `got ${typeof noiseBack}`);
    }

    // 2 MiB of text that compresses well, with enough variety to need more than one block.
    const lines = [];
    let size = 0;
    for (let i = 0; size < 2 << 20; i += 1) {
      const line = `${String(i).padStart(6, "0")} {"event":"tick","ok":true,"n":${i % 97},` +
        `"note":"the quick brown fox jumps over the lazy dog ✓"}\n`;
      lines.push(line);
      size += line.length;
    }
    await echoText("2 MiB of compressible text echoes", lines.join(""));

    // A burst of small messages: order kept, and with context takeover each one is compressed
    // against the ones before it.
    const burst = Array.from({ length: 200 }, (_, i) => `burst ${i}: ${"ab".repeat(i % 17)} ü`);
    for (const message of burst) ws.send(message);
    const back = [];
    for (let i = 0; i < burst.length; i += 1) back.push(await next(`burst message ${i}`));
    const wrong = back.findIndex((message, i) => message !== burst[i]);
    check("200 small messages sent at once echo in order", wrong === -1,
      wrong === -1 ? "" : `message ${wrong}: sent ${JSON.stringify(burst[wrong])}, ` +
        `got ${JSON.stringify(back[wrong])}`);

    // RFC 6455 §5.5.1: the server answers a Close frame with one echoing its status code.
    const reason = "done: fertig ✓";
    ws.close(4000, reason);
    const event = await within(closed, "close");
    check("close with 4000 and a reason comes back as 4000 with the reason, cleanly",
      event.code === 4000 && event.reason === reason && event.wasClean,
      `code ${event.code}, reason ${JSON.stringify(event.reason)}, clean ${event.wasClean}`);
  } catch (error) {
    check("no step failed or timed out", false, String(error));
    ws.close();
  }
  return results;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (!existsSync(options.chromium)) {
    console.error(`echo_page_test: no browser at ${options.chromium}`);
    process.exit(2);
  }
  const watchdog = setTimeout(() => {
    console.error(`echo_page_test: still running after ${options.timeoutMs} ms; giving up`);
    process.exit(2);
  }, options.timeoutMs);

  const report = new Report();
  // launch() starts Chromium with a fresh, empty profile (--user-data-dir in a new temporary
  // directory) and removes it on close.
  const served = options.servers.some((server) => server.page);
  const browser = await chromium.launch({
    executablePath: options.chromium,
    // The served page's server has a test certificate.
    args: served ? [...CHROMIUM_ARGS, "--ignore-certificate-errors"] : CHROMIUM_ARGS,
    timeout: STEP_TIMEOUT_MS * 2,
  }).catch((error) => {
    console.error(`echo_page_test: Chromium did not start: ${error.message}`);
    process.exit(2);
  });
  try {
    console.log(`browser: Chromium ${browser.version()}`);
    for (const server of options.servers) {
      const label = server.page
        ? `${server.page} (HTTP/2)`
        : `${server.url} (${server.deflate ? "compression" : "no compression"})`;
      const context = await browser.newContext({ ignoreHTTPSErrors: Boolean(server.page) });
      const page = await context.newPage();
      page.setDefaultTimeout(STEP_TIMEOUT_MS);
      // The status each WebSocket handshake got: 101 over HTTP/1.1, 200 over HTTP/2.
      const handshakes = [];
      if (server.page) {
        const devtools = await context.newCDPSession(page);
        devtools.on("Network.webSocketHandshakeResponseReceived", ({ response }) =>
          handshakes.push(response.status));
        await devtools.send("Network.enable");
      }
      try {
        await drivePage(page, server, label, report);
      } catch (error) {
        report.check(label, "page: no step failed or timed out", false, error.message);
      }
      const results = await page.evaluate(browserWebSocketChecks, {
        url: server.url,
        deflate: server.deflate,
        stepMs: STEP_TIMEOUT_MS,
      }).catch((error) => [{ name: "WebSocket checks ran", ok: false, detail: error.message }]);
      for (const { name, ok, detail } of results) report.check(label, `WebSocket: ${name}`, ok, detail);
      if (server.page) {
        report.check(label, "every WebSocket opened over HTTP/2 (RFC 8441: 200, not 101)",
          handshakes.length >= 3 && handshakes.every((status) => status === 200),
          `handshake statuses ${JSON.stringify(handshakes)}`);
      }
      await context.close();
    }
  } finally {
    await browser.close();
    clearTimeout(watchdog);
  }

  console.log(`${report.passed} checks passed, ${report.failed.length} failed`);
  if (report.failed.length > 0) {
    console.log("mismatches:");
    for (const failure of report.failed) console.log(`  ${failure}`);
    process.exit(1);
  }
}

await main();
