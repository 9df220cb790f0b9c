//! A real `nats-server` with JetStream, in a temporary directory, on a
//! free loopback port (./test.sh installs Debian's `nats-server`).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{KillOnDrop, Lines, TempDir};

/// How long nats-server may take to start.
const NATS_READY: Duration = Duration::from_secs(20);

pub struct Nats {
    pub port: u16,
    pub dir: TempDir,
    child: Option<KillOnDrop>,
    pub log: Lines,
}

/// A NATS URL nothing listens on (a port just free).
pub fn nowhere() -> String {
    format!("nats://127.0.0.1:{}", free_port())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nats {
    /// Starts a server and waits until it accepts clients.
    pub fn start() -> Nats {
        Nats::start_with_config("")
    }

    /// Starts a server with `config` (nats-server's configuration syntax:
    /// `tls { ... }`, `authorization { ... }`) added to its flags.
    pub fn start_with_config(config: &str) -> Nats {
        let port = free_port();
        let dir = TempDir::new();
        dir.write("nats.conf", config);
        let (child, log) = spawn(port, &dir);
        Nats {
            port,
            dir,
            child: Some(child),
            log,
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: what it had on disk stays).
    pub fn kill(&mut self) {
        self.child.take();
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, log) = spawn(self.port, &self.dir);
        self.child = Some(child);
        self.log = log;
    }
}

fn spawn(port: u16, dir: &TempDir) -> (KillOnDrop, Lines) {
    let mut child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-sd")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nats.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .expect("run nats-server (./test.sh installs it)");
    let mut log = Lines::spawn("nats-server", child.0.stderr.take().unwrap());
    log.wait_for(NATS_READY, |l| l.contains("Server is ready"))
        .unwrap_or_else(|why| panic!("nats-server did not start: {why}\n{}", log.dump()));
    (child, log)
}
