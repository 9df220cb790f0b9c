//! A worker group's lease: one key in the `dmon_leases` bucket, named after
//! the group, holding the owner's node name.
//!
//! nats-server 2.9 has no per-key TTL, so the bucket's `max_age` is the
//! lease (`--lease-secs`, set by the first worker that makes the bucket):
//! a key not rewritten for that long is gone, and a standby's `create`
//! then succeeds. The owner rewrites it every lease/3 with `update` on the
//! revision it last wrote, so a renewal after someone else took the key
//! fails and the owner knows at once. A clean stop deletes the key: the
//! KV API's `create` accepts a deleted key, so the standby takes over on
//! its next try.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;

use super::{ClusterError, Connection};

/// The bucket holding every group's lease.
pub const BUCKET: &str = "dmon_leases";

/// The lease key of a group: KV keys allow `[-/_=.a-zA-Z0-9]`, so the
/// commas of `0-2,5` become `_`.
pub fn key_of(group: &str) -> String {
    group.replace(',', "_")
}

/// Why the lease could not be taken or kept.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseError {
    /// Another node holds it (its name).
    Held(String),
    /// NATS did not answer as it should: try again.
    Nats(String),
}

/// One group's lease, as one node sees it.
pub struct Lease {
    kv: kv::Store,
    key: String,
    node: String,
}

impl Lease {
    /// Opens (making if needed) the leases bucket, with `lease` as its
    /// keys' lifetime.
    pub async fn open(
        conn: &Connection,
        group: &str,
        node: &str,
        lease: Duration,
    ) -> Result<Lease, ClusterError> {
        Ok(Lease {
            kv: conn.bucket(BUCKET, Some(lease)).await?,
            key: key_of(group),
            node: node.to_owned(),
        })
    }

    /// Takes the lease if nobody holds it (or this node still does, after
    /// a renewal NATS did not answer); the revision written.
    pub async fn take(&self) -> Result<u64, LeaseError> {
        let value = Bytes::from(self.node.clone());
        match self.kv.create(&self.key, value.clone()).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let entry = self
                    .kv
                    .entry(&self.key)
                    .await
                    .map_err(|e| LeaseError::Nats(e.to_string()))?;
                match entry {
                    Some(entry) if entry.value == value => self
                        .kv
                        .update(&self.key, value, entry.revision)
                        .await
                        .map_err(|e| LeaseError::Nats(e.to_string())),
                    Some(entry) => Err(LeaseError::Held(
                        String::from_utf8_lossy(&entry.value).into_owned(),
                    )),
                    // Gone between the two calls: the next try takes it.
                    None => Err(LeaseError::Held("nobody (just released)".into())),
                }
            }
            Err(e) => Err(LeaseError::Nats(e.to_string())),
        }
    }

    /// Rewrites the lease held at `revision`; the new revision.
    pub async fn renew(&self, revision: u64) -> Result<u64, LeaseError> {
        let value = Bytes::from(self.node.clone());
        match self.kv.update(&self.key, value, revision).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let holder = match self.kv.get(&self.key).await {
                    Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                    _ => "another node".to_owned(),
                };
                Err(LeaseError::Held(holder))
            }
            Err(e) => Err(LeaseError::Nats(e.to_string())),
        }
    }

    /// Gives the lease up (if still held at `revision`), so a standby takes
    /// over at once rather than after the lease lapses.
    pub async fn release(&self, revision: u64) -> Result<(), String> {
        self.kv
            .delete_expect_revision(&self.key, Some(revision))
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn group_names_make_valid_keys() {
        assert_eq!(super::key_of("0-2,5,12-15"), "0-2_5_12-15");
    }
}
