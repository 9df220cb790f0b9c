//! The query language: `Query::parse` on any text (a `dmon query` client
//! sends it over the Riemann port), then matching against a fixed event
//! with every field set.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code, reason = "each target uses one of the checks")]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::query(data));
