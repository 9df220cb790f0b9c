//! The query language: `Query::parse` on any text (a `dmon query` client
//! sends it over the Riemann port), then matching against a fixed event
//! with every field set.
#![no_main]

use std::sync::OnceLock;

use dmon_core::event::{Event, Number};
use dmon_core::query::Query;
use libfuzzer_sys::fuzz_target;

fn event() -> &'static Event {
    static EVENT: OnceLock<Event> = OnceLock::new();
    EVENT.get_or_init(|| Event {
        host: Some("www1.example.com".into()),
        service: Some("api latency".into()),
        state: Some("error rate".into()),
        description: Some("a.b*c\nline2 é".into()),
        time: Some(Number::Int(100)),
        ttl: Some(60.0),
        metric: Some(Number::Float(97.5)),
        tags: ["prod", "web"].into(),
        attributes: [("dc", "eu-west"), ("count", "3"), ("ratio", "0.25")].into(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = Query::parse(text) {
        let _ = query.matches(event());
        let _ = query.matches(&Event::default());
        assert_eq!(query.source(), text);
    }
});
