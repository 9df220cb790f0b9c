//! The way into a running pipeline that is not a network source: the
//! shell's `inject`, and Python's pushes from other threads than the
//! dispatch thread. Each call waits until its work has been done.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::event::Event;
use crate::pipeline::{Pipeline, Work};

/// Puts events into a running pipeline from outside the network sources.
#[derive(Clone)]
pub struct Injector(Arc<Mutex<Option<mpsc::Sender<Work>>>>);

impl Injector {
    pub(super) fn new(tx: mpsc::Sender<Work>) -> Self {
        Injector(Arc::new(Mutex::new(Some(tx))))
    }

    /// Sends `events` and blocks until every root has processed them. Must
    /// not be called from an async task.
    pub fn inject_blocking(&self, events: Vec<Event>) -> Result<(), Stopped> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send_blocking(Work::Acked(events, done))?;
        wait.blocking_recv().map_err(|_| Stopped)
    }

    /// Runs `job` on the dispatch thread, between two units of work, and
    /// blocks until it has run. Must not be called from an async task.
    pub fn run_blocking(
        &self,
        job: impl FnOnce(&Pipeline) + Send + 'static,
    ) -> Result<(), Stopped> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send_blocking(Work::Call(Box::new(move |pipeline: &Pipeline| {
            job(pipeline);
            let _ = done.send(());
        })))?;
        wait.blocking_recv().map_err(|_| Stopped)
    }

    fn send_blocking(&self, work: Work) -> Result<(), Stopped> {
        let tx = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Stopped)?;
        tx.blocking_send(work).map_err(|_| Stopped)
    }

    pub(super) fn close(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The server has stopped; nothing more can be injected.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server has stopped")]
pub struct Stopped;
