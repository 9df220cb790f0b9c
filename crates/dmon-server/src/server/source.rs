//! What every listener is to the server ([`Source`]: a name, its flag, a
//! socket it binds, a task it runs), and the addresses they were bound
//! to. The one list of them is [`super::sources`]: the server binds,
//! announces and stops whatever is in it, so a new listener is its own
//! file and one line there.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::pipeline::{Pipeline, Work};

/// What a listener is called and how the user moves it: fixed per kind
/// of listener, so errors and announcements can name it.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceKind {
    /// Its key in [`Addresses`]: the flag without its dashes.
    pub name: &'static str,
    /// How messages name it ("Riemann TCP").
    pub label: &'static str,
    /// The command-line flag that sets its address.
    pub flag: &'static str,
    /// Whether its flag takes `off`.
    pub can_be_off: bool,
    /// Who else likely holds its port, said when it is in use.
    pub suspect: &'static str,
    /// What the line announcing its address starts with; scripts and
    /// tests read these, so they never change.
    pub announce: &'static str,
    /// Whether its line is the readiness signal scripts wait for: it is
    /// printed after every other.
    pub ready: bool,
}

/// Where a source's events go, and when it stops.
#[derive(Clone)]
pub struct Feed {
    pub pipeline: Arc<Pipeline>,
    pub tx: mpsc::Sender<Work>,
    pub shutdown: watch::Receiver<bool>,
}

/// A listener as configured: binds its address when the server starts.
pub trait Source: Send {
    fn kind(&self) -> &'static SourceKind;
    /// Where it listens; `None` when its flag said `off`.
    fn addr(&self) -> Option<SocketAddr>;
    /// Opens its socket at `addr` (start-up fails cleanly on a busy
    /// port, before anything runs).
    fn bind(self: Box<Self>, addr: SocketAddr) -> io::Result<Box<dyn BoundSource>>;
}

/// A listener whose socket is open.
pub trait BoundSource: Send {
    /// The address actually bound (port 0 resolved).
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Receives on the current runtime until `feed.shutdown` fires.
    fn run(self: Box<Self>, feed: Feed) -> JoinHandle<io::Result<()>>;
}

/// The addresses actually bound (port 0 resolved), one per listener that
/// is on, in the order of [`sources`].
#[derive(Debug, Clone, Default)]
pub struct Addresses(pub Vec<(&'static SourceKind, SocketAddr)>);

impl Addresses {
    /// Where the listener named `name` (its [`SourceKind::name`]) listens,
    /// if it is on.
    pub fn get(&self, name: &str) -> Option<SocketAddr> {
        self.0
            .iter()
            .find(|(kind, _)| kind.name == name)
            .map(|(_, addr)| *addr)
    }

    /// JSON over UDP, which is always on.
    pub fn udp(&self) -> SocketAddr {
        self.get("udp").expect("JSON UDP cannot be turned off")
    }

    /// The lines saying where each listener listens, the readiness
    /// signal (JSON UDP's) last.
    pub fn announcements(&self) -> Vec<String> {
        let (ready, others): (Vec<_>, Vec<_>) = self.0.iter().partition(|(kind, _)| kind.ready);
        others
            .into_iter()
            .chain(ready)
            .map(|(kind, addr)| format!("{} {} {}", kind.announce, addr.ip(), addr.port()))
            .collect()
    }
}
