//! JSON events over UDP (default `127.0.0.1:7689`).
//!
//! Each datagram is decoded on the receiving task; ready datagrams are
//! drained without waiting into one batch, so a burst costs one channel send
//! and one wake of the dispatch thread.
//!
//! Memory stays bounded under floods: a datagram carries at most
//! `--max-datagram-events` events (the rest are refused and counted),
//! and a batch waits for room in the pipeline ([`Pipeline::reserve`]) while
//! the socket is not read. Meanwhile the kernel's receive buffer fills and
//! the kernel drops datagrams; SO_RXQ_OVFL tells how many with each
//! datagram, and SO_MEMINFO every second and at shutdown (drops after the
//! last datagram received come with none), counted in `kernel_drops`, so
//! a pipeline that cannot keep up is never silent.

use std::io;
use std::mem::{size_of, size_of_val, zeroed};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::source::{BoundSource, Feed, Source, SourceKind};

use crate::codec::json;
use crate::event::{now_secs, Event};
use crate::log_limit::LogLimiter;
use crate::memory::Share;
use crate::pipeline::{Pipeline, Work};
use crate::warn_limited;

pub use crate::codec::json::MAX_DATAGRAM;
/// Events gathered into one batch before it is handed over.
const MAX_BATCH: usize = 1024;
/// Asked of the kernel so bursts are absorbed instead of dropped.
const RECV_BUFFER: usize = 8 * 1024 * 1024;

/// How long a shutdown keeps reading what the kernel already holds: a
/// sender that never stops must not hold shutdown up.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);
/// How often a source waiting on a full pipeline looks at the kernel's drops.
const DROP_POLL: Duration = Duration::from_millis(250);
/// How often a source looks at the kernel's drops otherwise: the drops
/// after the last datagram of a burst come with no datagram.
const IDLE_DROP_POLL: Duration = Duration::from_secs(1);

static BAD_INPUT_LOG: LogLimiter = LogLimiter::new(10);
static KERNEL_DROP_LOG: LogLimiter = LogLimiter::new(2);

/// Binds a UDP socket with a large receive buffer, asking the kernel to
/// report its drops (SO_RXQ_OVFL).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!("could not raise SO_RCVBUF: {e}");
    }
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the right length.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        tracing::warn!(
            "cannot count kernel drops on {addr} (SO_RXQ_OVFL): {}",
            io::Error::last_os_error()
        );
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// JSON events over UDP (`--udp`), always on.
pub static KIND: SourceKind = SourceKind {
    name: "udp",
    label: "JSON UDP",
    flag: "--udp",
    can_be_off: false,
    suspect: "another dmon?",
    announce: "Listening for event datagrams on:",
    ready: true,
};

/// The JSON UDP listener, as configured.
pub struct JsonUdp {
    pub addr: SocketAddr,
}

impl Source for JsonUdp {
    fn kind(&self) -> &'static SourceKind {
        &KIND
    }

    fn addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    fn bind(self: Box<Self>, addr: SocketAddr) -> io::Result<Box<dyn BoundSource>> {
        Ok(Box::new(BoundUdp {
            socket: bind(addr)?,
            max_datagram: MAX_DATAGRAM,
            ingest,
        }))
    }
}

/// A bound datagram source: its socket and how it decodes a datagram
/// (JSON here, Riemann's protobuf in [`super::riemann_udp`]).
pub(crate) struct BoundUdp {
    pub socket: std::net::UdpSocket,
    pub max_datagram: usize,
    pub ingest: Ingest,
}

impl BoundSource for BoundUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn run(self: Box<Self>, feed: Feed) -> JoinHandle<io::Result<()>> {
        tokio::spawn(receive(
            self.socket,
            feed.pipeline,
            feed.tx,
            feed.shutdown,
            self.max_datagram,
            self.ingest,
        ))
    }
}

/// Decodes one datagram into `batch`, counting and logging what is bad.
pub(crate) type Ingest = fn(&Pipeline, &[u8], SocketAddr, &mut Vec<Event>);

/// The receive loop every datagram source shares: one datagram, then every
/// datagram already waiting (up to a batch), handed over at once.
pub(crate) async fn receive(
    socket: std::net::UdpSocket,
    pipeline: Arc<Pipeline>,
    tx: mpsc::Sender<Work>,
    mut shutdown: watch::Receiver<bool>,
    max_datagram: usize,
    ingest: Ingest,
) -> io::Result<()> {
    let socket = UdpSocket::from_std(socket)?;
    let mut rx = Receiver {
        // One byte more than the largest valid datagram, to see oversized ones.
        buf: vec![0u8; max_datagram + 1],
        drops_seen: 0,
        local: socket.local_addr()?,
    };
    let mut drop_poll = tokio::time::interval(IDLE_DROP_POLL);
    drop_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            _ = shutdown.changed() => break,
            _ = drop_poll.tick() => {
                rx.count_drops(&pipeline, kernel_drops(&socket));
                continue;
            }
            r = socket.async_io(Interest::READABLE, || rx.recv(&socket)) => r,
        };
        let mut batch = Vec::new();
        match received {
            Ok((n, peer, drops)) => {
                rx.count_drops(&pipeline, drops);
                ingest(&pipeline, &rx.buf[..n], peer, &mut batch)
            }
            Err(e) => tracing::warn!("udp receive failed: {e}"),
        }
        rx.drain_ready(&socket, &pipeline, &mut batch, ingest);
        if !rx.forward(&socket, &pipeline, &tx, batch).await {
            return Ok(());
        }
    }
    // Shutting down: what already arrived is in flight, so process it too.
    let until = Instant::now() + SHUTDOWN_DRAIN;
    while Instant::now() < until {
        let mut batch = Vec::new();
        rx.drain_ready(&socket, &pipeline, &mut batch, ingest);
        if batch.is_empty() || !rx.forward(&socket, &pipeline, &tx, batch).await {
            break;
        }
    }
    // The final counters must hold every drop, not those up to the last
    // datagram read.
    rx.count_drops(&pipeline, kernel_drops(&socket));
    Ok(())
}

/// A socket's receive buffer and what it has seen of the kernel's drops.
struct Receiver {
    buf: Vec<u8>,
    /// The kernel's drop count for this socket when last seen.
    drops_seen: u32,
    local: SocketAddr,
}

impl Receiver {
    /// One datagram with recvmsg: its length, its sender, and the kernel's
    /// count of datagrams dropped on this socket so far (SO_RXQ_OVFL).
    fn recv(&mut self, socket: &UdpSocket) -> io::Result<(usize, SocketAddr, Option<u32>)> {
        // SAFETY: every pointer in `msg` points at a live local buffer of
        // the length given with it; the control messages are read only
        // within `msg_controllen` through the CMSG_* macros.
        unsafe {
            let mut name: libc::sockaddr_storage = zeroed();
            let mut iov = libc::iovec {
                iov_base: self.buf.as_mut_ptr().cast(),
                iov_len: self.buf.len(),
            };
            // u64s, for the alignment cmsghdr needs.
            let mut control = [0u64; 8];
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 8]>() as _;
            let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut drops = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL
                {
                    drops = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u32>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            let peer = SockAddr::new(name, msg.msg_namelen)
                .as_socket()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            Ok((n as usize, peer, drops))
        }
    }

    /// Hands a batch to the pipeline once it has room for its events,
    /// waiting when it is full (counted in `pipeline_full`, so overload
    /// shows); false once the pipeline is gone. While it waits the socket is
    /// not read, so the kernel's drops are polled (SO_MEMINFO) to show in
    /// the counters as they happen, not only at the next datagram.
    async fn forward(
        &mut self,
        socket: &UdpSocket,
        pipeline: &Pipeline,
        tx: &mpsc::Sender<Work>,
        batch: Vec<Event>,
    ) -> bool {
        if batch.is_empty() {
            return true;
        }
        // Room by count (--max-in-flight) and by bytes (--memory-limit's
        // share for waiting events): a datagram of tags can decode to
        // fifteen times its size.
        let bytes = batch.iter().map(|e| e.retained_bytes()).sum();
        let room = pipeline.try_reserve(batch.len()).and_then(|permits| {
            let charge = pipeline.memory().charge_now(Share::Pipeline, bytes)?;
            Some(permits.holding(charge))
        });
        let permits = match room {
            Some(permits) => permits,
            None => {
                pipeline
                    .ingest
                    .pipeline_full
                    .fetch_add(1, Ordering::Relaxed);
                let reserve = async {
                    let permits = pipeline.reserve(batch.len()).await;
                    permits.holding(pipeline.memory().charge(Share::Pipeline, bytes).await)
                };
                tokio::pin!(reserve);
                let mut poll = tokio::time::interval(DROP_POLL);
                loop {
                    tokio::select! {
                        permits = &mut reserve => break permits,
                        _ = poll.tick() => self.count_drops(pipeline, kernel_drops(socket)),
                    }
                }
            }
        };
        tx.send(Work::Reserved(batch, permits, None)).await.is_ok()
    }

    /// Counts the drops the kernel reported (with a datagram, or asked with
    /// SO_MEMINFO) since it last did.
    fn count_drops(&mut self, pipeline: &Pipeline, drops: Option<u32>) {
        let Some(total) = drops else { return };
        let new = total.wrapping_sub(self.drops_seen);
        // A datagram carries the count from when it was queued, which can
        // be older than the count SO_MEMINFO gave since: not new drops.
        if new == 0 || new > u32::MAX / 2 {
            return;
        }
        self.drops_seen = total;
        pipeline
            .ingest
            .kernel_drops
            .fetch_add(new as u64, Ordering::Relaxed);
        let busy = match pipeline.busy() {
            Some((secs, path)) if secs >= 0.1 => format!("; busy {secs:.1} s in {path}"),
            _ => String::new(),
        };
        warn_limited!(
            KERNEL_DROP_LOG,
            "the kernel dropped {new} datagrams on {} ({total} in all): dmon is not keeping up \
             ({} events queued{busy})",
            self.local,
            pipeline.queued()
        );
    }

    fn drain_ready(
        &mut self,
        socket: &UdpSocket,
        pipeline: &Pipeline,
        batch: &mut Vec<Event>,
        ingest: Ingest,
    ) {
        while batch.len() < MAX_BATCH {
            match socket.try_io(Interest::READABLE, || self.recv(socket)) {
                Ok((n, peer, drops)) => {
                    self.count_drops(pipeline, drops);
                    ingest(pipeline, &self.buf[..n], peer, batch)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("udp receive failed: {e}");
                    break;
                }
            }
        }
    }
}

/// The kernel's count of datagrams dropped on `socket` (SO_MEMINFO's
/// SK_MEMINFO_DROPS: the counter SO_RXQ_OVFL reports with each datagram).
fn kernel_drops(socket: &UdpSocket) -> Option<u32> {
    /// asm-generic's SO_MEMINFO; the libc crate does not name it.
    const SO_MEMINFO: libc::c_int = 55;
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes; the kernel writes at most
    // that many and says how many in `len`.
    let got = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let full = size_of_val(&info) as libc::socklen_t;
    (got == 0 && len >= full).then_some(info[libc::SK_MEMINFO_DROPS as usize])
}

/// Keeps the first `--max-datagram-events` events a datagram decoded
/// into `batch` (those after `before`), refusing and counting the rest.
/// True if some were refused.
pub(crate) fn limit_events(
    pipeline: &Pipeline,
    batch: &mut Vec<Event>,
    before: usize,
    peer: SocketAddr,
    what: &str,
) -> bool {
    let max = pipeline.max_per_datagram();
    let decoded = batch.len() - before;
    if decoded <= max {
        return false;
    }
    batch.truncate(before + max);
    // The refused events' room would otherwise travel with the batch.
    batch.shrink_to_fit();
    let refused = decoded - max;
    pipeline
        .ingest
        .refused
        .fetch_add(refused as u64, Ordering::Relaxed);
    warn_limited!(
        BAD_INPUT_LOG,
        "{what} from {peer} holds {decoded} events; the limit is {max} \
         (--max-datagram-events): {refused} refused"
    );
    true
}

fn ingest(pipeline: &Pipeline, datagram: &[u8], peer: SocketAddr, batch: &mut Vec<Event>) {
    let stats = &pipeline.ingest;
    stats.datagrams.fetch_add(1, Ordering::Relaxed);
    let before = batch.len();
    let mut errors = Vec::new();
    if datagram.len() > MAX_DATAGRAM {
        errors.push(json::DecodeError(format!(
            "datagram of more than {MAX_DATAGRAM} bytes"
        )));
    } else {
        json::decode(datagram, now_secs(), batch, &mut errors);
    }
    stats
        .events
        .fetch_add((batch.len() - before) as u64, Ordering::Relaxed);
    limit_events(pipeline, batch, before, peer, "datagram");
    if !errors.is_empty() {
        stats.bad_datagrams.fetch_add(1, Ordering::Relaxed);
        stats
            .bad_events
            .fetch_add(errors.len() as u64, Ordering::Relaxed);
        for err in errors {
            warn_limited!(
                BAD_INPUT_LOG,
                "bad event from {peer} ({} bytes): {err}",
                datagram.len()
            );
        }
    }
}
