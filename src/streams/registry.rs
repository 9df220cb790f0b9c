//! The catalog: every stream function, registered once by its family file.
//!
//! A family file holds its nodes, their docs and tests, and one [`Entry`]
//! per stream function in its `ENTRIES`. From this list come the Python
//! functions of `dmon.streams` (with `help()` text and signature), `dmon
//! catalog` and the catalog chapter's tables, docs/src/stream-functions.md (which a test checks).

pub use super::entry::{Entry, Family};

/// Every family, in the order `help()` and the README list them.
pub const FAMILIES: &[Family] = &[
    Family {
        title: "filter",
        entries: super::filter::ENTRIES,
    },
    Family {
        title: "route",
        entries: super::route::ENTRIES,
    },
    Family {
        title: "transform",
        entries: super::transform::ENTRIES,
    },
    Family {
        title: "aggregate",
        entries: super::aggregate::ENTRIES,
    },
    Family {
        title: "window",
        entries: super::window::ENTRIES,
    },
    Family {
        title: "time",
        entries: super::time::ENTRIES,
    },
    Family {
        title: "estimate",
        entries: super::estimate::ENTRIES,
    },
    Family {
        title: "state",
        entries: super::state::ENTRIES,
    },
    Family {
        title: "output",
        entries: super::output::ENTRIES,
    },
];

/// Every stream function.
pub fn entries() -> impl Iterator<Item = &'static Entry> {
    FAMILIES.iter().flat_map(|f| f.entries.iter())
}

pub fn find(name: &str) -> Option<&'static Entry> {
    entries().find(|e| e.name == name)
}

/// The catalog chapter (docs/src/stream-functions.md): one table per family, with `dmon.folds` last.
pub fn markdown() -> String {
    let mut out = String::new();
    for family in FAMILIES {
        out.push_str(&format!(
            "\n**{}**\n\n| function | what it does | example |\n|---|---|---|\n",
            family.title
        ));
        for e in family.entries {
            out.push_str(&format!(
                "| `{}` | {} | `{}` |\n",
                e.signature(),
                e.summary.replace('|', "\\|"),
                e.example.replace('|', "\\|")
            ));
        }
    }
    out.push_str("\n**folds** (`from dmon import folds`; a fold turns a list of events into one)\n\n| function | what it does |\n|---|---|\n");
    for f in super::folds::FOLDS {
        out.push_str(&format!("| `folds.{}(events)` | {} |\n", f.name, f.summary));
    }
    out.push_str(&super::riemann::markdown());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = entries().map(|e| e.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a stream function is registered twice");
    }

    #[test]
    fn every_entry_has_docs_and_an_example_that_uses_it() {
        for e in entries() {
            assert!(!e.summary.is_empty(), "{} has no summary", e.name);
            assert!(
                e.example.contains(&format!("{}(", e.name)),
                "{}'s example does not call it: {}",
                e.name,
                e.example
            );
        }
    }
}
