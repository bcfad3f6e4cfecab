//! Runs every Autobahn TestSuite case against the fuzzing server at the base URL given as
//! the only argument: fetches the case count, echoes every message of each case until the
//! server closes, then asks the server to write its reports.
//!
//! `AUTOBAHN_JOBS=N` runs N cases at once (default 1), to shorten a CI run.
//!
//! ```text
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001
//! ```
use std::sync::atomic::{AtomicU32, Ordering};

use wsline::sync::client::connect_with;
use wsline::{ConnectConfig, Error};

const AGENT: &str = "wsline";

fn config() -> ConnectConfig {
    let mut config = ConnectConfig::default();
    // Autobahn sends messages up to 16 MiB.
    config.protocol.max_message_size = Some(64 << 20);
    config.protocol.ping_interval = None;
    // Autobahn's cases 13.2, 13.5 and 13.6 accept only offers that carry
    // client_no_context_takeover (RFC 7692 §7.1.1.2: the client resets its window after each
    // message); other clients are, rightly, refused the extension there.
    #[cfg(feature = "deflate")]
    {
        let deflate = wsline::extension::deflate::PerMessageDeflate {
            client_no_context_takeover: true,
            ..Default::default()
        };
        config.protocol.extensions = vec![std::sync::Arc::new(deflate)];
    }
    config
}

fn main() -> wsline::Result<()> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let ws = connect_with(&format!("{base}/getCaseCount"), config())?;
    let count: u32 = ws.recv_text()?.trim().parse().map_err(|_| {
        Error::Io(std::io::Error::other(
            "getCaseCount did not return a number",
        ))
    })?;
    drop(ws);
    let jobs = std::env::var("AUTOBAHN_JOBS")
        .ok()
        .and_then(|jobs| jobs.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let next = AtomicU32::new(1);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let case = next.fetch_add(1, Ordering::Relaxed);
                if case > count {
                    return;
                }
                let url = format!("{base}/runCase?case={case}&agent={AGENT}");
                if let Err(error) = run_case(&url) {
                    eprintln!("case {case}: {error}");
                }
            });
        }
    });
    let url = format!("{base}/updateReports?agent={AGENT}");
    let ws = connect_with(&url, config())?;
    // The server closes once the reports are written.
    while ws.recv().is_ok() {}
    Ok(())
}

/// Echoes every message until the server closes the connection.
fn run_case(url: &str) -> wsline::Result<()> {
    let ws = connect_with(url, config())?;
    loop {
        match ws.recv() {
            Ok(message) => ws.send(message)?,
            Err(error) if error.is_closed() => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}
