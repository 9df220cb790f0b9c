//! A worker group's checkpoint ([`crate::checkpoint::Checkpoint`]: the
//! index's events and the state of the stateful nodes of every root),
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
use crate::checkpoint::Checkpoint;

/// The bucket holding every group's checkpoint.
pub const BUCKET: &str = "dmon_checkpoints";

/// Bytes per KV value: well under nats-server's default 1 MiB payload.
pub const CHUNK_BYTES: usize = 512 * 1024;

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
