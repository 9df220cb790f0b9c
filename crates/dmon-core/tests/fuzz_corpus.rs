//! Every committed fuzz input (`fuzz/corpus/<target>/`), replayed through
//! what its target asserts (`fuzz/checks.rs`): the corpus is a regression
//! test on every `cargo test`, not only when a fuzzer runs.

use std::fs;
use std::path::PathBuf;

#[path = "../../../fuzz/checks.rs"]
mod checks;

/// Runs `check` on each input of `target`'s corpus; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{} fails its target's checks",
            path.display()
        );
        inputs += 1;
    }
    inputs
}

#[test]
fn the_json_corpus_passes() {
    assert!(replay("json", checks::json) >= 10);
}

#[test]
fn the_riemann_corpus_passes() {
    assert!(replay("riemann", checks::riemann) >= 10);
}

#[test]
fn the_query_corpus_passes() {
    assert!(replay("query", checks::query) >= 10);
}
