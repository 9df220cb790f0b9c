//! A lock-free latency histogram: log-scale buckets of atomic counters, so
//! recording costs one increment and readers (self-instrumentation) take
//! quantiles from the difference of two snapshots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per decade: quantiles are exact to within ~12 %.
const PER_DECADE: f64 = 20.0;
/// From 1 µs to 1,000 s: nine decades.
const SMALLEST: f64 = 1e-6;
const BUCKETS: usize = 9 * PER_DECADE as usize + 1;

pub struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Counts per bucket at one moment.
pub type Snapshot = Vec<u64>;

impl Histogram {
    /// Records `n` samples of `latency`.
    pub fn record(&self, latency: Duration, n: u64) {
        self.counts[bucket(latency.as_secs_f64())].fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

fn bucket(secs: f64) -> usize {
    if secs.is_nan() || secs <= SMALLEST {
        return 0;
    }
    ((secs / SMALLEST).log10() * PER_DECADE)
        .ceil()
        .min((BUCKETS - 1) as f64) as usize
}

/// The upper bound of bucket `i`, in seconds.
fn upper(i: usize) -> f64 {
    SMALLEST * 10f64.powf(i as f64 / PER_DECADE)
}

/// The `q` quantile (0..=1) of the samples recorded between `before` and
/// `after`, in seconds (a bucket's upper bound); None without samples.
pub fn quantile(before: &[u64], after: &[u64], q: f64) -> Option<f64> {
    let deltas: Vec<u64> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = deltas.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in deltas.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(upper(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_the_samples_between_two_snapshots() {
        let h = Histogram::default();
        h.record(Duration::from_millis(500), 100);
        let before = h.snapshot();
        h.record(Duration::from_millis(1), 90);
        h.record(Duration::from_millis(100), 10);
        let after = h.snapshot();
        let p50 = quantile(&before, &after, 0.5).unwrap();
        let p99 = quantile(&before, &after, 0.99).unwrap();
        assert!((0.00099..0.00113).contains(&p50), "{p50}");
        assert!((0.099..0.113).contains(&p99), "{p99}");
        assert_eq!(quantile(&after, &after, 0.5), None);
    }

    #[test]
    fn extremes_land_in_the_end_buckets() {
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(f64::NAN), 0);
        assert_eq!(bucket(1e9), BUCKETS - 1);
    }
}
