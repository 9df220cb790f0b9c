//! Riemann's own stream and fold tests, ported case by case to Python in
//! tests/riemann/, pass under the real binary's `dmon test`: every
//! `def test_…` in those files is reported passed, so a deviation from
//! Riemann (or a port that stopped being collected) fails here by name.

use crate::common;

use common::*;

const CASES: &str = "tests/riemann";

/// The tests pytest should find: `file::name` for each `def test_…`
/// (top level or in a class) of each tests/riemann/test_*.py.
fn defined_tests() -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(CASES)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("test_") && name.ends_with(".py")
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|file| {
            let source = std::fs::read_to_string(file).unwrap();
            let file = file.display().to_string();
            source
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix("def test_"))
                .map(|rest| format!("{file}::test_{}", rest.split('(').next().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn riemann_stream_and_fold_tests_pass() {
    let expected = defined_tests();
    assert!(expected.len() >= 60, "{expected:?}");
    // pytest's short summary (-rA) lists every outcome, `WORD nodeid - …`;
    // no cache is written into the source tree.
    let r = run_dmon(&["test", CASES, "-rA", "-p", "no:cacheprovider"], None);
    let nodeids = |word| -> Vec<&str> {
        marked(&r, word)
            .into_iter()
            .map(|l| l.split(" - ").next().unwrap())
            .collect()
    };
    let failed: Vec<_> = nodeids("FAILED")
        .into_iter()
        .chain(nodeids("ERROR"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of Riemann's cases fail in dmon: {failed:#?}\n{}",
        failed.len(),
        r.stdout
    );
    assert_eq!(r.status.code(), Some(0), "{r:?}");
    let passed = nodeids("PASSED");
    let missing: Vec<_> = expected
        .iter()
        .filter(|t| !passed.contains(&t.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not reported passed: {missing:#?}\n{}",
        r.stdout
    );
    let summary = r.stdout.lines().last().unwrap_or("");
    let summary = summary.trim_matches(|c| c == '=' || c == ' ');
    assert!(
        summary.starts_with(&format!("{} passed in ", expected.len())),
        "summary {summary:?}, expected {} passed",
        expected.len()
    );
}
