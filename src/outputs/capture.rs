//! Outputs captured instead of sent: in a rehearsal (`dmon.testing`,
//! `dmon replay`, the shell's `try_stream`) every output node reports what
//! reached it here, in order, and `email()` sends nothing.

use std::sync::{Arc, Mutex};

use crate::event::Event;
use crate::streams::{lock, Node};

/// What reached one output node at one time: one event, or the list a
/// window handed to `email()` as one mail.
#[derive(Clone, Debug)]
pub struct Output {
    /// The output node as written, e.g. `printer("high: ")`, shared by
    /// its outputs (a test may keep a million).
    pub node: Arc<str>,
    /// `printer`, `index`, `email`, …
    pub kind: &'static str,
    pub events: Box<[Arc<Event>]>,
}

/// The outputs of one rehearsal. Counting is always on; keeping each
/// output's events is for tests (a replay of millions of events counts).
pub struct Capture {
    keep: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    outputs: Vec<Output>,
    /// Per output node, in first-seen order: its description and count.
    /// Keyed by the node's counters, which `by`'s forks share, so a node's
    /// forks count as the one node the user wrote.
    nodes: Vec<(usize, Arc<str>, u64)>,
}

impl Capture {
    /// Counts, and keeps every output when `keep`.
    pub fn new(keep: bool) -> Self {
        Capture {
            keep,
            state: Mutex::default(),
        }
    }

    /// Notes that `events` reached the output node `node`.
    pub fn record(&self, node: &dyn Node, events: &[Arc<Event>]) {
        let key = node.stats() as *const _ as usize;
        let mut state = lock(&self.state);
        let i = match state.nodes.iter().position(|(k, _, _)| *k == key) {
            Some(i) => i,
            None => {
                state.nodes.push((key, node.describe().into(), 0));
                state.nodes.len() - 1
            }
        };
        state.nodes[i].2 += events.len() as u64;
        if self.keep {
            let output = Output {
                node: Arc::clone(&state.nodes[i].1),
                kind: node.kind(),
                events: events.into(),
            };
            state.outputs.push(output);
        }
    }

    /// The outputs kept so far, in order; forgets them.
    pub fn take_outputs(&self) -> Vec<Output> {
        std::mem::take(&mut lock(&self.state).outputs)
    }

    /// Events per output node, in the order the nodes first output.
    pub fn counts(&self) -> Vec<(String, u64)> {
        lock(&self.state)
            .nodes
            .iter()
            .map(|(_, node, n)| (node.to_string(), *n))
            .collect()
    }
}
