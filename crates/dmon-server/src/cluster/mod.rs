//! Several dmon nodes sharing the work through NATS JetStream.
//!
//! - **Gateways** (`serve --publish URL`) publish what they receive to the
//!   subject of its partition, `dmon.events.<p>` ([`partition`]: `p =
//!   fnv1a_32(host) mod N`), in batches, each a Riemann `Msg` (protocol
//!   buffers, as on Riemann TCP) with a `Nats-Msg-Id`, so a batch sent
//!   twice after a reconnect is stored once.
//! - **Workers** (`serve --consume URL --partitions 0-7`) take the
//!   partitions given through one durable pull consumer each
//!   (`dmon-p<p>`), run the events through their stream module and
//!   acknowledge them once processed: at least once.
//! - A worker **group** is the set of workers started with the same
//!   partitions: one holds the group's lease (a key in the `dmon_leases`
//!   bucket, renewed while it works) and consumes, the others wait and take
//!   over when the lease lapses, restoring the group's last checkpoint (the
//!   `dmon_checkpoints` bucket).
//! - **Queries** (`query --cluster URL`, the shell in cluster mode) ask
//!   every node over NATS request/reply and merge the answers.
//!
//! Everything lives in one JetStream stream, [`STREAM`], subjects
//! `dmon.events.*`, work-queue retention (a message is gone once
//! acknowledged), on disk. The cluster's partition count is kept in the
//! `dmon_cluster` bucket by the first node that connects; a node started
//! with another count is refused, since it would put hosts elsewhere.

pub mod checkpoint;
pub mod consume;
pub mod lease;
pub mod partition;
pub mod publish;
pub mod query;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use prost::Message;

use crate::codec::riemann::{from_proto, Msg};
use crate::event::Event;
use crate::tls::ClientTls;

pub use partition::{partition_of, Partitions, DEFAULT_PARTITION_COUNT};

/// The JetStream stream holding every partition's events.
pub const STREAM: &str = "DMON_EVENTS";

/// Subjects are `dmon.events.<partition>`.
pub const SUBJECT_PREFIX: &str = "dmon.events";

/// The KV bucket holding cluster-wide settings (the partition count).
pub const SETTINGS_BUCKET: &str = "dmon_cluster";

/// How long JetStream remembers a `Nats-Msg-Id`, to store a batch published
/// twice (a gateway retrying after a lost ack) once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The stream's size limit: past it JetStream refuses new batches (the
/// gateways count them as failed) rather than losing stored ones.
pub const DEFAULT_MAX_BYTES: i64 = 1 << 30;

/// The subject of partition `p`.
pub fn subject(p: u32) -> String {
    format!("{SUBJECT_PREFIX}.{p}")
}

/// A failure talking to NATS, with what dmon was doing.
#[derive(Debug, thiserror::Error)]
#[error("NATS {url}: {doing}: {message}")]
pub struct ClusterError {
    pub url: String,
    pub doing: String,
    pub message: String,
}

/// `url` as logs may show it: a password or token in it (async-nats takes
/// `nats://user:password@host` and `nats://token@host`) is `***`.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{shown}@{host}{}", &rest[authority.len()..])
}

impl ClusterError {
    pub fn new(url: &str, doing: impl Into<String>, e: impl std::fmt::Display) -> Self {
        ClusterError {
            url: shown_url(url),
            doing: doing.into(),
            message: e.to_string(),
        }
    }
}

/// How a node connects to NATS beyond the URL: the TLS it requires (the
/// CA it trusts, a client certificate) and its credentials, from the
/// `--nats-*` flags. Its `Debug` leaves the secrets out.
#[derive(Clone, Default)]
pub struct NatsAuth {
    /// With `--nats-ca`: TLS is required and NATS' certificate checked
    /// against it (and against the URL's host, by the client).
    pub tls: Option<ClientTls>,
    /// A `.creds` file (a user JWT and its NKey seed) and what it holds.
    pub creds: Option<(PathBuf, String)>,
    pub user_password: Option<(String, String)>,
    pub token: Option<String>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("tls", &self.tls)
            .field("creds", &self.creds.as_ref().map(|(path, _)| path))
            .field("user", &self.user_password.as_ref().map(|(u, _)| u))
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

impl NatsAuth {
    /// `options` with this TLS and these credentials, or else the user and
    /// password (or token) of `url`: async-nats reads the URL's host but
    /// not its credentials.
    fn apply(
        &self,
        url: &str,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, String> {
        let given = self.creds.is_some() || self.user_password.is_some() || self.token.is_some();
        if !given {
            if let Some((user, password)) = url_credentials(url) {
                options = match password {
                    Some(password) => options.user_and_password(user, password),
                    None => options.token(user),
                };
            }
        }
        if let Some(tls) = &self.tls {
            options = options
                .require_tls(true)
                .tls_client_config((*tls.config()).clone());
        }
        if let Some((path, creds)) = &self.creds {
            options = options
                .credentials(creds)
                .map_err(|e| format!("--nats-creds {}: {e}", path.display()))?;
        }
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        Ok(options)
    }
}

/// The user (or token) and password of `url`, percent-decoded.
fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    let addr: async_nats::ServerAddr = url.parse().ok()?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(addr.username()?);
    Some((user, addr.password().map(decode)))
}

/// A node's connection: the client, its JetStream context, and the URL
/// for messages (as [`shown_url`] shows it).
#[derive(Clone)]
pub struct Connection {
    pub url: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

/// Connects to `url` as `name` (shown by `nats-server`'s monitoring).
/// Reconnects are the client's: it retries for ever, logging each
/// disconnect and reconnect, and holds what is published meanwhile in a
/// bounded buffer.
pub async fn connect(url: &str, name: &str, auth: &NatsAuth) -> Result<Connection, ClusterError> {
    let logged_url = shown_url(url);
    let options = auth
        .apply(url, async_nats::ConnectOptions::new())
        .map_err(|e| ClusterError::new(url, "connecting", e))?;
    let client = options
        .name(name)
        // Messages waiting for the connection: beyond this, publishing
        // waits, and the gateway's own bounded queue fills and counts.
        .client_capacity(4096)
        .event_callback(move |event| {
            let url = logged_url.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS {url}: disconnected; reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("NATS {url}: connected"),
                    other => tracing::debug!("NATS {url}: {other}"),
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| ClusterError::new(url, "connecting", connect_error(&e, auth)))?;
    let js = jetstream::new(client.clone());
    Ok(Connection {
        url: shown_url(url),
        client,
        js,
    })
}

/// What went wrong connecting, with what to do about it when that is
/// plain: async-nats says "authorization violation" or gives the TLS
/// error alone.
fn connect_error(e: &async_nats::ConnectError, auth: &NatsAuth) -> String {
    use async_nats::ConnectErrorKind as Kind;
    let hint = match e.kind() {
        Kind::AuthorizationViolation => {
            " (NATS refused the credentials: check --nats-user/--nats-password, --nats-token or --nats-creds)"
        }
        // The client upgrades to TLS on its own when the server requires
        // it, so this is met without --nats-ca too.
        Kind::Tls | Kind::Io => match tls_error(e) {
            Some(rustls::Error::InvalidCertificate(_)) if auth.tls.is_none() => {
                " (NATS requires TLS and its certificate is not trusted: pass its CA with --nats-ca)"
            }
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::CertificateRequired
                | rustls::AlertDescription::UnknownCA,
            )) => {
                " (NATS refused this client's certificate or wants one: check --nats-cert and --nats-key)"
            }
            _ => "",
        },
        _ => "",
    };
    format!("{e}{hint}")
}

/// The rustls error behind `e`, if that is what it comes from.
fn tls_error(e: &async_nats::ConnectError) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let tls = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
            .or_else(|| err.downcast_ref::<rustls::Error>());
        if tls.is_some() {
            return tls;
        }
        source = err.source();
    }
    None
}

impl Connection {
    /// Makes sure the events stream exists, and that the cluster's
    /// partition count is `count`: the first node sets it, later ones must
    /// agree.
    pub async fn prepare(&self, count: u32) -> Result<stream::Stream, ClusterError> {
        let settings = self.bucket(SETTINGS_BUCKET, None).await?;
        let wanted = Bytes::from(count.to_string());
        match settings.create("partition_count", wanted.clone()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let stored = settings
                    .get("partition_count")
                    .await
                    .map_err(|e| self.error("reading the partition count", e))?
                    .unwrap_or_default();
                if stored != wanted {
                    return Err(self.error(
                        "checking the partition count",
                        format!(
                            "the cluster has {} partitions, this node was started with {count} (--partition-count)",
                            String::from_utf8_lossy(&stored)
                        ),
                    ));
                }
            }
            Err(e) => return Err(self.error("storing the partition count", e)),
        }
        self.js
            .get_or_create_stream(stream::Config {
                name: STREAM.to_owned(),
                subjects: vec![format!("{SUBJECT_PREFIX}.*")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                max_bytes: DEFAULT_MAX_BYTES,
                discard: stream::DiscardPolicy::New,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| self.error("creating the events stream", e))
    }

    /// The KV bucket `name`, created if missing; keys lapse after
    /// `max_age` unless rewritten (leases), or never (`None`).
    ///
    /// The bucket's stream is made here, shaped as the KV API makes it:
    /// the client's own `create_key_value` first asks for the account's
    /// limits, in a form nats-server 2.9 (Debian's) does not answer.
    pub async fn bucket(
        &self,
        name: &str,
        max_age: Option<Duration>,
    ) -> Result<kv::Store, ClusterError> {
        if let Ok(store) = self.js.get_key_value(name).await {
            return Ok(store);
        }
        self.js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{name}"),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_age: max_age.unwrap_or_default(),
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| self.error(format!("creating the {name} bucket"), e))?;
        self.js
            .get_key_value(name)
            .await
            .map_err(|e| self.error(format!("opening the {name} bucket"), e))
    }

    pub fn error(&self, doing: impl Into<String>, e: impl std::fmt::Display) -> ClusterError {
        ClusterError::new(&self.url, doing, e)
    }
}

/// A batch of events as published: a Riemann `Msg`.
pub fn encode_batch(events: &[Event]) -> Vec<u8> {
    let (mut out, mut one) = (Vec::new(), Vec::new());
    for e in events {
        one.clear();
        crate::codec::riemann::encode_event(e, &mut one);
        crate::codec::riemann::push_msg_event(&mut out, &one);
    }
    out
}

/// The events of a published batch; `now` stands in for a missing time
/// (gateways always set it).
pub fn decode_batch(payload: &[u8], now: f64) -> Result<Vec<Event>, prost::DecodeError> {
    let msg = Msg::decode(payload)?;
    Ok(msg.events.iter().map(|p| from_proto(p, now)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Number;

    #[test]
    fn batches_keep_their_events() {
        let events: Vec<Event> = (0..3)
            .map(|i| Event {
                host: Some(format!("h{i}").into()),
                service: Some("cpu".into()),
                metric: Some(Number::Float(0.5 + i as f64)),
                time: Some(Number::Int(100 + i)),
                tags: ["a"].into(),
                ..Event::default()
            })
            .collect();
        let decoded = decode_batch(&encode_batch(&events), 0.0).unwrap();
        assert_eq!(decoded, events);
        assert!(decode_batch(b"\xff\xff", 0.0).is_err());
        assert_eq!(subject(7), "dmon.events.7");
    }

    #[test]
    fn credentials_come_from_the_url_decoded() {
        assert_eq!(
            url_credentials("nats://dmon:p%40ss@h:4222"),
            Some(("dmon".into(), Some("p@ss".into())))
        );
        assert_eq!(
            url_credentials("nats://tok@h:4222"),
            Some(("tok".into(), None))
        );
        assert_eq!(url_credentials("nats://h:4222"), None);
    }

    #[test]
    fn urls_are_shown_without_passwords_or_tokens() {
        assert_eq!(
            shown_url("nats://dmon:pw@nats.example.com:4222"),
            "nats://dmon:***@nats.example.com:4222"
        );
        assert_eq!(shown_url("tls://tok@h:4222/x@y"), "tls://***@h:4222/x@y");
        assert_eq!(shown_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(shown_url("127.0.0.1"), "127.0.0.1");
    }
}
