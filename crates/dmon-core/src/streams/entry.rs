//! What registers a stream function: its [`Entry`] (name, parameters,
//! docs, one-line example, builder), grouped by family file in a
//! [`Family`]. A family file lists its entries in `ENTRIES`; the catalog
//! ([`super::registry`]) lists the families.

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
