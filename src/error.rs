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
        }
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
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Data(format!(
                "data file {} (from `{key}`) does not exist; check the path in the recipe \
                 (relative paths are resolved against the current directory)",
                path.display()
            ))
        } else {
            Error::io(format!("cannot read {}", path.display()), e)
        }
    })
}

/// Write a file atomically: write a temporary sibling, flush it to disk, then rename over the
/// target, so a crash leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_sibling(path);
    let mut file = std::fs::File::create(&tmp).with_path("create", &tmp)?;
    file.write_all(bytes).with_path("write", &tmp)?;
    file.sync_all().with_path("sync", &tmp)?;
    std::fs::rename(&tmp, path).with_path("rename into place", path)
}

pub fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}
