//! What a running coroutine sends on counts as its output: the coroutines
//! handling an event on this thread, innermost last.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dmon_server::event::Event;
use dmon_server::streams::NodeStats;

thread_local! {
    /// The coroutines handling an event on this thread, innermost last:
    /// what they send on counts as their output.
    static SENDING: RefCell<Vec<Arc<NodeStats>>> = const { RefCell::new(Vec::new()) };
}

/// Counts `event` as output of the coroutine now running on this thread,
/// if any (called when Python code sends an event into a stream).
pub fn count_sent(event: &Arc<Event>) {
    SENDING.with(|s| {
        if let Some(stats) = s.borrow().last() {
            stats.events_out.fetch_add(1, Ordering::Relaxed);
            stats.taps.publish(event);
        }
    });
}

/// Runs `f` with `stats` counting what Python sends meanwhile (a coroutine
/// handling an event).
pub fn counting_as<R>(stats: &Arc<NodeStats>, f: impl FnOnce() -> R) -> R {
    SENDING.with(|s| s.borrow_mut().push(Arc::clone(stats)));
    let out = f();
    SENDING.with(|s| s.borrow_mut().pop());
    out
}
