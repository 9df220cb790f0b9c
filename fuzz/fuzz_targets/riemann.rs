//! Riemann's protocol: one frame's message, decoded as the TCP and UDP
//! sources do (`Msg::decode` on the bytes, then `from_proto` per event).
#![no_main]

use dmon_core::codec::riemann::{from_proto, to_proto, Msg, ProtoEvent};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Msg::decode(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = msg.query_text();
    let _ = msg.error_text();
    for proto in &msg.events {
        let event = from_proto(proto, 1.5);
        assert!(event.time.is_some(), "a decoded event always has a time");
        // The reply path (`dmon query`) encodes events back.
        let back = to_proto(&event);
        let again = from_proto(&ProtoEvent::decode(&back.encode_to_vec()[..]).unwrap(), 1.5);
        assert_eq!(again.host, event.host);
        assert_eq!(again.service, event.service);
        assert_eq!(again.tags, event.tags);
    }
});
