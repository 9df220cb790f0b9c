//! Aggregates: running summaries of every event seen.
//!
//! | function | example |
//! |---|---|
//! | `average(places, *children)` | `average(2, printer("avg: "))` |

use std::sync::{Arc, Mutex};

use super::entry::Entry;
use super::value::{Args, BuildError};
use super::{emit, lock, Node, NodeCore, NodeError, NodeRef};
use crate::event::{Event, Number};
use crate::streams::context::Context;
use crate::{keep_state_in, node_core};

pub const ENTRIES: &[Entry] = &[Entry {
    name: "average",
    params: "places, *children",
    summary: "Forward each event with its metric replaced by the running mean of every metric seen, rounded to `places` decimals.",
    details: "Events without a metric are not forwarded. A metric that is not finite (inf, nan) is left out of the mean; its event is forwarded with the mean so far.",
    example: r#"average(2, when(lambda e: e.metric > 1.85, printer("high average: ")))"#,
    build: build_average,
}];

fn build_average(mut args: Args) -> Result<NodeRef, BuildError> {
    let places = args.number("places")?;
    if places.fract() != 0.0 || places.abs() > 15.0 {
        return Err(args.error(format_args!(
            "`places` must be a whole number of decimals, not {places}"
        )));
    }
    let children = args.children();
    args.finish()?;
    Ok(Arc::new(Average::new(places as i32, children)))
}

/// `average(places, *children)`; state: the sum and count of the metrics.
pub struct Average {
    places: i32,
    totals: Mutex<(f64, u64)>,
    core: NodeCore,
}

impl Average {
    pub fn new(places: i32, children: Vec<NodeRef>) -> Self {
        Average {
            places,
            totals: Mutex::new((0.0, 0)),
            core: NodeCore::new(children),
        }
    }
}

/// Rounds half away from zero to `places` decimals (negative: tens, hundreds).
pub fn round_to(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    let rounded = (x * scale).round() / scale;
    // Near f64::MAX the scaling overflows; such numbers have no decimals.
    if rounded.is_finite() {
        rounded
    } else {
        x
    }
}

impl Node for Average {
    node_core!("average");
    keep_state_in!(totals);

    fn describe(&self) -> String {
        format!("average({})", self.places)
    }
    fn save_state(&self) -> Option<serde_json::Value> {
        let (sum, count) = *lock(&self.totals);
        Some(serde_json::json!([sum, count]))
    }
    fn load_state(&self, state: serde_json::Value) -> Result<(), String> {
        let (sum, count) =
            serde_json::from_value::<(f64, u64)>(state).map_err(|e| e.to_string())?;
        *lock(&self.totals) = (sum, count);
        Ok(())
    }
    fn fresh(&self) -> NodeRef {
        Arc::new(Average {
            places: self.places,
            totals: Mutex::new((0.0, 0)),
            core: self.core.fresh(),
        })
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let Some(metric) = event.metric else {
            return Ok(());
        };
        let (sum, count) = {
            let mut t = lock(&self.totals);
            let x = metric.as_f64();
            // One 1e308 would make every later mean inf, then nan.
            if x.is_finite() && (t.0 + x).is_finite() {
                t.0 += x;
                t.1 += 1;
            }
            *t
        };
        if count == 0 {
            return Ok(());
        }
        let mut averaged = Event::clone(event);
        averaged.metric = Some(Number::Float(round_to(sum / count as f64, self.places)));
        emit(self, ctx, &Arc::new(averaged));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ev, Harness};
    use crate::vals;

    #[test]
    fn rounds_to_places() {
        assert_eq!(round_to(1.23456, 2), 1.23);
        assert_eq!(round_to(2.0 / 3.0, 0), 1.0);
        assert_eq!(round_to(1234.0, -2), 1200.0);
    }

    #[test]
    fn running_mean_rounded_and_metricless_events_dropped() {
        let h = Harness::new();
        let out = h.sink("out");
        let avg = h.build("average", vals![2], vec![], vec![out.node()]);
        for m in ["1", "2", "null", "2"] {
            h.send(&avg, ev(&format!(r#"{{"host":"a","metric":{m}}}"#)));
        }
        assert_eq!(out.metrics(), [Some(1.0), Some(1.5), Some(1.67)]);
    }

    #[test]
    fn a_huge_metric_does_not_poison_the_mean() {
        let h = Harness::new();
        let out = h.sink("out");
        let avg = h.build("average", vals![1], vec![], vec![out.node()]);
        for m in ["1", "1e308", "1e308", "3"] {
            h.send(&avg, ev(&format!(r#"{{"metric":{m}}}"#)));
        }
        let metrics = out.metrics();
        assert_eq!(metrics.len(), 4);
        assert!(
            metrics.iter().all(|m| m.unwrap().is_finite()),
            "{metrics:?}"
        );
    }

    #[test]
    fn fresh_instances_start_from_zero_and_reload_keeps_the_total() {
        let h = Harness::new();
        let out = h.sink("out");
        let avg = h.build("average", vals![0], vec![], vec![out.node()]);
        h.send(&avg, ev(r#"{"metric":10}"#));
        let fresh = avg.fresh();
        h.send(&fresh, ev(r#"{"metric":2}"#));
        assert_eq!(out.metrics(), [Some(10.0), Some(2.0)]);
        let reloaded = h.build("average", vals![0], vec![], vec![out.node()]);
        crate::streams::carry_over(&*reloaded, &*avg);
        h.send(&reloaded, ev(r#"{"metric":4}"#));
        assert_eq!(out.metrics(), [Some(7.0)]);
    }
}
