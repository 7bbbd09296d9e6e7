//! Locks per store path, shared by every [`Store`](super::Store) of the
//! process, so two pulls of one model or one blob never write the same files
//! at once.
//!
//! The map keeps a path only while a [`PathLock`] of it lives (held, or
//! waiting for the lock): the last one to go removes the entry, so the map
//! does not grow with every name and blob ever pulled (the robustness issue's
//! "the per-path lock map only grows").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

type Map = HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>;

/// A set of per-path locks. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct PathLocks {
    /// Every clone of an entry's `Arc` is made under this lock and lives in a
    /// [`PathLock`], so under it `strong_count` is exactly 1 (the map) plus
    /// the number of `PathLock`s of that path.
    map: Arc<Mutex<Map>>,
}

impl PathLocks {
    /// The lock of `path` (not yet locked: `.lock().await` it).
    pub(super) fn get(&self, path: &Path) -> PathLock {
        let lock = self.map().entry(path.to_path_buf()).or_default().clone();
        PathLock {
            locks: self.clone(),
            path: path.to_path_buf(),
            lock,
        }
    }

    fn map(&self) -> MutexGuard<'_, Map> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

/// One user's handle on the lock of a path; the entry goes with the last one.
pub(super) struct PathLock {
    locks: PathLocks,
    path: PathBuf,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::ops::Deref for PathLock {
    type Target = tokio::sync::Mutex<()>;

    fn deref(&self) -> &Self::Target {
        &self.lock
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        // 2: the map's and ours.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.path);
        }
    }
}

/// The lock of `path` among the process's store locks.
pub(super) fn path_lock(path: &Path) -> PathLock {
    static LOCKS: OnceLock<PathLocks> = OnceLock::new();
    LOCKS.get_or_init(PathLocks::default).get(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_map_forgets_a_path_when_its_last_user_is_done() {
        let locks = PathLocks::default();
        let a = locks.get(Path::new("/s/a"));
        let waiting = locks.get(Path::new("/s/a"));
        let b = locks.get(Path::new("/s/b"));
        assert_eq!(locks.len(), 2);
        let guard = a.lock().await;
        assert!(waiting.try_lock().is_err(), "one lock per path");
        drop(guard);
        drop(a);
        assert_eq!(locks.len(), 2, "a is still wanted");
        let guard = waiting.lock().await;
        drop(guard);
        drop(waiting);
        assert_eq!(locks.len(), 1);
        drop(b);
        assert_eq!(locks.len(), 0);
        for i in 0..100 {
            let lock = locks.get(Path::new(&format!("/s/{i}")));
            let _guard = lock.lock().await;
        }
        assert_eq!(locks.len(), 0, "a hundred pulls leave nothing behind");
    }
}
