//! JSON events over UDP (default `127.0.0.1:7689`).
//!
//! Each datagram is decoded on the receiving task; ready datagrams are
//! drained without waiting into one batch, so a burst costs one channel send
//! and one wake of the dispatch thread.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::codec::json;
use crate::event::{now_secs, Event};
use crate::log_limit::LogLimiter;
use crate::pipeline::{Pipeline, Work};
use crate::warn_limited;

/// The largest UDP payload IPv4 can carry.
pub const MAX_DATAGRAM: usize = 65_507;
/// Events gathered into one batch before it is handed over.
const MAX_BATCH: usize = 1024;
/// Asked of the kernel so bursts are absorbed instead of dropped.
const RECV_BUFFER: usize = 8 * 1024 * 1024;

static BAD_INPUT_LOG: LogLimiter = LogLimiter::new(10);

/// Binds a UDP socket with a large receive buffer.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!("could not raise SO_RCVBUF: {e}");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Receives JSON datagrams until `shutdown` fires or the pipeline goes
/// away, then drains what the kernel already holds.
pub async fn run(
    socket: std::net::UdpSocket,
    pipeline: Arc<Pipeline>,
    tx: mpsc::Sender<Work>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    receive(socket, pipeline, tx, shutdown, MAX_DATAGRAM, ingest).await
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
    // One byte more than the largest valid datagram, to see oversized ones.
    let mut buf = vec![0u8; max_datagram + 1];
    loop {
        let received = tokio::select! {
            _ = shutdown.changed() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let mut batch = Vec::new();
        match received {
            Ok((n, peer)) => ingest(&pipeline, &buf[..n], peer, &mut batch),
            Err(e) => tracing::warn!("udp receive failed: {e}"),
        }
        drain_ready(&socket, &pipeline, &mut buf, &mut batch, ingest);
        if !forward(&pipeline, &tx, batch).await {
            return Ok(());
        }
    }
    // Shutting down: what already arrived is in flight, so process it too.
    loop {
        let mut batch = Vec::new();
        drain_ready(&socket, &pipeline, &mut buf, &mut batch, ingest);
        if batch.is_empty() || !forward(&pipeline, &tx, batch).await {
            return Ok(());
        }
    }
}

/// Hands a batch to the pipeline, waiting when it is full (counted, so
/// overload shows in the counters); false once the pipeline is gone.
pub(crate) async fn forward(
    pipeline: &Pipeline,
    tx: &mpsc::Sender<Work>,
    batch: Vec<Event>,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    match tx.try_send(Work::Events(batch)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(work)) => {
            pipeline
                .ingest
                .pipeline_full
                .fetch_add(1, Ordering::Relaxed);
            tx.send(work).await.is_ok()
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

fn drain_ready(
    socket: &UdpSocket,
    pipeline: &Pipeline,
    buf: &mut [u8],
    batch: &mut Vec<Event>,
    ingest: Ingest,
) {
    while batch.len() < MAX_BATCH {
        match socket.try_recv_from(buf) {
            Ok((n, peer)) => ingest(pipeline, &buf[..n], peer, batch),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::warn!("udp receive failed: {e}");
                break;
            }
        }
    }
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
