//! Helpers shared by the tokio layer's integration tests. Each test binary uses a subset.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use wsline::tokio::{serve_with, MaybeTlsStream, Server, WebSocket};
use wsline::{ConnectConfig, ServerConfig};

/// Every test finishes well within this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body, failing it if it hangs.
pub async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out")
}

/// Echoes every message back.
pub async fn echo(mut ws: WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
    while let Some(message) = ws.recv().await {
        ws.send(message?).await?;
    }
    Ok(())
}

/// Server settings for messages up to 16 MiB.
pub fn big_server_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.protocol.max_message_size = Some(16 << 20);
    config
}

/// Client settings for messages up to 16 MiB.
pub fn big_client_config() -> ConnectConfig {
    let mut config = ConnectConfig::default();
    config.protocol.max_message_size = Some(16 << 20);
    config
}

/// A binary payload whose bytes depend on `seed`, so that mix-ups show.
pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Starts a server on a free port whose handler runs `body` on each connection and sends
/// what it returns to the test.
pub async fn serve_reporting<T, F, Fut>(
    config: ServerConfig,
    body: F,
) -> (Server, mpsc::UnboundedReceiver<T>)
where
    T: Send + 'static,
    F: Fn(WebSocket<MaybeTlsStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (report, reports) = mpsc::unbounded_channel();
    let handler = move |ws: WebSocket<MaybeTlsStream>| {
        let report = report.clone();
        let outcome = body(ws);
        async move {
            // The test may have stopped listening; then nobody needs the report.
            let _ = report.send(outcome.await);
            Ok(())
        }
    };
    let server = serve_with(handler, "127.0.0.1:0", config)
        .await
        .expect("bind a free port");
    (server, reports)
}

/// Connects to `url` with the tokio client and expects the server to close at once with
/// `code` and `reason`.
pub async fn assert_server_closes_with(url: &str, code: u16, reason: &str) {
    let mut ws = wsline::tokio::connect(url).await.expect("connect");
    let Some(Err(wsline::Error::ConnectionClosed(closed))) = ws.recv().await else {
        panic!("expected the server's close");
    };
    assert_eq!((closed.code().as_u16(), closed.reason()), (code, reason));
}
