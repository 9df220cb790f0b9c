//! Stream modules written in Hy.

use crate::common;

use common::*;
use serde_json::json;

/// The seed's form: after `(import dmon.streams *)`, `when` is dmon's stream
/// node, not Hy's core `when` macro.
#[test]
fn hy_module_with_star_import_uses_dmons_when() {
    let mut s = Server::start_hy(
        r#"(import dmon.streams *)
(setv stream (when (fn [e] (= (get e "state") "warning")) (printer "hy: ")))
"#,
    );
    s.send(json!({"host": "calm", "service": "cpu", "state": "ok", "metric": 1}));
    s.send(json!({"host": "busy", "service": "cpu", "state": "warning", "metric": 2.5}));
    let e = s.expect_printed("hy: ");
    assert_eq!(text(&e, "host"), "busy", "the ok event must not be printed");
    assert_eq!(text(&e, "state"), "warning");
    assert_close(num(&e, "metric"), 2.5);

    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    assert_eq!(done.printed("hy: ").len(), 1);
    let stats = done.stats();
    assert_eq!(stats.node_count("stream/when", "in"), 2);
    assert_eq!(stats.node_count("stream/when", "out"), 1);
}

/// The qualified form, with attribute access and a Hy-defined predicate.
#[test]
fn hy_module_with_qualified_import() {
    let mut s = Server::start_hy(
        r#"(import dmon.streams :as ds)

(defn high? [e] (> (.get e "metric" 0) 2))

(setv high-stream (ds.when high? (ds.printer "hy-high: ")))
"#,
    );
    s.send(json!({"host": "low", "service": "cpu", "metric": 1}));
    s.send(json!({"host": "high", "service": "cpu", "metric": 3}));
    let e = s.expect_printed("hy-high: ");
    assert_eq!(text(&e, "host"), "high");
}

/// An exception in a Hy predicate is logged with a traceback that points
/// at the .hy file and line, not at Hy's "<string>", and the node is named
/// by its path.
#[test]
fn hy_tracebacks_name_the_hy_file() {
    let mut s = Server::start_hy(
        r#"(import dmon.streams *)
(setv stream (when (fn [e] (/ 1 0)) (printer "hy: ")))
"#,
    );
    let module = s.module.display().to_string();
    s.send(json!({"host": "h", "service": "cpu"}));
    let warn = s.expect_stderr("the node's failure", |l| l.contains("failed on event"));
    assert!(
        warn.contains(&format!(
            "stream/when: when(<lambda> at {module}:2) failed on event h cpu: ZeroDivisionError: division by zero"
        )),
        "{warn}"
    );
    let frame = format!("File \"{module}\", line 2, in <lambda>");
    s.expect_stderr("the .hy frame", |l| l.trim() == frame);
    let done = s.terminate();
    assert!(done.status.success(), "exit status {}", done.status);
    assert_eq!(done.stats().node_count("stream/when", "errors"), 1);
}
