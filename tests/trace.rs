//! `dmon trace EVENT --streams MODULE` with the real binary: the path an
//! event takes through `by`, windows holding earlier events (`--after`),
//! `throttle`, a raising lambda, and a Hy module; and the shell's
//! `trace(event)` in a real terminal, on the live streams' state, which it
//! leaves as it was.

use crate::common;
use crate::shell_support;

use common::{run_dmon, Run, TempDir};
use shell_support::{has_line, node_row, stat, Kind, Shell, Start};

/// Runs `dmon trace EVENT --streams MODULE [extra…]` and asserts exit 0.
fn trace(module: &std::path::Path, event: &str, extra: &[&str]) -> String {
    let mut args = vec!["trace", event, "--streams", module.to_str().unwrap()];
    args.extend(extra);
    let run: Run = run_dmon(&args, None);
    assert!(
        run.status.success(),
        "dmon trace failed: {}\n{}",
        run.status,
        run.stderr
    );
    run.stdout
}

/// The line of the trace for the node at `path`, spaces squeezed.
fn step(out: &str, path: &str) -> String {
    node_row(out, path)
}

const ALERT: &str = r#"from dmon.streams import *
alert_stream = where("metric > 0.9", by("host", throttle(1, 60, email("ops@example.com"))))
"#;

#[test]
fn by_and_throttle_after_earlier_events() {
    let dir = TempDir::new();
    let module = dir.write("alert.py", ALERT);
    let earlier = dir.write(
        "earlier.ndjson",
        "{\"host\":\"web1\",\"metric\":0.95,\"time\":100}\n",
    );
    let after = earlier.to_str().unwrap();

    // web1 already mailed this period: its fork's throttle holds it back.
    let out = trace(
        &module,
        r#"{"host":"web1","metric":0.97,"time":110}"#,
        &["--after", after],
    );
    assert_eq!(
        step(&out, "alert_stream/where"),
        r#"alert_stream/where where("metric > 0.9"): true: passed on"#
    );
    assert_eq!(
        step(&out, "alert_stream/where/by"),
        r#"alert_stream/where/by by("host", idle=300): forked to by key host=web1 (its fork existed)"#
    );
    assert_eq!(
        step(&out, "alert_stream/where/by/throttle"),
        "alert_stream/where/by/throttle throttle(1, 60): throttled: over its limit for the period"
    );
    assert!(
        has_line(&out, "stopped at: alert_stream/where/by/throttle"),
        "{out}"
    );
    assert!(has_line(&out, "outputs: none reached"), "{out}");

    // web2 has no fork yet: the event reaches the mail, which is captured.
    let out = trace(
        &module,
        r#"{"host":"web2","metric":0.97,"time":110}"#,
        &["--after", after],
    );
    assert!(
        step(&out, "alert_stream/where/by").ends_with("forked to by key host=web2 (a new fork)"),
        "{out}"
    );
    assert!(
        step(&out, "alert_stream/where/by/throttle/email")
            .ends_with("would mail (captured; nothing sent)"),
        "{out}"
    );
    assert!(out.contains("stopped nowhere"), "{out}");
    assert!(
        out.contains(r#"email("ops@example.com") ← {"host":"web2","time":110,"metric":0.97}"#),
        "{out}"
    );

    // Without the earlier events (a fresh tree), web1 is not throttled;
    // and a value under the threshold stops at the filter. EVENT from stdin.
    let run = run_dmon(
        &["trace", "-", "--streams", module.to_str().unwrap()],
        Some(r#"{"host":"web1","metric":0.5,"time":110}"#),
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        step(&run.stdout, "alert_stream/where").ends_with("false: dropped"),
        "{}",
        run.stdout
    );
    assert!(
        has_line(&run.stdout, "stopped at: alert_stream/where"),
        "{}",
        run.stdout
    );
}

#[test]
fn windows_show_what_the_event_changed() {
    let dir = TempDir::new();
    let module = dir.write(
        "windows.py",
        r#"from dmon.streams import *
count_stream = fixed_time_window(60, smap(folds.count, printer("count: ")))
last3_stream = moving_event_window(3, smap(folds.mean, printer("mean: ")))
"#,
    );
    let earlier = dir.write(
        "earlier.ndjson",
        "{\"host\":\"a\",\"metric\":1,\"time\":100}\n{\"host\":\"a\",\"metric\":2,\"time\":110}\n",
    );
    let out = trace(
        &module,
        r#"{"host":"a","metric":6,"time":120}"#,
        &["--after", earlier.to_str().unwrap()],
    );
    assert_eq!(
        step(&out, "count_stream/fixed_time_window"),
        "count_stream/fixed_time_window fixed_time_window(60): held: nothing passed on yet \
         (2 in window → 3 in window)"
    );
    assert_eq!(
        step(&out, "last3_stream/moving_event_window"),
        "last3_stream/moving_event_window moving_event_window(3): emitted 3 events \
         (2 in window → 3 in window)"
    );
    assert!(
        has_line(&out, "stopped at: count_stream/fixed_time_window"),
        "{out}"
    );
    assert!(
        out.contains(r#"printer("mean: ") ← {"host":"a","time":120,"metric":3"#),
        "{out}"
    );
}

#[test]
fn a_raising_lambda_shows_the_exception_and_where_it_was_raised() {
    let dir = TempDir::new();
    let module = dir.write(
        "bad.py",
        r#"from dmon.streams import *
bad_stream = sdo(when(lambda e: e.metric / 0 > 1, printer("never: ")),
                 where(lambda e: e.metric > 1, printer("big: ")))
"#,
    );
    let run = run_dmon(
        &[
            "trace",
            r#"{"host":"a","metric":3}"#,
            "--streams",
            module.to_str().unwrap(),
        ],
        None,
    );
    assert!(run.status.success(), "{}", run.stderr);
    let out = run.stdout;
    let when = step(&out, "bad_stream/sdo/when");
    assert!(
        when.ends_with("raised ZeroDivisionError: division by zero"),
        "{out}"
    );
    assert!(when.contains("when(lambda e: e.metric / 0 > 1)"), "{out}");
    assert!(
        out.contains(&format!(
            "File \"{}\", line 2, in <lambda>",
            module.display()
        )),
        "{out}"
    );
    // The other branch goes on.
    assert!(
        step(&out, "bad_stream/sdo/where").ends_with("true: passed on"),
        "{out}"
    );
    assert!(has_line(&out, "stopped at: bad_stream/sdo/when"), "{out}");
    // The trace shows the failure; it is not logged as a live one.
    assert!(!run.stderr.contains("failed on event"), "{}", run.stderr);
}

#[test]
fn a_hy_module() {
    let dir = TempDir::new();
    let module = dir.write(
        "streams.hy",
        r#"(import dmon.streams *)
(setv stream (by "host" (when (fn [e] (> (get e "metric") 2)) (printer "hy: "))))
(setv bad-stream (when (fn [e] (/ 1 0)) (printer "never: ")))
"#,
    );
    let out = trace(&module, r#"{"host":"h","metric":3}"#, &[]);
    assert!(
        step(&out, "stream/by").ends_with("forked to by key host=h (a new fork)"),
        "{out}"
    );
    assert!(
        step(&out, "stream/by/when").ends_with("true: passed on"),
        "{out}"
    );
    assert!(
        step(&out, "stream/by/when/printer").ends_with("printed (captured)"),
        "{out}"
    );
    assert!(
        step(&out, "bad_stream/when").ends_with("raised ZeroDivisionError: division by zero"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "File \"{}\", line 3, in <lambda>",
            module.display()
        )),
        "{out}"
    );
    let out = trace(&module, r#"{"host":"h","metric":1}"#, &[]);
    assert!(
        step(&out, "stream/by/when").ends_with("false: dropped"),
        "{out}"
    );
}

#[test]
fn help_explains_and_a_bad_event_is_refused() {
    let run = run_dmon(&["trace", "--help"], None);
    assert!(run.status.success());
    assert!(run.stdout.contains("--after"), "{}", run.stdout);
    assert!(run.stdout.contains("Examples:"), "{}", run.stdout);
    let run = run_dmon(&["trace", "[1, 2]"], None);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("EVENT must be one JSON object"),
        "{}",
        run.stderr
    );
}

/// The shell's trace(): the live window's and throttle's state shows in
/// the trace; after it the live counters, window and forks are as they
/// were, and the mail the traced event would send was not queued.
#[test]
fn shell_trace_leaves_the_live_streams_alone() {
    let dir = TempDir::new();
    let module = dir.write(
        "streams.py",
        r#"from dmon.streams import *
alert_stream = by("host", throttle(1, 3600, printer("alert: ")))
last3_stream = moving_event_window(3, smap(folds.mean, printer("mean: ")))
mail_stream = over(100, email("ops@example.com"))
"#,
    );
    let mut opts = Start::new(Kind::Python, &dir, &module);
    opts.args = vec!["--smtp".into(), "127.0.0.1:1".into()];
    let shell = Shell::start(opts);
    // web1's fork lets this one through, then holds the next for an hour.
    shell.type_line(r#"inject(host="web1", metric=1)"#);
    shell.wait_for_line_starting("alert: ");
    let before = shell.type_line("streams()");
    assert!(
        node_row(&before, "last3_stream/moving_event_window").ends_with("1 in window"),
        "{before}"
    );

    let out = shell.type_line(r#"t = trace(host="web1", metric=500)"#);
    assert!(
        node_row(&out, "alert_stream/by")
            .ends_with("forked to by key host=web1 (its fork existed)"),
        "{out}"
    );
    assert!(
        node_row(&out, "alert_stream/by/throttle")
            .ends_with("throttled: over its limit for the period"),
        "{out}"
    );
    assert!(
        node_row(&out, "last3_stream/moving_event_window")
            .ends_with("emitted 2 events (1 in window → 2 in window)"),
        "{out}"
    );
    assert!(
        node_row(&out, "mail_stream/over/email").ends_with("would mail (captured; nothing sent)"),
        "{out}"
    );
    // The result, for scripts.
    let out = shell.type_line("[(s.path, s.verdict) for s in t.steps][:2], t.stopped_at");
    assert!(
        out.contains(
            "([('alert_stream/by', 'forked'), ('alert_stream/by/throttle', 'throttled')], \
             ['alert_stream/by/throttle'])"
        ),
        "{out}"
    );
    let out = shell.type_line("[(node, evs[0].metric) for node, kind, evs in t.outputs]");
    assert!(
        out.contains(r#"[('printer("mean: ")', 250.5), ('email("ops@example.com")', 500)]"#),
        "{out}"
    );

    let after = shell.type_line("streams()");
    assert_eq!(after, before, "the live streams changed");
    let help = shell.type_line("help()");
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("trace()")
            && l.contains(r#"one event's path, node by node: trace(host="web1", metric=0.97)"#)),
        "help() does not list trace() with its example:\n{help}"
    );
    let stats = shell.exit();
    assert_eq!(stat(&stats, "mails_queued"), 0, "{stats}");
    assert_eq!(stat(&stats, "processed"), 1, "{stats}");
}
