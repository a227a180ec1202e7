//! `nlpkit export`: a trained model as an HF model folder, or word embeddings' vectors as a
//! word2vec text file.

use super::{ModelChoice, Opened, trained_model};
use crate::error::Result;
use crate::experiment::Experiment;
use crate::recipe::TaskKind;
use crate::tasks::{self, Pipeline, PipelineJob};
use std::path::Path;

/// Write the HF folder `output` from the experiment's checkpoint (default: the best by
/// validation loss).
pub fn export(exp_dir: &Path, checkpoint: Option<&Path>, output: &Path) -> Result<()> {
    let (_, recipe) = Experiment::open(exp_dir)?;
    if recipe.task() == TaskKind::WordEmbeddings {
        let choice = ModelChoice {
            exp_dir,
            checkpoint,
            backend: None,
        };
        println!("{}", export_vectors(&choice, output)?);
        return Ok(());
    }
    let said = crate::hf::export::export(exp_dir, checkpoint, output)?;
    println!("{said}");
    Ok(())
}

/// Write the word vectors of an embeddings experiment's checkpoint to `output` in word2vec's
/// text format; what was written, for the user.
pub fn export_vectors(choice: &ModelChoice, output: &Path) -> Result<String> {
    let opened = choice.open()?;
    tasks::with_pipeline(
        &opened.recipe,
        VectorsJob {
            opened: &opened,
            output,
        },
    )
}

struct VectorsJob<'a> {
    opened: &'a Opened,
    output: &'a Path,
}

impl PipelineJob for VectorsJob<'_> {
    type Output = String;

    fn run<P: Pipeline>(self, pipeline: P) -> Result<String> {
        let o = self.opened;
        let model = trained_model(&pipeline, &o.checkpoint, &o.device)?;
        pipeline.write_vectors(&model, &o.exp, self.output)
    }
}
