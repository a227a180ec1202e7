//! The experiment folder: everything `eval`, `generate` and a resumed `train` need.
//!
//! ```text
//! EXP_DIR/
//!   recipe.yaml          the resolved recipe (defaults filled, overrides applied, the sizes
//!                        the model took from the data recorded)
//!   tokenizer.json       a copy of the prepared tokenizer (language models, classification,
//!                        tagging, pretraining)
//!   labels.json          class labels or tags in id order (classification, tagging)
//!   source_tokenizer.json, target_tokenizer.json   (translation)
//!   metrics.jsonl        one JSON object per logged figure
//!   checkpoints/step_*/  model.safetensors, optimizer.bpk, trainer_state.json
//!   eval_*.json          reports written by `nlpkit eval`, predictions_* / translations_*
//!                        beside them
//! ```

use crate::error::{Error, Result};
use crate::recipe::{Recipe, load_recipe};
use std::path::{Path, PathBuf};

pub const TOKENIZER: &str = "tokenizer.json";
/// Translation experiments keep one tokenizer per side (the same file twice for a joint
/// vocabulary).
pub const SOURCE_TOKENIZER: &str = "source_tokenizer.json";
pub const TARGET_TOKENIZER: &str = "target_tokenizer.json";
/// Class labels or tags in id order (classification and tagging).
pub const LABELS: &str = "labels.json";

pub struct Experiment {
    pub dir: PathBuf,
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
}
