//! `dmon query`: ask a running dmon's index, in Riemann's query language.

use std::process::ExitCode;

use super::RiemannTarget;
use crate::client::ClientError;
use crate::codec::json;
use crate::event::{now_secs, Event};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  dmon query 'service =~ \"cpu%\" and metric > 0.9'
  dmon query --json 'tagged \"prod\" and not state = \"ok\"'
  dmon query true            # everything in the index

Fields: host service state description metric metric_f time ttl, and any
attribute name. Operators: = != < <= > >= =~ (% wildcards) ~= (regex),
tagged \"x\", null/nil, true/false, and, or, not, parentheses.")]
pub struct QueryArgs {
    /// The query.
    pub query: String,
    #[command(flatten)]
    pub target: RiemannTarget,
    /// Print the events as NDJSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.target.connect()?;
    let events = match client.query(&args.query) {
        Ok(events) => events,
        Err(ClientError::Refused(reason)) => {
            eprintln!("dmon query: {reason}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        for e in &events {
            println!("{}", json::encode(e));
        }
    } else {
        print!("{}", table(&events, now_secs()));
    }
    Ok(ExitCode::SUCCESS)
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
