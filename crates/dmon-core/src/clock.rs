//! Time as stream nodes see it. The server runs on the wall clock; tests and
//! replays run on a [`VirtualClock`] they move by hand, so every time-driven
//! node can be tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::now_secs;

/// The current time in fractional unix seconds.
pub trait Clock: Send + Sync {
    fn now(&self) -> f64;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> f64 {
        now_secs()
    }
}

/// A clock that moves only when told to, and never backwards.
#[derive(Debug, Default)]
pub struct VirtualClock {
    bits: AtomicU64,
}

impl VirtualClock {
    pub fn starting_at(t: f64) -> Arc<Self> {
        Arc::new(VirtualClock {
            bits: AtomicU64::new(t.to_bits()),
        })
    }

    /// Moves the clock to `t`; an earlier `t` leaves it where it is.
    pub fn advance_to(&self, t: f64) {
        if t.is_finite() && t > self.now() {
            self.bits.store(t.to_bits(), Ordering::Release);
        }
    }

    pub fn advance_by(&self, dt: f64) {
        self.advance_to(self.now() + dt);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_forward_only() {
        let c = VirtualClock::starting_at(10.0);
        c.advance_by(5.0);
        assert_eq!(c.now(), 15.0);
        c.advance_to(12.0);
        assert_eq!(c.now(), 15.0);
        c.advance_to(f64::NAN);
        assert_eq!(c.now(), 15.0);
    }
}
