//! Hands a connection upgraded by hyper 1.x to wsline: hyper answers the HTTP request with
//! `101 Switching Protocols`, then [`WebSocket::from_upgraded`] takes over the stream
//! together with any bytes hyper had already read past the request head.
//!
//! The example serves `/ws` on a free port, talks to it with the wsline client, and exits.
//!
//! ```text
//! cargo run --features tokio --example tokio_hyper_upgrade
//! ```
use std::convert::Infallible;

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use wsline::proto::{accept_key, Side};
use wsline::tokio::WebSocket;
use wsline::{CloseCode, Config, Error, Message};

/// Answers a WebSocket upgrade on `/ws` and spawns the echo loop on the upgraded stream;
/// anything else gets 400.
async fn upgrade(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|key| key.to_str().ok())
        .map(accept_key);
    let wants_websocket = request
        .headers()
        .get(UPGRADE)
        .is_some_and(|upgrade| upgrade.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let accept = key.and_then(|key| HeaderValue::from_str(&key).ok());
    let (Some(accept), true, "/ws") = (accept, wants_websocket, request.uri().path()) else {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(response);
    };
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(&mut request).await {
            Ok(upgraded) => upgraded,
            Err(error) => return eprintln!("upgrade failed: {error}"),
        };
        // hyper served a TokioIo<TcpStream>: take the stream back, with the bytes hyper
        // read beyond the request head (a client may send frames right after it).
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => parts,
            Err(_) => return eprintln!("unexpected stream type"),
        };
        let stream = parts.io.into_inner();
        let ws = WebSocket::from_upgraded(stream, Side::Server, Config::default(), &parts.read_buf);
        if let Err(error) = echo(ws).await {
            eprintln!("echo failed: {error}");
        }
    });
    let mut response = Response::new(Empty::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// Echoes every message until the client closes.
async fn echo(mut ws: WebSocket<TcpStream>) -> wsline::Result<()> {
    while let Some(message) = ws.recv().await {
        ws.send(message?).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> wsline::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(upgrade))
                    .with_upgrades();
                if let Err(error) = connection.await {
                    eprintln!("HTTP connection failed: {error}");
                }
            });
        }
    });
    println!("hyper listening on http://{addr}/ws");

    let mut ws = wsline::tokio::connect(&format!("ws://{addr}/ws")).await?;
    ws.send("Hello through hyper!").await?;
    match ws.recv().await {
        Some(Ok(Message::Text(reply))) => println!("<<< {reply}"),
        other => {
            return Err(Error::Io(std::io::Error::other(format!(
                "unexpected reply: {other:?}"
            ))))
        }
    }
    ws.close(CloseCode::NORMAL, "bye").await
}
