//! Both clients follow the redirects a server answers the opening handshake with (301, 302,
//! 303, 307, 308 with a `Location`), within `max_redirects`, and refuse the ones they must.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use wsline::proto::{HandshakeError, Request, Response};
use wsline::sync::server::{serve_on, Connection, Handler, Server};
use wsline::{ConnectConfig, Error, Message, UriError};

use support::{client_config, server_config, DEADLINE};

/// Redirects by path; once open, tells the client the path it was served on.
struct Redirecting {
    handshakes_on_loop: Arc<AtomicUsize>,
}

impl Handler for Redirecting {
    type State = ();

    fn on_handshake(&self, request: &Request, response: &mut Response) {
        let redirect = |status: u16, location: &str| {
            let mut redirect = Response::new(status);
            redirect.headers.insert("Location", location);
            redirect
        };
        match request.path.as_str() {
            "/old" => *response = redirect(302, "/middle"),
            "/middle" => *response = redirect(308, "new?from=middle"),
            "/loop" => {
                self.handshakes_on_loop.fetch_add(1, Ordering::SeqCst);
                *response = redirect(307, "/loop");
            }
            "/no-location" => *response = Response::new(301),
            "/elsewhere" => *response = redirect(302, "https://example.com/"),
            _ => {}
        }
    }

    fn on_open(&self, conn: &mut Connection<'_, ()>) -> wsline::Result<()> {
        let path = conn.request().map(|request| request.path.clone());
        conn.send_text(&path.unwrap_or_default())
    }

    fn on_message(&self, conn: &mut Connection<'_, ()>, message: Message) -> wsline::Result<()> {
        conn.send(message)
    }
}

fn start() -> (Server, Arc<AtomicUsize>) {
    let handshakes_on_loop = Arc::new(AtomicUsize::new(0));
    let handler = Redirecting {
        handshakes_on_loop: Arc::clone(&handshakes_on_loop),
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let server = serve_on(handler, listener, server_config()).expect("serve");
    (server, handshakes_on_loop)
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

fn assert_rejected_with(result: wsline::Result<impl std::fmt::Debug>, status: u16) {
    match result {
        Err(Error::Handshake(HandshakeError::Rejected(response))) => {
            assert_eq!(response.status, status);
        }
        other => panic!("expected a rejection with {status}, got {other:?}"),
    }
}

fn sync_connect(url: &str, config: ConnectConfig) -> wsline::Result<String> {
    let ws = wsline::sync::client::connect_with(url, config)?;
    let first = ws.recv_timeout(DEADLINE)?.expect("the path in time");
    Ok(first.as_text().expect("text").to_owned())
}

#[test]
fn sync_client_follows_a_chain_of_relative_redirects() {
    let (server, _) = start();
    let path = sync_connect(&url(server.local_addr(), "/old"), client_config()).unwrap();
    assert_eq!(path, "/new?from=middle");
}

#[test]
fn sync_client_stops_after_max_redirects_with_the_last_rejection() {
    let (server, loops) = start();
    let result = sync_connect(&url(server.local_addr(), "/loop"), client_config());
    assert_rejected_with(result, 307);
    // The first handshake and ten redirects.
    assert_eq!(loops.load(Ordering::SeqCst), 11);

    let config = ConnectConfig {
        max_redirects: 0,
        ..client_config()
    };
    assert_rejected_with(sync_connect(&url(server.local_addr(), "/old"), config), 302);
}

#[test]
fn sync_client_reports_redirects_it_cannot_follow() {
    let (server, _) = start();
    let addr = server.local_addr();
    assert_rejected_with(
        sync_connect(&url(addr, "/no-location"), client_config()),
        301,
    );
    let result = sync_connect(&url(addr, "/elsewhere"), client_config());
    assert!(
        matches!(result, Err(Error::Uri(UriError::UnsupportedScheme(_)))),
        "{result:?}"
    );
}

#[cfg(feature = "tokio")]
mod tokio_layer {
    use super::*;

    async fn tokio_connect(url: &str, config: ConnectConfig) -> wsline::Result<String> {
        let mut ws = wsline::tokio::connect_with(url, config).await?;
        let first = ws.recv().await.expect("the path")?;
        Ok(first.as_text().expect("text").to_owned())
    }

    #[tokio::test]
    async fn tokio_client_follows_redirects_and_stops_after_max_redirects() {
        let (server, loops) = start();
        let addr = server.local_addr();
        let path = tokio_connect(&url(addr, "/old"), client_config())
            .await
            .unwrap();
        assert_eq!(path, "/new?from=middle");
        assert_rejected_with(
            tokio_connect(&url(addr, "/loop"), client_config()).await,
            307,
        );
        assert_eq!(loops.load(Ordering::SeqCst), 11);
        let result = tokio_connect(&url(addr, "/elsewhere"), client_config()).await;
        assert!(matches!(result, Err(Error::Uri(_))), "{result:?}");
    }
}
