//! A small HTTP `CONNECT` proxy on 127.0.0.1 for tests: it opens the tunnels it is asked
//! for (checking `Proxy-Authorization` when it has credentials), records their targets, and
//! pipes bytes both ways.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A running proxy; it stops accepting when dropped (its tunnels end with their sockets).
pub struct ConnectProxy {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    /// Starts a proxy; with `credentials` (`"user:password"` base64-encoded) it answers 407
    /// to requests without them.
    pub fn start(credentials: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let addr = listener.local_addr().unwrap();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&targets);
        let credentials = credentials.map(str::to_owned);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let recorded = Arc::clone(&recorded);
                let credentials = credentials.clone();
                std::thread::spawn(move || {
                    // A tunnel that fails just ends; the test sees it from the client side.
                    let _ = tunnel(client, &recorded, credentials.as_deref());
                });
            }
        });
        Self { addr, targets }
    }

    /// `http://127.0.0.1:PORT`, with `user:password@` if given.
    pub fn url(&self, user_info: Option<&str>) -> String {
        match user_info {
            Some(user_info) => format!("http://{user_info}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The `host:port` of every `CONNECT` request so far.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

fn tunnel(
    mut client: TcpStream,
    targets: &Mutex<Vec<String>>,
    credentials: Option<&str>,
) -> io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
        .to_owned();
    targets.lock().unwrap().push(target.clone());
    if let Some(credentials) = credentials {
        if !head.contains(&format!("Proxy-Authorization: Basic {credentials}\r\n")) {
            return client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        }
    }
    let Ok(server) = TcpStream::connect(&target) else {
        return client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut client_reader, mut server_writer) = (client.try_clone()?, server.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut client_reader, &mut server_writer);
        let _ = server_writer.shutdown(Shutdown::Write);
    });
    let (mut server_reader, mut client_writer) = (server, client);
    let _ = io::copy(&mut server_reader, &mut client_writer);
    let _ = client_writer.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}
