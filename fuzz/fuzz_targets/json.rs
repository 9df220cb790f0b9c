//! The JSON datagram decoder (`dmon_core::codec::json::decode`), as the UDP
//! source calls it on whatever a peer sends.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code, reason = "each target uses one of the checks")]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::json(data));
