//! `dmon query`: ask a running dmon's index, in Riemann's query language.

use std::process::ExitCode;

use std::time::Duration;

use super::RiemannTarget;
use crate::client::ClientError;
use crate::cluster::{self, query::NodeResult};
use crate::codec::json;
use crate::event::{now_secs, Event};
use crate::query::Query;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  dmon query 'service =~ \"cpu%\" and metric > 0.9'
  dmon query --json 'tagged \"prod\" and not state = \"ok\"'
  dmon query true            # everything in the index
  dmon query --cluster nats://127.0.0.1:4222 'service = \"cpu\"'   # every node's

Fields: host service state description metric metric_f time ttl, and any
attribute name. Operators: = != < <= > >= =~ (% wildcards) ~= (regex),
tagged \"x\", null/nil, true/false, and, or, not, parentheses.
Strings are double-quoted: an unquoted word is a field or attribute name
(service = cpu compares with the attribute cpu, and says so on stderr).")]
pub struct QueryArgs {
    /// The query (default: true, everything).
    pub query: Option<String>,
    #[command(flatten)]
    pub target: RiemannTarget,
    /// Ask every node of the cluster through NATS at URL instead of one
    /// dmon over Riemann TCP, and merge their answers; then one line per
    /// node on stderr (answered, or did not answer).
    #[arg(
        long,
        value_name = "URL",
        env = "DMON_CLUSTER",
        conflicts_with = "riemann_tcp"
    )]
    pub cluster: Option<String>,
    /// With --cluster: seconds to wait for the nodes' answers.
    #[arg(long, value_name = "SECS", default_value = "2", requires = "cluster", value_parser = parse_timeout)]
    pub timeout: f64,
    #[command(flatten)]
    pub nats: super::cluster_opts::NatsOpts,
    /// Print the events as NDJSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t.is_finite() => Ok(t),
        _ => Err("expected a positive number of seconds".into()),
    }
}

pub fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let text = args.query.as_deref().unwrap_or("true");
    // Parsed here too, for its warnings: the Riemann protocol has no way
    // to carry them. A query that does not parse is the server's to refuse.
    if let Ok(query) = Query::parse(text) {
        for warning in query.warnings() {
            eprintln!("dmon query: warning: {warning}");
        }
    }
    if let Some(url) = &args.cluster {
        return run_cluster(url, &args.nats.load()?, text, args.timeout, args.json);
    }
    let mut client = args.target.connect()?;
    let events = match client.query(text) {
        Ok(events) => events,
        Err(ClientError::Refused(reason)) => {
            eprintln!("dmon query: {reason}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    print_events(&events, args.json);
    Ok(ExitCode::SUCCESS)
}

fn print_events(events: &[Event], as_json: bool) {
    if as_json {
        for e in events {
            println!("{}", json::encode(e));
        }
    } else {
        print!("{}", table(events, now_secs()));
    }
}

/// `--cluster`: every node's matches, merged, then a line per node.
fn run_cluster(
    url: &str,
    auth: &cluster::NatsAuth,
    text: &str,
    timeout: f64,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    // Checked here, so a bad query is said once rather than once per node.
    if let Err(e) = Query::parse(text) {
        eprintln!("dmon query: {e}");
        return Ok(ExitCode::FAILURE);
    }
    // The NATS client's connection notices would bury the answer.
    let _ = crate::logs::set_level("warn");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let merged = runtime.block_on(async {
        let conn = cluster::connect(url, "dmon query", auth)
            .await
            .map_err(|e| anyhow::anyhow!("{e} (given by --cluster)"))?;
        let merged = cluster::query::query(&conn, text, Duration::from_secs_f64(timeout)).await?;
        anyhow::Ok(merged)
    })?;
    print_events(&merged.events, as_json);
    for line in merged.report() {
        eprintln!("{line}");
    }
    if merged.nodes.is_empty() {
        eprintln!(
            "no node is registered in the cluster at {}",
            cluster::shown_url(url)
        );
    }
    let failed = merged
        .nodes
        .iter()
        .any(|(_, r)| matches!(r, NodeResult::Error(_)));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Events as an aligned table: host, service, state, metric, age, ttl,
/// description.
pub fn table(events: &[Event], now: f64) -> String {
    let mut rows = vec![[
        "host",
        "service",
        "state",
        "metric",
        "age",
        "ttl",
        "description",
    ]
    .map(String::from)];
    for e in events {
        rows.push([
            e.host.as_deref().unwrap_or("").to_owned(),
            e.service.as_deref().unwrap_or("").to_owned(),
            e.state.as_deref().unwrap_or("").to_owned(),
            e.metric.map(|m| m.to_string()).unwrap_or_default(),
            e.time
                .map(|t| format!("{:.1}s", now - t.as_f64()))
                .unwrap_or_default(),
            e.ttl.map(|t| t.to_string()).unwrap_or_default(),
            e.description.as_deref().unwrap_or("").to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!("{} event(s)\n", events.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Number;

    #[test]
    fn table_aligns_columns() {
        let e = Event {
            host: Some("web1".into()),
            service: Some("cpu".into()),
            metric: Some(Number::Int(3)),
            time: Some(Number::Int(100)),
            ..Event::default()
        };
        let t = table(&[e], 101.0);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "host  service  state  metric  age   ttl  description"
        );
        assert_eq!(lines[1], "web1  cpu             3       1.0s");
        assert_eq!(lines[2], "1 event(s)");
    }
}
