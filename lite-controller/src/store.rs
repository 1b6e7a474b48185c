//! The controller's durable state: an embedded sled 0.34 database at
//! `DIR/db`. This is the only module that knows sled; the rest of the
//! controller sees typed [`Table`]s of JSON records keyed by strings.
//!
//! Every [`Table::put`] and [`Table::remove`] is flushed to disk before it
//! returns, so what a caller acknowledged survives SIGKILL and power loss
//! (CA material, join tokens, issued-serial records).
//!
//! sled opens a database whose files were emptied or deleted as a new,
//! empty one. So that such damage is never mistaken for a first start, the
//! directory carries a marker file, `DIR/initialized`, written once the CA
//! is stored ([`Store::mark_initialized`]); with the marker present, missing
//! or empty database files are an error and sled does not even open them.
//! `DIR/lock` (flock) keeps a second process out.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// sled's page cache, bytes: the controller's state is small (CA material,
/// tokens, serial records) and memory is the first constraint. An upper
/// bound, not a reservation: 1 MiB or 4 MiB measure the same at open.
pub const CACHE_CAPACITY_BYTES: u64 = 4 * 1024 * 1024;

/// sled's segment (I/O buffer) size, bytes: sled 0.34's default, which
/// every database so far was created with. sled writes it to `db/conf` and
/// refuses to open a database with another ("cannot change the io buffer
/// size across restarts"), so it must stay. Nor would a smaller one save
/// memory: the buffers are allocated, not touched, up front (64 KiB and
/// 512 KiB segments measured within 0.1 MiB of each other, issue 17).
pub const SEGMENT_SIZE_BYTES: usize = 512 * 1024;

/// A store that could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory is missing and cannot be created.
    #[error("cannot create the data directory {}", path.display())]
    CreateDir {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The lock file cannot be opened or locked (other than being held).
    #[error("cannot lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process (most likely another controller) holds the data directory.
    #[error(
        "the data directory {} is in use by another process (one controller per data directory)",
        path.display()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The directory was initialized but a database file is gone or empty.
    #[error(
        "the data directory {} was initialized, but its database file {} is missing or empty; \
         nothing was changed (restore the data directory from a backup)",
        dir.display(),
        file.display()
    )]
    Missing {
        /// The data directory.
        dir: PathBuf,
        /// The missing or empty file.
        file: PathBuf,
    },
    /// The marker file cannot be written.
    #[error("cannot write {}", path.display())]
    Marker {
        /// The marker file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database exists but cannot be read. It is left untouched.
    #[error(
        "the database {} is corrupt or unreadable; it was left as it is \
         (restore the data directory from a backup)",
        path.display()
    )]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// A read, write or flush failed after the database was opened.
    #[error("database I/O failed on table {table}")]
    Io {
        /// The table.
        table: &'static str,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// A record cannot be decoded (written by an incompatible version, or damaged).
    #[error("record {key:?} of table {table} cannot be decoded")]
    Decode {
        /// The table.
        table: &'static str,
        /// The record's key.
        key: String,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },
}

/// The open database. Cheap to clone (sled handles are reference-counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// The data directory: holds `db/`, `lock` and `initialized`.
    dir: PathBuf,
    /// `DIR/db`, for messages.
    path: PathBuf,
    /// Whether `DIR/initialized` existed at open.
    initialized: bool,
    /// `DIR/lock`, flock-ed for as long as the store lives.
    _lock: Arc<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or, when `dir` does not exist yet, creates with mode 0700)
    /// the database `dir/db` with a [`CACHE_CAPACITY_BYTES`] cache.
    ///
    /// # Errors
    ///
    /// [`Error::CreateDir`], [`Error::Locked`] when another process has it
    /// open, [`Error::Missing`] when an initialized directory lost its database
    /// files, [`Error::Corrupt`] when they cannot be read.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| Error::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let lock = lock(dir)?;
        let path = dir.join("db");
        let initialized = dir.join(MARKER).exists();
        if initialized {
            for name in ["conf", "db"] {
                let file = path.join(name);
                if std::fs::metadata(&file).map_or(true, |m| m.len() == 0) {
                    return Err(Error::Missing {
                        dir: dir.to_path_buf(),
                        file,
                    });
                }
            }
        }
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .segment_size(SEGMENT_SIZE_BYTES);
        // Our flock keeps other processes out, so sled's own lock can only
        // be held by a handle of this process that is still being dropped
        // (sled releases it from a background thread): wait for it briefly.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e)) if is_sled_lock(&e) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => {
                    break result.map_err(|source| Error::Corrupt {
                        path: path.clone(),
                        source,
                    })?
                }
            }
        };
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
            path,
            initialized,
            _lock: Arc::new(lock),
        })
    }

    /// `DIR/db`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory's marker said, at open, that a CA was stored
    /// here before: then an empty database is damage, never a first start.
    pub fn initialized(&self) -> bool {
        self.initialized
    }

    /// Writes the marker `DIR/initialized` (once the CA is stored), durably:
    /// written to a temporary file, synced, renamed, directory synced.
    ///
    /// # Errors
    ///
    /// [`Error::Marker`] when the marker cannot be written, synced or renamed
    /// into place.
    pub fn mark_initialized(&self, note: &str) -> Result<(), Error> {
        let path = self.dir.join(MARKER);
        let tmp = self.dir.join(format!("{MARKER}.tmp"));
        let err = |source| Error::Marker {
            path: path.clone(),
            source,
        };
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(note.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)
    }

    /// Whether no table holds any record: a database created by this start,
    /// or by a start that died before writing anything. Only then may a new
    /// CA be created.
    pub fn is_empty(&self) -> bool {
        self.db.tree_names().iter().all(|name| {
            self.db
                .open_tree(name)
                .map(|t| t.is_empty())
                .unwrap_or(false)
        })
    }

    /// The table `name` of records `T` (created on first use).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when sled cannot open the tree.
    pub fn table<T>(&self, name: &'static str) -> Result<Table<T>, Error> {
        let tree = self.db.open_tree(name).map_err(|source| Error::Io {
            table: name,
            source,
        })?;
        Ok(Table {
            tree,
            name,
            _record: PhantomData,
        })
    }

    /// Writes everything buffered to disk (on shutdown).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when sled cannot write.
    pub fn flush(&self) -> Result<(), Error> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| Error::Io { table: "*", source })
    }
}

/// The marker file's name inside the data directory.
const MARKER: &str = "initialized";

/// Whether sled failed to take its own lock on the database file (sled
/// 0.34 reports it only as an `Other` I/O error with this text).
fn is_sled_lock(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other && e.to_string().contains("could not acquire lock")
}

/// Opens `dir/lock` and takes an exclusive, non-blocking flock on it.
fn lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| Error::Lock {
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        return Err(if source.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                path: dir.to_path_buf(),
            }
        } else {
            Error::Lock { path, source }
        });
    }
    Ok(file)
}

/// A sled tree of JSON-encoded `T` keyed by UTF-8 strings.
pub struct Table<T> {
    tree: sled::Tree,
    name: &'static str,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            tree: self.tree.clone(),
            name: self.name,
            _record: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({})", self.name)
    }
}

impl<T: Serialize + DeserializeOwned> Table<T> {
    /// The record at `key`, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when sled cannot read; [`Error::Decode`] when the record
    /// is not a `T`.
    pub fn get(&self, key: &str) -> Result<Option<T>, Error> {
        match self.tree.get(key).map_err(|e| self.io(e))? {
            Some(bytes) => self.decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` at `key` and flushes: durable when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when `value` cannot be serialised; [`Error::Io`] when
    /// sled cannot write or flush.
    pub fn put(&self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Decode {
            table: self.name,
            key: key.to_string(),
            source,
        })?;
        self.tree.insert(key, bytes).map_err(|e| self.io(e))?;
        self.tree.flush().map(drop).map_err(|e| self.io(e))
    }

    /// Removes `key` and flushes; whether it was there.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when sled cannot write or flush.
    pub fn remove(&self, key: &str) -> Result<bool, Error> {
        let old = self.tree.remove(key).map_err(|e| self.io(e))?;
        self.tree.flush().map_err(|e| self.io(e))?;
        Ok(old.is_some())
    }

    /// Inserts `puts` and removes `removes` as one atomic batch, *without*
    /// flushing: for periodic bulk records (telemetry history) that may be
    /// lost in a crash and must not cost one flush each on an SD card; the
    /// caller flushes ([`Store::flush`]) once per batch. Returns the bytes of
    /// keys and values handed to sled.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when a record cannot be serialised (nothing is
    /// written); [`Error::Io`] when sled cannot apply the batch.
    pub fn write_batch(&self, puts: &[(String, T)], removes: &[String]) -> Result<usize, Error> {
        let mut batch = sled::Batch::default();
        let mut bytes = 0;
        for (key, value) in puts {
            let v = serde_json::to_vec(value).map_err(|source| Error::Decode {
                table: self.name,
                key: key.clone(),
                source,
            })?;
            bytes += key.len() + v.len();
            batch.insert(key.as_bytes(), v);
        }
        for key in removes {
            bytes += key.len();
            batch.remove(key.as_bytes());
        }
        self.tree.apply_batch(batch).map_err(|e| self.io(e))?;
        Ok(bytes)
    }

    /// Records with `from <= key < to`, in key order.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when sled cannot read; [`Error::Decode`] when a record is
    /// not a `T`.
    pub fn range(&self, from: &str, to: &str) -> Result<Vec<(String, T)>, Error> {
        let mut out = Vec::new();
        for item in self.tree.range(from.as_bytes()..to.as_bytes()) {
            let (k, v) = item.map_err(|e| self.io(e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = self.decode(&key, &v)?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// Keys before `to`, in key order (without decoding the records).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when sled cannot read.
    pub fn keys_before(&self, to: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for item in self.tree.range(..to.as_bytes()) {
            let (k, _) = item.map_err(|e| self.io(e))?;
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
    }

    /// The last key, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when sled cannot read.
    pub fn last_key(&self) -> Result<Option<String>, Error> {
        Ok(self
            .tree
            .last()
            .map_err(|e| self.io(e))?
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned()))
    }

    /// Every record, in key order.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when sled cannot read; [`Error::Decode`] when a record is
    /// not a `T`.
    pub fn all(&self) -> Result<Vec<(String, T)>, Error> {
        let mut out = Vec::with_capacity(self.tree.len());
        for item in self.tree.iter() {
            let (k, v) = item.map_err(|e| self.io(e))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = self.decode(&key, &v)?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the table holds no record.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|source| Error::Decode {
            table: self.name,
            key: key.to_string(),
            source,
        })
    }

    fn io(&self, source: sled::Error) -> Error {
        Error::Io {
            table: self.name,
            source,
        }
    }
}

#[cfg(test)]
mod tests;
