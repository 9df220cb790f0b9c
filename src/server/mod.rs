//! Servers: sources that receive events from the network, decode them on
//! their own tasks and hand batches to the pipeline.

pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::pipeline::{Pipeline, Work, CHANNEL_CAPACITY};
use crate::stats::Stats;

/// How long shutdown waits for queued mail.
const MAIL_GRACE: Duration = Duration::from_secs(5);

/// A running server: sources, the expiry clock and the dispatch thread.
pub struct Server {
    pub pipeline: Arc<Pipeline>,
    pub udp_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    udp: JoinHandle<io::Result<()>>,
    clock: JoinHandle<()>,
    dispatcher: thread::JoinHandle<()>,
}

impl Server {
    /// Binds the sources and starts processing. `spawn_dispatcher` runs the
    /// pipeline's dispatch loop on a thread of the embedder's choosing (the
    /// Python layer keeps it attached to the interpreter).
    pub async fn start<D>(
        pipeline: Arc<Pipeline>,
        udp_addr: SocketAddr,
        spawn_dispatcher: D,
    ) -> io::Result<Server>
    where
        D: FnOnce(Arc<Pipeline>, mpsc::Receiver<Work>) -> thread::JoinHandle<()>,
    {
        let socket = udp::bind(udp_addr)?;
        let udp_addr = socket.local_addr()?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let dispatcher = spawn_dispatcher(Arc::clone(&pipeline), rx);
        let udp = tokio::spawn(udp::run(
            socket,
            Arc::clone(&pipeline),
            tx.clone(),
            shutdown_rx.clone(),
        ));
        let clock = tokio::spawn(expiry_clock(tx, shutdown_rx));
        Ok(Server {
            pipeline,
            udp_addr,
            shutdown,
            udp,
            clock,
            dispatcher,
        })
    }

    /// Stops receiving, processes everything already received, waits a
    /// little for queued mail, and returns the final counters.
    pub async fn shutdown(self) -> Stats {
        let _ = self.shutdown.send(true);
        match self.udp.await {
            Ok(Err(e)) => tracing::warn!("udp server stopped with an error: {e}"),
            Err(e) => tracing::warn!("udp server task failed: {e}"),
            Ok(Ok(())) => {}
        }
        let _ = self.clock.await;
        // Every sender is gone now, so the dispatcher drains and returns.
        let dispatcher = self.dispatcher;
        let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
        let mailer_done = {
            let pipeline = Arc::clone(&self.pipeline);
            tokio::task::spawn_blocking(move || pipeline.context().mailer.shutdown(MAIL_GRACE))
                .await
                .unwrap_or(false)
        };
        if !mailer_done {
            tracing::warn!("mail still queued after {MAIL_GRACE:?} was not sent");
        }
        self.pipeline.stats()
    }
}

/// Asks the dispatch thread to expire the index once a second.
async fn expiry_clock(tx: mpsc::Sender<Work>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every.tick() => {
                if tx.send(Work::Tick).await.is_err() {
                    return;
                }
            }
        }
    }
}
