//! Folds: functions from a list of events to an event, after Riemann's
//! `riemann.folds`. Python reaches them as `dmon.folds.NAME`; passed to
//! `smap` after a window they run natively, no Python per list.
//!
//! | fold | result |
//! |---|---|
//! | `folds.sum(events)` | Σ metric |
//! | `folds.product(events)` | Π metric |
//! | `folds.difference(events)` | first metric − the others |
//! | `folds.quotient(events)` | first metric ÷ the others |
//! | `folds.mean(events)` | mean metric |
//! | `folds.std_dev(events)` | population standard deviation of the metrics |
//! | `folds.count(events)` | the number of events |
//! | `folds.median(events)` | the median event, by metric |
//! | `folds.minimum(events)` / `folds.maximum(events)` | the smallest / largest event, by metric |
//! | `folds.extremes(events)` | `[minimum, maximum]`, two events |
//! | `folds.quotient_sloppy(events)` | like `quotient`, but 0 when any metric is 0 |
//! | `folds.mode(events)` / `folds.modes(events)` | an event / the events with the most frequent metric |
//!
//! Shared rules, and where they differ from Riemann:
//! - The folds computing a new metric return a copy of the **last** event
//!   of the list (the newest in a window, so its `time` is the latest)
//!   with the metric replaced; Riemann merges into the first (so does its
//!   `quotient-sloppy`'s 0). `median`, `minimum`, `maximum`, `extremes`,
//!   `mode` and `modes` return the chosen events themselves, as Riemann
//!   does.
//! - Like Riemann's friendly (non-starred) folds, `sum`, `product`,
//!   `mean`, `std_dev`, `median`, `minimum`, `maximum` skip events without
//!   a metric. With events but no metric at all, `sum` and `product` give
//!   the empty sum and product, 0 and 1, as Riemann's `(reduce + ())` does;
//!   the others return None, as does any fold of an empty list. `count`
//!   counts every event (an empty list counts 0, as in Riemann). A missing
//!   event (None in the list, as `project` gives for a test nothing
//!   matched) is left out.
//! - An event made up from no event (`count` of nothing) gets the clock's
//!   time (a run's virtual clock, else the wall clock's), as Riemann's
//!   `event` stamps one.
//! - `difference` and `quotient` are positional (first against the rest),
//!   so, as Riemann's, a missing metric or event gives the event with no
//!   metric and the description "An event or metric was nil." (a missing
//!   first event gives None); a zero divisor gives
//!   no metric and "Can't divide by zero" (Riemann's `quotient` does the
//!   same for integer division; its float division gives Infinity).
//! - Integer metrics stay integers in `sum`, `product`, `difference` while
//!   they fit in 64 bits; `mean`, `quotient` and `std_dev` are floats.

use std::collections::HashMap;
use std::sync::Arc;

use smol_str::SmolStr;

use crate::event::{Event, Number};

/// One fold: a list of events in, the events it makes out (usually one;
/// none for an empty list).
pub struct Fold {
    pub name: &'static str,
    pub summary: &'static str,
    /// Whether it takes the first event against the rest, so a missing
    /// event (None in the list, an empty slot of `project`) counts: None
    /// first gives None, None later an event without a metric (Riemann's
    /// `fold-all`). The other folds leave missing events out.
    pub positional: bool,
    /// Whether its result is a list however many events it holds (as
    /// Riemann's `modes` is a sequence); the others give None, an event,
    /// or a list of several.
    pub returns_list: bool,
    pub fold: fn(&[Arc<Event>]) -> Vec<Event>,
}

pub const FOLDS: &[Fold] = &[
    Fold {
        name: "sum",
        summary: "The last event, with the sum of the metrics.",
        positional: false,
        returns_list: false,
        fold: |es| one(sum(es)),
    },
    Fold {
        name: "product",
        summary: "The last event, with the product of the metrics.",
        positional: false,
        returns_list: false,
        fold: |es| one(product(es)),
    },
    Fold {
        name: "difference",
        summary: "The last event, with the first metric minus all the others.",
        positional: true,
        returns_list: false,
        fold: |es| one(difference(es)),
    },
    Fold {
        name: "quotient",
        summary: "The last event, with the first metric divided by all the others (no metric on a zero divisor).",
        positional: true,
        returns_list: false,
        fold: |es| one(quotient(es)),
    },
    Fold {
        name: "quotient_sloppy",
        summary: "Like quotient, but 0 when any metric is 0 (so 0 ÷ 0 = 0, for ratios of two idle counters).",
        positional: true,
        returns_list: false,
        fold: |es| one(quotient_sloppy(es)),
    },
    Fold {
        name: "mean",
        summary: "The last event, with the mean of the metrics.",
        positional: false,
        returns_list: false,
        fold: |es| one(mean(es)),
    },
    Fold {
        name: "std_dev",
        summary: "The last event, with the (population) standard deviation of the metrics.",
        positional: false,
        returns_list: false,
        fold: |es| one(std_dev(es)),
    },
    Fold {
        name: "count",
        summary: "The last event, with the number of events as metric.",
        positional: false,
        returns_list: false,
        fold: |es| one(count(es)),
    },
    Fold {
        name: "median",
        summary: "The median event, by metric.",
        positional: false,
        returns_list: false,
        fold: |es| one(median(es)),
    },
    Fold {
        name: "minimum",
        summary: "The event with the smallest metric.",
        positional: false,
        returns_list: false,
        fold: |es| one(minimum(es)),
    },
    Fold {
        name: "maximum",
        summary: "The event with the largest metric.",
        positional: false,
        returns_list: false,
        fold: |es| one(maximum(es)),
    },
    Fold {
        name: "extremes",
        summary: "Two events: the minimum and the maximum, by metric.",
        positional: false,
        returns_list: false,
        fold: |es| minimum(es).into_iter().chain(maximum(es)).collect(),
    },
    Fold {
        name: "mode",
        summary: "An event with the most frequent metric (the first such metric to appear; its last event).",
        positional: false,
        returns_list: false,
        fold: |es| modes(es).into_iter().take(1).collect(),
    },
    Fold {
        name: "modes",
        summary: "A list: for each most frequent metric, in order of first appearance, its last event.",
        positional: false,
        returns_list: true,
        fold: modes,
    },
];

fn one(e: Option<Event>) -> Vec<Event> {
    e.into_iter().collect()
}

/// Integer arithmetic while it fits, else floats.
pub(crate) fn add(a: Number, b: Number) -> Number {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x
            .checked_add(y)
            .map_or(Number::Float(x as f64 + y as f64), Number::Int),
        _ => Number::Float(a.as_f64() + b.as_f64()),
    }
}

pub(crate) fn mul(a: Number, b: Number) -> Number {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x
            .checked_mul(y)
            .map_or(Number::Float(x as f64 * y as f64), Number::Int),
        _ => Number::Float(a.as_f64() * b.as_f64()),
    }
}

fn sub(a: Number, b: Number) -> Number {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x
            .checked_sub(y)
            .map_or(Number::Float(x as f64 - y as f64), Number::Int),
        _ => Number::Float(a.as_f64() - b.as_f64()),
    }
}

fn metrics(events: &[Arc<Event>]) -> impl Iterator<Item = Number> + '_ {
    events.iter().filter_map(|e| e.metric)
}

/// A copy of the last event with `metric`.
fn last_with(events: &[Arc<Event>], metric: Option<Number>) -> Option<Event> {
    let mut e = Event::clone(events.last()?);
    e.metric = metric;
    Some(e)
}

/// `reduce`, starting from `identity` (so events without a metric give it).
fn fold_from(
    events: &[Arc<Event>],
    identity: Number,
    f: fn(Number, Number) -> Number,
) -> Option<Event> {
    let m = metrics(events).reduce(f).unwrap_or(identity);
    last_with(events, Some(m))
}

pub fn sum(events: &[Arc<Event>]) -> Option<Event> {
    fold_from(events, Number::Int(0), add)
}

pub fn product(events: &[Arc<Event>]) -> Option<Event> {
    fold_from(events, Number::Int(1), mul)
}

/// First against the rest; a missing metric or a zero divisor leaves the
/// result without a metric and says why, as Riemann's `fold-all`.
fn positional(
    events: &[Arc<Event>],
    f: fn(Number, Number) -> Result<Number, &'static str>,
) -> Option<Event> {
    let (first, rest) = events.split_first()?;
    let result = rest
        .iter()
        .try_fold(first.metric, |acc, e| match (acc, e.metric) {
            (Some(a), Some(b)) => f(a, b).map(Some),
            _ => Err("An event or metric was nil."),
        });
    let result = match result {
        Ok(None) => Err("An event or metric was nil."),
        other => other,
    };
    match result {
        Ok(m) => last_with(events, m),
        Err(why) => {
            let mut e = last_with(events, None)?;
            e.description = Some(SmolStr::new_static(why));
            Some(e)
        }
    }
}

pub fn difference(events: &[Arc<Event>]) -> Option<Event> {
    positional(events, |a, b| Ok(sub(a, b)))
}

pub fn quotient(events: &[Arc<Event>]) -> Option<Event> {
    positional(events, |a, b| {
        if b.as_f64() == 0.0 {
            Err("Can't divide by zero")
        } else {
            Ok(Number::Float(a.as_f64() / b.as_f64()))
        }
    })
}

pub fn mean(events: &[Arc<Event>]) -> Option<Event> {
    let (sum, n) = metrics(events).fold((0.0, 0usize), |(s, n), m| (s + m.as_f64(), n + 1));
    if n == 0 {
        return None;
    }
    last_with(events, Some(Number::Float(sum / n as f64)))
}

/// Population standard deviation, as Riemann's `std-dev`.
pub fn std_dev(events: &[Arc<Event>]) -> Option<Event> {
    let xs: Vec<f64> = metrics(events).map(Number::as_f64).collect();
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    last_with(events, Some(Number::Float(var.sqrt())))
}

/// Every event counts, with or without a metric; an empty list gives an
/// event with metric 0 (Riemann's `count`; [`NativeFold`] gives it the
/// time).
pub fn count(events: &[Arc<Event>]) -> Option<Event> {
    let n = Number::Int(events.len() as i64);
    last_with(events, Some(n)).or_else(|| {
        Some(Event {
            metric: Some(n),
            ..Event::default()
        })
    })
}

/// The upper median for an even count, as Riemann's `sorted-sample` at 0.5.
pub fn median(events: &[Arc<Event>]) -> Option<Event> {
    let mut with_metric: Vec<&Arc<Event>> = events.iter().filter(|e| e.metric.is_some()).collect();
    if with_metric.is_empty() {
        return None;
    }
    with_metric.sort_by(|a, b| metric_of(a).total_cmp(&metric_of(b)));
    let n = with_metric.len();
    Some(Event::clone(with_metric[(n / 2).min(n - 1)]))
}

fn metric_of(e: &Event) -> f64 {
    e.metric.map_or(f64::NAN, Number::as_f64)
}

/// The extreme event; among equals the last wins (Riemann's `extremum`
/// with `<=` / `>=`).
fn extremum(events: &[Arc<Event>], better_or_equal: fn(f64, f64) -> bool) -> Option<Event> {
    events
        .iter()
        .filter(|e| e.metric.is_some())
        .fold(None::<&Arc<Event>>, |best, e| match best {
            Some(b) if !better_or_equal(metric_of(e), metric_of(b)) => Some(b),
            _ => Some(e),
        })
        .map(|e| Event::clone(e))
}

pub fn minimum(events: &[Arc<Event>]) -> Option<Event> {
    extremum(events, |x, best| x <= best)
}

pub fn maximum(events: &[Arc<Event>]) -> Option<Event> {
    extremum(events, |x, best| x >= best)
}

/// Riemann's `quotient-sloppy`: a zero anywhere gives the integer 0, as
/// Riemann's, else `quotient`.
pub fn quotient_sloppy(events: &[Arc<Event>]) -> Option<Event> {
    let zero = |e: &Arc<Event>| e.metric.is_some_and(|m| m.as_f64() == 0.0);
    if events.iter().any(zero) {
        return last_with(events, Some(Number::Int(0)));
    }
    quotient(events)
}

/// Riemann's `modes`: for each metric occurring most often, its last
/// event; in the order the metrics first appear (Riemann's follows its
/// hash map). Events without a metric are left out, as the other folds
/// that choose events do (Riemann counts nil as a metric).
pub fn modes(events: &[Arc<Event>]) -> Vec<Event> {
    // Per distinct metric (by value, so 2 and 2.0 are one): its count and
    // last event, in order of first appearance.
    let mut seen: Vec<(usize, &Arc<Event>)> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    for e in events {
        let Some(m) = e.metric else { continue };
        // +0.0 for -0.0, so that they count as one.
        let key = (m.as_f64() + 0.0).to_bits();
        match index.get(&key) {
            Some(&i) => seen[i] = (seen[i].0 + 1, e),
            None => {
                index.insert(key, seen.len());
                seen.push((1, e));
            }
        }
    }
    let most = seen.iter().map(|(n, _)| *n).max().unwrap_or(0);
    seen.into_iter()
        .filter(|(n, _)| *n == most)
        .map(|(_, e)| Event::clone(e))
        .collect()
}

/// A fold as a [`Function`](super::Function): `smap(folds.mean, …)` runs it
/// natively on each list. It returns None for no event, an event for one,
/// and a list of events for several (`extremes`), except that a fold
/// that [`Fold::returns_list`] always returns a list.
pub struct NativeFold(pub &'static Fold);

impl NativeFold {
    /// The fold over the list in `args`; an event it makes up from no
    /// event (`count` of nothing) gets `now` as its time, as Riemann's
    /// `event` stamps one.
    fn run(&self, args: &[super::Value], now: f64) -> Result<super::Value, super::NodeError> {
        let items = match args {
            [super::Value::List(items)] => items
                .iter()
                .map(|v| match v {
                    super::Value::Event(e) => Ok(Some(Arc::clone(e))),
                    super::Value::None => Ok(None),
                    other => Err(other.type_name()),
                })
                .collect::<Result<Vec<_>, _>>(),
            [super::Value::Event(e)] => Ok(vec![Some(Arc::clone(e))]),
            [other] => Err(other.type_name()),
            _ => Err("several arguments"),
        }
        .map_err(|t| {
            super::NodeError(format!(
                "folds.{} takes a list of events, not {t}",
                self.0.name
            ))
        })?;
        let events: Vec<Arc<Event>> = if self.0.positional {
            if matches!(items.first(), Some(None)) {
                return Ok(super::Value::None);
            }
            let missing = || Arc::clone(super::empty_slot());
            items
                .into_iter()
                .map(|e| e.unwrap_or_else(missing))
                .collect()
        } else {
            items.into_iter().flatten().collect()
        };
        let made_up = events.is_empty();
        let mut out: Vec<super::Value> = (self.0.fold)(&events)
            .into_iter()
            .map(|mut e| {
                if made_up {
                    e.time.get_or_insert(Number::Float(now));
                }
                super::Value::from(e)
            })
            .collect();
        Ok(match out.len() {
            _ if self.0.returns_list => super::Value::List(out),
            0 => super::Value::None,
            1 => out.remove(0),
            _ => super::Value::List(out),
        })
    }
}

impl super::Function for NativeFold {
    /// Without a node's clock: now is the wall clock's.
    fn call(&self, args: &[super::Value]) -> Result<super::Value, super::NodeError> {
        self.run(args, crate::event::now_secs())
    }
    fn call_at(&self, args: &[super::Value], now: f64) -> Result<super::Value, super::NodeError> {
        self.run(args, now)
    }
    fn describe(&self) -> String {
        format!("folds.{}", self.0.name)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

pub fn find(name: &str) -> Option<&'static Fold> {
    FOLDS.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::{Function, Value};
    use crate::testing::ev;

    fn events(metrics: &[&str]) -> Vec<Arc<Event>> {
        metrics
            .iter()
            .enumerate()
            .map(|(i, m)| Arc::new(ev(&format!(r#"{{"host":"h{i}","metric":{m}}}"#))))
            .collect()
    }

    fn run(name: &str, metrics: &[&str]) -> Vec<(String, Option<f64>, Option<String>)> {
        (find(name).unwrap().fold)(&events(metrics))
            .into_iter()
            .map(|e| {
                (
                    e.host.unwrap_or_default().to_string(),
                    e.metric.map(Number::as_f64),
                    e.description.map(|d| d.to_string()),
                )
            })
            .collect()
    }

    /// (host, metric, description) of a fold's result.
    type Out = (&'static str, Option<f64>, Option<String>);

    #[test]
    fn folds_follow_riemann() {
        let nil = || Some("An event or metric was nil.".to_owned());
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], &[Out])] = &[
            ("sum", &["1", "2", "null", "4"], &[("h3", Some(7.0), None)]),
            ("sum", &["1", "null"], &[("h1", Some(1.0), None)]),
            // Riemann's folds_test: (sum [{:metric nil}]) has metric 0.
            ("sum", &["null"], &[("h0", Some(0.0), None)]),
            ("sum", &[], &[]),
            ("product", &["2", "3", "null", "4"], &[("h3", Some(24.0), None)]),
            ("product", &["null", "null"], &[("h1", Some(1.0), None)]),
            ("product", &[], &[]),
            ("difference", &["10", "3", "2"], &[("h2", Some(5.0), None)]),
            ("difference", &["10"], &[("h0", Some(10.0), None)]),
            ("difference", &["10", "null"], &[("h1", None, nil())]),
            ("difference", &["null", "1"], &[("h1", None, nil())]),
            ("quotient", &["12", "3", "2"], &[("h2", Some(2.0), None)]),
            ("quotient", &["1", "0"], &[("h1", None, Some("Can't divide by zero".into()))]),
            ("quotient", &[], &[]),
            ("mean", &["1", "2", "null", "6"], &[("h3", Some(3.0), None)]),
            ("mean", &["null"], &[]),
            ("std_dev", &["2", "4", "4", "4", "5", "5", "7", "9"], &[("h7", Some(2.0), None)]),
            ("std_dev", &["3"], &[("h0", Some(0.0), None)]),
            ("count", &["1", "null", "3"], &[("h2", Some(3.0), None)]),
            ("count", &[], &[("", Some(0.0), None)]),
            ("median", &["5", "1", "null", "3"], &[("h3", Some(3.0), None)]),
            ("median", &["4", "1", "3", "2"], &[("h2", Some(3.0), None)]),
            ("median", &[], &[]),
            ("minimum", &["3", "1", "null", "1", "2"], &[("h3", Some(1.0), None)]),
            ("maximum", &["3", "1", "3", "null"], &[("h2", Some(3.0), None)]),
            ("maximum", &["null"], &[]),
            ("extremes", &["3", "1", "5", "2"], &[("h1", Some(1.0), None), ("h2", Some(5.0), None)]),
            ("extremes", &[], &[]),
            // Riemann's folds_test: quotient-sloppy, 0 when any metric is 0
            // (dmon: on the last event).
            ("quotient_sloppy", &["2", "-4"], &[("h1", Some(-0.5), None)]),
            ("quotient_sloppy", &["0", "0"], &[("h1", Some(0.0), None)]),
            ("quotient_sloppy", &["1", "0"], &[("h1", Some(0.0), None)]),
            ("quotient_sloppy", &["1", "null"], &[("h1", None, nil())]),
            ("quotient_sloppy", &[], &[]),
            // modes-test, mode-test: the last event of each most frequent metric.
            ("modes", &["1", "2", "3", "4", "2"], &[("h4", Some(2.0), None)]),
            ("modes", &["1", "2", "3", "3", "4", "2"], &[("h5", Some(2.0), None), ("h3", Some(3.0), None)]),
            ("modes", &["null", "null", "1", "1.0", "-0.0", "0"], &[("h3", Some(1.0), None), ("h5", Some(0.0), None)]),
            ("modes", &[], &[]),
            ("mode", &["1", "2", "3", "4", "2"], &[("h4", Some(2.0), None)]),
            ("mode", &["1", "3", "3", "2", "4", "2"], &[("h2", Some(3.0), None)]),
            ("mode", &[], &[]),
        ];
        for (name, input, want) in cases {
            let want: Vec<_> = want
                .iter()
                .map(|(h, m, d)| (h.to_string(), *m, d.clone()))
                .collect();
            assert_eq!(run(name, input), want, "{name}({input:?})");
        }
    }

    #[test]
    fn integers_stay_integers_until_they_overflow() {
        let sum = sum(&events(&["1", "2"])).unwrap();
        assert_eq!(sum.metric, Some(Number::Int(3)));
        let big = product(&events(&["9223372036854775807", "2"])).unwrap();
        assert!(matches!(big.metric, Some(Number::Float(_))));
        let mean = mean(&events(&["1", "2"])).unwrap();
        assert_eq!(mean.metric, Some(Number::Float(1.5)));
    }

    #[test]
    fn native_fold_returns_none_an_event_or_a_list() {
        let call = |name: &str, v: Value| NativeFold(find(name).unwrap()).call(&[v]);
        assert!(matches!(
            call("sum", Value::List(vec![])).unwrap(),
            Value::None
        ));
        assert!(matches!(
            call("sum", Value::events(&events(&["1", "2"]))).unwrap(),
            Value::Event(e) if e.metric == Some(Number::Int(3))
        ));
        assert!(matches!(
            call("extremes", Value::events(&events(&["1", "2"]))).unwrap(),
            Value::List(l) if l.len() == 2
        ));
        assert!(matches!(
            call("modes", Value::events(&events(&["1", "2", "2"]))).unwrap(),
            Value::List(l) if l.len() == 1
        ));
        assert!(matches!(
            call("modes", Value::List(vec![])).unwrap(),
            Value::List(l) if l.is_empty()
        ));
        let err = call("mean", Value::Int(3)).err().unwrap();
        assert_eq!(err.0, "folds.mean takes a list of events, not int");
    }

    #[test]
    fn missing_events_are_left_out_except_first_against_the_rest() {
        let call = |name: &str, items: Vec<Value>| {
            NativeFold(find(name).unwrap()).call_at(&[Value::List(items)], 42.0)
        };
        let e = |m: &str| Value::Event(events(&[m]).remove(0));
        let metric = |v: Value| match v {
            Value::Event(e) => (
                e.metric.map(Number::as_f64),
                e.description.as_deref().map(str::to_owned),
            ),
            other => panic!("not an event: {other:?}"),
        };
        // Riemann's folds_test: nils are skipped by the friendly folds…
        let sum = call("sum", vec![Value::None, e("2"), Value::None, e("3")]).unwrap();
        assert_eq!(metric(sum), (Some(5.0), None));
        // …and count only the events there.
        let count = call("count", vec![Value::None, e("2")]).unwrap();
        assert_eq!(metric(count), (Some(1.0), None));
        // A positional fold: None first gives None, None later the nil error.
        assert!(matches!(
            call("quotient", vec![Value::None, e("2")]).unwrap(),
            Value::None
        ));
        let q = call("quotient", vec![e("2"), Value::None]).unwrap();
        assert_eq!(
            metric(q),
            (None, Some("An event or metric was nil.".to_owned()))
        );
    }

    #[test]
    fn count_of_nothing_is_zero_at_the_callers_time() {
        // Riemann's folds_test: (count []) is (event {:metric 0}), stamped now.
        let count = NativeFold(find("count").unwrap());
        match count.call_at(&[Value::List(vec![])], 42.0).unwrap() {
            Value::Event(e) => {
                assert_eq!(e.metric, Some(Number::Int(0)));
                assert_eq!(e.time.map(Number::as_f64), Some(42.0));
            }
            other => panic!("not an event: {other:?}"),
        }
        let wall = match count.call(&[Value::List(vec![])]).unwrap() {
            Value::Event(e) => e.time.map(Number::as_f64).unwrap(),
            other => panic!("not an event: {other:?}"),
        };
        assert!((wall - crate::event::now_secs()).abs() < 60.0);
    }

    #[test]
    fn every_fold_is_found_by_name_once() {
        for f in FOLDS {
            assert_eq!(FOLDS.iter().filter(|g| g.name == f.name).count(), 1);
            assert_eq!(find(f.name).unwrap().summary, f.summary);
            assert!(!f.summary.contains('|'));
        }
    }
}
