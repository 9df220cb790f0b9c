//! What decoded events share with the events decoded just before them.
//!
//! A sender repeats itself: the same tags, the same attributes, often the
//! same long description, event after event. Decoded afresh, a million
//! indexed events would each hold a copy (the tags alone 64 bytes an
//! event); shared, they hold a pointer. One [`Recent`] per decoding thread
//! remembers the last tags and attributes and a few dozen long texts;
//! what matches is shared, what does not is made as before, at the cost of
//! one comparison.
//!
//! ```ignore
//! let tags = recent.tags(&buffer);       // the last event's Tags, if equal
//! let description = recent.text("a long description, more than 23 bytes");
//! ```

use std::cell::Cell;
use std::hash::BuildHasher;

use smol_str::SmolStr;

use crate::event::{Attributes, Tags};

/// Long texts remembered, by their hash: a few senders' descriptions.
const TEXTS: usize = 64;

/// SmolStr keeps strings up to this long inline: nothing to share.
const INLINE: usize = 23;

pub struct Recent {
    tags: Tags,
    attributes: Attributes,
    texts: [SmolStr; TEXTS],
    hasher: foldhash::fast::FixedState,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            tags: Tags::new(),
            attributes: Attributes::new(),
            texts: std::array::from_fn(|_| SmolStr::default()),
            hasher: foldhash::fast::FixedState::default(),
        }
    }
}

/// `tags` without repeats, in first-seen order; borrowed when there are
/// none (the usual case, checked without allocating for a few tags).
fn unique(tags: &[SmolStr]) -> std::borrow::Cow<'_, [SmolStr]> {
    use std::borrow::Cow;
    const FEW: usize = 16;
    let repeated = if tags.len() <= FEW {
        tags.iter().enumerate().any(|(i, t)| tags[..i].contains(t))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(tags.len());
        !tags.iter().all(|t| seen.insert(t))
    };
    if !repeated {
        return Cow::Borrowed(tags);
    }
    let mut seen = std::collections::HashSet::new();
    Cow::Owned(tags.iter().filter(|t| seen.insert(*t)).cloned().collect())
}

impl Recent {
    /// `tags` as shared tags: the last ones made, when equal. Tags are a
    /// set (as Riemann's `tagged` reads them): a repeated one is kept once,
    /// so a message of millions of empty tags cannot decode to gigabytes.
    pub fn tags(&mut self, tags: &[SmolStr]) -> Tags {
        if *self.tags != *tags {
            self.tags = Tags::from(&*unique(tags));
        }
        self.tags.clone()
    }

    /// The pairs gathered in `pairs` (then cleared) as shared attributes:
    /// the last ones made, when equal.
    pub fn attributes(&mut self, pairs: &mut Vec<(SmolStr, SmolStr)>) -> Attributes {
        Attributes::normalize(pairs);
        if self.attributes.pairs() != pairs.as_slice() {
            self.attributes = Attributes::from_buffer(pairs);
        }
        pairs.clear();
        self.attributes.clone()
    }

    /// `s` as a string: a long one shares the text of an equal one seen
    /// recently.
    pub fn text(&mut self, s: &str) -> SmolStr {
        if s.len() <= INLINE {
            return SmolStr::new(s);
        }
        let slot = &mut self.texts[self.hasher.hash_one(s) as usize % TEXTS];
        if slot.as_str() != s {
            *slot = SmolStr::new(s);
        }
        slot.clone()
    }
}

thread_local! {
    /// The decoding thread's [`Recent`]: taken while an event is decoded,
    /// put back after (lost, and made again, on a decoding error).
    static RECENT: Cell<Option<Box<Recent>>> = const { Cell::new(None) };
}

/// `s` as a string, through this thread's [`Recent`] when it is long
/// enough to share (a short one is inline: nothing to look up).
pub fn text(s: &str) -> SmolStr {
    if s.len() <= INLINE {
        SmolStr::new(s)
    } else {
        with_recent(|r| r.text(s))
    }
}

/// Runs `f` with this thread's [`Recent`].
pub fn with_recent<T>(f: impl FnOnce(&mut Recent) -> T) -> T {
    let mut recent = RECENT.take().unwrap_or_default();
    let out = f(&mut recent);
    RECENT.set(Some(recent));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_allocation(a: &SmolStr, b: &SmolStr) -> bool {
        std::ptr::eq(a.as_str().as_ptr(), b.as_str().as_ptr())
    }

    #[test]
    fn repeated_tags_are_kept_once_in_first_seen_order() {
        let mut recent = Recent::default();
        let few: Vec<SmolStr> = ["b", "a", "b", ""].map(SmolStr::from).to_vec();
        assert_eq!(&*recent.tags(&few), ["b", "a", ""]);
        // Millions of empty tags (a hostile message) are one tag.
        let empty = vec![SmolStr::default(); 100_000];
        assert_eq!(&*recent.tags(&empty), [""]);
        let many: Vec<SmolStr> = (0..40)
            .map(|i| SmolStr::from(format!("t{}", i % 20)))
            .collect();
        assert_eq!(recent.tags(&many).len(), 20);
    }

    #[test]
    fn equal_tags_and_attributes_are_shared_and_others_are_not() {
        let mut recent = Recent::default();
        let a = recent.tags(&["prod".into(), "web".into()]);
        let b = recent.tags(&["prod".into(), "web".into()]);
        assert!(std::ptr::eq(a.as_ptr(), b.as_ptr()), "shared");
        let c = recent.tags(&["prod".into()]);
        assert_eq!(&*c, ["prod"]);
        assert!(!std::ptr::eq(a.as_ptr(), c.as_ptr()));
        assert!(recent.tags(&[]).is_empty());

        let mut pairs = vec![("b".into(), "2".into()), ("a".into(), "1".into())];
        let x = recent.attributes(&mut pairs);
        assert!(pairs.is_empty());
        let mut pairs = vec![("a".into(), "1".into()), ("b".into(), "2".into())];
        let y = recent.attributes(&mut pairs);
        assert_eq!(x, y);
        assert!(std::ptr::eq(x.pairs().as_ptr(), y.pairs().as_ptr()));
        let mut pairs = vec![("a".into(), "1".into()), ("a".into(), "3".into())];
        assert_eq!(recent.attributes(&mut pairs).get("a"), Some("3"));
    }

    #[test]
    fn long_texts_are_shared_short_ones_inline() {
        let mut recent = Recent::default();
        let long = "a description longer than twenty-three bytes";
        let (a, b) = (recent.text(long), recent.text(long));
        assert_eq!(a, long);
        assert!(same_allocation(&a, &b));
        let other = recent.text("another description, also longer than 23");
        assert_eq!(other, "another description, also longer than 23");
        assert!(!recent.text("short").is_heap_allocated());
    }
}
