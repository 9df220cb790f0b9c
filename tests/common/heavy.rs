//! The lock that runs the memory attacks (tests/riemann_hostile.rs and
//! tests/hostile_udp.rs) one at a time when their tests share a process
//! (`cargo test`), so each peak-RSS or drop count measures one attack.
//! Under nextest every test has its own process, and the `memory-heavy`
//! test group in .config/nextest.toml does the same.

use std::sync::{Mutex, MutexGuard};

static HEAVY: Mutex<()> = Mutex::new(());

/// Held for the whole of a test that opens hundreds of sockets or floods;
/// a test that panicked while holding it does not stop the others.
pub fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}
