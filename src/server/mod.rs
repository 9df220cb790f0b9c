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

use crate::event::Event;
use crate::pipeline::{Pipeline, Work, CHANNEL_CAPACITY};
use crate::stats::Stats;

/// How long shutdown waits for queued mail.
const MAIL_GRACE: Duration = Duration::from_secs(5);

/// A running server: sources, the expiry clock and the dispatch thread.
pub struct Server {
    pub pipeline: Arc<Pipeline>,
    pub udp_addr: SocketAddr,
    injector: Injector,
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
        let injector = Injector(Arc::new(std::sync::Mutex::new(Some(tx.clone()))));
        let clock = tokio::spawn(expiry_clock(tx, shutdown_rx));
        Ok(Server {
            pipeline,
            udp_addr,
            injector,
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
        self.injector.close();
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

impl Server {
    /// A handle that puts events straight into the pipeline, as the shell's
    /// `inject` does; it stops working when the server shuts down.
    pub fn injector(&self) -> Injector {
        self.injector.clone()
    }
}

/// Puts events into a running pipeline from outside the network sources.
#[derive(Clone)]
pub struct Injector(Arc<std::sync::Mutex<Option<mpsc::Sender<Work>>>>);

impl Injector {
    /// Sends `events` and blocks until every root has processed them. Must
    /// not be called from an async task.
    pub fn inject_blocking(&self, events: Vec<Event>) -> Result<(), Stopped> {
        let tx = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Stopped)?;
        let (done, wait) = tokio::sync::oneshot::channel();
        tx.blocking_send(Work::Acked(events, done))
            .map_err(|_| Stopped)?;
        drop(tx);
        wait.blocking_recv().map_err(|_| Stopped)
    }

    fn close(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The server has stopped; nothing more can be injected.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server has stopped")]
pub struct Stopped;

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
