//! (being written)

use super::registry::Entry;

pub const ENTRIES: &[Entry] = &[];
