//! The tokio layer against a peer nobody here wrote: Python `websockets`, both ways.
//!
//! Needs the venv that `scripts/test.sh` creates (`target/venv` with `websockets`); without
//! it the tests print a note and pass, or fail with `WSLINE_REQUIRE_INTEROP=1` (which
//! `scripts/test.sh` sets).
#![cfg(feature = "tokio")]

mod support;

use support::{process, tokio_common};

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_common::{big_client_config, big_server_config, TEST_TIMEOUT};
use wsline::tokio::{connect_with, serve_with, MaybeTlsStream, WebSocket};
use wsline::{CloseCode, Error, Message};

/// Echoes everything; closes with 4002 when asked to.
const PYTHON_SERVER: &str = r#"
import asyncio
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

async def handler(ws):
    try:
        async for message in ws:
            if message == "close 4002":
                await ws.close(4002, "as asked")
                return
            await ws.send(message)
    except ConnectionClosed:
        pass

async def main():
    async with serve(handler, "127.0.0.1", 0, max_size=16 << 20, ping_interval=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// Talks to the server at argv[1]: text, binary, 1 MiB, ping, a close with 4001, then a
/// connection to /close that the server ends with 4003.
const PYTHON_CLIENT: &str = r#"
import asyncio, os, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

async def main(url):
    async with connect(url, max_size=16 << 20, ping_interval=None) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"
        big = os.urandom(1 << 20)
        await ws.send(big)
        assert await ws.recv() == big
        latency = await (await ws.ping())
        assert latency < 5, latency
        await ws.close(4001, "client bye")
    assert ws.protocol.close_rcvd.code == 4001, ws.protocol.close_rcvd
    async with connect(url + "close") as ws:
        try:
            await ws.recv()
            raise AssertionError("the server did not close")
        except ConnectionClosed as closed:
            assert closed.rcvd.code == 4003 and closed.rcvd.reason == "server bye", closed
    print("OK", flush=True)

asyncio.run(main(sys.argv[1]))
"#;

/// Starts the Python server and returns it with its port.
async fn start_python_server(python: &PathBuf) -> (Child, u16) {
    let mut child = Command::new(python)
        .args(["-c", PYTHON_SERVER])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("read the port");
    let port = line.trim().parse().expect("a port number");
    (child, port)
}

#[tokio::test]
async fn tokio_client_talks_to_a_python_server() {
    let Some(python) = process::venv_python() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_server, port) = start_python_server(&python).await;
        let url = format!("ws://127.0.0.1:{port}/");
        let mut ws = connect_with(&url, big_client_config()).await.unwrap();
        ws.send("héllo").await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("héllo"));
        ws.send(vec![0, 1, 255]).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::binary(vec![0, 1, 255])
        );
        let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7) as u8).collect();
        ws.send(big.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(big));
        assert!(ws.ping().await.unwrap() < Duration::from_secs(5));
        ws.close(CloseCode::from(4001), "client bye").await.unwrap();
        let closed = ws.close_status().unwrap();
        assert!(closed.clean);
        assert_eq!(closed.code().as_u16(), 4001);

        // The server closes with its own code.
        let mut ws = connect_with(&url, big_client_config()).await.unwrap();
        ws.send("close 4002").await.unwrap();
        let Some(Err(Error::ConnectionClosed(closed))) = ws.recv().await else {
            panic!("expected the server's close");
        };
        assert_eq!(
            (closed.code().as_u16(), closed.reason()),
            (4002, "as asked")
        );
        assert!(closed.clean);
    })
    .await
    .expect("test timed out");
}

/// Echoes, or closes with 4003 on `/close`.
async fn echo_or_close(mut ws: WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
    if ws.request().is_some_and(|request| request.path == "/close") {
        return ws.close(CloseCode::from(4003), "server bye").await;
    }
    while let Some(message) = ws.recv().await {
        ws.send(message?).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_talks_to_a_tokio_server() {
    let Some(python) = process::venv_python() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server = serve_with(echo_or_close, "127.0.0.1:0", big_server_config())
            .await
            .unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let output = Command::new(&python)
            .args(["-c", PYTHON_CLIENT, &url])
            .kill_on_drop(true)
            .output()
            .await
            .expect("run the Python client");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.trim() == "OK",
            "stdout: {stdout}\nstderr: {stderr}"
        );
    })
    .await
    .expect("test timed out");
}
