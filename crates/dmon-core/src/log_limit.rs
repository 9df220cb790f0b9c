//! Rate limits for log lines that hostile or broken senders can trigger at
//! line rate (bad datagrams, exceptions in user code), so logs stay readable
//! and cheap while counters keep the exact numbers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets at most `per_window` messages through each window (a second unless
/// told otherwise) and remembers how many it held back, so the next message
/// that passes can say so.
pub struct LogLimiter {
    per_window: u32,
    window: Duration,
    state: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    passed: u32,
    suppressed: u64,
}

const WINDOW: Duration = Duration::from_secs(1);

impl LogLimiter {
    pub const fn new(per_window: u32) -> Self {
        Self::per(per_window, WINDOW)
    }

    /// At most `per_window` messages each `window`.
    pub const fn per(per_window: u32, window: Duration) -> Self {
        LogLimiter {
            per_window,
            window,
            state: Mutex::new(Window {
                started: None,
                passed: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a message may be logged now, `n` being how many were
    /// suppressed since the last one that was; `None` when it must be dropped.
    pub fn check(&self) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if w.started
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            w.started = Some(now);
            w.passed = 0;
        }
        if w.passed < self.per_window {
            w.passed += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// Logs a warning through `limiter`, mentioning how many were suppressed.
#[macro_export]
macro_rules! warn_limited {
    ($limiter:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limiter.check() {
            if suppressed > 0 {
                tracing::warn!("({suppressed} similar messages suppressed)");
            }
            tracing::warn!($($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_up_to_the_limit_then_counts() {
        let l = LogLimiter::new(2);
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), None);
        assert_eq!(l.check(), None);
        l.state.lock().unwrap().started = Some(Instant::now() - WINDOW);
        assert_eq!(l.check(), Some(2));
    }
}
