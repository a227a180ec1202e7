//! The experiment folder: everything `eval`, `generate` and a resumed `train` need.
//!
//! ```text
//! EXP_DIR/
//!   recipe.yaml          the resolved recipe (defaults filled, overrides applied)
//!   tokenizer.json       a copy of the prepared tokenizer (language models, classification,
//!                        tagging, pretraining)
//!   labels.json          class labels or tags in id order (classification, tagging)
//!   source_tokenizer.json, target_tokenizer.json   (translation)
//!   metrics.jsonl        one JSON object per logged figure
//!   checkpoints/step_*/  model.safetensors, optimizer.bpk, trainer_state.json
//!   eval_*.json          reports written by `nlpkit eval`
//! ```

use crate::error::{Error, Result};
use crate::recipe::{Recipe, load_recipe};
use std::path::{Path, PathBuf};

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

    pub fn recipe_path(&self) -> PathBuf {
        self.dir.join("recipe.yaml")
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    /// Translation experiments keep one tokenizer per side (the same file twice for a joint
    /// vocabulary).
    pub fn source_tokenizer_path(&self) -> PathBuf {
        self.dir.join("source_tokenizer.json")
    }

    pub fn target_tokenizer_path(&self) -> PathBuf {
        self.dir.join("target_tokenizer.json")
    }

    /// Class labels or tags in id order (classification and tagging).
    pub fn labels_path(&self) -> PathBuf {
        self.dir.join("labels.json")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    pub fn report_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
