//! `influxdb(url, db, ...)`: a point for each event with a metric, through
//! [`crate::sinks::influxdb`]; its catalog entry, arguments and the line
//! it encodes.

use std::sync::Arc;

use super::{opt_string, url};
use super::{SinkNode, SinkOutput};
use crate::event::Event;
use crate::sinks::influxdb::{self, InfluxSink, Points, Precision};
use crate::sinks::Encoded;
use crate::streams::context::Context;
use crate::streams::entry::Entry;
use crate::streams::value::{Args, BuildError, Value};
use crate::streams::{quote, NodeRef};

pub const ENTRY: Entry = Entry {
    name: "influxdb",
    params: "url, db, measurement=None, tags=None, precision='s', username=None, password=None",
    summary: "Write each event with a metric to InfluxDB 1.x as a point, in its line protocol over HTTP, in batches.",
    details: "As Riemann's influxdb: the measurement is the service unless `measurement` names one; the tags are the event's `host`, `service` and `state` unless `tags` lists others (fields or attributes; empty ones are left out); the fields are `value`, the metric (always a float), plus `state`, `description` and attributes not taken as tags, as strings. The time is the event's, in `precision` (\"s\", \"ms\", \"us\" or \"ns\"; seconds truncated). Events without a metric or a measurement are skipped. Commas, spaces and `=` in names are escaped; backslashes and control characters there become `_`. Points wait in a queue (10,000 at most) and go up to 1,000 per `POST {url}/write?db=...`; a server that is down or answers 5xx (or 404: a database not created yet) is retried with backoff (0.1 s doubling to 5 s); another 4xx gives the batch up, counted as failed. Nodes writing to the same URL, database and precision share one queue (and the first one's credentials). For a server with `auth-enabled`, `username` and `password` go as HTTP basic authentication; without `password` it is taken from $DMON_INFLUXDB_PASSWORD when the module loads, so it need not be written in it; it is never shown (`streams()` shows the username only). Wrong credentials are a 401: the batch is given up, counted as failed, and logged.",
    example: r#"influxdb("http://influx.example.com:8086", "metrics")"#,
    build: build_influxdb,
};

fn build_influxdb(mut args: Args) -> Result<NodeRef, BuildError> {
    let url = url(&mut args)?;
    let db = args.string("db")?;
    if db.is_empty() {
        return Err(args.error("`db` must not be empty"));
    }
    let measurement = opt_string(&mut args, "measurement")?;
    let tags = match args.opt("tags") {
        None | Some(Value::None) => influxdb::DEFAULT_TAGS.map(String::from).to_vec(),
        Some(Value::Str(s)) => vec![s],
        Some(Value::List(items)) => {
            let mut tags = Vec::new();
            for v in items {
                match v {
                    Value::Str(s) => tags.push(s),
                    v => {
                        return Err(args.type_error(format_args!(
                            "`tags` must hold str, not {}",
                            v.type_name()
                        )))
                    }
                }
            }
            tags
        }
        Some(v) => {
            return Err(args.type_error(format_args!(
                "`tags` must be a list of str, not {}",
                v.type_name()
            )))
        }
    };
    let precision = match opt_string(&mut args, "precision")? {
        None => Precision::S,
        Some(p) => Precision::parse(&p).map_err(|e| args.error(e))?,
    };
    let points = Points::new(measurement, &tags, precision).map_err(|e| args.error(e))?;
    let username = opt_string(&mut args, "username")?;
    let password = opt_string(&mut args, "password")?;
    let credentials = influx_credentials(username, password).map_err(|e| args.error(e))?;
    args.finish()?;
    Ok(SinkNode::node(Influx {
        url,
        db,
        points,
        credentials,
    }))
}

/// Where `influxdb`'s password is taken from when the module does not
/// give one, so it need not be written there.
pub const INFLUXDB_PASSWORD_ENV: &str = "DMON_INFLUXDB_PASSWORD";

/// `username` with `password`, else with [`INFLUXDB_PASSWORD_ENV`].
fn influx_credentials(
    username: Option<String>,
    password: Option<String>,
) -> Result<Option<influxdb::Credentials>, String> {
    let Some(username) = username else {
        return match password {
            Some(_) => Err("`password` needs a `username`".into()),
            None => Ok(None),
        };
    };
    let password = match password {
        Some(p) => p,
        None => std::env::var(INFLUXDB_PASSWORD_ENV).map_err(|_| {
            format!("`username` needs a password: `password=` or ${INFLUXDB_PASSWORD_ENV}")
        })?,
    };
    Ok(Some(influxdb::Credentials { username, password }))
}

/// `influxdb(url, db, ...)`: a point for each event with a metric.
pub struct Influx {
    url: String,
    db: String,
    points: Points,
    credentials: Option<influxdb::Credentials>,
}

impl SinkOutput for Influx {
    const KIND: &'static str = "influxdb";
    type Sink = InfluxSink;

    fn describe(&self) -> String {
        // The password is left out: `streams()` shows this.
        let user = match &self.credentials {
            Some(c) => format!(", username={}", quote(&c.username)),
            None => String::new(),
        };
        format!("influxdb({}, {}{user})", quote(&self.url), quote(&self.db))
    }
    fn sink(&self) -> InfluxSink {
        InfluxSink::new(
            &self.url,
            &self.db,
            self.points.precision,
            self.credentials.as_ref(),
        )
    }
    fn item(&self, ctx: &Context, event: &Arc<Event>) -> Option<influxdb::Point> {
        // The line is made here: nodes with other measurements or tags may
        // share the sink (one per URL and database).
        let line = Encoded::with(|buf| {
            self.points.push_line(buf, event, || ctx.now());
        });
        (!line.is_empty()).then_some(line)
    }
}
