//! Outputs captured instead of sent: in a rehearsal (`dmon.testing`,
//! `dmon replay`, the shell's `try_stream`) every output node reports what
//! reached it here, in order, and `email()` sends nothing.

use std::sync::{Arc, Mutex};

use crate::event::Event;
use crate::streams::{lock, Node};

/// What reached one output node at one time: one event, or the list a
/// window handed to `email()` as one mail.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    /// The output node as written, e.g. `printer("high: ")`.
    pub node: &'a str,
    /// `printer`, `index`, `email`, …
    pub kind: &'static str,
    pub events: &'a [Arc<Event>],
}

/// The outputs a capture kept, in order. A test may keep millions, so each
/// costs 16 bytes beside its events (which it shares with the tree): the
/// node's number in a table of nodes, and one pointer.
#[derive(Default)]
pub struct Outputs {
    /// Per output node: its description and kind.
    nodes: Vec<(Arc<str>, &'static str)>,
    kept: Vec<Kept>,
}

#[expect(clippy::box_collection, reason = "a thin pointer to a window's list")]
enum Kept {
    One {
        node: u32,
        event: Arc<Event>,
    },
    /// A window's list: boxed twice so that `Kept` stays one pointer wide.
    Many {
        node: u32,
        events: Box<Vec<Arc<Event>>>,
    },
}

impl Kept {
    fn new(node: u32, events: &[Arc<Event>]) -> Kept {
        match events {
            [one] => Kept::One {
                node,
                event: Arc::clone(one),
            },
            many => Kept::Many {
                node,
                events: Box::new(many.to_vec()),
            },
        }
    }
}

impl Outputs {
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The outputs in the order they happened.
    pub fn iter(&self) -> impl Iterator<Item = Output<'_>> + '_ {
        self.kept.iter().map(|kept| {
            let (node, events) = match kept {
                Kept::One { node, event } => (*node, std::slice::from_ref(event)),
                Kept::Many { node, events } => (*node, events.as_slice()),
            };
            let (description, kind) = &self.nodes[node as usize];
            Output {
                node: description,
                kind,
                events,
            }
        })
    }
}

/// The outputs of one rehearsal. Counting is always on; keeping each
/// output's events is for tests (a replay of millions of events counts).
pub struct Capture {
    keep: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    kept: Vec<Kept>,
    /// Per output node, in first-seen order: its description, kind and
    /// count. Keyed by the node's counters, which `by`'s forks share, so a
    /// node's forks count as the one node the user wrote.
    nodes: Vec<Seen>,
}

struct Seen {
    key: usize,
    description: Arc<str>,
    kind: &'static str,
    events: u64,
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
        let i = match state.nodes.iter().position(|n| n.key == key) {
            Some(i) => i,
            None => {
                state.nodes.push(Seen {
                    key,
                    description: node.describe().into(),
                    kind: node.kind(),
                    events: 0,
                });
                state.nodes.len() - 1
            }
        };
        state.nodes[i].events += events.len() as u64;
        if self.keep {
            // Fewer than 2^32 output nodes: each is a node of a tree.
            state.kept.push(Kept::new(i as u32, events));
        }
    }

    /// The outputs kept so far, in order; forgets them.
    pub fn take_outputs(&self) -> Outputs {
        let mut state = lock(&self.state);
        Outputs {
            nodes: (state.nodes.iter())
                .map(|n| (Arc::clone(&n.description), n.kind))
                .collect(),
            kept: std::mem::take(&mut state.kept),
        }
    }

    /// Events per output node, in the order the nodes first output.
    pub fn counts(&self) -> Vec<(String, u64)> {
        lock(&self.state)
            .nodes
            .iter()
            .map(|n| (n.description.to_string(), n.events))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_output_is_two_words() {
        assert_eq!(std::mem::size_of::<Kept>(), 16);
    }
}
