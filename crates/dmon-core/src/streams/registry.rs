//! This crate's stream functions, registered once by their family files.
//!
//! A family file holds its nodes, their docs and tests, and one [`Entry`]
//! per stream function in its `ENTRIES`. With the families of the crates
//! above (the server's outputs) they make the whole catalog (`crate::catalog`),
//! from which come the Python functions of `dmon.streams` (with `help()`
//! text and signature), `dmon catalog` and the catalog chapter's tables.

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
        entries: super::printer::ENTRIES,
    },
];

/// Every stream function.
pub fn entries() -> impl Iterator<Item = &'static Entry> {
    FAMILIES.iter().flat_map(|f| f.entries.iter())
}

pub fn find(name: &str) -> Option<&'static Entry> {
    entries().find(|e| e.name == name)
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
