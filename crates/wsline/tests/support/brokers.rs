//! Real broker servers for the tests of `wsline::topics`' brokers: `redis-server` and
//! `nats-server` (Debian's packages, which `scripts/test.sh` installs) on free ports of
//! 127.0.0.1, killed and restarted by PID, and what they say about their clients and
//! subscriptions (Redis' `PUBSUB` and `CLIENT LIST`, NATS' monitoring port).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{peer_missing, Process, DEADLINE};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Nats,
}

/// A broker server on a port of its own, which stays the same across restarts.
pub struct BrokerServer {
    pub kind: Kind,
    pub port: u16,
    /// NATS' monitoring port (`-m`).
    monitor_port: u16,
    process: Option<Process>,
    log: PathBuf,
}

impl Drop for BrokerServer {
    fn drop(&mut self) {
        // Process's own drop kills and reaps it; a stopped one gets SIGCONT first not to
        // leave a zombie-to-be waiting.
        if let Some(process) = &self.process {
            let _ = Command::new("kill")
                .args(["-CONT", &process.id().to_string()])
                .status();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

impl BrokerServer {
    /// Starts a server of `kind`; `None` (after [`peer_missing`], which panics under
    /// `WSLINE_REQUIRE_INTEROP=1`) if its binary is not installed.
    pub fn start(kind: Kind) -> Option<Self> {
        let (binary, package) = match kind {
            Kind::Redis => ("redis-server", "apt-get install redis-server"),
            Kind::Nats => ("nats-server", "apt-get install nats-server"),
        };
        let runs = Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !runs {
            peer_missing(binary, &format!("no `{binary}` on PATH"), package);
            return None;
        }
        let port = free_port();
        let log = std::env::temp_dir().join(format!("wsline-{binary}-{port}.log"));
        let mut server = Self {
            kind,
            port,
            monitor_port: if kind == Kind::Nats { free_port() } else { 0 },
            process: None,
            log,
        };
        server.restart();
        Some(server)
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "the server is running");
        let port = self.port.to_string();
        let mut command = match self.kind {
            Kind::Redis => {
                let mut command = Command::new("redis-server");
                command.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]);
                command
                    .args(["--loglevel", "warning", "--logfile"])
                    .arg(&self.log);
                command
            }
            Kind::Nats => {
                let mut command = Command::new("nats-server");
                let monitor = self.monitor_port.to_string();
                command
                    .args(["-a", "127.0.0.1", "-p", &port, "-m", &monitor, "-l"])
                    .arg(&self.log);
                command
            }
        };
        let (process, _lines) = Process::start_lines(&mut command);
        self.process = Some(process);
        let ready = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
        let started = Instant::now();
        while !(ready(self.port) && (self.kind == Kind::Redis || ready(self.monitor_port))) {
            assert!(
                started.elapsed() < DEADLINE,
                "{:?} did not start on port {}",
                self.kind,
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server with SIGKILL, by its PID, and reaps it.
    pub fn kill(&mut self) {
        let mut process = self.process.take().expect("the server is running");
        process.signal("KILL");
        process.wait_for(DEADLINE).expect("the killed server exits");
    }

    /// Stops the server (SIGSTOP): connections stay open, nothing is read or answered.
    pub fn pause(&self) {
        self.process
            .as_ref()
            .expect("the server is running")
            .signal("STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.process
            .as_ref()
            .expect("the server is running")
            .signal("CONT");
    }

    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// The channel or subject a wsline broker uses for `topic`, with the default prefix.
    pub fn name_of(&self, topic: &str) -> String {
        match self.kind {
            Kind::Redis => format!("wsline:{topic}"),
            Kind::Nats => format!("wsline.{}", nats_tokens(topic)),
        }
    }

    /// Clients subscribed to `topic` at the server (classic and sharded, for Redis).
    pub fn subscribers(&self, topic: &str) -> usize {
        let name = self.name_of(topic);
        match self.kind {
            Kind::Redis => {
                let mut connection = self.redis();
                let count = |subcommand: &str, connection: &mut redis::Connection| {
                    let answer: Vec<(String, usize)> = redis::cmd("PUBSUB")
                        .arg(subcommand)
                        .arg(&name)
                        .query(connection)
                        .expect("PUBSUB");
                    answer.into_iter().map(|(_, count)| count).sum::<usize>()
                };
                count("NUMSUB", &mut connection) + count("SHARDNUMSUB", &mut connection)
            }
            Kind::Nats => self
                .monitor("/connz?subs=1")
                .matches(&format!("\"{name}\""))
                .count(),
        }
    }

    /// Clients connected to the server (for Redis, not counting the one asking).
    pub fn clients(&self) -> usize {
        match self.kind {
            Kind::Redis => {
                let list: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query(&mut self.redis())
                    .expect("CLIENT LIST");
                list.lines().filter(|line| !line.trim().is_empty()).count() - 1
            }
            Kind::Nats => {
                let connz = self.monitor("/connz");
                let (_, rest) = connz
                    .split_once("\"num_connections\":")
                    .expect("num_connections in /connz");
                let digits: String = rest
                    .trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().expect("a number of connections")
            }
        }
    }

    /// A plain Redis connection, RESP2, for looking at the server or publishing as another
    /// program would.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(DEADLINE))
            .expect("a connection to redis-server")
    }

    /// A GET of NATS' monitoring endpoint `path`: the body.
    fn monitor(&self, path: &str) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.monitor_port)).expect("the monitoring port");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let (_, body) = response.split_once("\r\n\r\n").expect("a body");
        body.to_owned()
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

/// A topic as NatsBroker's subject tokens (as its docs say): each `.`-separated part is a
/// token, letters, digits and `-` kept, any other byte `_` and two upper-case hex digits,
/// an empty part `_`.
fn nats_tokens(topic: &str) -> String {
    let tokens: Vec<String> = topic
        .split('.')
        .map(|part| {
            if part.is_empty() {
                return "_".to_owned();
            }
            part.bytes()
                .map(|byte| {
                    if byte.is_ascii_alphanumeric() || byte == b'-' {
                        char::from(byte).to_string()
                    } else {
                        format!("_{byte:02X}")
                    }
                })
                .collect()
        })
        .collect();
    tokens.join(".")
}
