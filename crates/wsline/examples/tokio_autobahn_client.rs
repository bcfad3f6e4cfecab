//! The tokio twin of `autobahn_client`: runs every Autobahn TestSuite case against the
//! fuzzing server at the base URL given as the only argument — fetches the case count,
//! echoes every message of each case until the server closes, then asks the server to write
//! its reports.
//!
//! `AUTOBAHN_JOBS=N` runs N cases at once (default 1), to shorten a CI run.
//!
//! With `--http2` after the URL (feature `http2`) every case is a WebSocket stream of one
//! HTTP/2 connection (h2c with prior knowledge for `ws://`), opened again if it ends: the
//! suite speaks HTTP/1.1 only, so `scripts/autobahn.py --http2-bridge` puts
//! `scripts/interop/node/h2_bridge.mjs` between.
//!
//! ```text
//! cargo run --release --features tokio --example tokio_autobahn_client -- ws://127.0.0.1:9001
//! ```
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use wsline::tokio::{MaybeTlsStream, WebSocket};
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

/// Where the cases' WebSockets are opened: a connection each (HTTP/1.1), or streams of one
/// HTTP/2 connection.
#[derive(Clone)]
struct Opener {
    base: String,
    #[cfg(feature = "http2")]
    http2: Option<Arc<tokio::sync::Mutex<Option<wsline::tokio::Http2Connection>>>>,
}

impl Opener {
    fn new(base: String, http2: bool) -> wsline::Result<Self> {
        #[cfg(feature = "http2")]
        let opener = Self {
            base,
            http2: http2.then(Default::default),
        };
        #[cfg(not(feature = "http2"))]
        let opener = {
            if http2 {
                return Err(Error::Unsupported(
                    "--http2 needs the `http2` feature".into(),
                ));
            }
            Self { base }
        };
        Ok(opener)
    }

    /// Opens the WebSocket for `path_and_query` (such as `/getCaseCount`).
    async fn open(&self, path_and_query: &str) -> wsline::Result<WebSocket<MaybeTlsStream>> {
        #[cfg(feature = "http2")]
        if let Some(shared) = &self.http2 {
            let connection = {
                let mut shared = shared.lock().await;
                match shared.as_ref() {
                    Some(connection) if !connection.is_closed() => connection.clone(),
                    _ => {
                        let connection =
                            wsline::tokio::Http2Connection::connect_with(&self.base, config())
                                .await?;
                        *shared = Some(connection.clone());
                        connection
                    }
                }
            };
            return connection.open(path_and_query).await;
        }
        wsline::tokio::connect_with(&format!("{}{path_and_query}", self.base), config()).await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> wsline::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let opener = Opener::new(base, args.next().as_deref() == Some("--http2"))?;
    let mut ws = opener.open("/getCaseCount").await?;
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
        let (opener, next) = (opener.clone(), Arc::clone(&next));
        workers.spawn(async move {
            loop {
                let case = next.fetch_add(1, Ordering::Relaxed);
                if case > count {
                    return;
                }
                let path = format!("/runCase?case={case}&agent={AGENT}");
                if let Err(error) = run_case(&opener, &path).await {
                    eprintln!("case {case}: {error}");
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    // The server closes once the reports are written.
    drain(
        opener
            .open(&format!("/updateReports?agent={AGENT}"))
            .await?,
    )
    .await;
    Ok(())
}

/// Echoes every message until the server closes the connection; replies to a burst of
/// messages go out in one write.
async fn run_case(opener: &Opener, path: &str) -> wsline::Result<()> {
    let mut ws = opener.open(path).await?;
    while let Some(message) = ws.recv().await {
        ws.feed(message?).await?;
    }
    Ok(())
}

/// Reads until the server closes.
async fn drain(mut ws: WebSocket<MaybeTlsStream>) {
    while let Some(Ok(_)) = ws.recv().await {}
}
