//! Clients of a running dmon: JSON datagrams over UDP, and the Riemann
//! protocol over TCP (what `dmon send`, `dmon query`, the shell's
//! `--connect` and the benchmark's load generators speak), in plain text or
//! over TLS ([`ClientTls`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use prost::Message;

use crate::codec::json;
use crate::codec::json::MAX_DATAGRAM;
use crate::codec::riemann::{from_proto, to_proto, Msg, Query};
use crate::event::{now_secs, Event};
use crate::tls::ClientTls;

pub struct RiemannClient {
    stream: Connection,
    timeout: Duration,
}

/// A connection, in plain text or TLS.
enum Connection {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(s) => s.read(buf),
            Connection::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Plain(s) => s.write(buf),
            Connection::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Connection::Plain(s) => s.flush(),
            Connection::Tls(s) => s.flush(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("invalid reply: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("server refused: {0}")]
    Refused(String),
}

impl RiemannClient {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Self::connect_with(addr, timeout, None)
    }

    /// Connects, over TLS when `tls` is given: the handshake is done here,
    /// so a server that is not TLS, or a certificate that is not trusted,
    /// is an error of `connect`, not of the first request.
    pub fn connect_with(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> io::Result<Self> {
        let mut tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        // A server that stops reading must not hold a writer for ever.
        tcp.set_write_timeout(Some(timeout))?;
        let stream = match tls {
            None => Connection::Plain(tcp),
            Some(tls) => {
                let mut session =
                    rustls::ClientConnection::new(tls.config(), tls.server_name(addr))
                        .map_err(io::Error::other)?;
                while session.is_handshaking() {
                    session.complete_io(&mut tcp).map_err(|e| {
                        io::Error::new(e.kind(), format!("TLS handshake with {addr}: {e}"))
                    })?;
                }
                Connection::Tls(Box::new(rustls::StreamOwned::new(session, tcp)))
            }
        };
        Ok(RiemannClient { stream, timeout })
    }

    /// Sends one message and reads its reply.
    pub fn request(&mut self, msg: &Msg) -> Result<Msg, ClientError> {
        self.send_raw(&msg.encode_to_vec())?;
        self.read_reply()
    }

    /// Sends a whole frame: the 4-byte big-endian length, then the message.
    pub fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.stream.write_all(frame)
    }

    /// Writes one frame of already encoded bytes.
    pub fn send_raw(&mut self, body: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(body);
        self.stream.write_all(&frame)
    }

    pub fn read_reply(&mut self) -> Result<Msg, ClientError> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| self.read_error(e))?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| self.read_error(e))?;
        let reply = Msg::decode(bytes::Bytes::from(body))?;
        match reply.ok {
            Some(false) => Err(ClientError::Refused(reply.error_text().unwrap_or_default())),
            _ => Ok(reply),
        }
    }

    /// A read that timed out says so, instead of "resource temporarily
    /// unavailable"; one cut short says the server closed the connection.
    fn read_error(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply within {:?}", self.timeout),
            ),
            _ if tls_alert(&e).is_some() => {
                let why = match tls_alert(&e) {
                    Some(rustls::AlertDescription::CertificateRequired) => {
                        "the server requires a client certificate (pass --tls-cert and --tls-key)"
                    }
                    _ => "the server refused this client's certificate",
                };
                io::Error::new(io::ErrorKind::PermissionDenied, format!("{why}: {e}"))
            }
            io::ErrorKind::UnexpectedEof => {
                let hint = match self.stream {
                    Connection::Plain(_) => " (a TLS port? then pass --tls-ca)",
                    Connection::Tls(_) => "",
                };
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the server closed the connection without replying{hint}"),
                )
            }
            _ => e,
        }
    }

    /// Sends events and waits for the acknowledgement.
    pub fn send_events(&mut self, events: &[Event]) -> Result<(), ClientError> {
        let msg = Msg {
            events: events.iter().map(to_proto).collect(),
            ..Msg::default()
        };
        self.request(&msg).map(drop)
    }

    /// The index's events matching a query.
    pub fn query(&mut self, query: &str) -> Result<Vec<Event>, ClientError> {
        let msg = Msg {
            query: Some(Query {
                string: Some(bytes::Bytes::copy_from_slice(query.as_bytes())),
            }),
            ..Msg::default()
        };
        let now = now_secs();
        Ok(self
            .request(&msg)?
            .events
            .iter()
            .map(|e| from_proto(e, now))
            .collect())
    }
}

/// The alert a TLS server sent about this client's certificate, if that
/// is what `e` is.
fn tls_alert(e: &io::Error) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription::*;
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(
            alert @ (CertificateRequired | BadCertificate | UnknownCA | CertificateUnknown),
        ) => Some(*alert),
        _ => None,
    }
}

/// Most events packed in one datagram: the receiver refuses a datagram
/// of more than `--max-datagram-events` (10,000 by default), which tiny
/// events would otherwise reach well under [`MAX_DATAGRAM`] bytes.
pub const MAX_DATAGRAM_EVENTS: usize = 1_000;

/// Sends events as NDJSON datagrams, packing as many per datagram as fit
/// (at most [`MAX_DATAGRAM`] bytes and [`MAX_DATAGRAM_EVENTS`] events);
/// returns how many datagrams went out.
pub fn send_datagrams(to: SocketAddr, events: &[Event]) -> io::Result<usize> {
    let mut out = Datagrams::new(to)?;
    for e in events {
        out.push(e)?;
    }
    out.finish()
}

/// Events going out as NDJSON datagrams as they come, each datagram sent
/// once it is full (see [`send_datagrams`]).
pub struct Datagrams {
    socket: UdpSocket,
    to: SocketAddr,
    datagram: String,
    events: usize,
    sent: usize,
}

impl Datagrams {
    pub fn new(to: SocketAddr) -> io::Result<Datagrams> {
        let bind: SocketAddr = if to.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        Ok(Datagrams {
            socket: UdpSocket::bind(bind)?,
            to,
            datagram: String::new(),
            events: 0,
            sent: 0,
        })
    }

    /// Adds `event`, sending the datagram first if it would not fit. An
    /// event too big for a datagram on its own goes alone (the receiver
    /// says it refused it).
    pub fn push(&mut self, event: &Event) -> io::Result<()> {
        let line = json::encode(event);
        let full = self.datagram.len() + line.len() + 1 > MAX_DATAGRAM
            || self.events >= MAX_DATAGRAM_EVENTS;
        if !self.datagram.is_empty() && full {
            self.send()?;
        }
        self.datagram.push_str(&line);
        self.datagram.push('\n');
        self.events += 1;
        Ok(())
    }

    /// Sends what is left; returns how many datagrams went out in all.
    pub fn finish(mut self) -> io::Result<usize> {
        if !self.datagram.is_empty() {
            self.send()?;
        }
        Ok(self.sent)
    }

    fn send(&mut self) -> io::Result<()> {
        self.socket.send_to(self.datagram.as_bytes(), self.to)?;
        self.sent += 1;
        self.datagram.clear();
        self.events = 0;
        Ok(())
    }
}
