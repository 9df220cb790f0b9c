//! Aggregates: nodes that combine the metrics of many events.

use std::sync::{Arc, Mutex};

use super::{emit, Node, NodeError, NodeRef, NodeStats};
use crate::context::Context;
use crate::event::{Event, Number};

/// `average(places, *children)`: the running mean of every metric seen,
/// forwarded as the event's metric rounded to `places` decimals. Events
/// without a metric do not count and are not forwarded.
///
/// ```python
/// average(2, when(lambda e: e.metric > 1.85, printer("high average: ")))
/// ```
pub struct Average {
    places: i32,
    /// (sum, count) of every metric seen.
    totals: Mutex<(f64, u64)>,
    children: Vec<NodeRef>,
    stats: NodeStats,
}

impl Average {
    pub fn new(places: i32, children: Vec<NodeRef>) -> Self {
        Average {
            places,
            totals: Mutex::new((0.0, 0)),
            children,
            stats: NodeStats::default(),
        }
    }
}

/// Rounds half away from zero to `places` decimals (negative: tens, hundreds).
pub fn round_to(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

impl Node for Average {
    fn kind(&self) -> &'static str {
        "average"
    }
    fn describe(&self) -> String {
        format!("average({})", self.places)
    }
    fn children(&self) -> &[NodeRef] {
        &self.children
    }
    fn stats(&self) -> &NodeStats {
        &self.stats
    }
    fn handle(&self, ctx: &Context, event: &Arc<Event>) -> Result<(), NodeError> {
        let Some(metric) = event.metric else {
            return Ok(());
        };
        let mean = {
            let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            t.0 += metric.as_f64();
            t.1 += 1;
            t.0 / t.1 as f64
        };
        let mut averaged = Event::clone(event);
        averaged.metric = Some(Number::Float(round_to(mean, self.places)));
        emit(self, ctx, &Arc::new(averaged));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::round_to;

    #[test]
    fn rounds_to_places() {
        assert_eq!(round_to(1.23456, 2), 1.23);
        assert_eq!(round_to(2.0 / 3.0, 0), 1.0);
        assert_eq!(round_to(1234.0, -2), 1200.0);
    }
}
