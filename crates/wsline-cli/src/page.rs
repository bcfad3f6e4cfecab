//! The echo test page: `wsline serve` answers a plain HTTP `GET /` (no `Upgrade`) with it,
//! so that a person can open `http://127.0.0.1:8001/` in a browser and talk to the server.

use wsline::proto::{Request, Response};

/// `crates/wsline/examples/echo.html`, built into the binary.
pub const ECHO_PAGE: &str = include_str!("../../wsline/examples/echo.html");

/// The handshake hook of both servers: a `GET` without `Upgrade` is a browser asking for a
/// page — the echo page at `/`, 404 elsewhere. A WebSocket handshake on any path, valid or
/// not, keeps the answer the server gave it.
pub fn answer_plain_http(request: &Request, response: &mut Response) {
    if request.method != "GET" || request.headers.contains("Upgrade") {
        return;
    }
    let path = request.path.split('?').next().unwrap_or_default();
    *response = if path == "/" {
        let mut page = Response::new(200);
        let headers = &mut page.headers;
        headers.append("Connection", "close");
        headers.append("Content-Type", "text/html; charset=utf-8");
        headers.append("Content-Length", ECHO_PAGE.len().to_string());
        headers.append("Cache-Control", "no-store");
        page.body = ECHO_PAGE.into();
        page
    } else {
        Response::text(
            404,
            "Not found: this server speaks WebSocket; its test page is at /",
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsline::proto::Headers;

    fn request(method: &str, path: &str, upgrade: bool) -> Request {
        let mut headers = Headers::new();
        headers.append("Host", "localhost");
        if upgrade {
            headers.append("Upgrade", "websocket");
        }
        Request {
            method: method.into(),
            path: path.into(),
            protocol: None,
            headers,
        }
    }

    fn answered(request: &Request) -> Response {
        let mut response = Response::text(400, "missing Upgrade header");
        answer_plain_http(request, &mut response);
        response
    }

    #[test]
    fn a_plain_get_of_the_root_gets_the_page_and_other_paths_404() {
        let page = answered(&request("GET", "/?from=bookmark", false));
        assert_eq!(page.status, 200);
        assert_eq!(page.body, ECHO_PAGE.as_bytes());
        assert_eq!(answered(&request("GET", "/favicon.ico", false)).status, 404);
    }

    #[test]
    fn handshakes_and_other_methods_keep_the_servers_answer() {
        assert_eq!(answered(&request("GET", "/", true)).status, 400);
        assert_eq!(answered(&request("POST", "/", false)).status, 400);
    }
}
