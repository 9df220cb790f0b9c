//! A worker group's checkpoint: the index's events and the state of the
//! stateful nodes of every root ([`crate::streams::Node::save_state`]),
//! written to the `dmon_checkpoints` bucket every `--checkpoint-secs` and
//! restored by the worker that takes the group over.
//!
//! KV values are limited by nats-server's `max_payload` (1 MiB by default),
//! so the JSON is cut into chunks of [`CHUNK_BYTES`] under
//! `<group>.<slot>.<i>`, and a manifest naming the slot and the chunk count
//! is written last under `<group>`. Slots alternate (0, 1), so a worker
//! killed while writing chunks leaves the previous checkpoint whole.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ClusterError, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::pipeline::{Pipeline, Work};
use crate::streams::{event_from_json, event_to_json, load_tree, save_tree, SavedState};

/// The bucket holding every group's checkpoint.
pub const BUCKET: &str = "dmon_checkpoints";

/// Bytes per KV value: well under nats-server's default 1 MiB payload.
pub const CHUNK_BYTES: usize = 512 * 1024;

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

/// Why a checkpoint could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// NATS did not answer: try again.
    Nats(String),
    /// What is stored is not a checkpoint.
    Corrupt(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Nats(e) | ReadError::Corrupt(e) => f.write_str(e),
        }
    }
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
                .filter(|e| pipeline.self_events_to_streams() || !crate::instrument::is_own(e))
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
            if let Some(root) = roots.iter().find(|r| r.name == saved.root) {
                let (loaded, errors) = load_tree(&root.path(), &*root.node, &saved.states);
                done.nodes += loaded;
                done.errors.extend(errors);
            }
        }
        // The states loaded have deadlines of their own.
        for root in roots.iter() {
            root.node.start(ctx);
        }
        done
    }
}

/// Names the slot and chunks of the last checkpoint written.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    slot: u32,
    chunks: u32,
    bytes: u64,
    node: String,
}

/// A group's checkpoints in the bucket.
#[derive(Clone)]
pub struct Store {
    kv: kv::Store,
    key: String,
    /// The slot the next checkpoint goes to.
    next_slot: u32,
}

impl Store {
    pub async fn open(conn: &Connection, group: &str) -> Result<Store, ClusterError> {
        Ok(Store {
            kv: conn.bucket(BUCKET, None).await?,
            key: super::lease::key_of(group),
            next_slot: 0,
        })
    }

    /// The last checkpoint written, if any (and points the next write at
    /// the other slot).
    pub async fn read(&mut self) -> Result<Option<Checkpoint>, ReadError> {
        let nats = |e: kv::EntryError| ReadError::Nats(e.to_string());
        let Some(manifest) = self.kv.get(&self.key).await.map_err(nats)? else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| ReadError::Corrupt(format!("bad manifest: {e}")))?;
        let mut bytes = Vec::with_capacity(manifest.bytes as usize);
        for i in 0..manifest.chunks {
            let chunk = self
                .kv
                .get(format!("{}.{}.{i}", self.key, manifest.slot))
                .await
                .map_err(nats)?
                .ok_or_else(|| {
                    ReadError::Corrupt(format!("chunk {i} of {} is missing", manifest.chunks))
                })?;
            bytes.extend_from_slice(&chunk);
        }
        self.next_slot = 1 - manifest.slot.min(1);
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ReadError::Corrupt(format!("bad checkpoint: {e}")))
    }

    /// Writes a checkpoint; its size in bytes.
    pub async fn write(&mut self, checkpoint: &Checkpoint) -> Result<u64, String> {
        let bytes = serde_json::to_vec(checkpoint).map_err(|e| e.to_string())?;
        let bytes = Bytes::from(bytes);
        let slot = self.next_slot;
        let mut chunks = 0u32;
        for (i, start) in (0..bytes.len().max(1)).step_by(CHUNK_BYTES).enumerate() {
            let end = (start + CHUNK_BYTES).min(bytes.len());
            self.kv
                .put(format!("{}.{slot}.{i}", self.key), bytes.slice(start..end))
                .await
                .map_err(|e| e.to_string())?;
            chunks += 1;
        }
        let manifest = Manifest {
            slot,
            chunks,
            bytes: bytes.len() as u64,
            node: checkpoint.node.clone(),
        };
        let manifest = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        self.kv
            .put(&self.key, manifest.into())
            .await
            .map_err(|e| e.to_string())?;
        self.next_slot = 1 - slot;
        Ok(bytes.len() as u64)
    }
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
