//! One error type for the whole crate, with the exit code the CLI returns for it.
//!
//! Input problems (a bad recipe, a missing or malformed data file, a bad flag) exit with 2 so
//! scripts can tell "you asked for something wrong" from "the run failed" (exit 1).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recipe (or a `--set` override) is wrong: unknown key, wrong type, bad value.
    #[error("{0}")]
    Recipe(String),
    /// A data file is missing, empty or malformed.
    #[error("{0}")]
    Data(String),
    /// A command-line argument is wrong (an experiment folder that is not one, ...).
    #[error("{0}")]
    Usage(String),
    /// The training run itself failed (loss became NaN, a checkpoint could not be read, ...).
    #[error("{0}")]
    Run(String),
    /// A stop signal ended training after its checkpoint was written (`train::stop`).
    #[error("{message}")]
    Stopped { message: String, signal: i32 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Recipe(_) | Error::Data(_) | Error::Usage(_) => 2,
            Error::Run(_) | Error::Io { .. } => 1,
            // As a shell reports a command that a signal ended.
            Error::Stopped { signal, .. } => 128 + signal,
        }
    }

    /// Every rank ends with this error at the same point (a stop they agreed on), so an MPI job
    /// can shut down cleanly instead of being aborted.
    pub fn ends_every_rank(&self) -> bool {
        matches!(self, Error::Stopped { .. })
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a file path to an I/O error.
pub trait IoContext<T> {
    fn with_path(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn with_path(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(format!("cannot {what} {}", path.display()), e))
    }
}

/// Read a whole file, turning "not found" into a data error that says which file and key.
pub fn read_file(path: &Path, key: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Data(format!(
            "data file {} (from `{key}`) does not exist; check the path in the recipe \
             (relative paths are resolved against the current directory)",
            path.display()
        )),
        std::io::ErrorKind::IsADirectory => Error::Data(format!(
            "data file {} (from `{key}`) is a folder; name a file",
            path.display()
        )),
        std::io::ErrorKind::PermissionDenied => Error::Data(format!(
            "data file {} (from `{key}`) cannot be read: permission denied",
            path.display()
        )),
        _ => Error::io(format!("cannot read {}", path.display()), e),
    })
}

/// Write a file atomically: write a temporary sibling, flush it to disk, rename it over the
/// target and flush the folder, so a crash or a power cut leaves either the old file or the new
/// one, never half of one. The temporary name is the process's own, so two writers never share
/// one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_sibling(path);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp).with_path("create", &tmp)?;
        file.write_all(bytes).with_path("write", &tmp)?;
        file.sync_all().with_path("sync", &tmp)?;
        std::fs::rename(&tmp, path).with_path("rename into place", path)
    })();
    if written.is_err() {
        // A full disk, say: leave no half-written temporary file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(folder) = path.parent() {
        sync_dir(folder);
    }
    Ok(())
}

/// A hidden temporary name beside `path`, unique to this process and call.
fn tmp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{call}.tmp", std::process::id()))
}

/// Flush a folder's entries so a rename into it survives a power cut (best effort: not every
/// file system lets a folder be opened for syncing).
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::write_atomic;

    fn names_in(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(names_in(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_target_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder in the way: the rename over it fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "kept").unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(names_in(dir.path()), ["taken"]);
        assert_eq!(
            std::fs::read_to_string(path.join("inside")).unwrap(),
            "kept"
        );
    }
}
