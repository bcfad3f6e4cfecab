//! wsline inside axum (feature `axum`): the [`WebSocketUpgrade`] extractor, in the shape
//! axum users know, over HTTP/1.1 (`GET` + `Upgrade`) and HTTP/2 (RFC 8441 extended
//! CONNECT, when `axum::serve` runs with axum's `http2` feature), with permessage-deflate
//! on by default like the rest of wsline. The handshake is [`wsline::http`](crate::http)'s,
//! so the checks, statuses and negotiation are those of wsline's own servers.
//!
//! ```no_run
//! use axum::routing::any;
//! use axum::Router;
//! use wsline::axum::{WebSocket, WebSocketUpgrade};
//!
//! async fn echo(mut ws: WebSocket) {
//!     while let Some(Ok(message)) = ws.recv().await {
//!         if ws.send(message).await.is_err() {
//!             break;
//!         }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     // `any`, so that HTTP/2's CONNECT reaches the route as well as HTTP/1.1's GET.
//!     let app = Router::new().route("/ws", any(|upgrade: WebSocketUpgrade| async {
//!         upgrade.on_upgrade(echo)
//!     }));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8001").await?;
//!     axum::serve(listener, app).await
//! }
//! ```

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{StatusCode, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use crate::http::{accept_request, to_request, Rejected};
use crate::proto::{self, parse_token_list, Config};
use crate::IoConfig;

/// The WebSocket a handler gets from [`WebSocketUpgrade::on_upgrade`]: wsline's tokio
/// [`WebSocket`](crate::tokio::WebSocket) over hyper's upgraded connection.
pub type WebSocket = crate::tokio::WebSocket<TokioIo<Upgraded>>;

/// The extractor of a WebSocket handshake request. Configure it (subprotocols, limits,
/// compression, or a whole [`Config`]), then answer with [`on_upgrade`](Self::on_upgrade).
/// A request that is not a valid handshake is refused at extraction with the status wsline's
/// servers give it ([`Rejection`]).
pub struct WebSocketUpgrade<F = DefaultOnFailedUpgrade> {
    request: proto::Request,
    version: Version,
    config: Arc<Config>,
    io: IoConfig,
    on_upgrade: OnUpgrade,
    on_failed_upgrade: F,
}

impl<F> std::fmt::Debug for WebSocketUpgrade<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("request", &self.request)
            .field("version", &self.version)
            .field("config", &self.config)
            .field("io", &self.io)
            .finish_non_exhaustive()
    }
}

/// wsline's server defaults ([`ServerConfig::default`](crate::ServerConfig)'s protocol
/// settings: limits, timeouts, keepalive, permessage-deflate), shared by every request.
fn default_config() -> Arc<Config> {
    static DEFAULT: OnceLock<Arc<Config>> = OnceLock::new();
    Arc::clone(DEFAULT.get_or_init(|| Arc::new(crate::ServerConfig::default().protocol)))
}

/// The bare handshake checks at extraction: no subprotocol or extension to negotiate.
fn bare_config() -> Arc<Config> {
    static BARE: OnceLock<Arc<Config>> = OnceLock::new();
    Arc::clone(BARE.get_or_init(|| Arc::new(Config::default())))
}

impl<F> WebSocketUpgrade<F> {
    /// Uses `config` instead of wsline's server defaults (an `Arc<Config>` is shared as is).
    #[must_use]
    pub fn config(mut self, config: impl Into<Arc<Config>>) -> Self {
        self.config = config.into();
        self
    }

    /// The subprotocols this server speaks, in order of preference; the first one the
    /// client offered is selected.
    #[must_use]
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Arc::make_mut(&mut self.config).subprotocols =
            protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The subprotocols the client offered, in its order.
    pub fn requested_protocols(&self) -> impl Iterator<Item = &str> {
        parse_token_list(self.request.headers.get_all("Sec-WebSocket-Protocol")).into_iter()
    }

    /// Largest message in bytes (`None`: no limit; default 1 MiB).
    #[must_use]
    pub fn max_message_size(mut self, limit: Option<usize>) -> Self {
        Arc::make_mut(&mut self.config).max_message_size = limit;
        self
    }

    /// Largest frame in bytes (`None`: no limit beyond the message limit).
    #[must_use]
    pub fn max_frame_size(mut self, limit: Option<usize>) -> Self {
        Arc::make_mut(&mut self.config).max_frame_size = limit;
        self
    }

    /// The read buffer size and send high-water mark of the WebSocket (default:
    /// [`IoConfig::default`], 64 KiB and 256 KiB; `nodelay` is the server's, which
    /// `axum::serve` sets on its TCP streams). Past the mark `send` waits for the client.
    #[must_use]
    pub fn io(mut self, io: IoConfig) -> Self {
        self.io = io;
        self
    }

    /// Negotiates no extension, so no permessage-deflate.
    #[must_use]
    pub fn without_compression(mut self) -> Self {
        Arc::make_mut(&mut self.config).extensions.clear();
        self
    }

    /// The HTTP version the handshake came over (HTTP/1.1, or HTTP/2 for an extended
    /// CONNECT).
    #[must_use]
    pub fn http_version(&self) -> Version {
        self.version
    }

    /// What to do when hyper cannot complete the upgrade after the response was sent (the
    /// client went away, say); by default it is logged at debug level.
    pub fn on_failed_upgrade<C: OnFailedUpgrade>(self, callback: C) -> WebSocketUpgrade<C> {
        WebSocketUpgrade {
            request: self.request,
            version: self.version,
            config: self.config,
            io: self.io,
            on_upgrade: self.on_upgrade,
            on_failed_upgrade: callback,
        }
    }
}

impl<F: OnFailedUpgrade> WebSocketUpgrade<F> {
    /// Answers the handshake (101 over HTTP/1.1, 200 over HTTP/2, naming what was
    /// negotiated) and, once hyper has upgraded the connection, runs `callback` with the
    /// WebSocket in a new task. A request the configuration cannot accept (a malformed
    /// extension offer) gets its 400 instead.
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accepted = match accept_request(&self.request, self.version, self.config) {
            Ok(accepted) => accepted,
            Err(rejected) => return Rejection::Handshake(rejected).into_response(),
        };
        let response = accepted.response();
        let (on_upgrade, on_failed_upgrade, io) =
            (self.on_upgrade, self.on_failed_upgrade, self.io);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = accepted.into_websocket(TokioIo::new(upgraded)).with_io(&io);
                    callback(ws).await;
                }
                Err(error) => {
                    on_failed_upgrade.call(crate::Error::Io(std::io::Error::other(error)))
                }
            }
        });
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade<DefaultOnFailedUpgrade> {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        let request = to_request(parts);
        accept_request(&request, parts.version, bare_config()).map_err(Rejection::Handshake)?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(Rejection::NotUpgradable)?;
        Ok(Self {
            request,
            version: parts.version,
            config: default_config(),
            io: IoConfig::default(),
            on_upgrade,
            on_failed_upgrade: DefaultOnFailedUpgrade,
        })
    }
}

/// Why [`WebSocketUpgrade`] refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a valid WebSocket handshake: answered with the status and text of wsline's
    /// servers (400, 405, 426, 505).
    #[error(transparent)]
    Handshake(Rejected),
    /// The request is a handshake, but the connection under it cannot be upgraded (the
    /// server was not started with upgrades, as `axum::serve` is): 500.
    #[error("the connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Self::Handshake(rejected) => rejected.response(),
            Self::NotUpgradable => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "WebSocket upgrade is not available on this connection\n",
            )
                .into_response(),
        }
    }
}

/// What [`WebSocketUpgrade`] does when the upgrade fails after the response.
pub trait OnFailedUpgrade: Send + 'static {
    /// Called with the error.
    fn call(self, error: crate::Error);
}

impl<F: FnOnce(crate::Error) + Send + 'static> OnFailedUpgrade for F {
    fn call(self, error: crate::Error) {
        self(error);
    }
}

/// The default [`OnFailedUpgrade`]: a debug log line.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct DefaultOnFailedUpgrade;

impl OnFailedUpgrade for DefaultOnFailedUpgrade {
    fn call(self, error: crate::Error) {
        tracing::debug!(%error, "WebSocket upgrade failed");
    }
}
