//! The shell's `spark()` and `top()`, which read the recent-traffic ring:
//! in real terminals (tmux) for each shell, with events over real UDP.

use crate::shell_support;

use shell_support::{Kind, Shell, Start, TempDir};

const STREAMS: &str = r#"from dmon.streams import *

cpu_stream = where('service = "cpu"', printer("cpu: "))
index_stream = index()
"#;

fn start(kind: Kind, dir: &TempDir) -> Shell {
    let streams = dir.write("streams.py", STREAMS);
    let mut opts = Start::new(kind, dir, &streams);
    // bpython draws through blessed, which turns every capability off
    // under NO_COLOR (see tests/shell.rs).
    opts.color = kind == Kind::Bpython;
    Shell::start(opts)
}

/// Sends web1's cpu metrics 1..=5 (and one mem event), each waited for on
/// screen (the printer line says it went through the pipeline).
fn send_series(shell: &Shell) {
    for m in 1..=5 {
        shell.send_datagram(&format!(
            r#"{{"host":"web1","service":"cpu","metric":{m}}}"#
        ));
        let end = format!(r#""metric":{m}}}"#);
        shell.wait_for(&format!("web1's metric {m} printed"), |screen| {
            screen
                .lines()
                .any(|l| l.starts_with(r#"cpu: {"host":"web1""#) && l.trim_end().ends_with(&end))
        });
    }
    shell.send_datagram(r#"{"host":"web1","service":"mem","metric":70}"#);
}

fn spark_and_top(kind: Kind) {
    let dir = TempDir::new();
    let shell = start(kind, &dir);
    send_series(&shell);

    let out = shell.run_expect(r#"spark("web1", "cpu")"#, "5 points");
    assert!(
        out.contains("web1 cpu, last 5 min: 5 points, min 1, max 5, last 5"),
        "{out}"
    );
    // All five arrived within a second: one time slice, their mean.
    let bars = out
        .lines()
        .find(|l| l.contains(['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█']))
        .unwrap_or_else(|| panic!("no sparkline:\n{out}"));
    assert!(bars.trim_end().chars().count() <= 60, "{bars:?}");
    let out = shell.run_expect(r#"spark("web9", "cpu")"#, "spark:");
    assert!(
        out.contains("spark: no metric from web9 cpu in the last 5 min"),
        "{out}"
    );

    // top() says when its first window has begun: the events are sent
    // after that, so they fall inside it however busy the machine is.
    shell.type_at_prompt("top(n=5, interval=2, rounds=1)");
    shell.tmux.keys(&["Enter"]);
    shell.wait_for_line_starting("top: a view every 2 s (Ctrl-C stops)");
    for m in [7, 8] {
        shell.send_datagram(&format!(
            r#"{{"host":"web2","service":"cpu","metric":{m}}}"#
        ));
    }
    let screen = shell.wait_for("top's series table", |s| {
        s.lines().any(|l| l.starts_with("web2 cpu"))
    });
    let row = |prefix: &str| -> Vec<String> {
        screen
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} row:\n{screen}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // Two events in the 2 s window: 1.0 events/s, the last metric 8.
    assert_eq!(row("web2 cpu"), ["web2", "cpu", "1.0", "8"], "{screen}");
    assert_eq!(
        row("cpu_stream/where "),
        ["cpu_stream/where", "1.0"],
        "{screen}"
    );
    let table = &screen[screen.find("series (host service)").expect("series table")..];
    assert!(
        !table.lines().any(|l| l.starts_with("web1 cpu ")),
        "web1 sent nothing in the window:\n{screen}"
    );
    let view = &screen[screen.find("top: the last ").expect("top's header")..];
    for line in view.lines() {
        assert!(line.trim_end().chars().count() <= 80, "{line:?}");
    }
    shell.leave();
}

/// At the plain prompt, top() redraws one screen in place: after three
/// views the terminal shows one.
#[test]
fn plain_top_redraws_one_screen_in_place() {
    let dir = TempDir::new();
    let shell = start(Kind::Python, &dir);
    send_series(&shell);
    shell.type_line("top(n=3, interval=0.2, rounds=3)");
    let screen = shell.screen();
    let count = |prefix: &str| screen.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("top: a view every 0.2 s"), 1, "{screen}");
    assert_eq!(count("top: the last "), 1, "{screen}");
    assert_eq!(count("series (host service)"), 1, "{screen}");
    shell.leave();
}

#[test]
fn python_spark_and_top() {
    spark_and_top(Kind::Python);
}

#[test]
fn ipython_spark_and_top() {
    spark_and_top(Kind::Ipython);
}

#[test]
fn bpython_spark_and_top() {
    spark_and_top(Kind::Bpython);
}
