//! The flags that make a node part of a cluster (see [`crate::cluster`]),
//! shared by every command that runs a server.

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::partition::{Partitions, DEFAULT_PARTITION_COUNT, MAX_PARTITION_COUNT};
use crate::cluster::NatsAuth;
use crate::tls::{ClientTls, Identity, PemFile};

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
    #[command(flatten)]
    pub nats: NatsOpts,
}

/// TLS and credentials for NATS (--publish, --consume, --cluster). The
/// password and token are best given through their environment variables,
/// so they are not on the command line; no log and no `Debug` shows them.
#[derive(clap::Args, Clone, Default)]
pub struct NatsOpts {
    /// Connect to NATS over TLS only, trusting the CA certificates (PEM) in
    /// FILE; NATS' certificate must also carry the URL's host.
    #[arg(long, value_name = "FILE", env = "DMON_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// With --nats-ca: present this client certificate (PEM), for a NATS
    /// that verifies clients (`tls { verify: true }`).
    #[arg(
        long,
        value_name = "FILE",
        env = "DMON_NATS_CERT",
        requires = "nats_ca",
        requires = "nats_key"
    )]
    pub nats_cert: Option<PathBuf>,
    /// The key of --nats-cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "DMON_NATS_KEY",
        requires = "nats_cert"
    )]
    pub nats_key: Option<PathBuf>,
    /// Authenticate with a NATS credentials file (a user JWT and its NKey
    /// seed, as `nsc` writes them).
    #[arg(
        long,
        value_name = "FILE",
        env = "DMON_NATS_CREDS",
        conflicts_with_all = ["nats_user", "nats_token"]
    )]
    pub nats_creds: Option<PathBuf>,
    /// Authenticate as USER, with --nats-password.
    #[arg(
        long,
        value_name = "USER",
        env = "DMON_NATS_USER",
        requires = "nats_password",
        conflicts_with = "nats_token"
    )]
    pub nats_user: Option<String>,
    /// --nats-user's password; better set in $DMON_NATS_PASSWORD.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "DMON_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// Authenticate with a token; better set in $DMON_NATS_TOKEN.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DMON_NATS_TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,
}

impl std::fmt::Debug for NatsOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "(hidden)");
        f.debug_struct("NatsOpts")
            .field("nats_ca", &self.nats_ca)
            .field("nats_cert", &self.nats_cert)
            .field("nats_key", &self.nats_key)
            .field("nats_creds", &self.nats_creds)
            .field("nats_user", &self.nats_user)
            .field("nats_password", &hidden(&self.nats_password))
            .field("nats_token", &hidden(&self.nats_token))
            .finish()
    }
}

impl NatsOpts {
    /// The files read and checked (one that cannot be used is an error
    /// naming its flag), and the credentials as given.
    pub fn load(&self) -> anyhow::Result<NatsAuth> {
        let creds = match &self.nats_creds {
            None => None,
            Some(path) => {
                let creds = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--nats-creds {}: {e}", path.display()))?;
                Some((path.clone(), creds))
            }
        };
        let tls = match &self.nats_ca {
            None => None,
            Some(ca) => {
                let identity = match (&self.nats_cert, &self.nats_key) {
                    (Some(cert), Some(key)) => Some(Identity {
                        cert: PemFile::new("--nats-cert", cert),
                        key: PemFile::new("--nats-key", key),
                    }),
                    _ => None,
                };
                // The host name is the URL's: async-nats checks it.
                Some(ClientTls::load(
                    &PemFile::new("--nats-ca", ca),
                    identity.as_ref(),
                    None,
                )?)
            }
        };
        Ok(NatsAuth {
            tls,
            creds,
            user_password: self.nats_user.clone().zip(self.nats_password.clone()),
            token: self.nats_token.clone(),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_secrets_stay_out_of_debug() {
        let opts = NatsOpts {
            nats_user: Some("dmon".into()),
            nats_password: Some("pw-secret".into()),
            nats_token: Some("tok-secret".into()),
            ..NatsOpts::default()
        };
        let auth = opts.load().unwrap();
        for shown in [format!("{opts:?}"), format!("{auth:?}")] {
            assert!(shown.contains("dmon"), "{shown}");
            assert!(!shown.contains("secret"), "{shown}");
        }
    }
}
