//! Riemann's protocol: one frame's message, decoded as the TCP and UDP
//! sources do (`Msg::decode` on the bytes, then `from_proto` per event).
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code, reason = "each target uses one of the checks")]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::riemann(data));
