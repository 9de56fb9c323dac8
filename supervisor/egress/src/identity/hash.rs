//! Executable hashing with a cache keyed by file identity, and trust-on-first-use
//! pinning per path.
//!
//! Threat handled: a binary swapped under an allowed path (the agent overwrites
//! `/usr/bin/curl`-like paths it can write, or a package upgrade it triggers).
//! The first hash seen for a path is pinned for the life of the supervisor; the
//! same path with another hash later is denied (`binary_changed`).
//! The file is hashed through `/proc/<pid>/exe`, i.e. the inode the process
//! actually runs, never by re-resolving the path.
//! Residual risk: the cache key is (dev, inode, size, mtime); a same-size
//! in-place rewrite that also restores mtime (needs write access plus
//! `utimensat`) would reuse the old hash. Running binaries cannot be written
//! (`ETXTBSY`), so this requires a binary that is not currently running.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

/// Entries kept before the cache is emptied (a crude but bounded policy).
const MAX_CACHED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// Outcome of pinning a (path, hash) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pin {
    /// First time this path was seen, or the same hash as before.
    Trusted,
    /// The path was pinned to another hash.
    Changed {
        /// The hash pinned earlier.
        pinned: Arc<str>,
    },
}

impl FileKey {
    /// The identity of a file's content as far as `stat` can tell: same device, inode, size and mtime.
    fn of(meta: &std::fs::Metadata) -> Self {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// Shared cache of executable hashes and path pins.
#[derive(Debug, Default)]
pub(crate) struct HashStore {
    hashes: Mutex<HashMap<FileKey, Arc<str>>>,
    pins: Mutex<HashMap<String, Arc<str>>>,
}

impl HashStore {
    /// SHA-256 (hex) of the file at `exe` (normally `/proc/<pid>/exe`), cached by
    /// the opened file's identity.
    pub(crate) fn hash(&self, exe: &Path) -> io::Result<Arc<str>> {
        let mut file = File::open(exe)?;
        let meta = file.metadata()?;
        let key = FileKey::of(&meta);
        if let Some(h) = self.hashes.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(Arc::clone(h));
        }
        let digest: Arc<str> = Arc::from(sha256_reader(&mut file)?);
        let mut hashes = self.hashes.lock().unwrap_or_else(PoisonError::into_inner);
        if hashes.len() >= MAX_CACHED {
            hashes.clear();
        }
        hashes.insert(key, Arc::clone(&digest));
        Ok(digest)
    }

    /// The cached hash of the file at `exe` (one `stat`, never hashing): `None`
    /// when this file identity was not hashed yet.
    pub(crate) fn cached(&self, exe: &Path) -> io::Result<Option<Arc<str>>> {
        let meta = std::fs::metadata(exe)?;
        let key = FileKey::of(&meta);
        Ok(self.hashes.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned())
    }

    /// Pins `sha256` to `path` on first use; reports a change afterwards.
    pub(crate) fn pin(&self, path: &str, sha256: &Arc<str>) -> Pin {
        let mut pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        match pins.get(path) {
            Some(p) if p == sha256 => Pin::Trusted,
            Some(p) => Pin::Changed { pinned: Arc::clone(p) },
            None => {
                pins.insert(path.to_owned(), Arc::clone(sha256));
                Pin::Trusted
            }
        }
    }
}

fn sha256_reader(r: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, b"abc").unwrap();
        let store = HashStore::default();
        let h = store.hash(&f).unwrap();
        assert_eq!(&*h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let again = store.hash(&f).unwrap();
        assert!(Arc::ptr_eq(&h, &again), "second lookup must hit the cache");
        assert!(Arc::ptr_eq(&store.cached(&f).unwrap().unwrap(), &h));
        // A rewrite changes size/mtime, so the hash is recomputed.
        std::fs::write(&f, b"abcd").unwrap();
        assert_eq!(store.cached(&f).unwrap(), None, "a rewritten file is not served from the cache");
        assert_ne!(store.hash(&f).unwrap(), h);
    }

    #[test]
    fn pins_first_hash() {
        let store = HashStore::default();
        let a: Arc<str> = Arc::from("aa");
        let b: Arc<str> = Arc::from("bb");
        assert_eq!(store.pin("/usr/bin/curl", &a), Pin::Trusted);
        assert_eq!(store.pin("/usr/bin/curl", &a), Pin::Trusted);
        assert_eq!(store.pin("/usr/bin/curl", &b), Pin::Changed { pinned: a.clone() });
        assert_eq!(store.pin("/usr/bin/wget", &b), Pin::Trusted);
    }
}
