//! [`TempDir`]: a fresh directory under the system's temporary directory,
//! removed with everything in it when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory `$TMPDIR/pimesh-test-<tag>-<pid>-<n>-<ns>` created empty by
/// [`TempDir::new`] and removed (recursively, errors ignored) on drop.
///
/// The process id, a per-process counter and the clock's nanoseconds keep
/// the directories of parallel tests (nextest runs each test in its own
/// process) and of runs left over from a killed test apart.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, empty directory whose name carries `tag` (for the
    /// reader of a leftover). Panics (failing the test) when it cannot be
    /// created.
    pub fn new(tag: &str) -> TempDir {
        TempDir::create(tag).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TempDir::new`] for callers that report errors (a tool's scratch
    /// directory).
    ///
    /// # Errors
    ///
    /// The directory cannot be created (the message names it).
    pub fn create(tag: &str) -> std::io::Result<TempDir> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "pimesh-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        // A directory of a killed earlier run with the same name goes first.
        let _ = std::fs::remove_dir_all(&p);
        match std::fs::create_dir_all(&p) {
            Ok(()) => Ok(TempDir(p)),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", p.display()),
            )),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_empty_distinct_and_removed_on_drop() {
        let (a, b) = (TempDir::new("t"), TempDir::new("t"));
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir());
        assert_eq!(std::fs::read_dir(a.path()).unwrap().count(), 0);
        std::fs::write(a.path().join("f"), "x").unwrap();
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists());
    }
}
