//! Disk space for pulls: one ledger of what running pulls have reserved.
//!
//! Checking free space per pull is not enough: two pulls that start together
//! both see the same free bytes and both pass. So every pull reserves what it
//! will write, under one lock, before it writes: it passes only if the free
//! space *minus what running pulls have reserved* still covers its need (with
//! the margin of [`fits`]). The reservation is released when the pull ends,
//! however it ends ([`Reservation`] releases on drop).
//!
//! What a pull needs ([`download_need`]): a blob downloaded in several ranged
//! parts is concatenated into one file before the parts are deleted, so it
//! briefly takes twice its size; a single-part download is renamed into place
//! (once its size and digest are checked) and takes its size once; a local
//! copy takes its size once. A download of unknown size reserves nothing: it
//! is bounded by the downloader's `--max-download-gib` cap and by the
//! disk-full handling (its partial files are deleted).
//!
//! The ledger is conservative: a running pull keeps its whole reservation
//! while the bytes it has already written also lower the free space, so late
//! in a pull its bytes count twice. It can refuse a pull that would have fit;
//! it never admits two that together do not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::download::{fits, Plan};
use super::StoreError;

/// How free space is measured (`statvfs`; tests put a fixed number here).
pub type FreeBytes = fn(&Path) -> std::io::Result<u64>;

/// Bytes a download of `size` bytes in at most `parallel` parts writes at its
/// peak: twice the size when it is assembled from several parts, once for a
/// single part; 0 when the size is unknown.
pub fn download_need(size: Option<u64>, parallel: usize) -> u64 {
    let Some(size) = size else { return 0 };
    let copies = if Plan::part_count(size, parallel) > 1 {
        2
    } else {
        1
    };
    size.saturating_mul(copies)
}

/// Whether a pull needing `need` bytes fits in `free` bytes of which running
/// pulls have reserved `reserved`, keeping [`fits`]'s margin.
pub fn admits(free: u64, reserved: u64, need: u64) -> bool {
    fits(need, free.saturating_sub(reserved))
}

/// The reservations of one store's running pulls.
#[derive(Debug)]
pub struct Ledger {
    /// Bytes reserved by running pulls. The lock is held across the free-space
    /// probe and the update, so two pulls never both count the same bytes.
    reserved: Mutex<u64>,
    free: FreeBytes,
}

/// Bytes reserved for one pull; released when dropped.
#[derive(Debug)]
#[must_use = "the space is released when the reservation is dropped"]
pub struct Reservation {
    ledger: Arc<Ledger>,
    bytes: u64,
}

impl Ledger {
    pub fn new(free: FreeBytes) -> Arc<Ledger> {
        Arc::new(Ledger {
            reserved: Mutex::new(0),
            free,
        })
    }

    /// Bytes reserved right now.
    pub fn reserved(&self) -> u64 {
        *self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `need` bytes on the filesystem holding `dir`.
    ///
    /// # Errors
    /// [`StoreError::NoSpace`] when they do not fit beside the other
    /// reservations; [`StoreError::Config`] when free space cannot be measured.
    pub fn reserve(self: &Arc<Self>, dir: &Path, need: u64) -> Result<Reservation, StoreError> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let free = (self.free)(dir)
            .map_err(|e| StoreError::Config(format!("statvfs {}: {e}", dir.display())))?;
        if !admits(free, *reserved, need) {
            return Err(no_space(dir.to_path_buf(), need, free, *reserved));
        }
        *reserved += need;
        Ok(Reservation {
            ledger: Arc::clone(self),
            bytes: need,
        })
    }
}

fn no_space(dir: PathBuf, need: u64, free: u64, reserved: u64) -> StoreError {
    let reason = if reserved > 0 {
        format!("{need} bytes needed, {free} free of which running pulls reserved {reserved}")
    } else {
        format!("{need} bytes needed, {free} free")
    };
    StoreError::NoSpace { dir, reason }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = self
            .ledger
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *reserved = reserved.saturating_sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::super::download::MIN_PART_BYTES;
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn need_is_twice_the_size_when_parts_are_assembled() {
        let table = [
            (None, 4, 0),
            (Some(100), 4, 100),
            (Some(MIN_PART_BYTES), 4, MIN_PART_BYTES),
            (Some(8 * MIN_PART_BYTES), 1, 8 * MIN_PART_BYTES),
            (Some(8 * MIN_PART_BYTES), 4, 16 * MIN_PART_BYTES),
            (Some(u64::MAX), 4, u64::MAX),
        ];
        for (size, parallel, need) in table {
            assert_eq!(download_need(size, parallel), need, "{size:?} x{parallel}");
        }
    }

    #[test]
    fn reservations_of_running_pulls_count_against_free_space() {
        // (free, reserved, need, admitted); the margin is 5 % or 1 GiB.
        let table = [
            (100 * GIB, 0, 90 * GIB, true),
            (100 * GIB, 0, 99 * GIB + 1, false),
            (100 * GIB, 50 * GIB, 45 * GIB, true),
            (100 * GIB, 50 * GIB, 50 * GIB, false),
            (100 * GIB, 200 * GIB, 0, true),
            (100 * GIB, 200 * GIB, 1, false),
            (1000, 0, 950, true),
            (1000, 100, 900, false),
        ];
        for (free, reserved, need, ok) in table {
            assert_eq!(admits(free, reserved, need), ok, "{free} {reserved} {need}");
        }
    }

    #[test]
    fn a_second_pull_is_refused_until_the_first_releases() {
        let ledger = Ledger::new(|_| Ok(100 * GIB));
        let dir = Path::new("/store");
        let first = ledger.reserve(dir, 60 * GIB).unwrap();
        let err = ledger.reserve(dir, 60 * GIB).unwrap_err();
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
        assert!(err.to_string().contains("reserved"), "{err}");
        let small = ledger.reserve(dir, 30 * GIB).unwrap();
        assert_eq!(ledger.reserved(), 90 * GIB);
        drop(first);
        let second = ledger.reserve(dir, 60 * GIB).unwrap();
        drop((small, second));
        assert_eq!(ledger.reserved(), 0);
    }

    #[test]
    fn concurrent_reservations_never_overcommit() {
        let ledger = Ledger::new(|_| Ok(100 * GIB));
        let held: Vec<_> = std::thread::scope(|s| {
            let tries: Vec<_> = (0..16)
                .map(|_| s.spawn(|| ledger.reserve(Path::new("/store"), 10 * GIB).ok()))
                .collect();
            tries
                .into_iter()
                .filter_map(|t| t.join().unwrap())
                .collect()
        });
        // 99 GiB usable after the 1 GiB margin: nine fit, whichever they are.
        assert_eq!(held.len(), 9);
        assert_eq!(ledger.reserved(), 90 * GIB);
    }
}
