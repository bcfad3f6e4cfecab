//! The opening handshake on the server: a typical browser request parsed, checked and
//! answered, through a `Connection` and through `tungstenite::accept` over an in-memory
//! stream.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use wsline::proto::{Connection, Event, Transmit};
use wsline::Config;

/// What Chrome sends to open a WebSocket.
const BROWSER_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
Host: localhost:9001\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://localhost:8000\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// Reads the request once, keeps what is written.
struct OneShot {
    input: &'static [u8],
    output: Vec<u8>,
}

impl Read for OneShot {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for OneShot {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn server_handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_handshake");
    let config = Arc::new(Config::default());
    group.bench_function("wsline", |b| {
        b.iter(|| {
            let mut server = Connection::server(Arc::clone(&config), Instant::now());
            server.handle_data(black_box(BROWSER_REQUEST));
            let Some(Event::Request(request)) = server.poll_event() else {
                panic!("a request");
            };
            let response = server.accept(&request).unwrap();
            server.send_response(response).unwrap();
            let Some(Transmit::Bytes(bytes)) = server.poll_transmit() else {
                panic!("a response");
            };
            black_box(bytes)
        });
    });
    group.bench_function("tungstenite", |b| {
        b.iter(|| {
            let stream = OneShot {
                input: black_box(BROWSER_REQUEST),
                output: Vec::with_capacity(256),
            };
            let socket = tungstenite::accept(stream).unwrap();
            black_box(socket.get_ref().output.len())
        });
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    server_handshake(&mut criterion);
    criterion.final_summary();
}
