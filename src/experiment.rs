//! The experiment folder: everything `eval`, `generate` and a resumed `train` need.
//!
//! ```text
//! EXP_DIR/
//!   recipe.yaml          the resolved recipe (defaults filled, overrides applied, the sizes
//!                        the model took from the data recorded)
//!   tokenizer.json       a copy of the prepared tokenizer (language models, classification,
//!                        tagging, pretraining)
//!   labels.json          class labels or tags in id order (classification, tagging)
//!   vocab.tsv, vectors.txt   word embeddings: the vocabulary with counts, the vectors
//!   source_tokenizer.json, target_tokenizer.json   (translation)
//!   metrics.jsonl        one JSON object per logged figure
//!   tensorboard/         the same figures as TensorBoard scalars (`train.tensorboard`)
//!   checkpoints/step_*/  model.safetensors, optimizer.bpk, trainer_state.json
//!   eval_*.json          reports written by `nlpkit eval`, predictions_* / translations_*
//!                        beside them
//!   .lock                held by the `nlpkit train` writing into the folder (its pid inside)
//! ```

use crate::error::{Error, IoContext, Result};
use crate::recipe::{Recipe, load_recipe};
use std::path::{Path, PathBuf};

pub const TOKENIZER: &str = "tokenizer.json";
/// Translation experiments keep one tokenizer per side (the same file twice for a joint
/// vocabulary).
pub const SOURCE_TOKENIZER: &str = "source_tokenizer.json";
pub const TARGET_TOKENIZER: &str = "target_tokenizer.json";
/// Class labels or tags in id order (classification and tagging).
pub const LABELS: &str = "labels.json";
/// Word embeddings: the vocabulary in id order with its training counts, and the trained
/// vectors in word2vec's text format (written when training ends).
pub const VOCAB: &str = "vocab.tsv";
pub const VECTORS: &str = "vectors.txt";

pub struct Experiment {
    pub dir: PathBuf,
}

/// Holds an experiment folder for one training run (`Experiment::lock_for_training`).
pub struct ExperimentLock {
    _file: std::fs::File,
}

impl Experiment {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Open an existing experiment and read its resolved recipe.
    pub fn open(dir: &Path) -> Result<(Self, Recipe)> {
        let exp = Self::new(dir);
        if !exp.recipe_path().exists() {
            return Err(Error::Usage(format!(
                "{} is not an experiment folder (no recipe.yaml); give the output_dir of a \
                 `nlpkit train` run",
                dir.display()
            )));
        }
        let recipe = load_recipe(&exp.recipe_path(), &[])?;
        Ok((exp, recipe))
    }

    /// Take the folder for one training run: an advisory lock on `EXP_DIR/.lock`, held until the
    /// returned guard is dropped and released by the OS if the process dies, so a crashed run
    /// never leaves the folder locked. A second run on the folder is refused with the holder's
    /// pid rather than racing it for checkpoints and `metrics.jsonl`.
    pub fn lock_for_training(&self) -> Result<ExperimentLock> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(&self.dir).with_path("create", &self.dir)?;
        let path = self.file(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_path("open", &path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    pid => format!("process {pid}"),
                };
                return Err(Error::Usage(format!(
                    "{} is in use: {holder} is training into it (lock {}); wait for it to end, \
                     stop it, or set another output_dir (e.g. --set output_dir=exp/run2)",
                    self.dir.display(),
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", path.display()), e));
            }
        }
        file.set_len(0).with_path("write", &path)?;
        file.rewind().with_path("write", &path)?;
        write!(file, "{}", std::process::id()).with_path("write", &path)?;
        Ok(ExperimentLock { _file: file })
    }

    /// A file of the folder, by name.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn recipe_path(&self) -> PathBuf {
        self.file("recipe.yaml")
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.file(TOKENIZER)
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.file("metrics.jsonl")
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.file("checkpoints")
    }

    /// TensorBoard's event files (`train.tensorboard`).
    pub fn tensorboard_dir(&self) -> PathBuf {
        self.file(crate::train::tensorboard::DIR)
    }
}
