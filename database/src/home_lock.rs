//! One process per home directory: the registry and the security server
//! each hold an exclusive OS lock on [`LOCK_FILE`] in their home while
//! they serve (and while a command rewrites what serving would read), and
//! write their process id into it so the refusal can name the holder.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// The file in a home directory that a serving process holds an exclusive
/// OS lock on, and writes its process id into.
pub const LOCK_FILE: &str = "serve.lock";

/// An exclusive OS lock on a home's [`LOCK_FILE`]; released when dropped
/// (or when the process dies, however it dies).
#[derive(Debug)]
pub struct HomeLock {
    _held: std::fs::File,
}

/// Why the lock on a home directory was not taken.
#[derive(Debug, thiserror::Error)]
pub enum HomeLockError {
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is already served by {holder} (it holds the lock on {}); stop it first: {why}",
        .dir.display(),
        .path.display()
    )]
    Held {
        dir: PathBuf,
        path: PathBuf,
        /// `process N`, or `another process` when the file names none.
        holder: String,
        /// What two processes on one home would break.
        why: &'static str,
    },
    #[error("cannot lock {}: {source}", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HomeLock {
    /// Locks `dir` for this process and writes its id into the lock file,
    /// or says which process holds it and `why` one must stop first.
    pub fn take(dir: &Path, why: &'static str) -> Result<Self, HomeLockError> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| HomeLockError::Open {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_owned(),
                    pid => format!("process {pid}"),
                };
                return Err(HomeLockError::Held {
                    dir: dir.to_owned(),
                    path,
                    holder,
                    why,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(HomeLockError::Lock { path, source });
            }
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|source| HomeLockError::Write { path, source })?;
        Ok(HomeLock { _held: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_who_holds_the_home_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = HomeLock::take(dir.path(), "they would both write").unwrap();
        let refused = HomeLock::take(dir.path(), "they would both write").unwrap_err();
        let said = refused.to_string();
        assert!(
            said.contains(&format!("process {}", std::process::id()))
                && said.contains("stop it first: they would both write"),
            "{said}"
        );
        drop(held);
        HomeLock::take(dir.path(), "they would both write").expect("free once released");
    }
}
