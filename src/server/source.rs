//! What every listener is to the server ([`Source`]: a name, its flag, a
//! socket it binds, a task it runs) and the one list of them,
//! [`sources`]: the server binds, announces and stops whatever is in it,
//! so a new listener is its own file and one line there.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{http_listener, riemann_tcp, riemann_udp, udp, ListenError, Listeners};
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

/// Every listener the server has, in the order of their flags; those
/// turned off are in it too, with no address.
pub fn sources(listen: &Listeners) -> Vec<Box<dyn Source>> {
    vec![
        Box::new(udp::JsonUdp { addr: listen.udp }),
        Box::new(riemann_tcp::RiemannTcp {
            addr: listen.riemann_tcp,
            max_frame: listen.max_frame,
            limits: listen.tcp_limits.clone(),
            tls: listen.tls.clone(),
        }),
        Box::new(riemann_udp::RiemannUdp {
            addr: listen.riemann_udp,
        }),
        Box::new(http_listener::HttpListener {
            addr: listen.http,
            limits: listen.http_limits.clone(),
            tls: listen.tls.clone(),
            token: listen.http_token.clone(),
        }),
    ]
}

/// A source whose socket is open, with what it is and where.
pub struct Bound {
    pub kind: &'static SourceKind,
    pub addr: SocketAddr,
    pub source: Box<dyn BoundSource>,
}

/// Binds every source that is on; every failure is kept, so all busy
/// ports are said at once rather than one per attempt.
pub fn bind_all(sources: Vec<Box<dyn Source>>) -> Result<Vec<Bound>, Vec<ListenError>> {
    let mut bound = Vec::new();
    let mut failed = Vec::new();
    for source in sources {
        let (kind, Some(addr)) = (source.kind(), source.addr()) else {
            continue;
        };
        match source.bind(addr).and_then(|b| Ok((b.local_addr()?, b))) {
            Ok((addr, source)) => bound.push(Bound { kind, addr, source }),
            Err(error) => failed.push(ListenError { kind, addr, error }),
        }
    }
    if failed.is_empty() {
        Ok(bound)
    } else {
        Err(failed)
    }
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
        self.get(udp::KIND.name)
            .expect("JSON UDP cannot be turned off")
    }

    /// The lines saying where each listener listens, the JSON UDP one
    /// last: it is the readiness signal scripts wait for.
    pub fn announcements(&self) -> Vec<String> {
        let (ready, others): (Vec<_>, Vec<_>) =
            self.0.iter().partition(|(kind, _)| *kind == &udp::KIND);
        others
            .into_iter()
            .chain(ready)
            .map(|(kind, addr)| format!("{} {} {}", kind.announce, addr.ip(), addr.port()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_off() -> Listeners {
        Listeners {
            udp: "127.0.0.1:0".parse().unwrap(),
            riemann_tcp: None,
            riemann_udp: None,
            max_frame: riemann_tcp::DEFAULT_MAX_FRAME,
            tcp_limits: Default::default(),
            http: None,
            http_limits: Default::default(),
            tls: None,
            http_token: None,
        }
    }

    fn kinds() -> Vec<&'static SourceKind> {
        sources(&all_off()).iter().map(|s| s.kind()).collect()
    }

    #[test]
    fn every_source_has_its_own_name_flag_and_announcement() {
        let kinds = kinds();
        assert_eq!(kinds.len(), 4);
        for (i, a) in kinds.iter().enumerate() {
            assert_eq!(a.flag, format!("--{}", a.name), "{a:?}");
            assert!(a.announce.starts_with("Listening for "), "{a:?}");
            for b in &kinds[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.label, b.label);
                assert_ne!(a.announce, b.announce);
            }
        }
    }

    #[test]
    fn only_json_udp_cannot_be_turned_off() {
        let fixed: Vec<&str> = kinds()
            .iter()
            .filter(|k| !k.can_be_off)
            .map(|k| k.name)
            .collect();
        assert_eq!(fixed, ["udp"]);
    }

    #[test]
    fn sources_turned_off_are_listed_without_an_address_and_not_bound() {
        let listed = sources(&all_off());
        let on: Vec<&str> = listed
            .iter()
            .filter(|s| s.addr().is_some())
            .map(|s| s.kind().name)
            .collect();
        assert_eq!(on, ["udp"]);
        let bound = bind_all(listed).map_err(|e| e.len()).expect("binds");
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].kind.name, "udp");
        assert_ne!(bound[0].addr.port(), 0, "port 0 is resolved");
    }

    #[test]
    fn the_json_udp_line_is_announced_last_and_others_keep_their_order() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let bound = Addresses(vec![
            (&udp::KIND, addr),
            (&riemann_tcp::KIND, addr),
            (&http_listener::KIND, addr),
        ]);
        assert_eq!(
            bound.announcements(),
            [
                "Listening for Riemann TCP on: 127.0.0.1 9",
                "Listening for HTTP on: 127.0.0.1 9",
                "Listening for event datagrams on: 127.0.0.1 9",
            ]
        );
        assert_eq!(bound.get("riemann-tcp"), Some(addr));
        assert_eq!(bound.get("riemann-udp"), None);
        assert_eq!(bound.udp(), addr);
    }
}
