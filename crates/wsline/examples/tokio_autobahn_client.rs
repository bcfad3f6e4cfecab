//! The tokio twin of `autobahn_client`: runs every Autobahn TestSuite case against the
//! fuzzing server at the base URL given as the only argument — fetches the case count,
//! echoes every message of each case until the server closes, then asks the server to write
//! its reports.
//!
//! `AUTOBAHN_JOBS=N` runs N cases at once (default 1), to shorten a CI run.
//!
//! ```text
//! cargo run --release --features tokio --example tokio_autobahn_client -- ws://127.0.0.1:9001
//! ```
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use wsline::tokio::{connect_with, MaybeTlsStream, WebSocket};
use wsline::{ConnectConfig, Error, Message};

const AGENT: &str = "wsline-tokio";

fn config() -> ConnectConfig {
    let mut config = ConnectConfig::default();
    // Autobahn sends messages up to 16 MiB.
    config.protocol.max_message_size = Some(64 << 20);
    config.protocol.ping_interval = None;
    // Autobahn's cases 13.2, 13.5 and 13.6 accept only offers that carry
    // client_no_context_takeover (RFC 7692 §7.1.1.2).
    #[cfg(feature = "deflate")]
    {
        let deflate = wsline::extension::deflate::PerMessageDeflate {
            client_no_context_takeover: true,
            ..Default::default()
        };
        config.protocol.extensions = vec![Arc::new(deflate)];
    }
    config
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> wsline::Result<()> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let mut ws = connect_with(&format!("{base}/getCaseCount"), config()).await?;
    let count = match ws.recv().await {
        Some(Ok(Message::Text(text))) => text.trim().parse::<u32>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        Error::Io(std::io::Error::other(
            "getCaseCount did not return a number",
        ))
    })?;
    drain(ws).await;
    let jobs = std::env::var("AUTOBAHN_JOBS")
        .ok()
        .and_then(|jobs| jobs.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let next = Arc::new(AtomicU32::new(1));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs {
        let (base, next) = (base.clone(), Arc::clone(&next));
        workers.spawn(async move {
            loop {
                let case = next.fetch_add(1, Ordering::Relaxed);
                if case > count {
                    return;
                }
                let url = format!("{base}/runCase?case={case}&agent={AGENT}");
                if let Err(error) = run_case(&url).await {
                    eprintln!("case {case}: {error}");
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let url = format!("{base}/updateReports?agent={AGENT}");
    // The server closes once the reports are written.
    drain(connect_with(&url, config()).await?).await;
    Ok(())
}

/// Echoes every message until the server closes the connection; replies to a burst of
/// messages go out in one write.
async fn run_case(url: &str) -> wsline::Result<()> {
    let mut ws = connect_with(url, config()).await?;
    while let Some(message) = ws.recv().await {
        ws.feed(message?).await?;
    }
    Ok(())
}

/// Reads until the server closes.
async fn drain(mut ws: WebSocket<MaybeTlsStream>) {
    while let Some(Ok(_)) = ws.recv().await {}
}
