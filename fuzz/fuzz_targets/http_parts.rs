//! `wsline::http::accept`, the handshake of servers whose HTTP stack is not wsline's (hyper,
//! axum, wsline's own HTTP/2 server), fed arbitrary requests as the `http` crate holds
//! them: HTTP/1.0, 1.1 or 2, any method, any `:protocol` (as hyper's or h2's extension),
//! any headers. No panic; an accepted request is a WebSocket handshake (101 over HTTP/1.1,
//! 200 for an extended CONNECT over HTTP/2) whose subprotocol and extensions were offered,
//! and opens a connection; a refused one gets a 4xx or 5xx; over HTTP/2 no answer carries
//! a connection-specific header (RFC 9113 §8.2.2).
//!
//! Input: a flags byte (bits 0–1: version, 2–3: method, 4–5: `:protocol` none / websocket /
//! `WebSocket` / the second line, bit 6: small head limits, bit 7: h2's extension type
//! instead of hyper's; permessage-deflate is always on offer), then lines: the request target, [the protocol], `name: value`
//! headers.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Version};
use libfuzzer_sys::fuzz_target;
use wsline::extension::deflate::PerMessageDeflate;
use wsline::proto::State;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let version = [
        Version::HTTP_10,
        Version::HTTP_11,
        Version::HTTP_2,
        Version::HTTP_2,
    ][usize::from(flags & 0b11)];
    let method = match (flags >> 2) & 0b11 {
        0 => Method::GET,
        1 => Method::CONNECT,
        2 => Method::POST,
        _ => Method::HEAD,
    };
    let mut lines = rest.split(|&byte| byte == b'\n');
    let target = lines.next().unwrap_or_default();
    let protocol = match (flags >> 4) & 0b11 {
        0 => None,
        1 => Some("websocket".to_owned()),
        2 => Some("WebSocket".to_owned()),
        _ => Some(String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned()),
    };
    let Ok(mut request) = Request::builder()
        .method(method.clone())
        .uri(target)
        .version(version)
        .body(())
    else {
        return;
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        request.headers_mut().append(name, value);
    }
    if let Some(protocol) = &protocol {
        if flags & 0x80 == 0 {
            request
                .extensions_mut()
                .insert(hyper::ext::Protocol::from(protocol.as_str()));
        } else {
            request
                .extensions_mut()
                .insert(h2::ext::Protocol::from(protocol.as_str()));
        }
    }
    let (parts, ()) = request.into_parts();
    let offered = |name: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut config = wsline_fuzz::handshake_config(flags & 0x40 != 0);
    config.extensions = vec![std::sync::Arc::new(PerMessageDeflate::default())];
    let response: http::Response<Vec<u8>> = match wsline::http::accept(&parts, config) {
        Ok(accepted) => {
            assert!(version >= Version::HTTP_11, "accepted over {version:?}");
            let response: http::Response<Vec<u8>> = accepted.response();
            if version == Version::HTTP_2 {
                assert_eq!(method, Method::CONNECT);
                assert!(protocol.is_some(), "an HTTP/2 WebSocket needs :protocol");
                assert_eq!(response.status(), 200);
            } else {
                assert_eq!(method, Method::GET);
                assert_eq!(response.status(), 101);
            }
            if let Some(subprotocol) = accepted.subprotocol() {
                assert!(
                    offered("sec-websocket-protocol").contains(&subprotocol.to_ascii_lowercase())
                );
            }
            for name in accepted.extension_names() {
                assert!(
                    offered("sec-websocket-extensions").contains(name),
                    "{name} not offered"
                );
            }
            let conn = accepted.into_connection(std::time::Instant::now());
            assert_eq!(conn.state(), State::Open);
            response
        }
        Err(rejected) => {
            let response: http::Response<Vec<u8>> = rejected.response();
            let status = response.status().as_u16();
            assert!((400..600).contains(&status), "refused with {status}");
            response
        }
    };
    if version == Version::HTTP_2 {
        for name in [
            "connection",
            "upgrade",
            "transfer-encoding",
            "keep-alive",
            "proxy-connection",
        ] {
            assert!(
                !response.headers().contains_key(name),
                "{name} in an HTTP/2 answer"
            );
        }
    }
});
