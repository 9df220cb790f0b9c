//! `serve --state-dir DIR`: a restart loses nothing. The index and every
//! node's state ([`Checkpoint`]) go to `DIR/state.json` every
//! `--checkpoint-secs` and at a clean stop, and come back at start, before
//! any listener receives an event; a crash loses at most one interval.
//!
//! A write never leaves `state.json` half-written: the JSON goes to
//! `DIR/.state.json.tmp`, which is synced, renamed over `state.json`, and
//! the directory synced so the rename itself survives a power cut.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use crate::checkpoint::{self, Checkpoint, Restored};
use crate::pipeline::Pipeline;
use crate::stats::{ComponentCounters, ComponentReport};

/// The state file in the directory.
pub const FILE: &str = "state.json";
/// Where a write goes before it is renamed over [`FILE`].
const TEMP: &str = ".state.json.tmp";
/// Where a state file that could not be read is moved, kept for a look.
pub const CORRUPT: &str = "state.json.corrupt";

/// The state directory's counters, for `dmon stats` and `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    saves: AtomicU64,
    save_failures: AtomicU64,
    /// Size of the last state written.
    save_bytes: AtomicU64,
    /// When the last save was written (Unix seconds, as f64 bits; 0: never).
    saved_at: AtomicU64,
    /// State files that could not be read at start, moved aside.
    corrupt: AtomicU64,
}

/// [`Counters`]' values, flattened into the stats JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StateSnapshot {
    /// `--state-dir`, if given.
    pub state_dir: Option<String>,
    pub state_saves: u64,
    pub state_save_failures: u64,
    pub state_save_bytes: u64,
    /// Unix seconds of the last save written.
    pub state_saved_at: Option<f64>,
    /// State files found unreadable at start, moved to `state.json.corrupt`.
    pub state_corrupt: u64,
}

/// `--state-dir`: where the state is kept.
pub struct StateDir {
    dir: PathBuf,
    counters: Counters,
    /// One write at a time: the periodic save and the last one share the
    /// temporary file.
    writing: Mutex<()>,
}

impl StateDir {
    /// Opens `dir`, creating it if missing, and checks that a state file
    /// can be written there: a directory that cannot be written is said at
    /// start, not at the first save.
    pub fn open(dir: &Path) -> anyhow::Result<StateDir> {
        let fail = |e: io::Error| anyhow::anyhow!("--state-dir {}: {e}", dir.display());
        fs::create_dir_all(dir).map_err(fail)?;
        let probe = dir.join(TEMP);
        File::create(&probe).map_err(fail)?;
        fs::remove_file(&probe).map_err(fail)?;
        Ok(StateDir {
            dir: dir.to_owned(),
            counters: Counters::default(),
            writing: Mutex::new(()),
        })
    }

    /// `DIR/state.json`.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The state saved last, if any. A file that is not a state is moved
    /// to `state.json.corrupt` and counted: a monitoring server starts,
    /// empty, rather than not at all.
    pub fn read(&self) -> Option<Checkpoint> {
        let file = self.file();
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!("no state in {} yet: starting empty", file.display());
                return None;
            }
            Err(e) => {
                self.set_aside(&format!("cannot be read: {e}"));
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(saved) => Some(saved),
            Err(e) => {
                self.set_aside(&format!("is not a saved state: {e}"));
                None
            }
        }
    }

    /// Moves an unreadable state file aside, says so and counts it.
    fn set_aside(&self, why: &str) {
        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        let (file, aside) = (self.file(), self.dir.join(CORRUPT));
        let moved = match fs::rename(&file, &aside) {
            Ok(()) => format!("moved to {}", aside.display()),
            Err(e) => format!("could not be moved to {}: {e}", aside.display()),
        };
        tracing::error!(
            "{} {why}; {moved}; starting with an empty index and fresh streams",
            file.display()
        );
    }

    /// Reads the saved state and puts it into `pipeline`, logging what came
    /// back and the nodes that refused theirs. Call before any event is
    /// received, where nothing else runs the roots (and, with Python
    /// streams, holding the interpreter: `by` builds fresh copies).
    pub fn restore(&self, pipeline: &Pipeline) -> Option<Restored> {
        let saved = self.read()?;
        let at = saved.at;
        let restored = saved.restore(pipeline);
        let ago = pipeline.context().now() - at;
        tracing::info!(
            "state restored from {}: {} index events, {} nodes (saved at {at:.3}, {ago:.1} s ago)",
            self.file().display(),
            restored.index_events,
            restored.nodes
        );
        for e in &restored.errors {
            tracing::warn!("state not restored: {e}");
        }
        if !restored.unmatched.is_empty() {
            tracing::warn!(
                "state not restored, the module having changed (no node built the same way at \
                 the same place; these start fresh): {}",
                restored.unmatched.join(", ")
            );
        }
        Some(restored)
    }

    /// Writes `state` to `state.json` atomically and counts it; its size.
    pub fn save(&self, state: &Checkpoint) -> io::Result<u64> {
        let written = serde_json::to_vec(state)
            .map_err(io::Error::other)
            .and_then(|bytes| {
                let _one = crate::streams::lock(&self.writing);
                write_atomically(&self.dir, FILE, &bytes).map(|()| bytes.len() as u64)
            });
        match &written {
            Ok(bytes) => {
                self.counters.saves.fetch_add(1, Ordering::Relaxed);
                self.counters.save_bytes.store(*bytes, Ordering::Relaxed);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.counters
                    .saved_at
                    .store(now.as_secs_f64().to_bits(), Ordering::Relaxed);
                tracing::debug!(
                    "state saved to {}: {} index events, {} node states, {bytes} bytes",
                    self.file().display(),
                    state.index.len(),
                    state.roots.iter().map(|r| r.states.len()).sum::<usize>()
                );
            }
            Err(e) => {
                self.counters.save_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("cannot save the state to {}: {e}", self.file().display());
            }
        }
        written
    }

    /// Saves every `every` until `stop` says so: the state is taken on the
    /// dispatch thread (between two units of work), written on a blocking
    /// thread so events go on meanwhile.
    pub async fn save_every(
        self: Arc<Self>,
        pipeline: tokio::sync::mpsc::Sender<crate::pipeline::Work>,
        every: Duration,
        node: String,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticks.tick() => {
                    let Some(state) = checkpoint::take(&pipeline, &node).await else {
                        return;
                    };
                    let dir = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || dir.save(&state)).await;
                }
            }
        }
    }
}

/// Writes `bytes` to `dir/name` so that a crash at any point leaves either
/// the previous file whole or the new one: temporary file, sync, rename,
/// sync of the directory.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(TEMP);
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

impl StateDir {
    /// Its counters now.
    pub fn snapshot(&self) -> StateSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        let saved_at = f64::from_bits(get(&c.saved_at));
        StateSnapshot {
            state_dir: Some(self.dir.display().to_string()),
            state_saves: get(&c.saves),
            state_save_failures: get(&c.save_failures),
            state_save_bytes: get(&c.save_bytes),
            state_saved_at: (saved_at > 0.0).then_some(saved_at),
            state_corrupt: get(&c.corrupt),
        }
    }
}

/// `dmon stats`' `state_*` fields and the summary's "state" row.
impl ComponentCounters for StateDir {
    fn report(&self) -> ComponentReport {
        let s = self.snapshot();
        let row = format!(
            "{} saves ({} failed, last {} bytes), {} corrupt files set aside, in {}",
            s.state_saves,
            s.state_save_failures,
            s.state_save_bytes,
            s.state_corrupt,
            s.state_dir.as_deref().unwrap_or("")
        );
        ComponentReport::of(&s).with_row("state", row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dmon-state-dir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = temp_dir("replace");
        fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, FILE, b"{\"first\":1}").unwrap();
        write_atomically(&dir, FILE, b"{\"second\":2}").unwrap();
        assert_eq!(fs::read(dir.join(FILE)).unwrap(), b"{\"second\":2}");
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![FILE.to_owned()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_that_fails_leaves_the_previous_file_as_it_was() {
        let dir = temp_dir("failed-write");
        fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, FILE, b"{\"kept\":true}").unwrap();
        // The temporary file's name taken by a directory: the write fails
        // before anything reaches state.json.
        fs::create_dir(dir.join(TEMP)).unwrap();
        assert!(write_atomically(&dir, FILE, b"{\"lost\":true}").is_err());
        assert_eq!(fs::read(dir.join(FILE)).unwrap(), b"{\"kept\":true}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn opening_creates_the_directory_and_a_file_in_the_way_is_an_error_naming_it() {
        let dir = temp_dir("open");
        let state = StateDir::open(&dir.join("a/b")).unwrap();
        assert!(dir.join("a/b").is_dir());
        assert_eq!(state.file(), dir.join("a/b").join(FILE));
        fs::write(dir.join("file"), b"").unwrap();
        let said = StateDir::open(&dir.join("file/state"))
            .err()
            .unwrap()
            .to_string();
        assert!(said.starts_with("--state-dir "), "{said}");
        assert!(said.contains("file/state"), "{said}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_state_is_moved_aside_and_counted() {
        let dir = temp_dir("corrupt");
        let state = StateDir::open(&dir).unwrap();
        fs::write(state.file(), b"{not json").unwrap();
        assert!(state.read().is_none());
        assert_eq!(state.snapshot().state_corrupt, 1);
        let report = state.report();
        assert_eq!(report.fields["state_corrupt"], 1);
        assert!(report.row.unwrap().1.contains("1 corrupt files set aside"));
        assert!(!state.file().exists());
        assert_eq!(fs::read(dir.join(CORRUPT)).unwrap(), b"{not json");
        fs::remove_dir_all(&dir).unwrap();
    }
}
