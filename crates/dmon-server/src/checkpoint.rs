//! A snapshot of what a restart would lose: the index's events and the
//! state of the stateful nodes of every root
//! ([`crate::streams::Node::save_state`]), and putting it back under the
//! reload rules (a node at the same path built the same way gets its
//! state). Where it is kept is someone else's business: a cluster worker's
//! in NATS KV ([`crate::cluster::checkpoint`]), `serve --state-dir`'s in a
//! local file ([`crate::state_dir`]).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::pipeline::{Pipeline, Work};
use crate::streams::{
    event_from_json, event_to_json, load_tree, save_tree, walk_tree, Node, SavedState,
};

/// What a checkpoint holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The node that wrote it, and when (its clock, seconds).
    pub node: String,
    pub at: f64,
    /// The index's events.
    pub index: Vec<serde_json::Value>,
    pub roots: Vec<RootState>,
    /// Per partition, the stream sequence of the last message the state
    /// includes: a message at or below it, delivered again (its ack was
    /// lost, or the checkpoint landed though its write seemed to fail), is
    /// acknowledged without being processed twice.
    #[serde(default)]
    pub done: std::collections::BTreeMap<u32, u64>,
}

/// The saved node states of one root, by root name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RootState {
    pub root: String,
    pub states: Vec<SavedState>,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Restored {
    pub index_events: usize,
    pub nodes: usize,
    pub errors: Vec<String>,
    /// Saved states no node took, the module having changed: `path (how
    /// the node was built)`, or a root no longer there. Those places start
    /// fresh.
    pub unmatched: Vec<String>,
}

impl Checkpoint {
    /// The pipeline's state now. Call on the dispatch thread ([`take`]),
    /// or the state may hold half a batch.
    pub fn take(pipeline: &Pipeline, node: &str) -> Checkpoint {
        let ctx = pipeline.context();
        Checkpoint {
            node: node.to_owned(),
            at: ctx.now(),
            index: ctx
                .index
                .snapshot()
                .iter()
                // dmon's own events describe this node, not the group's
                // state: a standby restoring them would hold another
                // node's rates, which no one renews, and (as ordinary
                // events once out of JSON) re-inject them into its roots
                // on expiry. They are the streams' state only when they
                // go through the streams.
                .filter(|e| pipeline.self_events_to_streams() || !e.is_dmons_own())
                .map(|e| event_to_json(e))
                .collect(),
            roots: pipeline
                .roots()
                .iter()
                .map(|r| RootState {
                    root: r.name.clone(),
                    states: save_tree(&r.path(), &*r.node),
                })
                .collect(),
            done: Default::default(),
        }
    }

    /// Puts the saved state into the pipeline: the index's events, and each
    /// node's state where a root of the same name has a node at the same
    /// path built the same way. Nodes it does not name keep theirs.
    pub fn restore(self, pipeline: &Pipeline) -> Restored {
        let mut done = Restored::default();
        let ctx = pipeline.context();
        for e in self.index {
            match event_from_json(e) {
                Ok(e) => {
                    ctx.index.insert(&e);
                    done.index_events += 1;
                }
                Err(e) => done.errors.push(format!("index: {e}")),
            }
        }
        let roots = pipeline.roots();
        for saved in self.roots {
            let Some(root) = roots.iter().find(|r| r.name == saved.root) else {
                done.unmatched
                    .push(format!("{} (a root no longer there)", saved.root));
                continue;
            };
            let (loaded, errors) = load_tree(&root.path(), &*root.node, &saved.states);
            done.nodes += loaded;
            done.errors.extend(errors);
            done.unmatched
                .extend(unmatched(&root.path(), &*root.node, &saved.states));
        }
        // The states loaded have deadlines of their own.
        for root in roots.iter() {
            root.node.start(ctx);
        }
        done
    }
}

/// The saved states of a tree that no node at the same path built the
/// same way takes (see [`load_tree`]).
fn unmatched(path: &str, node: &dyn Node, saved: &[SavedState]) -> Vec<String> {
    let mut built = HashSet::new();
    walk_tree(path, node, &mut |path, n| {
        built.insert((path.to_owned(), n.describe()));
    });
    saved
        .iter()
        .filter(|s| !built.contains(&(s.path.clone(), s.describe.clone())))
        .map(|s| format!("{} ({})", s.path, s.describe))
        .collect()
}

/// Takes a checkpoint on the dispatch thread, after the work sent before
/// it; `None` once the pipeline has stopped.
pub async fn take(tx: &mpsc::Sender<Work>, node: &str) -> Option<Checkpoint> {
    let node = node.to_owned();
    let (done, taken) = oneshot::channel();
    let job = move |p: &Pipeline| {
        let _ = done.send(Checkpoint::take(p, &node));
    };
    tx.send(Work::Call(Box::new(job))).await.ok()?;
    taken.await.ok()
}

/// Restores `checkpoint` on the dispatch thread (where a node's fresh
/// copies, which `by` makes, may need the embedder's lock); `None` once
/// the pipeline has stopped.
pub async fn restore(tx: &mpsc::Sender<Work>, checkpoint: Checkpoint) -> Option<Restored> {
    let (done, restored) = oneshot::channel();
    let job = move |p: &Pipeline| {
        let _ = done.send(checkpoint.restore(p));
    };
    tx.send(Work::Call(Box::new(job))).await.ok()?;
    restored.await.ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::roots::Root;
    use crate::testing::Harness;
    use crate::vals;

    fn counter_root(h: &Harness, name: &str, init: i64) -> Root {
        let node = h.build(
            "counter",
            vec![],
            vec![("init".into(), init.into())],
            vec![],
        );
        Root {
            name: name.into(),
            node,
        }
    }

    #[test]
    fn restore_gives_each_state_to_the_node_built_the_same_way_and_names_the_others() {
        let h = Harness::at(1000.0);
        // Counters by root name and `init`, and a window.
        let pipeline = |counters: &[(&str, i64)]| {
            let mut roots: Vec<Root> = counters
                .iter()
                .map(|(name, init)| counter_root(&h, name, *init))
                .collect();
            roots.push(Root {
                name: "window_stream".into(),
                node: h.build("moving_event_window", vals![3], vec![], vec![]),
            });
            Pipeline::new(Arc::clone(&h.ctx), roots)
        };
        let before = pipeline(&[
            ("kept_stream", 0),
            ("changed_stream", 0),
            ("gone_stream", 0),
        ]);
        before.process(crate::event::Event {
            host: Some("a".into()),
            metric: Some(crate::event::Number::Int(2)),
            ..Default::default()
        });
        let saved = Checkpoint::take(&before, "node");

        let after = pipeline(&[
            ("new_stream", 0),
            ("kept_stream", 0),
            ("changed_stream", 10),
        ]);
        let restored = saved.restore(&after);
        assert_eq!(restored.nodes, 2, "the kept counter and the window");
        assert!(restored.errors.is_empty(), "{:?}", restored.errors);
        assert_eq!(
            restored.unmatched,
            [
                "changed_stream/counter (counter(init=0))",
                "gone_stream (a root no longer there)"
            ]
        );
        let kept = Checkpoint::take(&after, "node");
        let state_of = |root: &str| {
            kept.roots.iter().find(|r| r.root == root).unwrap().states[0]
                .state
                .clone()
        };
        assert_eq!(state_of("kept_stream"), serde_json::json!(2));
        assert_eq!(state_of("changed_stream"), serde_json::json!(10));
        assert_eq!(state_of("new_stream"), serde_json::json!(0));
        assert_eq!(
            state_of("window_stream")["events"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
