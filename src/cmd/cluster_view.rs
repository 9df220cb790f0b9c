//! A node's part in the one view of the cluster, from its flags: with
//! --cluster, --publish or --consume it registers and answers cluster
//! queries (see [`crate::cluster::query`]).

use std::sync::Arc;

use super::cluster_opts::ClusterOpts;
use crate::cluster::query::{Limits, Member, Responder};
use crate::cluster::{self, Connection};
use crate::event::now_secs;
use crate::pipeline::Pipeline;

/// A registered, answering node.
pub struct ClusterView {
    pub conn: Connection,
    pub name: String,
    responder: Responder,
}

impl ClusterView {
    /// Starts answering on the current runtime, if `c` gives a NATS URL,
    /// queries bounded by `limits`; NATS unreachable is an error naming
    /// the URL and its flag.
    pub async fn start(
        c: &ClusterOpts,
        limits: Limits,
        pipeline: Arc<Pipeline>,
    ) -> anyhow::Result<Option<ClusterView>> {
        let Some(url) = c.view_url() else {
            return Ok(None);
        };
        let flag = if c.cluster.is_some() {
            "--cluster"
        } else if c.publish.is_some() {
            "--publish"
        } else {
            "--consume"
        };
        let name = c.node_name();
        let fail = |e: cluster::ClusterError| anyhow::anyhow!("{e} (given by {flag})");
        let auth = c.nats.load()?;
        let conn = cluster::connect(url, &name, &auth).await.map_err(fail)?;
        let member = Member {
            name: name.clone(),
            role: c.role().to_owned(),
            partitions: c
                .partitions()?
                .map(|p| p.iter().collect())
                .unwrap_or_default(),
            started: now_secs(),
        };
        let responder = Responder::start(&conn, member, pipeline, limits)
            .await
            .map_err(fail)?;
        tracing::info!("cluster: answering queries as {name} through {}", conn.url);
        Ok(Some(ClusterView {
            conn,
            name,
            responder,
        }))
    }

    /// Stops answering and deregisters.
    pub async fn stop(self) {
        self.responder.stop().await;
    }
}
