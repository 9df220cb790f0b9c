//! Which partition an event belongs to, and which partitions a worker
//! takes.
//!
//! An event's partition is `fnv1a_32(host) mod N`: FNV-1a, 32 bits, over
//! the host's UTF-8 bytes (no host: the empty string), N the cluster's
//! `--partition-count`. Every event of a host lands in one partition, so
//! each `by` fork, window and `rate` keyed by host lives on one worker. The
//! hash is written here, not taken from a library whose output may change
//! between versions: a client that publishes itself must compute the same.

/// FNV-1a's 32-bit offset basis and prime.
const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// The cluster-wide default of `--partition-count`.
pub const DEFAULT_PARTITION_COUNT: u32 = 16;

/// Most partitions a cluster may have: each is a subject, a durable
/// consumer and a task on its worker.
pub const MAX_PARTITION_COUNT: u32 = 1024;

/// FNV-1a, 32 bits.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The partition of an event with this host, out of `count`.
pub fn partition_of(host: Option<&str>, count: u32) -> u32 {
    fnv1a_32(host.unwrap_or("").as_bytes()) % count.max(1)
}

/// A set of partitions, as `--partitions` gives it: `0-7,12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions(Vec<u32>);

impl Partitions {
    /// Parses a list of numbers and inclusive ranges, checked against the
    /// cluster's `count`.
    pub fn parse(text: &str, count: u32) -> Result<Self, String> {
        let mut all = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("empty item in partitions {text:?}"));
            }
            let number = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{s:?} is not a partition number (in {text:?})"))
            };
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(item)?, number(item)?),
            };
            if first > last {
                return Err(format!("range {item:?} runs backwards"));
            }
            if last >= count {
                return Err(format!(
                    "partition {last} does not exist: the cluster has {count} (0-{}; --partition-count)",
                    count - 1
                ));
            }
            all.extend(first..=last);
        }
        all.sort_unstable();
        all.dedup();
        Ok(Partitions(all))
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, p: u32) -> bool {
        self.0.binary_search(&p).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical text (`0-2,5`): the name of the worker group that
    /// takes these partitions, its lease and its checkpoint.
    pub fn canonical(&self) -> String {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            out.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
            i += 1;
        }
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn a_host_always_lands_in_one_partition() {
        let p = partition_of(Some("web-1.example.com"), 16);
        assert!(p < 16);
        assert_eq!(partition_of(Some("web-1.example.com"), 16), p);
        assert_eq!(partition_of(None, 16), partition_of(Some(""), 16));
        // Spread: 1000 hosts over 16 partitions, none empty.
        let mut seen = [0; 16];
        for i in 0..1000 {
            seen[partition_of(Some(&format!("host-{i}")), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
    }

    #[test]
    fn partition_lists_parse_and_print_canonically() {
        let p = Partitions::parse("12, 0-3,2,5", 16).unwrap();
        assert_eq!(p.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 5, 12]);
        assert_eq!(p.canonical(), "0-3,5,12");
        assert!(p.contains(5) && !p.contains(4));
        for (bad, why) in [
            ("", "empty"),
            ("3-1", "backwards"),
            ("16", "does not exist"),
            ("x", "not a partition number"),
            ("1,,2", "empty"),
        ] {
            let e = Partitions::parse(bad, 16).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
