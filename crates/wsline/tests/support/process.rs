//! Child processes for tests (Python and Node peers, the `wsline` binary): every wait is
//! bounded and every child is reaped, killed by its PID if the test ends first.
//!
//! Also included by `crates/wsline-cli/tests/cli.rs` and `browser.rs`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it counts as a hang. Generous: the
/// machine running the tests may be loaded.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running child process.
pub struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        // It may have exited already.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Starts `command` and waits for the first line it prints (a server's banner).
    pub fn start(command: &mut Command) -> (Self, String) {
        let (process, lines) = Self::start_lines(command);
        let banner = lines.recv_timeout(DEADLINE).expect("the banner in time");
        (process, banner)
    }

    /// Starts `command`; every line it prints arrives on the receiver, trimmed, until its
    /// stdout closes. Its stdout is read to the end even after the receiver is dropped.
    pub fn start_lines(command: &mut Command) -> (Self, mpsc::Receiver<String>) {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { return };
                // Once the receiver is gone, read on all the same: the child never writes
                // to a closed pipe.
                let _ = tx.send(String::from_utf8_lossy(&line).trim().to_owned());
            }
        });
        (Self(child), rx)
    }

    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Sends SIGINT, what Ctrl-C sends.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// Sends SIGTERM, what systemd, Docker and Kubernetes send to stop a service.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (`INT`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.id());
    }

    /// Waits at most `timeout` for the child to exit.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a command did.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` with `input` on its stdin until it exits, within [`DEADLINE`].
pub fn run(command: &mut Command, input: &str) -> Finished {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let mut process = Process(child);
    // The child may exit before reading its input (a refused connection).
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let status = process
        .wait_for(DEADLINE)
        .expect("the command ends in time");
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The variable that turns a missing interop peer from a skip into a test failure;
/// `scripts/test.sh` sets it to `1`, since it installs every peer.
pub const REQUIRE_INTEROP: &str = "WSLINE_REQUIRE_INTEROP";

/// Reports that an interop test cannot run because `peer` is missing (`why`): with
/// `WSLINE_REQUIRE_INTEROP=1` it panics, naming the peer and how to `install` it; otherwise
/// it prints a skip note to stderr and the caller returns. Every interop test that returns
/// early for a missing peer goes through here.
pub fn peer_missing(peer: &str, why: &str, install: &str) {
    assert!(
        std::env::var_os(REQUIRE_INTEROP).is_none_or(|value| value != "1"),
        "{peer} is missing ({why}) and {REQUIRE_INTEROP}=1 requires it: install it with \
         `{install}`, or run scripts/test.sh, which installs every peer"
    );
    eprintln!(
        "note: skipped: {peer} is missing ({why}); install it with `{install}` \
         (scripts/test.sh does), or set {REQUIRE_INTEROP}=1 to fail instead"
    );
}

/// The venv's Python with `websockets`; `None` after [`peer_missing`] if it is not there.
pub fn venv_python() -> Option<PathBuf> {
    let python = repo_root().join("target/venv/bin/python");
    let has_websockets = Command::new(&python)
        .args(["-c", "import websockets"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_websockets {
        peer_missing(
            "Python `websockets`",
            &format!("{} cannot import it", python.display()),
            "python3 -m venv target/venv && target/venv/bin/pip install -r scripts/requirements.txt",
        );
    }
    has_websockets.then_some(python)
}

/// Where the Node interop peers live (`scripts/interop/node`); `scripts/test.sh` installs
/// `ws`, at the version its `package.json` pins, into `node_modules` there.
pub fn node_interop_dir() -> PathBuf {
    repo_root().join("scripts/interop/node")
}

/// `node`, if it runs (the HTTP/2 peers need no package); `None` after [`peer_missing`]
/// if not.
pub fn node() -> Option<PathBuf> {
    let node = PathBuf::from("node");
    let runs = Command::new(&node)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        peer_missing("Node", "no `node` on PATH", "apt-get install nodejs");
    }
    runs.then_some(node)
}

/// Runs the Node peer `script` (in [`node_interop_dir`]) with `args` and the environment
/// variables `envs` until it exits: it must succeed and print `OK` last. Returns its first
/// line, the report of what happened.
pub fn node_peer_report(node: &Path, script: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut command = Command::new(node);
    command
        .arg(node_interop_dir().join(script))
        .args(args)
        .envs(envs.iter().copied());
    let output = run(&mut command, "");
    assert!(
        output.status.success() && output.stdout.trim_end().ends_with("OK"),
        "{script} {args:?}\nstdout: {}\nstderr: {}",
        output.stdout,
        output.stderr
    );
    output.stdout.lines().next().unwrap_or_default().to_owned()
}

/// `node`, if it runs and finds the `ws` package in [`node_interop_dir`]; `None` after
/// [`peer_missing`] if not.
pub fn node_ws() -> Option<PathBuf> {
    let node = PathBuf::from("node");
    let has_ws = Command::new(&node)
        .args(["-e", "require('ws')"])
        .current_dir(node_interop_dir())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_ws {
        peer_missing(
            "Node `ws`",
            &format!(
                "no `node` that finds `ws` in {}",
                node_interop_dir().display()
            ),
            "npm install --no-package-lock --prefix scripts/interop/node",
        );
    }
    has_ws.then_some(node)
}
