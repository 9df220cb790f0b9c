//! A listener that could not be opened, and how all of them that failed
//! are said at once, with the flags that move them.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use super::source::SourceKind;

/// A listener that could not be opened on its address.
// The io error is part of the message, not a `source`: reports that print
// the chain would show it twice.
#[derive(Debug, thiserror::Error)]
#[error("{} {addr}: {error}", kind.label)]
pub struct ListenError {
    pub kind: &'static SourceKind,
    pub addr: SocketAddr,
    pub error: io::Error,
}

impl ListenError {
    /// `--udp 127.0.0.1:7689: address in use (another dmon?)`.
    fn brief(&self) -> String {
        let flag = self.kind.flag;
        let addr = self.addr;
        if self.error.kind() == io::ErrorKind::AddrInUse {
            format!("{flag} {addr}: address in use ({})", self.kind.suspect)
        } else {
            format!("{flag} {addr}: {}", self.error)
        }
    }
}

/// Every listener that could not be opened, in the order of their flags
/// (`--udp`, `--riemann-tcp`, `--riemann-udp`, `--http`); never empty.
///
/// Said with the flags that move them (and turn them off, for those that
/// can be): one failure as `Riemann TCP 127.0.0.1:5555 is in use (another
/// dmon or Riemann?); choose another with …`, several in one line naming
/// each flag and address.
#[derive(Debug)]
pub struct ListenErrors(pub Vec<ListenError>);

impl std::error::Error for ListenErrors {}

impl fmt::Display for ListenErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off: Vec<&str> = self
            .0
            .iter()
            .filter(|e| e.kind.can_be_off)
            .map(|e| e.kind.flag)
            .collect();
        if let [e] = &self.0[..] {
            let (listener, addr) = (e.kind.label, e.addr);
            if e.error.kind() == io::ErrorKind::AddrInUse {
                write!(f, "{listener} {addr} is in use ({})", e.kind.suspect)?;
            } else {
                write!(f, "cannot listen for {listener} on {addr}: {}", e.error)?;
            }
            write!(f, "; choose another with {} HOST:PORT", e.kind.flag)?;
            if !off.is_empty() {
                write!(f, " or turn it off with {} off", off[0])?;
            }
            return Ok(());
        }
        let each: Vec<String> = self.0.iter().map(ListenError::brief).collect();
        write!(
            f,
            "cannot listen on {} addresses: {}; choose another HOST:PORT for each",
            self.0.len(),
            each.join("; "),
        )?;
        if !off.is_empty() {
            let off: Vec<String> = off.iter().map(|flag| format!("{flag} off")).collect();
            write!(f, " (or turn it off: {})", off.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{http_listener, riemann_udp, udp};

    fn failed(kind: &'static SourceKind, addr: &str, error: io::ErrorKind) -> ListenError {
        ListenError {
            kind,
            addr: addr.parse().unwrap(),
            error: io::Error::from(error),
        }
    }

    #[test]
    fn one_failure_names_its_listener_and_the_flags_that_move_it() {
        let one = ListenErrors(vec![failed(
            &riemann_udp::KIND,
            "127.0.0.1:5555",
            io::ErrorKind::AddrInUse,
        )]);
        assert_eq!(
            one.to_string(),
            "Riemann UDP 127.0.0.1:5555 is in use (another dmon or Riemann?); choose another \
             with --riemann-udp HOST:PORT or turn it off with --riemann-udp off"
        );
    }

    #[test]
    fn several_failures_are_said_in_one_line_each_with_its_flag() {
        let all = ListenErrors(vec![
            failed(&udp::KIND, "127.0.0.1:7689", io::ErrorKind::AddrInUse),
            failed(
                &http_listener::KIND,
                "10.9.9.9:80",
                io::ErrorKind::AddrNotAvailable,
            ),
        ]);
        let said = all.to_string();
        assert!(
            said.starts_with(
                "cannot listen on 2 addresses: --udp 127.0.0.1:7689: address in use \
                 (another dmon?); --http 10.9.9.9:80: "
            ),
            "{said}"
        );
        assert!(
            said.ends_with("; choose another HOST:PORT for each (or turn it off: --http off)"),
            "{said}"
        );
        assert!(!said.contains('\n'), "{said}");
    }
}
