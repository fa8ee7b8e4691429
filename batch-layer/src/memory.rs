//! The allocator while batch runs are in progress. The binaries run on jemalloc
//! (`.cargo/config.toml`), which hands freed memory back to the system over time (its dirty
//! decay). A run frees and allocates gigabytes of buffers job after job; handed back, each
//! reuse faults in and zeroes fresh pages again (a 10M-print end of day faulted in 14 GiB of
//! pages for a peak of about 2,150 MiB; on 4 KiB pages the kernel's share of the run was 8 to
//! 10 s without this hold, about 2 s with it). So while any run is in progress, freed memory
//! stays with jemalloc for the next job ([`hold`]); when the last run ends, every unused page
//! goes back to the system at once and the decay time is restored.
//!
//! Under another global allocator (the crate's own tests) the calls reach an idle jemalloc
//! and change nothing.

use std::sync::Mutex;

use tikv_jemalloc_ctl::{Access, AsName};

/// The runs in progress, and the decay time to restore after the last (jemalloc's as the
/// first found it).
static RUNS: Mutex<(usize, Option<isize>)> = Mutex::new((0, None));

/// Keeps freed memory for reuse until dropped (and until every other [`Hold`] is dropped).
#[derive(Debug)]
#[must_use = "the memory is held only while the guard lives"]
pub struct Hold(());

/// Keeps the allocator's freed memory for reuse until the returned guard is dropped.
pub fn hold() -> Hold {
    let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    if runs.0 == 0 {
        runs.1 = decay();
        set_decay(-1);
    }
    runs.0 += 1;
    Hold(())
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
        runs.0 -= 1;
        if runs.0 == 0
            && let Some(ms) = runs.1
        {
            // a decay time of 0 purges every unused page at once (restoring the old time alone
            // leaves them until the arena's next allocations wake its decay)
            set_decay(0);
            set_decay(ms);
        }
    }
}

/// The decay time of arena 0 (the binaries run one arena), if jemalloc tells it.
fn decay() -> Option<isize> {
    match b"arena.0.dirty_decay_ms\0".name().read() {
        Ok(ms) => Some(ms),
        Err(e) => {
            tracing::debug!(error = %e, "jemalloc's decay time is not readable");
            None
        }
    }
}

/// Sets the decay time of every arena (-1: never purge).
fn set_decay(ms: isize) {
    let arenas: u32 = b"arenas.narenas\0".name().read().unwrap_or(1);
    for i in 0..arenas {
        let key = format!("arena.{i}.dirty_decay_ms\0");
        // an arena not created yet has nothing to purge
        if let Err(e) = key.as_str().name().write(ms) {
            tracing::trace!(arena = i, error = %e, "jemalloc's decay time not set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_nest_and_the_last_restores_the_decay_time() {
        let before = decay();
        assert!(before.is_some_and(|ms| ms >= 0), "{before:?}");
        let (a, b) = (hold(), hold());
        assert_eq!(decay(), before.map(|_| -1));
        drop(a);
        assert_eq!(decay(), before.map(|_| -1), "a run is still in progress");
        drop(b);
        assert_eq!(decay(), before);
    }
}
