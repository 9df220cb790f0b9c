//! `GET /metrics`: the index and dmon's counters in Prometheus' text
//! exposition format (version 0.0.4).
//!
//! - Each indexed event with a metric is one sample of the gauge
//!   `dmon_metric{host="…",service="…"}`. Host and service are labels, not
//!   part of the metric name: services hold spaces and punctuation and are
//!   unbounded, and one family keeps names stable and queryable
//!   (`dmon_metric{service=~"cpu.*"}`), as common exporters do with free-form
//!   keys. Label values are escaped per the format (`\\`, `\"`, `\n`); an
//!   absent host or service is the empty value. Events without a metric are
//!   skipped; an expired event leaves the index, so its series goes stale.
//! - dmon's own counters (those of `dmon stats`) are `dmon_<name>_total`
//!   counters, and its levels (`dmon_indexed`, `dmon_queued`,
//!   `dmon_uptime_secs`, `dmon_http_subscribers`, …) gauges.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{shutting_down, HttpError, Shared};
use crate::event::Event;
use crate::stats::Stats;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters of `dmon stats` that are levels, not running totals.
const GAUGES: &[&str] = &[
    "uptime_secs",
    "queued",
    "unprocessed",
    "dispatch_busy_secs",
    "indexed",
    "recent_events",
    "recent_bytes",
    "http_subscribers",
    "cluster_publish_waiting",
    "state_save_bytes",
    "state_saved_at",
];

pub async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let Ok(_rendering) = shared.searches.acquire().await else {
        return shutting_down().into_response();
    };
    let pipeline = Arc::clone(&shared.pipeline);
    // A large index takes a while to render: off the async workers.
    let rendered = tokio::task::spawn_blocking(move || {
        render(&pipeline.context().index.snapshot(), &pipeline.counters())
    })
    .await;
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering failed: {e}"),
        )
        .into_response(),
    }
}

/// The exposition of `events` (in any order) and `stats`.
pub fn render(events: &[Arc<Event>], stats: &Stats) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP dmon_metric The metric of the latest indexed event of each host and service.\n",
    );
    out.push_str("# TYPE dmon_metric gauge\n");
    let mut samples: Vec<(&str, &str, f64)> = events
        .iter()
        .filter_map(|e| {
            let metric = e.metric?.as_f64();
            Some((
                e.host.as_deref().unwrap_or(""),
                e.service.as_deref().unwrap_or(""),
                metric,
            ))
        })
        .collect();
    samples.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    // An absent host and an empty one are the same series to Prometheus,
    // which refuses a whole scrape with a duplicate: keep the first.
    samples.dedup_by(|b, a| (a.0, a.1) == (b.0, b.1));
    for (host, service, metric) in samples {
        let _ = writeln!(
            out,
            "dmon_metric{{host=\"{}\",service=\"{}\"}} {}",
            escape(host),
            escape(service),
            number(metric)
        );
    }
    let serde_json::Value::Object(fields) = serde_json::to_value(stats).unwrap_or_default() else {
        return out;
    };
    for (name, value) in fields {
        let Some(value) = value.as_f64() else {
            continue; // nodes, dispatch_busy_in
        };
        // Bytes held now are levels; refusals count up.
        let level = GAUGES.contains(&name.as_str())
            || (name.starts_with("memory_") && name.ends_with("_bytes"));
        let (metric, kind) = if level {
            (format!("dmon_{name}"), "gauge")
        } else {
            (format!("dmon_{name}_total"), "counter")
        };
        let _ = writeln!(out, "# HELP {metric} dmon's {name} (as in `dmon stats`).");
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        let _ = writeln!(out, "{metric} {}", number(value));
    }
    out
}

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as the format spells it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Number;

    fn ev(host: Option<&str>, service: &str, metric: Option<Number>) -> Arc<Event> {
        Arc::new(Event {
            host: host.map(Into::into),
            service: Some(service.into()),
            metric,
            ..Event::default()
        })
    }

    #[test]
    fn samples_are_labelled_escaped_and_deduplicated() {
        let events = [
            ev(Some("b"), "cpu", Some(Number::Float(0.5))),
            ev(Some("a \"x\"\\\n"), "disk /", Some(Number::Int(3))),
            ev(Some("a"), "no metric", None),
            ev(Some(""), "same", Some(Number::Int(1))),
            ev(None, "same", Some(Number::Int(2))),
            ev(Some("c"), "inf", Some(Number::Float(f64::NEG_INFINITY))),
        ];
        let text = render(&events, &Stats::default());
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("dmon_metric{"))
            .collect();
        assert_eq!(samples.len(), 4, "{text}");
        assert_eq!(samples[0], "dmon_metric{host=\"\",service=\"same\"} 1");
        assert_eq!(
            samples[1],
            r#"dmon_metric{host="a \"x\"\\\n",service="disk /"} 3"#
        );
        assert_eq!(samples[2], "dmon_metric{host=\"b\",service=\"cpu\"} 0.5");
        assert_eq!(samples[3], "dmon_metric{host=\"c\",service=\"inf\"} -Inf");
    }

    #[test]
    fn counters_and_gauges_are_typed() {
        let stats = Stats {
            events: 7,
            indexed: 2,
            ..Stats::default()
        };
        let text = render(&[], &stats);
        assert!(text.contains("# TYPE dmon_events_total counter\ndmon_events_total 7\n"));
        assert!(text.contains("# TYPE dmon_indexed gauge\ndmon_indexed 2\n"));
        assert!(text.contains("dmon_http_subscribers_dropped_total 0\n"));
        assert!(!text.contains("dispatch_busy_in"));
    }
}
