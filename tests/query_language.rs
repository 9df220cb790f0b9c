//! Riemann's query language, table-driven: a fixed set of events, the
//! queries that select among them, and the queries that must not parse.

use dmon::event::{Attributes, Event, Number};
use dmon::query::{ParseError, Query};

/// The events every query runs against, by name.
fn events() -> Vec<(&'static str, Event)> {
    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().map(|&(k, v)| (k, v)).collect()
    }
    vec![
        (
            "web1",
            Event {
                host: Some("www.example.com".into()),
                service: Some("api latency".into()),
                state: Some("ok".into()),
                description: Some("fast".into()),
                time: Some(Number::Int(100)),
                ttl: Some(60.0),
                metric: Some(Number::Int(5)),
                tags: ["prod", "web"].into(),
                attributes: attrs(&[("dc", "eu-west"), ("count", "3"), ("ratio", "0.25")]),
            },
        ),
        (
            "web2",
            Event {
                host: Some("www2.example.com".into()),
                service: Some("api errors".into()),
                state: Some("error rate".into()),
                metric: Some(Number::Float(2.0)),
                tags: ["web"].into(),
                attributes: attrs(&[("dc", "us"), ("count", "abc")]),
                ..Event::default()
            },
        ),
        (
            "db",
            Event {
                host: Some("db1".into()),
                service: Some("disk /var".into()),
                state: Some("error rate".into()),
                description: Some("a.b*c".into()),
                time: Some(Number::Float(100.5)),
                ttl: Some(10.5),
                metric: Some(Number::Float(97.5)),
                tags: ["prod"].into(),
                attributes: attrs(&[("dc", "eu-east"), ("role", "primary")]),
            },
        ),
        (
            "nometric",
            Event {
                host: Some("wwwxexample.com".into()),
                service: Some("api.latency".into()),
                state: Some("warning".into()),
                description: Some("line1\nline2".into()),
                attributes: attrs(&[("count", "10")]),
                ..Event::default()
            },
        ),
        ("empty", Event::default()),
    ]
}

const ALL: &str = "web1 web2 db nometric empty";
const NONE: &str = "";

/// (query, the names of the events it matches, space-separated).
const MATCHES: &[(&str, &str)] = &[
    // true / false, bare literals
    ("true", ALL),
    ("false", NONE),
    ("nil", NONE),
    ("null", NONE),
    ("\"x\"", ALL),
    ("0", ALL),
    ("1 < 2", ALL),
    ("\"a\" = \"b\"", NONE),
    // = and != on string fields
    ("host = \"db1\"", "db"),
    ("\"db1\" = host", "db"),
    ("host != \"db1\"", "web1 web2 nometric empty"),
    ("state = \"error rate\"", "web2 db"),
    ("service = \"api latency\"", "web1"),
    ("description = \"fast\"", "web1"),
    ("description = \"line1\\nline2\"", "nometric"),
    ("host = \"DB1\"", NONE),
    ("host = service", "empty"),
    ("host != service", "web1 web2 db nometric"),
    // nil / null
    ("host = nil", "empty"),
    ("host = null", "empty"),
    ("nil = host", "empty"),
    ("host != nil", "web1 web2 db nometric"),
    ("host != null", "web1 web2 db nometric"),
    ("metric = nil", "nometric empty"),
    ("description = nil", "web2 empty"),
    ("time = nil", "web2 nometric empty"),
    ("ttl = null", "web2 nometric empty"),
    ("tags = nil", "nometric empty"),
    ("tags != nil", "web1 web2 db"),
    // numbers: = and != across int and float
    ("metric = 5", "web1"),
    ("metric = 5.0", "web1"),
    ("metric = 2", "web2"),
    ("metric = 97.5", "db"),
    ("metric != 5", "web2 db nometric empty"),
    ("metric = 5L", "web1"),
    ("metric = 5N", "web1"),
    ("metric = 5e0", "web1"),
    ("time = 100", "web1"),
    ("ttl = 60", "web1"),
    // strings and numbers never equal
    ("metric = \"5\"", NONE),
    ("host = 5", NONE),
    ("host != 5", ALL),
    ("metric != \"5\"", ALL),
    ("host = true", NONE),
    // ordering
    ("metric > 2", "web1 db"),
    ("metric >= 2", "web1 web2 db"),
    ("metric < 5", "web2"),
    ("metric <= 5", "web1 web2"),
    ("metric > -1", "web1 web2 db"),
    ("metric>=97.5", "db"),
    ("metric < 1e2", "web1 web2 db"),
    ("metric > -Infinity", "web1 web2 db"),
    ("metric < Infinity", "web1 web2 db"),
    ("metric > NaN", NONE),
    ("metric = NaN", NONE),
    ("metric != NaN", ALL),
    ("metric_f > 90", "db"),
    ("time >= 100.5", "db"),
    ("time < 100.5", "web1"),
    ("ttl < 20", "db"),
    ("ttl >= 10.5", "web1 db"),
    ("host > 1", NONE),
    ("host < 1", NONE),
    ("not metric > 2", "web2 nometric empty"),
    ("metric > 1 and metric < 10", "web1 web2"),
    // attributes
    ("dc = \"us\"", "web2"),
    ("dc != \"us\"", "web1 db nometric empty"),
    ("dc = nil", "nometric empty"),
    ("dc", "web1 web2 db"),
    ("role", "db"),
    ("count = 3", "web1"),
    ("count = 3.0", "web1"),
    ("count = \"3\"", "web1"),
    ("count = \"3.0\"", NONE),
    ("count != 3", "web2 db nometric empty"),
    ("count > 2", "web1 nometric"),
    ("count < 100", "web1 nometric"),
    ("count >= 10", "nometric"),
    ("ratio < 0.5", "web1"),
    ("missing > 0", NONE),
    ("dc =~ \"eu-%\"", "web1 db"),
    ("dc ~= \"^eu\"", "web1 db"),
    // bare fields: present
    ("metric", "web1 web2 db"),
    ("description", "web1 db nometric"),
    ("tags", "web1 web2 db"),
    // tagged
    ("tagged \"prod\"", "web1 db"),
    ("tagged \"web\"", "web1 web2"),
    ("tagged \"nope\"", NONE),
    ("tagged \"Prod\"", NONE),
    ("not tagged \"prod\"", "web2 nometric empty"),
    ("tagged \"prod\" and tagged \"web\"", "web1"),
    // LIKE: % at the end, start, middle; no % is equality
    ("host =~ \"www.%\"", "web1"),
    ("host =~ \"%.example.com\"", "web1 web2"),
    ("host =~ \"www%com\"", "web1 web2 nometric"),
    ("host =~ \"%example%\"", "web1 web2 nometric"),
    ("host =~ \"w%.%m\"", "web1 web2 nometric"),
    ("host =~ \"%\"", "web1 web2 db nometric"),
    ("host =~ \"db1\"", "db"),
    ("host =~ \"db\"", NONE),
    ("host =~ \"DB%\"", NONE),
    // LIKE: regex metacharacters and _ are literal
    ("service =~ \"api.%\"", "nometric"),
    ("description =~ \"a.b*c\"", "db"),
    ("description =~ \"a%c\"", "db"),
    ("description =~ \"a_b%\"", NONE),
    ("description =~ \"(%\"", NONE),
    ("service =~ \"disk /%\"", "db"),
    ("host =~ \"[w]%\"", NONE),
    ("description =~ \"%line2\"", "nometric"),
    // LIKE and regex only match strings
    ("metric =~ \"%\"", NONE),
    ("metric ~= \".\"", NONE),
    ("time =~ \"1%\"", NONE),
    // regex search: unanchored
    ("host ~= \"example\"", "web1 web2 nometric"),
    ("host ~= \"^www\\\\d\"", "web2"),
    ("host ~= \"^db1$\"", "db"),
    ("host ~= \"(?i)DB\"", "db"),
    ("service ~= \"api.latency\"", "web1 nometric"),
    ("service ~= \"api\\\\.latency\"", "nometric"),
    ("description ~= \"line2\"", "nometric"),
    ("state ~= \"rate|warn\"", "web2 db nometric"),
    ("host ~= \"\"", "web1 web2 db nometric"),
    // precedence: not > and > or, left to right, parentheses override
    (
        "host = \"db1\" or tagged \"web\" and state = \"ok\"",
        "web1 db",
    ),
    (
        "host = \"db1\" or (tagged \"web\" and state = \"ok\")",
        "web1 db",
    ),
    (
        "(host = \"db1\" or tagged \"web\") and state = \"ok\"",
        "web1",
    ),
    (
        "tagged \"web\" and state = \"ok\" or host = \"db1\"",
        "web1 db",
    ),
    (
        "tagged \"web\" and (state = \"ok\" or host = \"db1\")",
        "web1",
    ),
    ("not tagged \"prod\" and metric > 1", "web2"),
    ("(not tagged \"prod\") and metric > 1", "web2"),
    (
        "not (tagged \"prod\" and metric > 1)",
        "web2 nometric empty",
    ),
    (
        "not tagged \"prod\" or metric > 50",
        "web2 db nometric empty",
    ),
    (
        "not (tagged \"prod\" or metric > 50)",
        "web2 nometric empty",
    ),
    ("not not tagged \"prod\"", "web1 db"),
    (
        "host = nil or host = \"db1\" or metric = 5",
        "web1 db empty",
    ),
    ("metric and metric < 50 and tagged \"web\"", "web1 web2"),
    ("((((host = \"db1\"))))", "db"),
    // Riemann's documented example
    (
        "state = \"error rate\" and (not host =~ \"www.%\")",
        "web2 db",
    ),
    ("state = \"error rate\" and not host =~ \"www%\"", "db"),
    // constants inside larger queries
    ("host = \"db1\" and true", "db"),
    ("host = \"db1\" or true", ALL),
    ("host = \"db1\" and false", NONE),
    ("false or host = \"db1\"", "db"),
    // whitespace is free
    ("  host=\"db1\"\n\tor\tmetric<3  ", "web2 db"),
];

/// (bad query, the 1-based column of the error).
const ERRORS: &[(&str, usize)] = &[
    ("", 1),
    ("   ", 4),
    ("host = ", 8),
    ("host =", 7),
    ("host == \"a\"", 7),
    ("host = = 1", 8),
    ("metric >", 9),
    ("metric > \"5\"", 10),
    ("metric > host", 10),
    ("metric < nil", 10),
    ("host =~ 5", 9),
    ("host ~= host", 9),
    ("host ~= \"(\"", 9),
    ("host = \"a\" and host ~= \"[z-a]\"", 24),
    ("tagged prod", 8),
    ("tagged", 7),
    ("host = \"a", 8),
    ("host = \"a\\q\"", 10),
    ("host = \"\\u12\"", 9),
    ("metric > 1.", 12),
    ("metric > 1.5.2", 10),
    ("metric > 12abc", 10),
    ("metric > -", 10),
    ("host = 'a'", 8),
    ("host = \"a\" AND service = \"b\"", 12),
    ("host = \"a\" && service = \"b\"", 12),
    ("host = \"a\" or or", 15),
    ("and host = \"a\"", 1),
    ("not", 4),
    ("()", 2),
    ("(host = \"a\"", 12),
    ("(host = \"a\"))", 13),
    ("host = \"a\" service = \"b\"", 12),
    ("host ! \"a\"", 6),
    ("host ~ \"a\"", 6),
    ("state = \"error rate\" and (not host =~ \"www.%\"", 46),
    ("hôst ~= \"x\" and y = 'z'", 21),
];

fn names(list: &str) -> Vec<&str> {
    list.split_whitespace().collect()
}

#[test]
fn queries_match_the_expected_events() {
    let events = events();
    let all: Vec<&str> = events.iter().map(|(n, _)| *n).collect();
    assert_eq!(all, names(ALL));
    let mut failures = Vec::new();
    for (text, expected) in MATCHES {
        let query = match Query::parse(text) {
            Ok(q) => q,
            Err(e) => {
                failures.push(format!("{text:?}: {e}"));
                continue;
            }
        };
        let got: Vec<&str> = events
            .iter()
            .filter(|(_, e)| query.matches(e))
            .map(|(n, _)| *n)
            .collect();
        if got != names(expected) {
            failures.push(format!("{text:?}: expected [{expected}], got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries failed:\n{}",
        failures.len(),
        MATCHES.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_queries_report_their_column() {
    let mut failures = Vec::new();
    for (text, column) in ERRORS {
        match Query::parse(text) {
            Ok(_) => failures.push(format!("{text:?}: parsed, expected an error")),
            Err(e) if e.column != *column => {
                failures.push(format!("{text:?}: expected column {column}, got {e}"))
            }
            Err(e) => {
                let shown = e.to_string();
                let prefix = format!("parse error at column {column}: ");
                if !shown.starts_with(&prefix) || e.message.is_empty() {
                    failures.push(format!("{text:?}: bad message {shown:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad queries failed:\n{}",
        failures.len(),
        ERRORS.len(),
        failures.join("\n")
    );
}

#[test]
fn error_messages_say_what_was_expected() {
    let cases: &[(&str, &str)] = &[
        (
            "state = \"error rate\" and host = ",
            "parse error at column 33: expected a value after '=' but found end of query",
        ),
        (
            "metric > \"5\"",
            "parse error at column 10: expected a number after '>' but found string \"5\"",
        ),
        (
            "host ~= \"(\"",
            "parse error at column 9: invalid regular expression: unclosed group",
        ),
        (
            "tagged prod",
            "parse error at column 8: expected a string after 'tagged' but found name 'prod'",
        ),
        (
            "host = \"a\" AND x",
            "parse error at column 12: expected 'and', 'or' or end of query but found name 'AND' (keywords are lowercase)",
        ),
        (
            "(host = \"a\"",
            "parse error at column 12: expected 'and', 'or' or ')' to close the '(' at column 1 but found end of query",
        ),
    ];
    for (text, expected) in cases {
        let err: ParseError = text.parse::<Query>().unwrap_err();
        assert_eq!(err.to_string(), *expected, "{text:?}");
    }
}

#[test]
fn source_is_kept_and_queries_clone() {
    let text = "state = \"error rate\" and (not host =~ \"www.%\")";
    let q = Query::parse(text).unwrap();
    assert_eq!(q.source(), text);
    let copy = q.clone();
    assert_eq!(copy.source(), text);
    let (_, db) = &events()[2];
    assert!(q.matches(db) && copy.matches(db));
}
