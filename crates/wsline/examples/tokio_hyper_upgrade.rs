//! A hyper 1.x server that hands its WebSocket upgrades to wsline: [`wsline::http::accept`]
//! checks the request and negotiates (permessage-deflate included), hyper sends the 101,
//! and [`Accepted::into_websocket`](wsline::http::Accepted::into_websocket) runs the
//! WebSocket on hyper's upgraded stream — whatever the stream type under it, and with any
//! bytes hyper read past the request head.
//!
//! The example serves `/ws` on a free port (HTTP/1.1; for HTTP/2 as well, serve with
//! hyper-util's auto builder and `builder.http2().enable_connect_protocol()`, which RFC 8441
//! needs and hyper leaves off), talks to it with the wsline client, and exits.
//!
//! ```text
//! cargo run --features tokio,http --example tokio_hyper_upgrade
//! ```
use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use wsline::tokio::WebSocket;
use wsline::{CloseCode, Config, Error, Message, ServerConfig};

/// Answers a WebSocket handshake on `/ws` and spawns the echo loop on the upgraded stream;
/// a request that is not a valid handshake gets its 4xx, other paths 404.
async fn upgrade(
    request: Request<Incoming>,
    config: Arc<Config>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/ws" {
        let mut response = Response::new(Full::from("not found\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    let (parts, body) = request.into_parts();
    let accepted = match wsline::http::accept(&parts, config) {
        Ok(accepted) => accepted,
        Err(rejected) => return Ok(rejected.response()),
    };
    let response = accepted.response();
    let request = Request::from_parts(parts, body);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(error) => return eprintln!("upgrade failed: {error}"),
        };
        let ws = accepted.into_websocket(TokioIo::new(upgraded));
        if let Err(error) = echo(ws).await {
            eprintln!("echo failed: {error}");
        }
    });
    Ok(response)
}

/// Echoes every message until the client closes.
async fn echo<S>(mut ws: WebSocket<S>) -> wsline::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = ws.recv().await {
        ws.send(message?).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> wsline::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // wsline's server defaults: limits, timeouts, permessage-deflate.
    let config = Arc::new(ServerConfig::default().protocol);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                let service = service_fn(move |request| upgrade(request, Arc::clone(&config)));
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(error) = connection.await {
                    eprintln!("HTTP connection failed: {error}");
                }
            });
        }
    });
    println!("hyper listening on http://{addr}/ws");

    let mut ws = wsline::tokio::connect(&format!("ws://{addr}/ws")).await?;
    let compressed = ws
        .extension_names()
        .any(|name| name == "permessage-deflate");
    println!("permessage-deflate negotiated: {compressed}");
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
