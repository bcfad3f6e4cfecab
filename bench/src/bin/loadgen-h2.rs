//! `loadgen-h2`: a WebSocket-over-HTTP/2 (RFC 8441) echo load generator.
//!
//! It opens `--connections` HTTP/2 connections (h2c with prior knowledge) to
//! an echo server, opens `--streams-per-connection` WebSockets on each with
//! extended CONNECT, keeps `--in-flight` messages outstanding on every
//! WebSocket and measures, like `loadgen`, during a `--duration` window after
//! a `--warmup`: echoed messages per second, payload bytes per second,
//! per-message latency and, with `--server-pid`, the server's CPU time per
//! echoed message. It prints the same JSON line as `loadgen`, with
//! `"transport":"h2"`, `streams_per_connection` and `streams` added.
//!
//! Design notes:
//! * HTTP/2 is the `h2` crate's client on a current-thread Tokio runtime: one
//!   task drives each connection, one task drives each WebSocket;
//! * before the first CONNECT it waits (bounded by `--connect-timeout`) for the
//!   server's SETTINGS to enable the extended CONNECT protocol (RFC 8441 §3),
//!   then sends `:method CONNECT`, `:protocol websocket`,
//!   `sec-websocket-version: 13` and requires status 200 without a negotiated
//!   extension or subprotocol (RFC 8441 §5);
//! * the WebSocket frames on a stream are built by hand as in `loadgen`: the
//!   masked client frames once, each send is one DATA chunk handed to h2 that
//!   slices a pre-built run of back-to-back frames; echoes are checked by the
//!   shared strict parser ([`EchoParser`]), pings answered with pongs;
//! * receive windows are large (8 MiB per stream, 32 MiB per connection) and
//!   capacity is released as soon as echoed bytes are parsed, so HTTP/2 flow
//!   control never throttles the server's echoes;
//! * anything unexpected (refused CONNECT, stream reset, GOAWAY, END_STREAM,
//!   close frame, wrong echo, stall) is fatal: `loadgen-h2: error: …` on
//!   stderr and exit status 1; every phase is bounded in time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::process::exit;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use h2::client::SendRequest;
use h2::ext::Protocol;
use h2::{RecvStream, SendStream};
use http::{header, Method, Request, StatusCode};
use tokio::net::TcpStream;
use tokio::task::{spawn_local, LocalSet};
use wsline_bench::load::{
    build_client_frame, cpu_snap, parse_count, CommonOptions, CpuSnap, EchoCounts, EchoParser,
    EchoSink, Messages, Res,
};

/// Initial receive window of every stream (one WebSocket): 8 MiB.
const STREAM_WINDOW: u32 = 8 << 20;
/// Initial receive window of every connection: 32 MiB.
const CONNECTION_WINDOW: u32 = 32 << 20;
/// How often the control loop checks for errors, stalls and window edges.
const TICK: Duration = Duration::from_millis(10);

/// Parsed command line.
#[derive(Debug, Clone)]
struct Config {
    /// The options shared with `loadgen` (`connections` counts HTTP/2
    /// connections, `in_flight` is per WebSocket).
    opts: CommonOptions,
    /// `http://host:port/path`: `:scheme`, `:authority` and `:path` of the
    /// extended CONNECT (RFC 8441 §4).
    request_uri: String,
    /// WebSockets (streams) per connection.
    streams_per_connection: usize,
}

/// The usage text.
fn usage() -> &'static str {
    "usage: loadgen-h2 --url ws://HOST:PORT/PATH [options]\n\
     \n\
     HTTP/2 cleartext with prior knowledge; WebSockets by extended CONNECT (RFC 8441).\n\
     \n\
     options:\n\
     \x20 --connections N              HTTP/2 connections (default 1)\n\
     \x20 --streams-per-connection M   WebSockets per connection (default 1)\n\
     \x20 --size BYTES                 payload bytes per message (default 20)\n\
     \x20 --text | --binary            message type (default text)\n\
     \x20 --in-flight K                messages outstanding per WebSocket (default 1)\n\
     \x20 --warmup SECS                warm-up before measuring (default 1)\n\
     \x20 --duration SECS              measured window (default 5)\n\
     \x20 --server-pid PID             sample this process's CPU time (/proc/PID/stat)\n\
     \x20 --connect-timeout SECS       bound on connecting + opening all (default 15)\n\
     \x20 --stall-timeout SECS         fail if no echo completes for this long (default 10)\n\
     \x20 --connect-concurrency N      connections set up at once (default 128)\n\
     \n\
     Prints one JSON line; exits 1 with a message on stderr if the server misbehaves."
}

/// Parses the command line into a [`Config`].
fn parse_args(args: &[String]) -> Res<Config> {
    let mut streams_per_connection = 1;
    let opts = CommonOptions::parse(args, usage(), 100_000, |flag, value| {
        match flag {
            "--streams-per-connection" => {
                streams_per_connection = parse_count(flag, &value()?, 1, 100_000)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Config {
        request_uri: format!("http://{}{}", opts.authority, opts.path),
        opts,
        streams_per_connection,
    })
}

/// What every WebSocket sends (the same for all).
struct Plan {
    /// Payload of every message (what the echo must equal).
    payload: Vec<u8>,
    /// Opcode of sent messages.
    opcode: u8,
    /// Length of one encoded client frame.
    frame_len: usize,
    /// `copies` encoded client frames back to back.
    burst: Bytes,
    /// Frames in `burst`.
    copies: usize,
    /// Messages outstanding per WebSocket.
    in_flight: usize,
}

/// Run-wide counters and flags, shared by every task of the one thread.
struct Tally {
    /// Echo counters and phase flags.
    counts: EchoCounts,
    /// The first fatal error any task ran into.
    error: Option<String>,
}

impl Tally {
    /// Keeps the first error reported (later ones are usually its echoes).
    fn fail(&mut self, error: String) {
        self.error.get_or_insert(error);
    }
}

/// Shared handle on the [`Tally`].
type SharedTally = Rc<RefCell<Tally>>;

/// One WebSocket's outstanding messages and output, as its [`EchoParser`]
/// sees them.
struct Socket {
    /// What to send and expect.
    plan: Rc<Plan>,
    /// Run-wide counters.
    tally: SharedTally,
    /// Send time of every outstanding message, oldest first.
    sent_at: VecDeque<Instant>,
    /// Messages issued but not yet handed to h2.
    unsent: usize,
    /// Pong frames not yet handed to h2.
    pongs: Vec<u8>,
}

impl EchoSink for Socket {
    fn payload(&self) -> &[u8] {
        &self.plan.payload
    }

    fn opcode(&self) -> u8 {
        self.plan.opcode
    }

    fn is_awaiting_echo(&self) -> bool {
        !self.sent_at.is_empty()
    }

    /// Accounts one fully echoed message and issues the next one.
    fn on_echo(&mut self) -> Res<()> {
        let now = Instant::now();
        let sent = self
            .sent_at
            .pop_front()
            .ok_or("server sent a message that was not an echo (none outstanding)")?;
        if self.tally.borrow_mut().counts.record_echo(sent, now) {
            self.sent_at.push_back(now);
            self.unsent += 1;
        }
        Ok(())
    }

    fn on_ping(&mut self, payload: &[u8]) {
        self.pongs
            .extend_from_slice(&build_client_frame(0xa, payload));
    }
}

impl Socket {
    /// Hands pongs and issued messages to h2, whole frames per DATA chunk
    /// (so a pong never lands inside a data frame).
    fn flush(&mut self, send: &mut SendStream<Bytes>) -> Res<()> {
        let failed = |e: h2::Error| format!("sending on the stream failed: {e}");
        if !self.pongs.is_empty() {
            let pongs = Bytes::from(std::mem::take(&mut self.pongs));
            send.send_data(pongs, false).map_err(failed)?;
        }
        while self.unsent > 0 {
            let n = self.unsent.min(self.plan.copies);
            let chunk = self.plan.burst.slice(..n * self.plan.frame_len);
            send.send_data(chunk, false).map_err(failed)?;
            self.unsent -= n;
        }
        Ok(())
    }
}

/// Echo loop of one WebSocket: issue `in_flight` messages, then parse echoes,
/// release their flow-control capacity and issue one message per echo.
async fn drive_socket(
    mut send: SendStream<Bytes>,
    mut recv: RecvStream,
    mut socket: Socket,
) -> Res<()> {
    let mut parser = EchoParser::new();
    let now = Instant::now();
    for _ in 0..socket.plan.in_flight {
        socket.sent_at.push_back(now);
    }
    socket.unsent = socket.plan.in_flight;
    socket.flush(&mut send)?;
    loop {
        let chunk = match recv.data().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(format!("receiving on the stream failed: {e}")),
            None => return Err("server ended the stream (END_STREAM) during the run".into()),
        };
        recv.flow_control()
            .release_capacity(chunk.len())
            .map_err(|e| format!("releasing flow-control capacity failed: {e}"))?;
        parser.consume(&chunk, &mut socket)?;
        socket.flush(&mut send)?;
    }
}

/// One HTTP/2 connection with its open WebSockets.
struct Connection {
    /// The request handle, held until the run ends so that h2 does not wind
    /// the connection down for lack of handles.
    client: SendRequest<Bytes>,
    /// The WebSockets: request body to send on, response body to read.
    sockets: Vec<(SendStream<Bytes>, RecvStream)>,
}

/// Connects, waits for extended CONNECT to be enabled and opens
/// `streams_per_connection` WebSockets.
async fn open_connection(index: usize, cfg: Rc<Config>, tally: SharedTally) -> Res<Connection> {
    let context = |e: String| format!("connection {index}: {e}");
    let tcp = TcpStream::connect(cfg.opts.addr)
        .await
        .map_err(|e| context(format!("connect to {} failed: {e}", cfg.opts.addr)))?;
    tcp.set_nodelay(true)
        .map_err(|e| context(format!("TCP_NODELAY: {e}")))?;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| context(format!("HTTP/2 handshake failed: {e}")))?;
    {
        let tally = Rc::clone(&tally);
        spawn_local(async move {
            let why = match connection.await {
                Ok(()) => "server closed the HTTP/2 connection".to_string(),
                Err(e) => format!("HTTP/2 connection failed: {e}"),
            };
            tally
                .borrow_mut()
                .fail(format!("connection {index}: {why}"));
        });
    }
    let mut client = client
        .ready()
        .await
        .map_err(|e| context(format!("HTTP/2 connection not ready: {e}")))?;
    // RFC 8441 §3: extended CONNECT only after the server's SETTINGS carried
    // SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (the connection task applies them).
    while !client.is_extended_connect_protocol_enabled() {
        if let Some(e) = tally.borrow().error.clone() {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut pending = Vec::with_capacity(cfg.streams_per_connection);
    for _ in 0..cfg.streams_per_connection {
        // Waits while the server's SETTINGS_MAX_CONCURRENT_STREAMS is reached.
        client = client
            .ready()
            .await
            .map_err(|e| context(format!("HTTP/2 connection not ready: {e}")))?;
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(cfg.request_uri.as_str())
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .extension(Protocol::from_static("websocket"))
            .body(())
            .map_err(|e| context(format!("building the CONNECT request: {e}")))?;
        let (response, send) = client
            .send_request(request, false)
            .map_err(|e| context(format!("sending the CONNECT request failed: {e}")))?;
        pending.push((response, send));
    }
    let mut sockets = Vec::with_capacity(pending.len());
    for (response, send) in pending {
        let response = response
            .await
            .map_err(|e| context(format!("extended CONNECT failed: {e}")))?;
        // RFC 8441 §5: "a 2xx status code" accepts; we ask for exactly 200.
        if response.status() != StatusCode::OK {
            return Err(context(format!(
                "extended CONNECT refused: status {}",
                response.status()
            )));
        }
        for name in [
            header::SEC_WEBSOCKET_EXTENSIONS,
            header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            if let Some(v) = response.headers().get(&name) {
                return Err(context(format!(
                    "server negotiated {name} {v:?}, which was not offered"
                )));
            }
        }
        sockets.push((send, response.into_body()));
    }
    Ok(Connection { client, sockets })
}

/// Runs the benchmark and returns the JSON result line.
async fn run(cfg: Config) -> Res<String> {
    let program_start = Instant::now();
    let cfg = Rc::new(cfg);
    let Messages {
        payload,
        opcode,
        frame_len,
        burst,
        copies,
    } = Messages::new(&cfg.opts);
    let plan = Rc::new(Plan {
        payload,
        opcode,
        frame_len,
        burst: Bytes::from(burst),
        copies,
        in_flight: cfg.opts.in_flight,
    });
    let tally = Rc::new(RefCell::new(Tally {
        counts: EchoCounts::new(program_start),
        error: None,
    }));

    // ---- connect + open every WebSocket, `connect_concurrency` connections at a time ----
    let opening = futures_util::stream::iter(0..cfg.opts.connections)
        .map(|i| open_connection(i, Rc::clone(&cfg), Rc::clone(&tally)))
        .buffer_unordered(cfg.opts.connect_concurrency)
        .try_collect::<Vec<Connection>>();
    let connections = tokio::time::timeout(cfg.opts.connect_timeout, opening)
        .await
        .map_err(|_| {
            format!(
                "connect timeout: {} connections × {} WebSockets not open within {:?}",
                cfg.opts.connections, cfg.streams_per_connection, cfg.opts.connect_timeout
            )
        })??;

    // ---- run: warm-up, then the measured window ----
    let run_start = Instant::now();
    let window_start_at = run_start + cfg.opts.warmup;
    let window_end_at = window_start_at + cfg.opts.duration;
    let hard_deadline = window_end_at + Duration::from_secs(5);
    tally.borrow_mut().counts.last_progress = run_start;
    let mut handles = Vec::with_capacity(connections.len());
    for (c, connection) in connections.into_iter().enumerate() {
        for (s, (send, recv)) in connection.sockets.into_iter().enumerate() {
            let socket = Socket {
                plan: Rc::clone(&plan),
                tally: Rc::clone(&tally),
                sent_at: VecDeque::with_capacity(cfg.opts.in_flight),
                unsent: 0,
                pongs: Vec::new(),
            };
            let tally = Rc::clone(&tally);
            spawn_local(async move {
                if let Err(e) = drive_socket(send, recv, socket).await {
                    tally
                        .borrow_mut()
                        .fail(format!("connection {c}, WebSocket {s}: {e}"));
                }
            });
        }
        handles.push(connection.client);
    }
    let mut snap_start: Option<CpuSnap> = None;
    let snap_end = loop {
        let now = Instant::now();
        if let Some(e) = tally.borrow().error.clone() {
            return Err(e);
        }
        if snap_start.is_none() && now >= window_start_at {
            snap_start = Some(cpu_snap(cfg.opts.server_pid)?);
            tally.borrow_mut().counts.measuring = true;
        }
        if now >= window_end_at {
            let snap = cpu_snap(cfg.opts.server_pid)?;
            let mut t = tally.borrow_mut();
            t.counts.measuring = false;
            t.counts.sending = false;
            break snap;
        }
        if now >= hard_deadline {
            return Err("overall deadline exceeded".into());
        }
        let (last_progress, total_msgs) = {
            let t = tally.borrow();
            (t.counts.last_progress, t.counts.total_msgs)
        };
        if now.duration_since(last_progress) > cfg.opts.stall_timeout {
            return Err(format!(
                "server stalled: no echo completed for {:?} ({total_msgs} echoed so far)",
                cfg.opts.stall_timeout
            ));
        }
        let next_edge = if snap_start.is_none() {
            window_start_at
        } else {
            window_end_at
        };
        let wake = next_edge.min(now + TICK);
        tokio::time::sleep_until(wake.into()).await;
    };
    let snap_start = snap_start.ok_or("measured window never started")?;
    let t = tally.borrow();
    let line = cfg
        .opts
        .report(
            Some(cfg.streams_per_connection),
            &t.counts,
            snap_start,
            snap_end,
        )
        .to_json();
    drop(handles);
    line
}

/// Entry point: parse, run, print JSON or fail with a clear message.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen-h2: {e}");
            exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen-h2: error: runtime: {e}");
            exit(1);
        }
    };
    match LocalSet::new().block_on(&rt, run(cfg)) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("loadgen-h2: error: {e}");
            exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uri_carries_scheme_authority_and_path() {
        let args: Vec<String> = [
            "--url",
            "ws://127.0.0.1:9001/echo",
            "--streams-per-connection",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cfg = parse_args(&args).unwrap();
        assert_eq!(cfg.request_uri, "http://127.0.0.1:9001/echo");
        assert_eq!(cfg.streams_per_connection, 100);
    }
}
