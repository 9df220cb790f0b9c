//! The whole catalog of stream functions: the core families
//! ([`crate::streams::registry`]) and the outputs this crate defines,
//! which send through its sinks. The Python functions of `dmon.streams`,
//! `help()`, `dmon catalog` and the catalog chapter
//! (docs/src/stream-functions.md, which a test checks) come from here.

pub mod riemann;

use crate::streams::entry::{Entry, Family};
use crate::streams::registry;

/// The output family whole: the core's (`printer`, `index`) and those
/// that send ([`crate::outputs`]).
static OUTPUT: Family = Family {
    title: "output",
    entries: crate::outputs::ENTRIES,
};

/// Every family, in the order `help()` and the docs list them: the core's,
/// its output family completed.
pub fn families() -> impl Iterator<Item = &'static Family> {
    registry::FAMILIES
        .iter()
        .map(|f| if f.title == OUTPUT.title { &OUTPUT } else { f })
}

/// Every stream function.
pub fn entries() -> impl Iterator<Item = &'static Entry> {
    families().flat_map(|f| f.entries.iter())
}

pub fn find(name: &str) -> Option<&'static Entry> {
    entries().find(|e| e.name == name)
}

/// The catalog chapter (docs/src/stream-functions.md): one table per family, with `dmon.folds` last.
pub fn markdown() -> String {
    let mut out = String::new();
    for family in families() {
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
    for f in crate::streams::folds::FOLDS {
        out.push_str(&format!("| `folds.{}(events)` | {} |\n", f.name, f.summary));
    }
    out.push_str(&riemann::markdown());
    out
}
