//! dmon's interactive shell, in real terminals: each test runs `dmon shell`
//! (plain python, IPython or bpython) in its own tmux server and types at it
//! as a user would, reading the screen back with `tmux capture-pane`.

use crate::common;
use crate::shell_support;

use shell_support::{
    has_line, has_line_starting, lines, node_row, stat, Kind, Shell, Start, TempDir,
};

/// The stream module every test starts from.
const STREAMS: &str = r#"from dmon.streams import *

warn_stream = when(lambda e: e.state == "warning", printer("warn: "))
index_stream = index()
"#;

/// The same module after an edit: the warning printer's prefix changed.
const STREAMS_V2: &str = r#"from dmon.streams import *

warn_stream = when(lambda e: e.state == "warning", printer("WARN2: "))
index_stream = index()
"#;

/// A module that fails on line 3.
const STREAMS_BROKEN: &str = r#"from dmon.streams import *

raise RuntimeError("boom")
warn_stream = when(lambda e: e.state == "warning", printer("never: "))
"#;

fn start(kind: Kind, dir: &TempDir) -> Shell {
    let streams = dir.write("streams.py", STREAMS);
    let mut opts = Start::new(kind, dir, &streams);
    // bpython draws through blessed, which turns every terminal capability
    // off (cursor movement too, not only colour) when NO_COLOR is set: see
    // `bpython_with_no_color_keeps_its_screen_readable`.
    opts.color = kind == Kind::Bpython;
    Shell::start(opts)
}

/// The session every shell must support, from start to a clean exit.
fn scenario(kind: Kind) {
    let dir = TempDir::new();
    let shell = start(kind, &dir);
    let module = dir.path().join("streams.py");

    assert!(
        shell.banner.starts_with(&format!(
            "dmon {} — streams: warn_stream, index_stream — UDP 127.0.0.1:",
            env!("CARGO_PKG_VERSION")
        )),
        "banner: {:?}",
        shell.banner
    );
    assert!(
        shell.banner.ends_with("— help() for commands"),
        "banner: {:?}",
        shell.banner
    );

    // inject() runs an event through the streams; the printer's line shows.
    shell.run_expect(
        r#"inject(host="web1", state="warning", metric=2.5)"#,
        r#"warn: {"host":"web1","state":"warning","time":"#,
    );
    let screen = shell.wait_for_line_starting(r#"warn: {"host":"web1","state":"warning","time":"#);
    let line = screen
        .lines()
        .find(|l| l.starts_with(r#"warn: {"host":"web1""#))
        .unwrap();
    assert!(
        line.trim_end().ends_with(r#","metric":2.5}"#),
        "printer line: {line:?}"
    );

    // streams() shows each node by its path, with the counters that moved.
    let out = shell.type_line("streams()");
    assert_eq!(
        node_row(&out, "warn_stream/when"),
        r#"warn_stream/when when(lambda e: e.state == "warning") in 1 out 1 errors 0"#,
        "streams():\n{out}"
    );
    assert_eq!(
        node_row(&out, "warn_stream/when/printer"),
        r#"warn_stream/when/printer printer("warn: ") in 1 out 0 errors 0"#,
        "streams():\n{out}"
    );
    assert_eq!(
        node_row(&out, "index_stream/index"),
        "index_stream/index index() in 1 out 0 errors 0",
        "streams():\n{out}"
    );

    // paste(): NDJSON lines until a blank line; each event is injected.
    shell.start_paste();
    shell.type_input(r#"{"host":"p1","state":"warning"}"#);
    shell.type_input(r#"{"host":"p2","state":"warning","metric":7}"#);
    shell.tmux.keys(&["Enter"]);
    shell.wait_for("paste() to finish", |s| {
        s.contains("2 events injected") && shell.at_prompt(s)
    });
    let screen = shell.wait_for("both pasted events printed", |s| {
        s.contains(r#"warn: {"host":"p1""#) && s.contains(r#"warn: {"host":"p2""#)
    });
    for line in [
        r#"warn: {"host":"p1","state":"warning","time":"#,
        r#"warn: {"host":"p2","state":"warning","time":"#,
        "2 events injected",
    ] {
        assert!(
            screen.lines().any(|l| l.starts_with(line)),
            "{line:?} is not a line of its own after paste():\n{}",
            shell.output_since(&screen, "paste()")
        );
    }

    // A datagram from another process while the prompt is idle.
    shell.send_datagram(r#"{"host":"ext","state":"warning"}"#);
    shell.wait_for_line_starting(r#"warn: {"host":"ext","state":"warning""#);
    let screen = shell.wait_for("the prompt back after the datagram", |s| shell.at_prompt(s));
    assert!(shell.at_prompt(&screen));

    // A stream defined at the prompt takes effect when the statement ends.
    let out = shell.type_line(r#"x_stream = printer("x: ")"#);
    assert!(
        has_line(&out, "streams: warn_stream, index_stream, x_stream"),
        "after defining x_stream:\n{out}"
    );
    shell.run_expect(r#"inject(host="xhost")"#, r#"x: {"host":"xhost""#);
    shell.wait_for_line_starting(r#"x: {"host":"xhost","time":"#);
    let out = shell.type_line("del x_stream");
    assert!(
        has_line(&out, "streams: warn_stream, index_stream"),
        "after del x_stream:\n{out}"
    );
    shell.run_expect(
        r#"inject(host="after-del", state="warning")"#,
        r#"warn: {"host":"after-del""#,
    );
    let out = shell.type_line("streams()");
    assert!(
        !has_line_starting(&out, "x_stream"),
        "x_stream is still a root:\n{out}"
    );
    assert!(
        !has_line_starting(&shell.screen(), r#"x: {"host":"after-del""#),
        "a deleted stream still printed:\n{}",
        shell.screen()
    );

    // reload() picks up the edited module file.
    std::fs::write(&module, STREAMS_V2).unwrap();
    let out = shell.type_line("reload()");
    assert!(
        has_line(&out, "streams: warn_stream, index_stream"),
        "reload():\n{out}"
    );
    shell.run_expect(
        r#"inject(host="r2", state="warning")"#,
        r#"WARN2: {"host":"r2","state":"warning""#,
    );
    shell.wait_for_line_starting(r#"WARN2: {"host":"r2","state":"warning""#);

    // A broken module: reload() says where, and the running streams stay.
    std::fs::write(&module, STREAMS_BROKEN).unwrap();
    let out = shell.run_expect("reload()", "RuntimeError: boom");
    assert!(
        out.contains("reload failed; the running streams are unchanged:"),
        "reload() of a broken module:\n{out}"
    );
    let location = format!("{}:3", module.display());
    assert!(out.contains(&location), "no {location} in:\n{out}");
    shell.run_expect(
        r#"inject(host="r3", state="warning")"#,
        r#"WARN2: {"host":"r3","state":"warning""#,
    );
    shell.wait_for_line_starting(r#"WARN2: {"host":"r3","state":"warning""#);

    // Leave: the server shuts down cleanly and releases its port.
    match kind {
        Kind::Ipython => {
            shell.type_at_prompt("exit()");
            shell.tmux.keys(&["Enter"]);
        }
        Kind::Python | Kind::Bpython | Kind::Hy => shell.tmux.keys(&["C-d"]),
    }
    let stats = shell.assert_clean_exit();
    assert_eq!(stat(&stats, "datagrams"), 1, "stats: {stats}");
    // web1, p1, p2, ext, xhost, after-del, r2, r3
    assert_eq!(
        stat(&stats, "processed"),
        8 + stat(&stats, "expired"),
        "stats: {stats}"
    );
}

#[test]
fn python_shell_session() {
    scenario(Kind::Python);
}

#[test]
fn ipython_shell_session() {
    scenario(Kind::Ipython);
}

#[test]
fn bpython_shell_session() {
    scenario(Kind::Bpython);
}

#[test]
fn bpython_exit_function_stops_the_server() {
    let dir = TempDir::new();
    let shell = start(Kind::Bpython, &dir);
    shell.send_datagram(r#"{"host":"before-exit","state":"warning"}"#);
    shell.wait_for_line_starting(r#"warn: {"host":"before-exit""#);
    let stats = shell.exit();
    assert_eq!(stat(&stats, "datagrams"), 1, "stats: {stats}");
}

/// With NO_COLOR set, bpython must still draw a usable screen: the banner,
/// one prompt per line, and printer output on lines of their own.
#[test]
fn bpython_with_no_color_keeps_its_screen_readable() {
    let dir = TempDir::new();
    let streams = dir.write("streams.py", STREAMS);
    let shell = Shell::start(Start::new(Kind::Bpython, &dir, &streams));
    shell.run_expect(
        r#"inject(host="nc", state="warning")"#,
        r#"warn: {"host":"nc""#,
    );
    let screen = shell.wait_for("the prompt", |s| shell.at_prompt(s));
    assert!(
        has_line_starting(&screen, r#"warn: {"host":"nc","state":"warning""#),
        "the printer line is not a line of its own:\n{screen}"
    );
    assert!(
        has_line(&screen, r#">>> inject(host="nc", state="warning")"#),
        "the input is not a line of its own:\n{screen}"
    );
    shell.tmux.keys(&["C-d"]);
    shell.assert_clean_exit();
}

/// Under bpython, what a statement prints and the printer lines of the
/// events it injects each keep lines of their own.
#[test]
fn bpython_printer_lines_do_not_join_printed_output() {
    let dir = TempDir::new();
    let shell = start(Kind::Bpython, &dir);
    for i in 0..3 {
        let statement = format!(r#"inject(host="j{i}", state="warning"); print("done", {i})"#);
        shell.type_line(&statement);
        let printed = format!(r#"warn: {{"host":"j{i}","state":"warning""#);
        let screen = shell.wait_for("the printer line", |s| s.contains(&printed));
        let out = shell.output_since(&screen, &statement);
        assert!(
            has_line(&out, &format!("done {i}")),
            "`done {i}` is not a line of its own:\n{out}"
        );
        assert!(
            has_line_starting(&out, &printed),
            "the printer line is not a line of its own:\n{out}"
        );
    }
    shell.tmux.keys(&["C-d"]);
    shell.assert_clean_exit();
}

/// paste() takes lines pasted all at once, as a terminal pastes them.
fn paste_all_at_once(kind: Kind) {
    let dir = TempDir::new();
    let shell = start(kind, &dir);
    shell.start_paste();
    shell.tmux.paste(concat!(
        r#"{"host":"q1","state":"warning"}"#,
        "\n",
        r#"{"host":"q2","state":"warning"}"#,
        "\n",
        r#"{"host":"q3","state":"warning"}"#,
        "\n\n",
    ));
    shell.wait_for("paste() to finish", |s| {
        s.contains("3 events injected") && shell.at_prompt(s)
    });
    for host in ["q1", "q2", "q3"] {
        shell.wait_for_line_starting(&format!(r#"warn: {{"host":"{host}","state":"warning""#));
    }
    // The shell goes on.
    let out = shell.type_line("print(6 * 7)");
    assert!(has_line(&out, "42"), "{out}");
    shell.leave();
}

#[test]
fn python_paste_all_at_once() {
    paste_all_at_once(Kind::Python);
}

#[test]
fn ipython_paste_all_at_once() {
    paste_all_at_once(Kind::Ipython);
}

#[test]
fn bpython_paste_all_at_once() {
    paste_all_at_once(Kind::Bpython);
}

/// Lines sent faster than they run (tmux send-keys in one burst), then a
/// bracketed paste of a function and two statements: every statement runs.
fn every_line_of_a_burst_and_a_paste_runs(kind: Kind) {
    let dir = TempDir::new();
    let shell = start(kind, &dir);
    shell.tmux.keys(&[
        "x1 = 1",
        "Enter",
        "x2 = 2",
        "Enter",
        "x3 = 3",
        "Enter",
        "print(x1, x2, x3)",
        "Enter",
    ]);
    shell.wait_for("the burst's print", |s| has_line(s, "1 2 3"));
    assert!(!shell.screen().contains("NameError"), "{}", shell.screen());

    shell
        .tmux
        .paste("def answer():\n    return 40\nx = answer() + 2\nprint('pasted', x)\n");
    if kind != Kind::Bpython {
        // rustyline and IPython show a paste at the prompt; Enter runs it.
        shell.tmux.keys(&["Enter"]);
    }
    shell.wait_for("the paste's print", |s| has_line(s, "pasted 42"));
    let screen = shell.screen();
    assert!(!screen.contains("SyntaxError"), "{screen}");
    shell.leave();
}

#[test]
fn python_every_line_of_a_burst_and_a_paste_runs() {
    every_line_of_a_burst_and_a_paste_runs(Kind::Python);
}

#[test]
fn ipython_every_line_of_a_burst_and_a_paste_runs() {
    every_line_of_a_burst_and_a_paste_runs(Kind::Ipython);
}

#[test]
fn bpython_every_line_of_a_burst_and_a_paste_runs() {
    every_line_of_a_burst_and_a_paste_runs(Kind::Bpython);
}

/// `-s hy`: Hy's prompt on a Hy stream module, with the shell's helpers;
/// a root bound at the prompt runs; an error shows the form typed, not
/// Hy's reader.
#[test]
fn hy_shell_session() {
    let dir = TempDir::new();
    let streams = dir.write(
        "streams.hy",
        r#"(import dmon.streams *)
(setv warn_stream (when (fn [e] (= (get e "state") "warning")) (printer "warn: ")))
"#,
    );
    let shell = Shell::start(Start::new(Kind::Hy, &dir, &streams));
    shell.run_expect(
        r#"(inject :host "hy1" :state "warning")"#,
        "1 event injected",
    );
    shell.wait_for_line_starting(r#"warn: {"host":"hy1","state":"warning""#);
    let out = shell.type_line(r#"(setv x_stream (where "service = \"x\"" (printer "x: ")))"#);
    assert!(has_line(&out, "streams: warn_stream, x_stream"), "{out}");
    shell.run_expect(r#"(inject :host "hy2" :service "x")"#, "1 event injected");
    shell.wait_for_line_starting(r#"x: {"host":"hy2","service":"x""#);
    let out = shell.type_line("(/ 1 0)");
    assert!(out.contains("ZeroDivisionError"), "{out}");
    assert!(has_line(&out, "    (/ 1 0)"), "the form typed:\n{out}");
    assert!(!out.contains("site-packages/hy"), "Hy's own frames:\n{out}");
    shell.leave();
}

// ---------------------------------------------------------------------------
// The plain shell
// ---------------------------------------------------------------------------

fn plain(dir: &TempDir) -> Shell {
    start(Kind::Python, dir)
}

fn leave(shell: &Shell) {
    shell.tmux.keys(&["C-d"]);
    shell.assert_clean_exit();
}

#[test]
fn plain_multi_line_block() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    shell.type_line("for i in range(2):");
    assert!(
        lines(&shell.screen()).last_non_blank() == Some("..."),
        "no continuation prompt:\n{}",
        shell.screen()
    );
    shell.type_line("    print(i * 10 + 7)");
    let out = shell.type_line("");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["7", "17"], "block output");
    leave(&shell);
}

/// In a burst, a line at column 0 closes the block above it, as in a file:
/// the block runs, then the line (each statement echoing its value).
#[test]
fn plain_a_burst_closes_a_block_at_column_0() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    shell.tmux.keys(&[
        "def f():",
        "Enter",
        "    return 40",
        "Enter",
        "y = f() + 2",
        "Enter",
        "y * 10",
        "Enter",
    ]);
    shell.wait_for("the burst's value", |s| has_line(s, "420"));
    assert!(!shell.screen().contains("Error"), "{}", shell.screen());
    // A paste of statements echoes each expression's value, and stops at
    // the first exception.
    shell.tmux.paste("6 * 7\n1 / 0\nprint('not reached')\n");
    shell.tmux.keys(&["Enter"]);
    let screen = shell.wait_for("the paste's error", |s| s.contains("ZeroDivisionError"));
    assert!(has_line(&screen, "42"), "{screen}");
    assert!(!has_line(&screen, "not reached"), "{screen}");
    leave(&shell);
}

#[test]
fn plain_tab_completes_names() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    shell.tmux.type_text("inj");
    shell.tmux.keys(&["Tab"]);
    shell.wait_for("`inj` completed to `inject`", |s| {
        s.lines().any(|l| l.starts_with(">>> inject"))
    });
    // The completed name is usable: finish the call.
    shell.tmux.type_text(r#"host="tab", state="warning")"#);
    let screen = shell.wait_for("the completed line", |s| {
        has_line(s, r#">>> inject(host="tab", state="warning")"#)
    });
    assert!(shell.at_prompt(&screen));
    shell.tmux.keys(&["Enter"]);
    shell.wait_for_line_starting(r#"warn: {"host":"tab""#);
    leave(&shell);
}

/// Tab with several candidates completes what they share, and a second
/// Tab lists them all.
#[test]
fn plain_tab_lists_the_candidates() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    shell.tmux.type_text("tagg");
    shell.tmux.keys(&["Tab"]);
    shell.wait_for("`tagg` completed to `tagged`", |s| {
        s.lines().any(|l| l.trim_end() == ">>> tagged")
    });
    shell.tmux.keys(&["Tab"]);
    let screen = shell.wait_for("the candidates listed", |s| {
        s.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.contains(&"tagged(")
                && words.contains(&"tagged_all(")
                && words.contains(&"tagged_any(")
        })
    });
    // The typed word is still there, to go on typing.
    assert!(
        screen.lines().rev().find(|l| !l.trim().is_empty()) == Some(">>> tagged"),
        "{screen}"
    );
    shell.tmux.keys(&["C-u"]);
    leave(&shell);
}

#[test]
fn plain_ctrl_c_at_the_prompt_cancels_the_line() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    shell
        .tmux
        .type_text(r#"inject(host="cancelled", state="warning")"#);
    shell.wait_for("the typed line", |s| {
        has_line(s, r#">>> inject(host="cancelled", state="warning")"#)
    });
    shell.tmux.keys(&["C-c"]);
    let screen = shell.wait_for("KeyboardInterrupt and a fresh prompt", |s| {
        has_line(s, "KeyboardInterrupt") && lines(s).last_non_blank() == Some(">>>")
    });
    assert!(!has_line_starting(&screen, "warn: "), "{screen}");
    let out = shell.type_line("streams()");
    assert!(
        node_row(&out, "warn_stream/when").ends_with(" in 0 out 0 errors 0"),
        "the cancelled line ran:\n{out}"
    );
    leave(&shell);
}

#[test]
fn plain_ctrl_c_interrupts_running_code() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    shell.type_at_prompt(r#"import time; print("sleep" + "ing"); time.sleep(30)"#);
    shell.tmux.keys(&["Enter"]);
    shell.wait_for("the code to run", |s| has_line(s, "sleeping"));
    let started = std::time::Instant::now();
    shell.tmux.keys(&["C-c"]);
    let screen = shell.wait_for("KeyboardInterrupt and a fresh prompt", |s| {
        has_line(s, "KeyboardInterrupt") && shell.at_prompt(s)
    });
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "Ctrl-C did not interrupt the sleep"
    );
    // (The terminal echoes the Ctrl-C as ^C in front of the traceback.)
    assert!(
        screen.contains("Traceback (most recent call last):"),
        "{screen}"
    );
    // The shell and the server are still usable.
    shell.run_expect(
        r#"inject(host="after", state="warning")"#,
        r#"warn: {"host":"after""#,
    );
    let out = shell.type_line("print(6 * 7)");
    assert_eq!(out.trim(), "42");
    leave(&shell);
}

#[test]
fn plain_history_persists_across_runs() {
    let dir = TempDir::new();
    let streams = dir.write("streams.py", STREAMS);
    {
        let shell = Shell::start(Start::new(Kind::Python, &dir, &streams));
        shell.type_line("first_run = 1");
        shell.type_line(r#"print("last of" + " run one")"#);
        leave(&shell);
    }
    let history = dir.path().join("data/dmon/history");
    let saved = std::fs::read_to_string(&history).unwrap_or_default();
    assert!(
        saved.contains(r#"print("last of" + " run one")"#),
        "{} does not hold the command:\n{saved}",
        history.display()
    );
    let shell = Shell::start(Start::new(Kind::Python, &dir, &streams));
    shell.tmux.keys(&["Up"]);
    shell.wait_for("the last command of run one recalled", |s| {
        has_line(s, r#">>> print("last of" + " run one")"#)
    });
    shell.tmux.keys(&["Enter"]);
    shell.wait_for("the recalled command's output", |s| {
        has_line(s, "last of run one")
    });
    leave(&shell);
}

#[test]
fn plain_tap_shows_events_leaving_a_node() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    let event = tap_one(
        &shell,
        "warn_stream",
        r#"{"host":"tapped","state":"warning","metric":3}"#,
    );
    assert_eq!(event["host"], "tapped");
    assert_eq!(event["metric"], 3);
    leave(&shell);
}

/// tap() takes the paths streams() prints, and globs of them: each line
/// then names its node.
#[test]
fn plain_tap_takes_paths_and_globs() {
    let dir = TempDir::new();
    let streams = dir.write(
        "streams.py",
        r#"from dmon.streams import *

a_stream = where('service = "x"', printer("a: "))
b_stream = where('service = "x"', printer("b: "))
"#,
    );
    let shell = Shell::start(Start::new(Kind::Python, &dir, &streams));
    let event = tap_one(
        &shell,
        r#""b_stream/where""#,
        r#"{"host":"by-path","service":"x"}"#,
    );
    assert_eq!(event["host"], "by-path");

    shell.type_at_prompt(r#"tap("*_stream/where", 2)"#);
    shell.tmux.keys(&["Enter"]);
    shell.wait_for("tap() to start", |s| {
        has_line(s, "tapping a_stream/where, b_stream/where; Ctrl-C to stop")
    });
    shell.send_datagram(r#"{"host":"by-glob","service":"x"}"#);
    let screen = shell.wait_for("both taps", |s| {
        has_line(s, "2 events seen") && shell.at_prompt(s)
    });
    for root in ["a_stream", "b_stream"] {
        assert!(
            has_line_starting(&screen, &format!(r#"tap {root}/where: {{"host":"by-glob""#)),
            "{screen}"
        );
    }
    let out = shell.type_line(r#"tap("nope/*")"#);
    assert!(out.contains("no node's path matches 'nope/*'"), "{out}");
    leave(&shell);
}

/// Runs `tap(NODE, 1)`, sends `datagram`, and returns the event the tap
/// showed once it said "1 event seen".
fn tap_one(shell: &Shell, node: &str, datagram: &str) -> serde_json::Value {
    shell.type_at_prompt(&format!("tap({node}, 1)"));
    shell.tmux.keys(&["Enter"]);
    shell.wait_for("tap() to start", |s| {
        s.lines().any(|l| l.starts_with("tapping "))
    });
    shell.send_datagram(datagram);
    let screen = shell.wait_for("the tapped event and the count", |s| {
        has_line(s, "1 event seen") && shell.at_prompt(s)
    });
    let tap = screen
        .lines()
        .find(|l| l.starts_with("tap: {"))
        .unwrap_or_else(|| panic!("no `tap: {{` line:\n{screen}"));
    serde_json::from_str(&tap["tap: ".len()..]).unwrap()
}

/// A coroutine's output is what it sends on: tapped, and counted as "out".
#[test]
fn plain_tap_shows_what_a_coroutine_sends_on() {
    let dir = TempDir::new();
    let streams = dir.write(
        "streams.py",
        r#"from dmon.streams import *

@stream
def doubler(*targets):
    while True:
        e = yield
        send(e.replace(metric=e.metric * 2), *targets)

double_stream = doubler(printer("double: "))
"#,
    );
    let shell = Shell::start(Start::new(Kind::Python, &dir, &streams));
    let event = tap_one(&shell, "double_stream", r#"{"host":"doubled","metric":3}"#);
    assert_eq!(event["host"], "doubled");
    assert_eq!(event["metric"], 6);
    let out = shell.type_line("streams()");
    let row = node_row(&out, "double_stream/coroutine");
    assert!(row.contains("in 1 out 1 errors 0"), "{row}\n{out}");
    leave(&shell);
}

/// The seed's own example binds a root `stream`, which shadows the
/// decorator's first name; `@coroutine`, pasted at the prompt, still works.
fn coroutine_decorator_is_not_shadowed_by_a_root_named_stream(kind: Kind) {
    let dir = TempDir::new();
    let streams = dir.write(
        "streams.py",
        r#"from dmon.streams import *

stream = when(lambda e: e.state == "warning", printer("warn: "))
"#,
    );
    let mut opts = Start::new(kind, &dir, &streams);
    opts.color = kind == Kind::Bpython;
    let shell = Shell::start(opts);
    shell.tmux.paste(concat!(
        "@coroutine\n",
        "def doubler(*targets):\n",
        "    while True:\n",
        "        e = yield\n",
        "        send(e.replace(metric=e.metric * 2), *targets)\n",
        "\n",
        "double_stream = doubler(printer(\"double: \"))\n",
    ));
    if kind != Kind::Bpython {
        shell.tmux.keys(&["Enter"]);
    }
    shell.wait_for("the new root announced", |s| {
        s.contains("streams: stream, double_stream") && shell.at_prompt(s)
    });
    shell.type_line(r#"inject(host="d", metric=4, state="warning")"#);
    shell.wait_for_line_starting(r#"double: {"host":"d","#);
    shell.wait_for_line_starting(r#"warn: {"host":"d","#);
    let screen = shell.screen();
    assert!(!screen.contains("TypeError"), "{screen}");
    shell.leave();
}

#[test]
fn plain_coroutine_decorator_is_not_shadowed_by_a_root_named_stream() {
    coroutine_decorator_is_not_shadowed_by_a_root_named_stream(Kind::Python);
}

#[test]
fn ipython_coroutine_decorator_is_not_shadowed_by_a_root_named_stream() {
    coroutine_decorator_is_not_shadowed_by_a_root_named_stream(Kind::Ipython);
}

#[test]
fn bpython_coroutine_decorator_is_not_shadowed_by_a_root_named_stream() {
    coroutine_decorator_is_not_shadowed_by_a_root_named_stream(Kind::Bpython);
}

#[test]
fn plain_index_table() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    shell.type_line(r#"inject(host="web1", service="cpu", state="warning", metric=2.5, ttl=30)"#);
    let out = shell.type_line("index()");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r == &["host", "service", "state", "metric", "age", "ttl"]),
        "no header in:\n{out}"
    );
    let row = rows
        .iter()
        .find(|r| r.first() == Some(&"web1"))
        .unwrap_or_else(|| panic!("no web1 row in:\n{out}"));
    assert_eq!(row[1..4], ["cpu", "warning", "2.5"], "row {row:?}");
    assert!(row[4].ends_with('s'), "age {:?}", row[4]);
    assert_eq!(row[5], "30");
    assert!(has_line(&out, "1 event in the index"), "{out}");
    leave(&shell);
}

/// index(filter) shows only the events the predicate accepts (even though
/// the stream module star-imports dmon.streams, which has an `index` too).
#[test]
fn plain_index_filter() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    shell.type_line(r#"inject(host="web1", state="ok")"#);
    shell.type_line(r#"inject(host="web2", state="ok")"#);
    let out = shell.type_line(r#"index(lambda e: e.host == "web2")"#);
    let hosts: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|h| h.starts_with("web"))
        .collect();
    assert_eq!(hosts, ["web2"], "index(filter):\n{out}");
    assert!(has_line(&out, "1 event in the index"), "{out}");
    leave(&shell);
}

#[test]
fn plain_shell_colours() {
    let dir = TempDir::new();
    let streams = dir.write("streams.py", STREAMS);
    let mut opts = Start::new(Kind::Python, &dir, &streams);
    opts.color = true;
    let shell = Shell::start(opts);
    shell.type_line("1 / 0");
    let screen = shell.tmux.screen_with_escapes();
    // tmux re-encodes dmon's `\x1b[1;32m` as separate attributes.
    let green_prompt =
        |l: &str| l.starts_with("\x1b[1;32m>>> ") || l.starts_with("\x1b[1m\x1b[32m>>> ");
    assert!(
        screen.lines().any(green_prompt),
        "no bold green prompt:\n{}",
        screen.escape_debug()
    );
    assert!(
        screen.lines().any(|l| l.starts_with("\x1b[31mTraceback")),
        "no red traceback:\n{}",
        screen.escape_debug()
    );
    assert!(has_line(
        &shell.screen(),
        "ZeroDivisionError: division by zero"
    ));
    leave(&shell);
}

#[test]
fn plain_send_and_the_seed_socket_go_over_udp() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    let out = shell.type_line(r#"send(host="s1", state="warning")"#);
    assert!(!out.contains("Traceback"), "send(**fields):\n{out}");
    shell.wait_for_line_starting(r#"warn: {"host":"s1","state":"warning""#);
    let out = shell.type_line(r#"sock.sendto(event(host="s2", state="warning"), addr)"#);
    assert!(
        !out.contains("Traceback"),
        "sock.sendto(event(..), addr):\n{out}"
    );
    shell.wait_for_line_starting(r#"warn: {"host":"s2","state":"warning""#);
    let out = shell.type_line("addr");
    assert!(
        has_line(&out, &format!("('127.0.0.1', {})", shell.port)),
        "addr:\n{out}"
    );
    let out = shell.type_line("stats()");
    assert!(
        out.contains("datagrams 2 (bad 0)") && out.contains("events 2 (bad 0)"),
        "stats():\n{out}"
    );
    assert!(
        node_row(&out, "warn_stream/when").ends_with(" in 2 out 2 errors 0"),
        "stats():\n{out}"
    );
    leave(&shell);
}

#[test]
fn plain_help_lists_the_commands() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    // An 80 by 50 terminal.
    let resized = shell
        .tmux
        .run(&["resize-window", "-t", "t", "-x", "80", "-y", "50"]);
    assert!(resized.status.success(), "tmux resize-window failed");
    let out = shell.type_line("help()");
    for command in [
        "inject()",
        "paste()",
        "send()",
        "event()",
        "streams()",
        "tap()",
        "index()",
        "stats()",
        "reload()",
        "edit()",
        "watch()",
        "help()",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(command)),
            "help() does not list {command}:\n{out}"
        );
    }
    // One screen: the stream functions by name only, each line within the
    // terminal's 80 columns.
    assert!(
        out.lines().count() <= 48,
        "{} lines:\n{out}",
        out.lines().count()
    );
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("filter: ") && l.contains("where")),
        "{out}"
    );
    assert!(
        has_line_starting(&out, "  also: send(event, *targets), @coroutine"),
        "{out}"
    );
    // help(streams): the stream functions, by family, each with its
    // summary from the registry.
    let out = shell.type_line("help(streams)");
    assert!(has_line(&out, "stream functions: filter"), "{out}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("where")
            && l.contains("Forward the events matching a query")),
        "{out}"
    );
    leave(&shell);
}

/// Server output while help()'s pager (a real `less`, on its own screen)
/// is open waits, and shows once the pager is closed, instead of landing on
/// the pager's screen and vanishing with it.
#[test]
fn plain_output_while_the_help_pager_is_open_is_not_lost() {
    let dir = TempDir::new();
    let sent = dir.path().join("sent");
    let streams = dir.write(
        "streams.py",
        &format!(
            r#"from dmon.streams import *

@coroutine
def then_mark(*targets):
    while True:
        e = yield
        send(e, *targets)
        open({sent:?}, "w").close()

warn_stream = then_mark(printer("warn: "))
"#,
            sent = sent.display().to_string()
        ),
    );
    let mut opts = Start::new(Kind::Python, &dir, &streams);
    opts.env.push(("PAGER".into(), "less".into()));
    let shell = Shell::start(opts);
    shell.type_at_prompt("help(inject)");
    shell.tmux.keys(&["Enter"]);
    shell.wait_for("the pager", |s| s.contains("Help on function inject"));
    shell.send_datagram(r#"{"host":"paged","state":"warning"}"#);
    // The printer has written its line once the coroutine marks the event
    // sent (it sends on first).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !sent.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the event never reached the printer"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    shell.tmux.keys(&["q"]);
    shell.wait_for_line_starting(r#"warn: {"host":"paged""#);
    leave(&shell);
}

#[test]
fn plain_edit_reloads_after_the_editor_saves() {
    let dir = TempDir::new();
    // The "editor" changes the printer's prefix and saves.
    let editor = dir.write(
        "editor.sh",
        "#!/bin/sh\nfor f; do :; done\nsed -i 's/\"warn: \"/\"EDITED: \"/' \"$f\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let streams = dir.write("streams.py", STREAMS);
    let mut opts = Start::new(Kind::Python, &dir, &streams);
    opts.env
        .push(("EDITOR".into(), editor.display().to_string()));
    opts.env
        .push(("VISUAL".into(), editor.display().to_string()));
    let shell = Shell::start(opts);
    let out = shell.type_line("edit()");
    assert!(
        has_line(&out, "streams: warn_stream, index_stream"),
        "edit():\n{out}"
    );
    shell.type_line(r#"inject(host="edited", state="warning")"#);
    shell.wait_for_line_starting(r#"EDITED: {"host":"edited""#);
    leave(&shell);
}

/// edit(name) opens the editor at the line where the module binds `name`,
/// a root (a stream, not a function) included.
#[test]
fn plain_edit_opens_where_a_name_is_bound() {
    let dir = TempDir::new();
    let args = dir.path().join("editor-args");
    let editor = dir.write(
        "editor.sh",
        &format!("#!/bin/sh\necho \"$@\" >> '{}'\n", args.display()),
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let streams = dir.write("streams.py", STREAMS);
    let mut opts = Start::new(Kind::Python, &dir, &streams);
    opts.env
        .push(("VISUAL".into(), editor.display().to_string()));
    let shell = Shell::start(opts);
    for call in [r#"edit("index_stream")"#, "edit(warn_stream)"] {
        let out = shell.type_line(call);
        assert!(
            has_line(&out, "not saved; nothing reloaded"),
            "{call}:\n{out}"
        );
    }
    let args = std::fs::read_to_string(&args).unwrap();
    let path = streams.display();
    assert_eq!(args, format!("+4 {path}\n+3 {path}\n"));
    leave(&shell);
}

#[test]
fn plain_watch_reloads_when_the_file_changes() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    let module = dir.path().join("streams.py");
    let out = shell.type_line("watch()");
    assert!(
        out.contains(&format!("watching {}", module.display())),
        "watch():\n{out}"
    );
    std::fs::write(&module, STREAMS_V2).unwrap();
    // The watcher's messages come from a background thread, above the prompt.
    let screen = shell.wait_for("the watcher's reload", |s| {
        has_line(s, &format!("{} changed; reloading", module.display()))
            && s.lines()
                .filter(|l| l.trim_end() == "streams: warn_stream, index_stream")
                .count()
                >= 1
    });
    assert!(shell.at_prompt(&screen), "{screen}");
    shell.type_line(r#"inject(host="watched", state="warning")"#);
    shell.wait_for_line_starting(r#"WARN2: {"host":"watched""#);
    leave(&shell);
}

#[test]
fn dmon_without_a_command_starts_the_plain_shell() {
    let dir = TempDir::new();
    let streams = dir.write("streams.py", STREAMS);
    let mut opts = Start::new(Kind::Python, &dir, &streams);
    opts.no_subcommand = true;
    let shell = Shell::start(opts);
    assert!(
        shell.banner.starts_with(&format!(
            "dmon {} — streams: warn_stream, index_stream",
            env!("CARGO_PKG_VERSION")
        )),
        "banner: {:?}",
        shell.banner
    );
    shell.run_expect(
        r#"inject(host="bare", state="warning")"#,
        r#"warn: {"host":"bare""#,
    );
    shell.type_at_prompt("exit()");
    shell.tmux.keys(&["Enter"]);
    shell.assert_clean_exit();
}

/// `lines(..).last_non_blank()`.
trait LastNonBlank<'a> {
    fn last_non_blank(&self) -> Option<&'a str>;
}

impl<'a> LastNonBlank<'a> for Vec<&'a str> {
    fn last_non_blank(&self) -> Option<&'a str> {
        self.iter().rev().find(|l| !l.trim().is_empty()).copied()
    }
}

#[test]
fn plain_connect_mode_injects_into_and_queries_a_running_dmon() {
    // The "server": a shell with its Riemann TCP listener on a free port.
    let dir = TempDir::new();
    let streams = dir.write("streams.py", STREAMS);
    let mut opts = Start::new(Kind::Python, &dir, &streams);
    opts.env
        .push(("DMON_RIEMANN_TCP".into(), "127.0.0.1:0".into()));
    let server = Shell::start(opts);
    let riemann_tcp: u16 = server
        .banner
        .split("Riemann TCP 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no Riemann TCP port in {:?}", server.banner));

    // The remote shell, started by hand: its banner differs.
    let remote_dir = TempDir::new();
    let argv: Vec<String> = [
        "env",
        "NO_COLOR=1",
        &format!("XDG_DATA_HOME={}", remote_dir.path().display()),
        &format!("DMON_RIEMANN_TCP=127.0.0.1:{riemann_tcp}"),
        "DMON_RIEMANN_UDP=off",
        shell_support::dmon_bin(),
        "shell",
        "--connect",
        &format!("127.0.0.1:{}", server.port),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let remote = shell_support::Tmux::start(remote_dir.path(), &argv);
    remote.wait_for("the remote shell's banner", |s| {
        s.contains(&format!("connected to 127.0.0.1:{}", server.port))
            && s.lines().any(|l| l.starts_with(">>>"))
    });
    remote.type_text(r#"inject(host="far", service="cpu", state="warning", metric=7)"#);
    remote.keys(&["Enter"]);
    // It runs through the server's streams...
    server.wait_for_line_starting(r#"warn: {"host":"far","service":"cpu","state":"warning""#);
    // ...and lands in its index, which the remote shell queries.
    remote.type_text(r#"query("metric > 5")"#);
    remote.keys(&["Enter"]);
    remote.wait_for("the remote query's table", |s| {
        s.lines()
            .any(|l| l.starts_with("far") && l.contains("cpu") && l.contains("warning"))
            && s.contains("1 event in the index")
    });
    remote.type_text("stats()");
    remote.keys(&["Enter"]);
    remote.wait_for("stats() refused in remote mode", |s| {
        s.contains("not available with --connect")
    });
    // A stream defined at the prompt runs nowhere: the shell says so.
    remote.type_text(r#"mine_stream = printer("mine: ")"#);
    remote.keys(&["Enter"]);
    remote.wait_for("the note about remote streams", |s| {
        has_line(
            s,
            "`mine_stream` does not run: with --connect, this shell cannot change the remote \
             dmon's streams yet (edit its stream module and reload it there)",
        )
    });
    remote.keys(&["C-d"]);
    leave(&server);
}

#[test]
fn plain_a_stream_name_bound_to_a_non_stream_is_noted_once() {
    let dir = TempDir::new();
    let shell = plain(&dir);
    let note = "`limit_stream` contains \"stream\" but is not a stream (int); it is not a root";
    shell.type_line("limit_stream = 5");
    shell.wait_for_line_starting(note);
    // Later statements do not repeat it.
    shell.type_line("1 + 1");
    let screen = shell.type_line("2 + 2");
    assert!(has_line(&screen, "4"), "{screen}");
    let count = shell
        .screen()
        .lines()
        .filter(|l| l.starts_with(note))
        .count();
    assert_eq!(count, 1, "noted once:\n{}", shell.screen());
    leave(&shell);
}

/// `Stream.send` typed at the prompt is done by the server's dispatch
/// thread, not the shell's: a coroutine fed from the prompt while UDP
/// events arrive runs on one thread only, and counts every event.
#[test]
fn plain_send_at_the_prompt_is_done_by_the_dispatch_thread() {
    let dir = TempDir::new();
    let streams = dir.write("streams.py", common::TALLY_STREAMS);
    let shell = Shell::start(Start::new(Kind::Python, &dir, &streams));
    let port = shell.port;
    // Few enough datagrams that the socket's buffer holds them all.
    let datagrams = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let send = |payload: String| {
            sock.send_to(payload.as_bytes(), ("127.0.0.1", port))
                .expect("send datagram")
        };
        for i in 0..40 {
            send(format!(r#"{{"service":"udp","metric":{i}}}"#));
        }
        send(r#"{"service":"udp-done"}"#.to_owned());
    });
    shell.type_line(
        r#"_ = [tally_stream.send(Event(service="typed", metric=i)) for i in range(300)]; tally_stream.send(Event(service="typed-done"))"#,
    );
    datagrams.join().expect("the datagrams' thread");
    let screen = shell.wait_for_line_starting("tally: {");
    let line = screen
        .lines()
        .find(|l| l.starts_with("tally: {"))
        .expect("the tally line");
    let tally: serde_json::Value = serde_json::from_str(line["tally: ".len()..].trim_end())
        .unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(tally["description"], "1 threads", "{screen}");
    assert_eq!(tally["metric"], 340, "{screen}");
    leave(&shell);
}
