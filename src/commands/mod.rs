//! What each verb does, for any task: `cli/` parses the arguments and calls one function here.
//! The commands reach a task's concrete types through [`crate::tasks::with_pipeline`] only.

pub mod average;
pub mod eval;
pub mod explain;
pub mod export;
pub mod generate;
pub mod plot;
pub mod prepare;
pub mod summary;
pub mod train;
pub mod translate;

use crate::backend::device_for;
use crate::error::Result;
use crate::experiment::Experiment;
use crate::recipe::{BackendKind, Recipe};
use crate::tasks::Pipeline;
use crate::train::checkpoint::{self, Checkpoint};
use burn::prelude::Device;
use std::path::Path;

/// Which trained model a command uses: an experiment, one of its checkpoints (default: the best
/// by validation loss) and the backend to run it on (default: the recipe's).
pub struct ModelChoice<'a> {
    pub exp_dir: &'a Path,
    pub checkpoint: Option<&'a Path>,
    pub backend: Option<BackendKind>,
}

/// An experiment opened to use its trained model.
pub struct Opened {
    pub exp: Experiment,
    /// The resolved recipe, with the chosen backend.
    pub recipe: Recipe,
    pub device: Device,
    pub checkpoint: Checkpoint,
}

impl ModelChoice<'_> {
    pub fn open(&self) -> Result<Opened> {
        let (exp, mut recipe) = Experiment::open(self.exp_dir)?;
        if let Some(kind) = self.backend {
            recipe.backend.kind = kind;
            recipe.backend.device = "default".into();
        }
        let device = device_for(&recipe.backend)?;
        let checkpoint = checkpoint::choose(&exp, self.checkpoint)?;
        Ok(Opened {
            exp,
            recipe,
            device,
            checkpoint,
        })
    }
}

/// The pipeline's model with the checkpoint's weights: every trained model is rebuilt this way,
/// from the resolved recipe alone.
pub fn trained_model<P: Pipeline>(
    pipeline: &P,
    checkpoint: &Checkpoint,
    device: &Device,
) -> Result<P::Model> {
    checkpoint::load_model(pipeline.init_model(device), &checkpoint.model_path())
}
