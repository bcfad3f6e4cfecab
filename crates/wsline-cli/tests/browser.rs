//! A real browser talks to `wsline serve`: headless Chromium opens
//! `crates/wsline/examples/echo.html`, connects to the server, sends messages with the page as a
//! person would, then uses its own WebSocket for non-ASCII text, 1 MiB of binary, 2 MiB of
//! compressible text (permessage-deflate when the server offers it) and a close with 4000.
//!
//! The checks live in `scripts/interop/browser/echo_page_test.mjs` (Playwright driving
//! Debian's Chromium); these tests start the servers and assert that every check passed.
//! Without `/usr/bin/chromium` or the script's `node_modules` they print a note and pass, or
//! fail with `WSLINE_REQUIRE_INTEROP=1`; `scripts/test.sh` installs both and sets it.

#[path = "../../wsline/tests/support/process.rs"]
mod process;
#[path = "../../wsline/tests/support/tls.rs"]
mod tls;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use process::Process;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Largest message the servers accept: the script's biggest is 2 MiB.
const MAX_MESSAGE_SIZE: &str = "16777216";

/// How long one run of the script may take, browser start included. The script gives up on
/// its own a little sooner (`--timeout-ms`), so a hang is reported by it, browser closed.
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);
const SCRIPT_TIMEOUT_MS: &str = "100000";

/// Where the script and its `node_modules` live.
fn script_dir() -> PathBuf {
    process::repo_root().join("scripts/interop/browser")
}

/// Whether Chromium, `node` and `playwright-core` are all here; `false` after
/// [`process::peer_missing`] if not.
fn browser_available() -> bool {
    let missing = if !Path::new(CHROMIUM).exists() {
        format!("no {CHROMIUM}")
    } else if !script_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        format!(
            "no playwright-core in {}/node_modules",
            script_dir().display()
        )
    } else if !Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
    {
        "no `node`".to_owned()
    } else {
        return true;
    };
    process::peer_missing(
        "the browser peer (Chromium driven by playwright-core)",
        &missing,
        "apt-get install chromium && (cd scripts/interop/browser && \
         PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-package-lock)",
    );
    false
}

/// Starts `wsline serve` with `args` on a free port; returns it with the address it printed.
fn serve(args: &[&str]) -> (Process, SocketAddr) {
    serve_scheme("ws", args)
}

/// [`serve`] for a server that prints `scheme://` in its banner.
fn serve_scheme(scheme: &str, args: &[&str]) -> (Process, SocketAddr) {
    let (process, banner) = Process::start(
        Command::new(env!("CARGO_BIN_EXE_wsline"))
            .args([
                "serve",
                "--port",
                "0",
                "--max-message-size",
                MAX_MESSAGE_SIZE,
            ])
            .args(args),
    );
    let addr = banner
        .strip_prefix(&format!("Listening on {scheme}://"))
        .unwrap_or_else(|| panic!("unexpected first line {banner:?}"))
        .parse()
        .expect("an address");
    (process, addr)
}

/// A child killed by its PID and reaped if the test ends before it does.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // It may have exited already.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the script with `args` until it exits, within [`BROWSER_DEADLINE`].
fn run_script(args: &[String]) -> (ExitStatus, String, String) {
    let mut child = Command::new("node")
        .arg(script_dir().join("echo_page_test.mjs"))
        .args(["--chromium", CHROMIUM, "--timeout-ms", SCRIPT_TIMEOUT_MS])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let mut child = Reaped(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for node") {
            break status;
        }
        assert!(
            started.elapsed() < BROWSER_DEADLINE,
            "the browser test still runs after {BROWSER_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    (status, stdout, stderr)
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Starts `wsline serve` with `layer_args`, once with compression and once with
/// `--no-compression`, and runs every browser check against both.
fn chromium_talks_to(layer_args: &[&str]) {
    if !browser_available() {
        return;
    }
    let (_compressed, compressed) = serve(layer_args);
    let no_compression = [layer_args, &["--no-compression"]].concat();
    let (_uncompressed, uncompressed) = serve(&no_compression);

    let (status, stdout, stderr) = run_script(&[
        "--compressed".to_owned(),
        format!("ws://{compressed}/"),
        "--uncompressed".to_owned(),
        format!("ws://{uncompressed}/"),
    ]);
    // Shown with --nocapture, and on failure.
    println!("{stdout}");
    assert!(
        status.success(),
        "echo_page_test.mjs exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn chromium_talks_to_the_sync_server_through_echo_html() {
    chromium_talks_to(&[]);
}

#[test]
fn chromium_talks_to_the_tokio_server_through_echo_html() {
    chromium_talks_to(&["--tokio"]);
}

/// The page served by `wsline serve --tokio` itself over HTTPS: Chromium loads it over
/// HTTP/2 (ALPN `h2`), and since the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL it
/// opens its WebSockets as RFC 8441 extended CONNECTs on that connection (the script checks
/// each handshake's status, 200, through the DevTools protocol). Chromium needs no flag for
/// RFC 8441; `--ignore-certificate-errors` is for the test certificate.
#[test]
fn chromium_uses_http2_for_the_page_and_its_websockets_against_the_tokio_server() {
    if !browser_available() {
        return;
    }
    let pem = tls::Identity::new().write_pem("browser-http2");
    let (cert, key) = (
        pem.cert().display().to_string(),
        pem.key().display().to_string(),
    );
    let (_server, addr) = serve_scheme("wss", &["--tokio", "--tls-cert", &cert, "--tls-key", &key]);
    let (status, stdout, stderr) = run_script(&[
        "--served".to_owned(),
        format!("https://localhost:{}/", addr.port()),
    ]);
    println!("{stdout}");
    assert!(
        status.success(),
        "echo_page_test.mjs exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
