//! Both clients reach servers through an HTTP proxy's `CONNECT` tunnel
//! (`ConnectConfig::proxy`), with and without proxy credentials, and report a refusing or
//! silent proxy as [`Error::Proxy`].

mod support;

use wsline::{ConnectConfig, Error, Message, ProxyError};

use support::proxy::ConnectProxy;
use support::{client_config, echo, server_config, start, DEADLINE};

fn through(proxy: String) -> ConnectConfig {
    ConnectConfig {
        proxy: Some(proxy),
        ..client_config()
    }
}

fn sync_echo(url: &str, config: ConnectConfig) -> wsline::Result<Message> {
    let ws = wsline::sync::client::connect_with(url, config)?;
    ws.send_text("through the tunnel")?;
    let reply = ws.recv_timeout(DEADLINE)?.expect("an echo in time");
    ws.close(wsline::CloseCode::NORMAL, "")?;
    Ok(reply)
}

#[test]
fn sync_client_talks_through_a_connect_proxy() {
    let server = start(echo, server_config());
    let proxy = ConnectProxy::start(None);
    let url = format!("ws://{}/", server.local_addr());
    let reply = sync_echo(&url, through(proxy.url(None))).unwrap();
    assert_eq!(reply, Message::text("through the tunnel"));
    assert_eq!(proxy.targets(), vec![server.local_addr().to_string()]);
}

#[test]
fn sync_client_sends_proxy_credentials_and_reports_a_refusal() {
    let server = start(echo, server_config());
    // base64("user:p@ss")
    let proxy = ConnectProxy::start(Some("dXNlcjpwQHNz"));
    let url = format!("ws://{}/", server.local_addr());
    let reply = sync_echo(&url, through(proxy.url(Some("user:p%40ss")))).unwrap();
    assert_eq!(reply, Message::text("through the tunnel"));
    match sync_echo(&url, through(proxy.url(None))) {
        Err(Error::Proxy(ProxyError::Refused { status, .. })) => assert_eq!(status, 407),
        other => panic!("expected a proxy refusal, got {other:?}"),
    }
}

#[test]
fn an_unsupported_proxy_is_a_uri_error_and_a_silent_one_a_proxy_error() {
    let server = start(echo, server_config());
    let url = format!("ws://{}/", server.local_addr());
    let result = sync_echo(&url, through("socks5://127.0.0.1:1080".into()));
    assert!(matches!(result, Err(Error::Uri(_))), "{result:?}");
    // A proxy that closes without answering.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let closer = std::thread::spawn(move || drop(silent.accept()));
    let result = sync_echo(&url, through(format!("http://{addr}")));
    assert!(matches!(result, Err(Error::Proxy(_))), "{result:?}");
    closer.join().unwrap();
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn tokio_client_talks_through_a_connect_proxy() {
    let server = start(echo, server_config());
    let proxy = ConnectProxy::start(Some("dXNlcjpwQHNz"));
    let url = format!("ws://{}/", server.local_addr());
    let mut ws = wsline::tokio::connect_with(&url, through(proxy.url(Some("user:p%40ss"))))
        .await
        .unwrap();
    ws.send("through the tunnel").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("through the tunnel")
    );
    ws.close(wsline::CloseCode::NORMAL, "").await.unwrap();
    let refused = wsline::tokio::connect_with(&url, through(proxy.url(None))).await;
    assert!(matches!(refused, Err(Error::Proxy(_))), "{refused:?}");
}
