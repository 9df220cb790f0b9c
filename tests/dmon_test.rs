//! `dmon test`, the real binary running pytest in its embedded Python: the
//! example modules' tests pass; the fixtures in tests/fixtures/dmon_test/
//! (passing, failing, an import error, no tests) give pytest's reports,
//! exit codes and JUnit XML through dmon test's flags (before a path, as
//! clap parses them; after one, as the plugin's options) and pytest's own.

use crate::common;

use std::process::Command;

use common::*;

const FIXTURES: &str = "tests/fixtures/dmon_test";

/// `dmon test ARGS -rA`: pytest's short summary lists every outcome. No
/// cache or bytecode is written into the source tree (tests run at once).
fn dmon_test(args: &[&str]) -> Run {
    dmon_test_with(args, &[])
}

fn dmon_test_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(dmon_bin());
    cmd.arg("test")
        .args(args)
        .args(["-rA", "-p", "no:cacheprovider"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("COLUMNS", "200")
        .envs(env.iter().copied());
    run_bounded(cmd, None)
}

/// The node ids of the short summary's lines `WORD nodeid[ - message]`.
fn outcomes<'a>(r: &'a Run, word: &str) -> Vec<&'a str> {
    marked(r, word)
        .into_iter()
        .map(|l| l.split(" - ").next().unwrap())
        .collect()
}

/// pytest's last line, `=== counts in N.NNs ===`, without the rules.
fn summary(r: &Run) -> &str {
    let line = r.stdout.lines().last().unwrap_or("");
    line.trim_matches(|c| c == '=' || c == ' ')
}

/// Asserts the summary is `counts in N.NNs`.
fn assert_summary(r: &Run, counts: &str) {
    let line = summary(r);
    let rest = line
        .strip_prefix(&format!("{counts} in "))
        .unwrap_or_else(|| panic!("summary {line:?} is not {counts:?} in …\n{}", r.stdout));
    let secs = rest.strip_suffix('s').expect("seconds");
    assert!(secs.parse::<f64>().is_ok(), "{line:?}");
}

/// The report pytest writes under `____ title ____`, up to the next one.
fn section(r: &Run, title: &str) -> String {
    let out = &r.stdout;
    let head = out
        .lines()
        .find(|l| l.starts_with('_') && l.trim_matches(|c| c == '_' || c == ' ') == title)
        .unwrap_or_else(|| panic!("no report {title:?}:\n{out}"));
    let body = &out[out.find(head).unwrap() + head.len() + 1..];
    let end = body
        .lines()
        .find(|l| l.starts_with("____") || l.starts_with("===="))
        .map_or(body.len(), |l| body.find(l).unwrap());
    body[..end].to_owned()
}

fn code(r: &Run) -> i32 {
    r.status.code().expect("exited, not killed")
}

/// The `def test_…` functions of a file, as pytest names them.
fn tests_in(file: &str) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("def "))
        .filter(|l| l.starts_with("test"))
        .map(|l| format!("{file}::{}", l.split('(').next().unwrap()))
        .collect()
}

/// The line number of the first line of `file` equal to `text`.
fn line_of(file: &str, text: &str) -> usize {
    let source = std::fs::read_to_string(file).unwrap();
    1 + source
        .lines()
        .position(|l| l == text)
        .unwrap_or_else(|| panic!("{file} has no line {text:?}"))
}

#[test]
fn the_example_modules_tests_pass_in_the_virtualenvs_pytest() {
    let r = dmon_test(&["examples/"]);
    assert_eq!(code(&r), 0, "{r:?}");
    let mut expected = tests_in("examples/test_alerting.py");
    expected.extend(tests_in("examples/test_first_alert.py"));
    expected.extend(tests_in("examples/test_streams.py"));
    assert!(expected.len() >= 10, "{expected:?}");
    assert_eq!(outcomes(&r, "PASSED"), expected, "{}", r.stdout);
    assert!(outcomes(&r, "FAILED").is_empty(), "{}", r.stdout);
    assert_summary(&r, &format!("{} passed", expected.len()));
    // The plugin's header names this dmon and the Python it runs: the
    // virtualenv VIRTUAL_ENV names, where pytest was found.
    let header = format!("dmon {}, embedded Python 3.", env!("CARGO_PKG_VERSION"));
    let line = r.stdout.lines().find(|l| l.starts_with(&header));
    let line = line.unwrap_or_else(|| panic!("no {header:?}:\n{}", r.stdout));
    if let Some(venv) = std::env::var("VIRTUAL_ENV").ok().filter(|v| !v.is_empty()) {
        assert!(line.ends_with(&format!("({venv})")), "{line}");
    }
}

#[test]
fn without_pytest_it_says_how_to_install_it_and_exits_4() {
    // A virtualenv without pytest (nor the base installation's packages).
    let venv = TempDir::new();
    std::fs::write(
        venv.path().join("pyvenv.cfg"),
        "include-system-site-packages = false\n",
    )
    .unwrap();
    let r = dmon_test_with(
        &["examples/"],
        &[("VIRTUAL_ENV", venv.path().to_str().unwrap())],
    );
    assert_eq!(code(&r), 4, "{r:?}");
    let python = venv.path().join("bin/python");
    assert_eq!(
        r.stderr,
        format!(
            "dmon test runs pytest; install it: pip install pytest\n  \
             dmon's Python cannot import it (No module named 'pytest'): {} in the virtualenv {}\n  \
             to install it there: {} -m pip install pytest",
            python.display(),
            venv.path().display(),
            python.display()
        )
    );
}

#[test]
fn a_failing_assert_shows_the_values_in_it() {
    let r = dmon_test(&[&format!("{FIXTURES}/failing")]);
    assert_eq!(code(&r), 1, "{r:?}");
    let file = format!("{FIXTURES}/failing/test_values.py");
    assert_eq!(outcomes(&r, "PASSED"), [format!("{file}::test_passes")]);
    assert_eq!(outcomes(&r, "FAILED").len(), 11, "{}", r.stdout);
    assert_summary(&r, "11 failed, 1 passed");
    // The computed left side, and where it came from.
    let line = line_of(&file, "    assert len(seen) == 4");
    let s = section(&r, "test_count_is_wrong");
    assert!(
        s.contains(
            ">       assert len(seen) == 4\nE       AssertionError: assert 3 == 4\n\
             E        +  where 3 = len([{'host': 'web1', 'metric': 1}, \
             {'host': 'web1', 'metric': 2}, {'host': 'web1', 'metric': 3}])\n"
        ),
        "{s}"
    );
    assert!(
        s.ends_with(&format!("{file}:{line}: AssertionError\n")),
        "{s}"
    );
    // An assert's message comes first, then the values.
    let s = section(&r, "test_metric_is_wrong");
    assert!(
        s.contains("E       AssertionError: the last metric should be high\nE       assert 3 > 10"),
        "{s}"
    );
    // Another exception: its line and the exception.
    let s = section(&r, "test_raises");
    assert!(
        s.contains(">       assert 1 / total\n")
            && s.contains("E       ZeroDivisionError: division by zero"),
        "{s}"
    );
    // A multi-line assert is shown whole; an assert in a helper through the
    // frames that led there.
    let s = section(&r, "test_multiline_assert");
    assert!(
        s.contains(">       assert (\n            first\n            == second\n        )\nE       assert 1 == 2"),
        "{s}"
    );
    let s = section(&r, "test_through_a_helper");
    assert!(s.contains(">       check_metric(events()[0], 5)\n"), "{s}");
    assert!(
        s.contains("    def check_metric(event, want):\n>       assert event[\"metric\"] == want\nE       assert 1 == 5"),
        "{s}"
    );
    // A comprehension's value, and the first difference.
    let s = section(&r, "TestGroup.test_lists_differ");
    assert!(
        s.contains("E       assert [1, 2, 3] == [1, 2, 4]\n")
            && s.contains("At index 2 diff: 3 != 4"),
        "{s}"
    );
    // `and` stops where Python stopped: what follows is not evaluated (and
    // not shown evaluated).
    let s = section(&r, "test_and_stops_at_the_first_false");
    assert!(s.contains("\nE       assert (5 in [1, 2, 3])\n"), "{s}");
    assert!(section(&r, "test_async_is_refused")
        .starts_with("async def functions are not natively supported."));
    // User code is not called a second time to show its value.
    let s = section(&r, "test_user_code_is_not_called_again");
    assert!(
        s.contains("E       assert 1 == 2\nE        +  where 1 = count_call()"),
        "{s}"
    );
    assert!(
        s.contains("- Captured stdout call -") && s.ends_with("-\ncount_call ran 1 time(s)\n"),
        "{s}"
    );
    // What a test printed, and the log lines dmon wrote, under its report.
    let s = section(&r, "test_prints_then_fails");
    assert!(
        s.contains("- Captured stdout call -") && s.ends_with("-\ncaptured line from the test\n"),
        "{s}"
    );
    let s = section(&r, "test_logs_of_a_failing_predicate_are_captured");
    assert!(s.contains("E       assert 1 == 0\n"), "{s}");
    let captured = &s[s.find("- Captured stderr call -").expect(&s)..];
    assert!(
        captured.contains("WARN") && captured.contains("ZeroDivisionError: division by zero"),
        "{s}"
    );
    // Nothing captured leaks out of the reports.
    assert!(!r.stderr.contains("ZeroDivisionError"), "{}", r.stderr);
}

#[test]
fn s_lets_output_through_as_it_happens() {
    let file = format!("{FIXTURES}/failing/test_values.py");
    for flag in [["-s", &file], [&file, "--no-capture"]] {
        let mut args = flag.to_vec();
        args.extend(["-k", "prints_then_fails"]);
        let r = dmon_test(&args);
        assert_eq!(code(&r), 1, "{r:?}");
        let printed = r
            .stdout
            .find("captured line from the test")
            .expect(&r.stdout);
        assert!(
            printed < r.stdout.find("= FAILURES =").unwrap(),
            "{}",
            r.stdout
        );
        assert!(!r.stdout.contains("Captured stdout"), "{}", r.stdout);
    }
}

#[test]
fn a_file_that_fails_to_import_is_an_error_exit_2() {
    let file = format!("{FIXTURES}/broken/test_broken_import.py");
    let r = dmon_test(&[&format!("{FIXTURES}/broken")]);
    assert_eq!(code(&r), 2, "{r:?}");
    assert_eq!(outcomes(&r, "ERROR"), [file.as_str()]);
    let s = section(&r, &format!("ERROR collecting {file}"));
    assert!(
        s.contains(&format!(
            "{file}:2: in <module>\n    import no_such_module_anywhere  # noqa: F401\n"
        )) && s.contains("E   ModuleNotFoundError: No module named 'no_such_module_anywhere'"),
        "{s}"
    );
    assert!(r.stdout.contains("Interrupted: 1 error during collection"));
    assert_summary(&r, "1 error");
    // pytest's option to run the other files all the same.
    let r = dmon_test(&[
        &format!("{FIXTURES}/broken"),
        "--continue-on-collection-errors",
    ]);
    assert_eq!(code(&r), 1, "{r:?}");
    assert_eq!(outcomes(&r, "ERROR"), [file.as_str()]);
    assert_eq!(
        outcomes(&r, "PASSED"),
        [format!("{FIXTURES}/broken/test_fine.py::test_still_runs")]
    );
    assert_summary(&r, "1 passed, 1 error");
}

#[test]
fn tests_are_found_as_pytest_finds_them() {
    let dir = format!("{FIXTURES}/passing");
    let r = dmon_test(&[&dir]);
    assert_eq!(code(&r), 0, "{r:?}");
    // Functions and Test* methods in order; not the class with __init__,
    // not functions named otherwise, not a module not named test_*.
    let file = format!("{dir}/test_building.py");
    assert_eq!(
        outcomes(&r, "PASSED"),
        [
            format!("{file}::test_a_stream_describes_itself"),
            format!("{file}::test_helper_beside_the_test_is_importable"),
            format!("{file}::test_pytest_fixtures_are_given"),
            format!("{file}::TestWhere::test_kind"),
            format!("{file}::TestWhere::test_fresh_instance_per_test"),
        ]
    );
    // pytest's own flags, even before any path (here: list, do not run).
    let r = dmon_test(&["--collect-only", "-q", &dir]);
    assert_eq!(code(&r), 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("\n{file}::TestWhere::test_kind\n"))
            && r.stdout.contains("5 tests collected in "),
        "{}",
        r.stdout
    );
    // A stream module named explicitly runs its tests; FILE::NAME picks one.
    let module = format!("{dir}/streams_with_tests.py");
    let r = dmon_test(&[&module, &format!("{file}::TestWhere::test_kind")]);
    assert_eq!(code(&r), 0, "{r:?}");
    assert_eq!(
        outcomes(&r, "PASSED"),
        [
            format!("{module}::test_big_metrics_are_printed"),
            format!("{file}::TestWhere::test_kind"),
        ]
    );
}

/// Runs Python's own XML parser on `path`; one JSON line per testcase.
fn parse_junit(path: &std::path::Path) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
suite = root.find("testsuite")
print(json.dumps({k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")}))
for case in suite.findall("testcase"):
    bad = case.find("failure")
    if bad is None:
        bad = case.find("error")
    print(json.dumps({
        "classname": case.get("classname"), "name": case.get("name"), "time": case.get("time"),
        "outcome": bad.tag if bad is not None else "passed",
        "message": bad.get("message") if bad is not None else None,
        "text": bad.text if bad is not None else None,
        "out": case.findtext("system-out"),
    }))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn junit_xml_is_written_for_ci() {
    let tmp = TempDir::new();
    let xml = tmp.path().join("reports/junit.xml");
    // --junit after a path (the plugin's option), and pytest's own options
    // to run past the import error and keep the output in the XML.
    let r = dmon_test(&[
        FIXTURES,
        "--junit",
        xml.to_str().unwrap(),
        "--continue-on-collection-errors",
        "-o",
        "junit_logging=system-out",
    ]);
    assert_eq!(code(&r), 1, "{r:?}");
    let parsed = parse_junit(&xml);
    assert_eq!(
        parsed[0],
        serde_json::json!({"tests": "19", "failures": "11", "errors": "1", "skipped": "0"})
    );
    let case = |name: &str| {
        parsed[1..]
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no testcase {name}: {parsed:?}"))
    };
    let error = case("tests.fixtures.dmon_test.broken.test_broken_import");
    assert_eq!(error["outcome"], "error");
    assert_eq!(error["message"], "collection failure");
    assert!(
        error["text"]
            .as_str()
            .unwrap()
            .contains("ModuleNotFoundError: No module named 'no_such_module_anywhere'"),
        "{error}"
    );
    let fail = case("test_count_is_wrong");
    assert_eq!(
        fail["classname"],
        "tests.fixtures.dmon_test.failing.test_values"
    );
    assert_eq!(fail["outcome"], "failure");
    assert!(
        fail["message"]
            .as_str()
            .unwrap()
            .starts_with("AssertionError: assert 3 == 4\n +  where 3 = len("),
        "{fail}"
    );
    assert!(fail["text"].as_str().unwrap().contains("where 3 = len("));
    assert!(fail["time"].as_str().unwrap().parse::<f64>().is_ok());
    assert!(
        case("test_prints_then_fails")["out"]
            .as_str()
            .unwrap()
            .contains("\ncaptured line from the test\n"),
        "{parsed:?}"
    );
    let method = case("test_kind");
    assert_eq!(
        method["classname"],
        "tests.fixtures.dmon_test.passing.test_building.TestWhere"
    );
    assert_eq!(method["outcome"], "passed");

    // DMON_TEST_JUNIT, as --junit before a path, and the folder made.
    let xml = tmp.path().join("from-env/junit.xml");
    let r = dmon_test_with(
        &[&format!("{FIXTURES}/passing")],
        &[("DMON_TEST_JUNIT", xml.to_str().unwrap())],
    );
    assert_eq!(code(&r), 0, "{r:?}");
    assert_eq!(
        parse_junit(&xml)[0],
        serde_json::json!({"tests": "5", "failures": "0", "errors": "0", "skipped": "0"})
    );
}

#[test]
fn k_selects_tests_by_name_and_x_stops_at_the_first_failure() {
    let r = dmon_test(&[
        "-k",
        "count_is or (still and not fresh)",
        FIXTURES,
        "--continue-on-collection-errors",
    ]);
    assert_eq!(code(&r), 1, "{r:?}");
    assert_eq!(
        outcomes(&r, "PASSED"),
        [format!("{FIXTURES}/broken/test_fine.py::test_still_runs")]
    );
    assert_eq!(
        outcomes(&r, "FAILED"),
        [format!(
            "{FIXTURES}/failing/test_values.py::test_count_is_wrong"
        )]
    );
    assert_summary(&r, "1 failed, 1 passed, 16 deselected, 1 warning, 1 error");
    // Class and file names match too, case-insensitively.
    let r = dmon_test(&[&format!("{FIXTURES}/passing"), "-k", "testwhere"]);
    assert_eq!(outcomes(&r, "PASSED").len(), 2, "{}", r.stdout);
    assert_summary(&r, "2 passed, 3 deselected, 1 warning");

    let r = dmon_test(&["-x", &format!("{FIXTURES}/failing")]);
    assert_eq!(code(&r), 1, "{r:?}");
    assert_eq!(outcomes(&r, "PASSED").len(), 1, "{}", r.stdout);
    assert_eq!(
        outcomes(&r, "FAILED"),
        [format!(
            "{FIXTURES}/failing/test_values.py::test_count_is_wrong"
        )]
    );
    assert!(
        r.stdout.contains("stopping after 1 failures"),
        "{}",
        r.stdout
    );
    assert_summary(&r, "1 failed, 1 passed");
}

#[test]
fn no_tests_exit_5_and_usage_errors_exit_4() {
    let r = dmon_test(&[&format!("{FIXTURES}/empty")]);
    assert_eq!(code(&r), 5, "{r:?}");
    assert_summary(&r, "no tests ran");
    let r = dmon_test(&[&format!("{FIXTURES}/passing"), "-k", "no_such_test"]);
    assert_eq!(code(&r), 5, "{r:?}");
    assert_summary(&r, "5 deselected, 1 warning");

    let r = dmon_test(&["no/such/dir"]);
    assert_eq!(code(&r), 4, "{r:?}");
    assert!(
        r.stderr
            .contains("ERROR: file or directory not found: no/such/dir"),
        "{r:?}"
    );
    let r = dmon_test(&[&format!("{FIXTURES}/passing"), "-k", "a and (b"]);
    assert_eq!(code(&r), 4, "{r:?}");
    assert!(
        r.stderr
            .contains("Wrong expression passed to '-k': a and (b"),
        "{r:?}"
    );
    let missing = format!("{FIXTURES}/passing/test_building.py::test_nope");
    let r = dmon_test(&[&missing]);
    assert_eq!(code(&r), 4, "{r:?}");
    assert!(
        r.stderr.contains("ERROR: not found: ") && r.stderr.contains(&missing),
        "{r:?}"
    );
    let r = run_dmon(&["test", "--no-such-flag"], None);
    assert_eq!(code(&r), 4, "{r:?}");
    assert!(
        r.stderr
            .contains("dmon test: error: unrecognized arguments: --no-such-flag"),
        "{r:?}"
    );
}

#[test]
fn help_explains_the_flags_and_exit_codes() {
    let r = run_dmon(&["test", "--help"], None);
    assert!(r.status.success(), "{r:?}");
    let help: Vec<String> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for entry in [
        "--junit <FILE> Also write the results as JUnit XML to FILE, for CI (pytest's --junitxml) [env: DMON_TEST_JUNIT=]",
        "-k <EXPR> Run only the tests whose name, class name or file name contains EXPR",
        "-x, --exitfirst Stop at the first failure (or file that fails to import)",
        "-s, --no-capture Do not capture output",
        "[PATH|PYTEST_ARG]... Test files and directories, then any of pytest's arguments.",
        "Exit status (pytest's): 0 all passed, 1 a test failed, 2 interrupted (a file failed to import), 3 an internal error, 4 a usage error or pytest not installed, 5 no tests collected.",
    ] {
        assert!(
            help.iter().any(|l| l.starts_with(entry)),
            "help lacks {entry:?}:\n{}",
            r.stdout
        );
    }
    let r = run_dmon(&["--help"], None);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")
                == "test Run the tests of stream modules with pytest, in dmon's own Python"),
        "{}",
        r.stdout
    );
    // All of pytest's options, from pytest itself.
    let r = run_dmon(&["test", "--", "--help"], None);
    assert!(r.status.success(), "{r:?}");
    assert!(
        r.stdout.starts_with("usage: dmon test [options]")
            && r.stdout.contains("--junitxml")
            && r.stdout.contains("--junit=FILE"),
        "{}",
        r.stdout
    );
}
