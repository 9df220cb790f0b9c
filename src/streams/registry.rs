//! The catalog: every stream function, registered once by its family file.
//!
//! A family file holds its nodes, their docs and tests, and one [`Entry`]
//! per stream function in its `ENTRIES`. From this list come the Python
//! functions of `dmon.streams` (with `help()` text and signature), `dmon
//! catalog` and the catalog chapter's tables, docs/src/stream-functions.md (which a test checks).

use super::value::{Args, BuildError, Value};
use super::NodeRef;

/// One stream function.
pub struct Entry {
    /// The Python name: `rate`, `with_`.
    pub name: &'static str,
    /// Its Python parameters: `interval, *children`. Must parse as a Python
    /// parameter list (a test checks).
    pub params: &'static str,
    /// One line: what it does.
    pub summary: &'static str,
    /// More detail: semantics, time (event or processing), defaults.
    pub details: &'static str,
    /// A one-line example.
    pub example: &'static str,
    pub build: fn(Args) -> Result<NodeRef, BuildError>,
}

impl Entry {
    /// `rate(interval, *children)`.
    pub fn signature(&self) -> String {
        format!("{}({})", self.name, self.params)
    }

    /// The Python docstring.
    pub fn doc(&self) -> String {
        let mut doc = format!("{}\n\n{}", self.signature(), self.summary);
        if !self.details.is_empty() {
            doc.push_str("\n\n");
            doc.push_str(self.details);
        }
        doc.push_str("\n\nExample:\n    ");
        doc.push_str(self.example);
        doc
    }

    /// Builds the node from the arguments given in Python.
    pub fn build(
        &'static self,
        positional: Vec<Value>,
        named: Vec<(String, Value)>,
        children: Vec<NodeRef>,
    ) -> Result<NodeRef, BuildError> {
        let recipe = super::Recipe {
            entry: self,
            positional: positional.clone(),
            named: named.clone(),
            children: children.clone(),
        };
        let node = (self.build)(Args::new(self.signature(), positional, named, children))?;
        super::remember_recipe(&node, recipe);
        Ok(node)
    }
}

/// The stream functions of one file.
pub struct Family {
    /// What the family is for, as the catalog chapter groups it.
    pub title: &'static str,
    pub entries: &'static [Entry],
}

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
