//! `dmon test`, the real binary: the example modules' tests pass; the
//! fixtures in tests/fixtures/dmon_test/ (passing, failing, an import error,
//! no tests) give the reports, exit codes, JUnit XML, `-k` and `-x` that
//! pytest users expect.

mod common;

use std::process::Command;

use common::*;

const FIXTURES: &str = "tests/fixtures/dmon_test";

fn dmon_test(args: &[&str]) -> Run {
    let mut all = vec!["test"];
    all.extend_from_slice(args);
    run_dmon(&all, None)
}

/// The summary line: the last line of stdout.
fn summary(r: &Run) -> &str {
    r.stdout.lines().last().unwrap_or("")
}

/// Asserts the summary is `counts in N.NN s`.
fn assert_summary(r: &Run, counts: &str) {
    let line = summary(r);
    let rest = line
        .strip_prefix(&format!("{counts} in "))
        .unwrap_or_else(|| panic!("summary {line:?} is not {counts:?} in …\n{}", r.stdout));
    let secs = rest.strip_suffix(" s").expect("seconds");
    assert!(secs.parse::<f64>().is_ok(), "{line:?}");
}

fn code(r: &Run) -> i32 {
    r.status.code().expect("exited, not killed")
}

/// The `def test_…` functions of a file, as the runner names them.
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
fn the_example_modules_tests_pass() {
    let r = dmon_test(&["examples/"]);
    assert_eq!(code(&r), 0, "{r:?}");
    let mut expected = tests_in("examples/test_alerting.py");
    expected.extend(tests_in("examples/test_first_alert.py"));
    expected.extend(tests_in("examples/test_streams.py"));
    assert!(expected.len() >= 10, "{expected:?}");
    assert_eq!(marked(&r, "PASS"), expected, "{}", r.stdout);
    assert!(marked(&r, "FAIL").is_empty(), "{}", r.stdout);
    assert_summary(&r, &format!("{} passed", expected.len()));
}

#[test]
fn a_failing_assert_shows_the_values_in_it() {
    let r = dmon_test(&[&format!("{FIXTURES}/failing")]);
    assert_eq!(code(&r), 1, "{r:?}");
    let file = format!("{FIXTURES}/failing/test_values.py");
    assert_eq!(marked(&r, "PASS"), [format!("{file}::test_passes")]);
    assert_eq!(marked(&r, "FAIL").len(), 12, "{}", r.stdout);
    assert_summary(&r, "1 passed, 12 failed");
    let out = &r.stdout;
    let section = |test: &str| -> String {
        let head = format!("=== FAIL {file}::{test} ===\n");
        let start = out
            .find(&head)
            .unwrap_or_else(|| panic!("no report for {test}:\n{out}"));
        let body = &out[start + head.len()..];
        body[..body.find("\n\n").unwrap_or(body.len())].to_owned()
    };
    // The computed left side, and where it came from.
    let line = line_of(&file, "    assert len(seen) == 4");
    assert_eq!(
        section("test_count_is_wrong"),
        format!(
            "{file}:{line}: in test_count_is_wrong\n    assert len(seen) == 4\n\
             AssertionError: assert 3 == 4\n  where 3 = len(seen)\n    \
             where [{{'host': 'web1', 'metric': 1}}, {{'host': 'web1', 'metric': 2}}, \
             {{'host': 'web1', 'metric': 3}}] = seen"
        )
    );
    // An assert's message comes first, then the values.
    let s = section("test_metric_is_wrong");
    assert!(
        s.contains("AssertionError: the last metric should be high\nassert 3 > 10\n  where 3 = seen[-1][\"metric\"]"),
        "{s}"
    );
    // Another exception: a short traceback.
    let s = section("test_raises");
    assert!(
        s.ends_with("    assert 1 / total\nZeroDivisionError: division by zero"),
        "{s}"
    );
    // A multi-line assert is shown whole; an assert in a helper through the
    // frames that led there.
    let s = section("test_multiline_assert");
    assert!(
        s.contains("    assert (\n        first\n        == second\n    )\nAssertionError: assert 1 == 2\n  where 1 = first\n  where 2 = second"),
        "{s}"
    );
    let s = section("test_through_a_helper");
    assert!(s.contains("in test_through_a_helper\n    check_metric(events()[0], 5)\n"));
    assert!(s.contains(
        "in check_metric\n    assert event[\"metric\"] == want\nAssertionError: assert 1 == 5"
    ));
    // A comprehension over plain values is shown with its value, and the
    // first difference.
    let s = section("TestGroup::test_lists_differ");
    assert!(
        s.contains("AssertionError: assert [1, 2, 3] == [1, 2, 4]\n  where [1, 2, 3] = [e[\"metric\"] for e in seen]\n  at index 2: 3 != 4"),
        "{s}"
    );
    // `and` stops where Python stopped: what follows is not evaluated (and
    // not shown evaluated).
    let s = section("test_and_stops_at_the_first_false");
    assert!(
        s.contains("AssertionError: assert False and seen.pop()\n  where False = 5 in [e[\"metric\"] for e in seen]\n    where [1, 2, 3] = [e[\"metric\"] for e in seen]"),
        "{s}"
    );
    assert!(section("test_async_is_refused").ends_with(
        "test_async_is_refused is async: its body would not run; a test is a plain function"
    ));
    // User code is not called a second time to show its value.
    let s = section("test_user_code_is_not_called_again");
    assert!(
        s.contains("AssertionError: assert count_call() == 2"),
        "{s}"
    );
    assert!(
        s.ends_with("--- captured output ---\ncount_call ran 1 time(s)"),
        "{s}"
    );
    // What a test printed, and the log lines dmon wrote, under its report.
    assert!(section("test_prints_then_fails")
        .ends_with("--- captured output ---\ncaptured line from the test"));
    let s = section("test_logs_of_a_failing_predicate_are_captured");
    assert!(
        s.contains(
            "AssertionError: assert 1 == 0\n  where 1 = out.errors\n--- captured output ---\n"
        ),
        "{s}"
    );
    assert!(
        s.contains("WARN") && s.contains("ZeroDivisionError: division by zero"),
        "{s}"
    );
    // Nothing captured leaks out of the reports.
    assert!(!r.stderr.contains("ZeroDivisionError"), "{}", r.stderr);
    assert!(section("test_wants_a_fixture").ends_with(
        "test_wants_a_fixture(tmp_path): dmon test has no fixtures; a test takes no arguments"
    ));
}

#[test]
fn a_file_that_fails_to_import_is_an_error_and_the_others_still_run() {
    let r = dmon_test(&[&format!("{FIXTURES}/broken")]);
    assert_eq!(code(&r), 2, "{r:?}");
    assert_eq!(
        marked(&r, "ERROR"),
        [format!("{FIXTURES}/broken/test_broken_import.py")]
    );
    assert_eq!(
        marked(&r, "PASS"),
        [format!("{FIXTURES}/broken/test_fine.py::test_still_runs")]
    );
    assert!(
        r.stdout.contains(&format!(
            "=== ERROR collecting {FIXTURES}/broken/test_broken_import.py ===\n\
         {FIXTURES}/broken/test_broken_import.py:2: in <module>\n    \
         import no_such_module_anywhere  # noqa: F401\n\
         ModuleNotFoundError: No module named 'no_such_module_anywhere'"
        )),
        "{}",
        r.stdout
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
        marked(&r, "PASS"),
        [
            format!("{file}::test_a_stream_describes_itself"),
            format!("{file}::test_helper_beside_the_test_is_importable"),
            format!("{file}::TestWhere::test_kind"),
            format!("{file}::TestWhere::test_fresh_instance_per_test"),
        ]
    );
    // A stream module named explicitly runs its tests; FILE::NAME picks one.
    let module = format!("{dir}/streams_with_tests.py");
    let r = dmon_test(&[&module, &format!("{file}::TestWhere::test_kind")]);
    assert_eq!(code(&r), 0, "{r:?}");
    assert_eq!(
        marked(&r, "PASS"),
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
    let r = dmon_test(&[FIXTURES, "--junit", xml.to_str().unwrap()]);
    assert_eq!(code(&r), 2, "{r:?}");
    let parsed = parse_junit(&xml);
    assert_eq!(
        parsed[0],
        serde_json::json!({"tests": "19", "failures": "12", "errors": "1", "skipped": "0"})
    );
    let case = |name: &str| {
        parsed[1..]
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no testcase {name}: {parsed:?}"))
    };
    let error = case(&format!("{FIXTURES}/broken/test_broken_import.py"));
    assert_eq!(error["outcome"], "error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("ModuleNotFoundError: No module named 'no_such_module_anywhere'"),
        "{error}"
    );
    let fail = case("test_count_is_wrong");
    assert_eq!(fail["classname"], "test_values");
    assert_eq!(fail["outcome"], "failure");
    assert_eq!(fail["message"], "assert 3 == 4");
    assert!(fail["text"]
        .as_str()
        .unwrap()
        .contains("where 3 = len(seen)"));
    assert!(fail["time"].as_str().unwrap().parse::<f64>().is_ok());
    assert_eq!(
        case("test_prints_then_fails")["out"],
        "captured line from the test\n"
    );
    let method = case("test_kind");
    assert_eq!(method["classname"], "test_building.TestWhere");
    assert_eq!(method["outcome"], "passed");
}

#[test]
fn k_selects_tests_by_name_and_x_stops_at_the_first_failure() {
    let r = dmon_test(&[FIXTURES, "-k", "count_is or (still and not fresh)"]);
    assert_eq!(code(&r), 2, "the import error still counts: {r:?}");
    assert_eq!(
        marked(&r, "PASS"),
        [format!("{FIXTURES}/broken/test_fine.py::test_still_runs")]
    );
    assert_eq!(
        marked(&r, "FAIL"),
        [format!(
            "{FIXTURES}/failing/test_values.py::test_count_is_wrong"
        )]
    );
    assert_summary(&r, "1 passed, 1 failed, 1 error, 16 deselected");
    // Class and file names match too, case-insensitively.
    let r = dmon_test(&[&format!("{FIXTURES}/passing"), "-k", "testwhere"]);
    assert_eq!(marked(&r, "PASS").len(), 2, "{}", r.stdout);
    assert_summary(&r, "2 passed, 2 deselected");

    let r = dmon_test(&[&format!("{FIXTURES}/failing"), "-x"]);
    assert_eq!(code(&r), 1, "{r:?}");
    assert_eq!(marked(&r, "PASS").len(), 1, "{}", r.stdout);
    assert_eq!(
        marked(&r, "FAIL"),
        [format!(
            "{FIXTURES}/failing/test_values.py::test_count_is_wrong"
        )]
    );
    assert_summary(&r, "1 passed, 1 failed, 11 not run");
}

#[test]
fn no_tests_exit_5_and_usage_errors_exit_2() {
    let r = dmon_test(&[&format!("{FIXTURES}/empty")]);
    assert_eq!(code(&r), 5, "{r:?}");
    assert_summary(&r, "no tests collected");
    let r = dmon_test(&[&format!("{FIXTURES}/passing"), "-k", "no_such_test"]);
    assert_eq!(code(&r), 5, "{r:?}");
    assert_summary(&r, "4 deselected");

    let r = dmon_test(&["no/such/dir"]);
    assert_eq!(code(&r), 2, "{r:?}");
    assert!(
        r.stderr
            .contains("dmon test: file or directory not found: no/such/dir"),
        "{r:?}"
    );
    let r = dmon_test(&[FIXTURES, "-k", "a and (b"]);
    assert_eq!(code(&r), 2, "{r:?}");
    assert!(r.stderr.contains("missing ')'"), "{r:?}");
    let missing = format!("{FIXTURES}/passing/test_building.py::test_nope");
    let r = dmon_test(&[&missing]);
    assert_eq!(code(&r), 2, "{r:?}");
    assert_eq!(marked(&r, "ERROR"), [missing.as_str()]);
    assert!(
        r.stdout.contains(&format!("no test named {missing}")),
        "{r:?}"
    );
    let r = dmon_test(&["--no-such-flag"]);
    assert_eq!(code(&r), 2, "{r:?}");
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
        "--junit <FILE> Also write the results as JUnit XML to FILE, for CI [env: DMON_TEST_JUNIT=]",
        "-k <EXPR> Run only the tests whose name, class name or file name contains EXPR",
        "-x, --exitfirst Stop at the first failure (or file that fails to import)",
        "-s, --no-capture Do not capture output",
        "Exit status: 0 all passed, 1 a test failed, 2 a usage error or a file that failed to import, 3 an internal error, 5 no tests collected (as pytest).",
    ] {
        assert!(
            help.iter().any(|l| l.starts_with(entry)),
            "help lacks {entry:?}:\n{}",
            r.stdout
        );
    }
    assert!(
        help.iter()
            .any(|l| l.starts_with("[PATH]... Test files and directories.")
                && l.ends_with("[default: .]")),
        "{}",
        r.stdout
    );
    let r = run_dmon(&["--help"], None);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")
                == "test Run the tests of stream modules (test_*.py files, pytest-style)"),
        "{}",
        r.stdout
    );
}
