//! The JSON datagram decoder (`dmon_core::codec::json::decode`), as the UDP
//! source calls it on whatever a peer sends.
#![no_main]

use dmon_core::codec::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    json::decode(data, 1.5, &mut events, &mut errors);
    for event in &events {
        assert!(event.time.is_some(), "a decoded event always has a time");
        // What the printer writes of an event reads back as an event.
        let line = json::encode(event);
        if let Err(e) = json::decode_event(&line) {
            panic!("{line:?} (encoded from {event:?}) does not decode: {e}");
        }
    }
});
