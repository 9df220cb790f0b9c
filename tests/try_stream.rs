//! The shell's `try_stream()`: a candidate stream dry-run on the recent
//! traffic the server kept, beside the live streams, in real terminals
//! (tmux) for each shell, with the events sent over real UDP.

use crate::shell_support;

use std::process::Command;

use shell_support::{has_line, node_row, Kind, Shell, Start, TempDir};

const STREAMS: &str = r#"from dmon.streams import *

warn_stream = when(lambda e: e.state == "warning", printer("warn: "))
index_stream = index()
"#;

/// What the tests try: the metric over 5 printed, instead of warnings.
const CANDIDATE: &str = r#"where(lambda e: e['metric'] > 5, printer("hi: "))"#;

fn start(kind: Kind, dir: &TempDir, args: &[&str]) -> Shell {
    let streams = dir.write("streams.py", STREAMS);
    let mut opts = Start::new(kind, dir, &streams);
    // bpython draws through blessed, which turns every capability off
    // under NO_COLOR (see tests/shell.rs).
    opts.color = kind == Kind::Bpython;
    opts.args = args.iter().map(|a| a.to_string()).collect();
    Shell::start(opts)
}

/// Four events in one datagram, the live stream's printer lines waited
/// for (the readiness signal that they went through the pipeline): a and c
/// are warnings (live prints them), b, c and d have metrics over 5 (the
/// candidate prints them).
fn send_traffic(shell: &Shell) {
    shell.send_datagram(concat!(
        r#"{"host":"a","state":"warning","metric":2}"#,
        "\n",
        r#"{"host":"b","state":"ok","metric":6}"#,
        "\n",
        r#"{"host":"c","state":"warning","metric":9}"#,
        "\n",
        r#"{"host":"d","state":"ok","metric":7}"#,
    ));
    shell.wait_for_line_starting(r#"warn: {"host":"a""#);
    shell.wait_for_line_starting(r#"warn: {"host":"c""#);
}

/// The report's lines, columns joined by single spaces.
fn squeezed(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The dry run against one live root, in each shell: counts per output,
/// the differences, the hint, 80 columns; the live streams untouched.
fn against_one_root(kind: Kind) {
    let dir = TempDir::new();
    let shell = start(kind, &dir, &[]);
    send_traffic(&shell);
    let call = format!(r#"try_stream({CANDIDATE}, against="warn_stream")"#);
    let out = shell.run_expect(&call, "to make it live:");
    let lines = squeezed(&out);
    let has = |want: &str| lines.iter().any(|l| l == want);
    // (IPython puts `Out[N]:` on a line of its own before it.)
    let header = lines
        .iter()
        .position(|l| l.starts_with("try_stream: "))
        .unwrap_or_else(|| panic!("no header:\n{out}"));
    assert!(
        lines[header].starts_with("try_stream: 4 events received ")
            && lines[header].ends_with(" (0 s)"),
        "header:\n{out}"
    );
    assert_eq!(lines[header + 1], "candidate vs warn_stream", "{out}");
    assert!(has("output candidate live"), "table header:\n{out}");
    assert!(has(r#"printer("hi: ") 3 0"#), "candidate's row:\n{out}");
    assert!(has(r#"printer("warn: ") 0 2"#), "live row:\n{out}");
    // c was printed by both: not a difference.
    assert!(
        has("differences: 2 only from the candidate (+), 1 only from live (-); the first:"),
        "{out}"
    );
    for (sign, host) in [("+", "b"), ("+", "d"), ("-", "a")] {
        let prefix = format!(r#"{sign} printer {{"host":"{host}","#);
        assert!(
            lines.iter().any(|l| l.starts_with(&prefix)),
            "no {prefix:?} line:\n{out}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.contains(r#""host":"c""#)),
        "c is no difference:\n{out}"
    );
    assert!(
        has("to make it live: x_stream = <candidate>"),
        "hint:\n{out}"
    );
    assert!(
        has("or, to replace warn_stream: warn_stream = <candidate>"),
        "hint:\n{out}"
    );
    for line in out.lines() {
        assert!(
            line.trim_end().chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    // Nothing was printed for real, and the live nodes counted nothing more.
    assert!(
        !shell.screen().lines().any(|l| l.starts_with("hi: ")),
        "the dry run printed:\n{}",
        shell.screen()
    );
    let out = shell.type_line("streams()");
    assert_eq!(
        node_row(&out, "warn_stream/when/printer"),
        r#"warn_stream/when/printer printer("warn: ") in 2 out 0 errors 0"#,
        "{out}"
    );
    shell.leave();
}

#[test]
fn python_try_stream_against_one_root() {
    against_one_root(Kind::Python);
}

#[test]
fn ipython_try_stream_against_one_root() {
    against_one_root(Kind::Ipython);
}

#[test]
fn bpython_try_stream_against_one_root() {
    against_one_root(Kind::Bpython);
}

/// The result object holds the same data for scripts; against every root
/// by default; the candidate's own state is left alone, so binding it
/// afterwards starts it fresh; stats() shows the ring.
#[test]
fn result_object_default_against_and_stats() {
    let dir = TempDir::new();
    let shell = start(Kind::Python, &dir, &["--recent-max-events", "3"]);
    send_traffic(&shell);
    shell.type_line(&format!("cand = {CANDIDATE}"));
    shell.type_line("r = try_stream(cand)");
    let out = shell.type_line(
        r#"print(r.events, r.count('printer("hi: ")'), r.count('index()'), r.only_candidate_total, r.only_live_total, r.same, r.live_streams)"#,
    );
    // The cap of 3 kept b, c, d; the live streams are both roots: warn
    // printed c, the index took b, c, d; the candidate printed all three.
    assert_eq!(
        out.trim(),
        "3 (3, 0) (0, 3) 2 3 False ['warn_stream', 'index_stream']",
        "{out}"
    );
    let out = shell.type_line("r");
    let lines = squeezed(&out);
    assert_eq!(
        lines[1], "candidate vs the live streams: warn_stream, index_stream",
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "to make it live: x_stream = cand"),
        "{out}"
    );
    // against: a root as an object, or any tree.
    let out = shell
        .type_line("print(try_stream(cand, against=warn_stream).count('printer(\"warn: \")'))");
    assert_eq!(out.trim(), "(0, 1)", "{out}");
    let out = shell.type_line(r#"try_stream(cand, against=printer("p: "))"#);
    assert!(
        has_line(&out, "candidate vs the stream given as against"),
        "{out}"
    );
    assert!(
        squeezed(&out).iter().any(|l| l == r#"printer("p: ") 0 3"#),
        "{out}"
    );
    let out = shell.type_line("stats()");
    assert!(
        has_line(
            &out,
            "recent: 3 events kept, 0.0 MiB (last 5 minutes, at most 3 and 64.0 MiB), 1 dropped by the caps"
        ),
        "{out}"
    );
    // Each share of --memory-limit, what it holds now (the recent events'
    // bytes) and what it refused.
    let memory = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("memory (limit 1024.0 MiB): messages 0.0 MiB  pipeline 0.0 MiB"))
        .unwrap_or_else(|| panic!("no memory line in {out}"));
    assert!(memory.ends_with("recent 0.0 MiB; refused 0"), "{memory}");
    // Bound as a root, the candidate prints from the next event on.
    shell.type_line("x_stream = cand");
    shell.send_datagram(r#"{"host":"e","metric":8}"#);
    shell.wait_for_line_starting(r#"hi: {"host":"e""#);
    let out = shell.type_line("streams()");
    assert!(
        node_row(&out, "x_stream/where").contains(" in 1 out 1 "),
        "the dry run counted into the candidate:\n{out}"
    );
    shell.leave();
}

/// Clear errors: no events yet, a non-stream, an unknown root, the ring off.
#[test]
fn errors_are_said_plainly() {
    let dir = TempDir::new();
    let shell = start(Kind::Python, &dir, &[]);
    let out = shell.type_line("help()");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("try_stream()")
                && l.contains("dry-run a stream on the last minutes of traffic")),
        "help() does not list try_stream():\n{out}"
    );
    let out = shell.type_line(r#"try_stream(printer("x: "))"#);
    assert!(
        out.contains(
            "RuntimeError: no events received in the last 5 minutes to try the stream on (the ring keeps 5 minutes)"
        ),
        "{out}"
    );
    let out = shell.type_line("try_stream(42)");
    assert!(
        out.contains("TypeError: try_stream() needs a stream to try, like try_stream(where(\"metric > 5\", printer(\"hi: \"))), not 42"),
        "{out}"
    );
    send_traffic(&shell);
    let out = shell.type_line(r#"try_stream(printer("x: "), against="nope_stream")"#);
    assert!(
        out.contains(r#"ValueError: try_stream(): against="nope_stream" is not a live stream; the live streams are warn_stream, index_stream"#),
        "{out}"
    );
    shell.leave();

    let dir = TempDir::new();
    let shell = start(Kind::Python, &dir, &["--recent-minutes", "0"]);
    send_traffic(&shell);
    let out = shell.type_line(r#"try_stream(printer("x: "))"#);
    assert!(
        out.contains(
            "RuntimeError: no recent events are kept: this dmon runs with --recent-minutes 0"
        ),
        "{out}"
    );
    let out = shell.type_line("stats()");
    assert!(
        has_line(
            &out,
            "recent: off (--recent-minutes 0), so try_stream() has nothing to replay"
        ),
        "{out}"
    );
    shell.leave();
}

/// The two flags explain themselves, with their defaults and variables,
/// and a bad value is refused at start-up.
#[test]
fn flags_are_documented_and_checked() {
    let help = Command::new(shell_support::dmon_bin())
        .args(["serve", "--help"])
        .output()
        .expect("run dmon serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "--recent-minutes <MINUTES>",
        "[env: DMON_RECENT_MINUTES=] [default: 5]",
        "--recent-max-events <N>",
        "[env: DMON_RECENT_MAX_EVENTS=] [default: 200000]",
    ] {
        assert!(flat.contains(want), "no {want:?} in:\n{help}");
    }
    let bad = Command::new(shell_support::dmon_bin())
        .args(["serve", "--recent-minutes=-1"])
        .output()
        .expect("run dmon serve");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("expected a number of minutes, 0 or more (0 turns it off)"),
        "{err}"
    );
}

/// Ctrl-C stops a long dry run at once, as a KeyboardInterrupt at the
/// prompt (not as a failure of the candidate's lambda), and the shell and
/// the server go on.
#[test]
fn ctrl_c_stops_a_long_dry_run() {
    let dir = TempDir::new();
    let shell = start(Kind::Python, &dir, &[]);
    shell.run_expect(
        r#"inject([{"host": f"h{i}", "metric": i} for i in range(2000)])"#,
        "2000 events injected",
    );
    // 10 ms per event: 20 s for the candidate alone. It says when it has
    // begun.
    shell.type_line("import time");
    let call = r#"try_stream(where(lambda e: (e.host == "h0" and print("dry run begun")) or time.sleep(0.01) or True, printer("x: ")), against="warn_stream")"#;
    shell.type_at_prompt(call);
    shell.tmux.keys(&["Enter"]);
    shell.wait_for("the dry run to begin", |s| has_line(s, "dry run begun"));
    let pressed = std::time::Instant::now();
    shell.tmux.keys(&["C-c"]);
    let screen = shell.wait_for("KeyboardInterrupt and a prompt", |s| {
        has_line(s, "KeyboardInterrupt") && shell.at_prompt(s)
    });
    assert!(
        pressed.elapsed() < std::time::Duration::from_secs(5),
        "Ctrl-C took {:?}",
        pressed.elapsed()
    );
    assert!(
        !screen.contains("failed on event"),
        "the interrupt reached the lambda:\n{screen}"
    );
    let out = shell.type_line("print(6 * 7)");
    assert_eq!(out.trim(), "42");
    shell.send_datagram(r#"{"host":"after","state":"warning"}"#);
    shell.wait_for_line_starting(r#"warn: {"host":"after""#);
    shell.leave();
}
