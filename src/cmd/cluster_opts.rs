//! The flags that make a node part of a cluster (see [`crate::cluster`]),
//! shared by every command that runs a server.

use std::time::Duration;

use crate::cluster::partition::{Partitions, DEFAULT_PARTITION_COUNT, MAX_PARTITION_COUNT};

/// Default of `--lease-secs`: how long a worker group waits for a silent
/// owner before a standby takes over.
pub const DEFAULT_LEASE_SECS: f64 = 10.0;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterOpts {
    /// Make this node a gateway: publish what it receives (UDP, Riemann) to
    /// NATS JetStream at URL (nats://HOST:PORT), each event to its host's
    /// partition, instead of processing it here (see --also-process). A
    /// Riemann TCP client's ack waits for JetStream's.
    #[arg(long, value_name = "URL", env = "DMON_PUBLISH")]
    pub publish: Option<String>,
    /// With --publish: process received events here as well.
    #[arg(long, requires = "publish", env = "DMON_ALSO_PROCESS")]
    pub also_process: bool,
    /// Make this node a worker: process the partitions given by
    /// --partitions from NATS JetStream at URL, acknowledging each batch
    /// once processed (at least once).
    #[arg(
        long,
        value_name = "URL",
        env = "DMON_CONSUME",
        requires = "partitions"
    )]
    pub consume: Option<String>,
    /// With --consume: the partitions this worker takes, as numbers and
    /// ranges (0-7,12). Workers started with the same partitions form a
    /// group: one works, the others stand by and take over.
    #[arg(
        long,
        value_name = "LIST",
        env = "DMON_PARTITIONS",
        requires = "consume"
    )]
    pub partitions: Option<String>,
    /// Partitions in the cluster: an event goes to fnv1a_32(host) mod N.
    /// The first node sets it; nodes started with another are refused.
    #[arg(long, value_name = "N", env = "DMON_PARTITION_COUNT", default_value_t = DEFAULT_PARTITION_COUNT, value_parser = partition_count)]
    pub partition_count: u32,
    /// Seconds a worker group's owner may go without renewing its lease
    /// before a standby takes over (the takeover time).
    #[arg(long, value_name = "SECS", env = "DMON_LEASE_SECS", default_value_t = DEFAULT_LEASE_SECS, value_parser = positive_secs)]
    pub lease_secs: f64,
    /// Register in the cluster and answer cluster queries, stats and
    /// streams (`dmon query --cluster`) through NATS at URL; implied by
    /// --publish and --consume.
    #[arg(long, value_name = "URL", env = "DMON_CLUSTER")]
    pub cluster: Option<String>,
    /// This node's name in cluster queries, stats and NATS' monitoring
    /// (default: the host name and process id).
    #[arg(long, value_name = "NAME", env = "DMON_NODE_NAME")]
    pub node_name: Option<String>,
}

impl ClusterOpts {
    /// The partitions of `--partitions`, checked against the count.
    pub fn partitions(&self) -> anyhow::Result<Option<Partitions>> {
        match &self.partitions {
            None => Ok(None),
            Some(text) => Partitions::parse(text, self.partition_count)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("--partitions: {e}")),
        }
    }

    /// The NATS URL this node answers cluster queries through: --cluster,
    /// else --publish's or --consume's.
    pub fn view_url(&self) -> Option<&str> {
        self.cluster
            .as_deref()
            .or(self.publish.as_deref())
            .or(self.consume.as_deref())
    }

    /// How this node registers: "gateway" (--publish), "worker"
    /// (--consume), else "node".
    pub fn role(&self) -> &'static str {
        if self.publish.is_some() {
            "gateway"
        } else if self.consume.is_some() {
            "worker"
        } else {
            "node"
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.lease_secs)
    }

    /// `--node-name`, or `HOST:PID`.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            let host = hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "dmon".into());
            format!("{host}:{}", std::process::id())
        })
    }
}

fn partition_count(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_PARTITION_COUNT).contains(&n) => Ok(n),
        _ => Err(format!("expected 1 to {MAX_PARTITION_COUNT}")),
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
        _ => Err("expected a positive number of seconds".into()),
    }
}
