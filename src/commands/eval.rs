//! `nlpkit eval`: score a trained model on a whole split and write the report.

use super::{ModelChoice, Opened, trained_model};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::bleu::BleuTokenizer;
use crate::eval::embeddings::EmbeddingQueries;
use crate::eval::report::write_report;
use crate::eval::translate::DecodeOptions;
use crate::recipe::TaskKind;
use crate::tasks::{self, EvalRequest, Pipeline, PipelineJob};
use burn::module::Module;
use std::time::Instant;

/// What to score and how.
pub struct EvalOptions {
    pub split: Split,
    /// Examples per forward pass (default: the recipe's `train.batch_size`).
    pub batch_size: Option<usize>,
    /// Translation: decoding, and BLEU's tokenizer.
    pub decode: DecodeOptions,
    pub bleu_tokenizer: Option<BleuTokenizer>,
    /// Word embeddings: what to score.
    pub embeddings: EmbeddingQueries,
}

pub fn eval(choice: &ModelChoice, options: EvalOptions) -> Result<()> {
    let opened = choice.open()?;
    tasks::with_pipeline(
        &opened.recipe,
        EvalJob {
            opened: &opened,
            options,
        },
    )
}

struct EvalJob<'a> {
    opened: &'a Opened,
    options: EvalOptions,
}

impl PipelineJob for EvalJob<'_> {
    type Output = ();

    fn run<P: Pipeline>(self, pipeline: P) -> Result<()> {
        let Opened {
            exp,
            recipe,
            device,
            checkpoint,
        } = self.opened;
        if !self.options.embeddings.is_empty() && P::KIND != TaskKind::WordEmbeddings {
            return Err(Error::Usage(format!(
                "--query, --queries, --analogies and --similarity score word embeddings; this \
                 is a {} experiment",
                P::KIND.name()
            )));
        }
        let started = Instant::now();
        let model = trained_model(&pipeline, checkpoint, device)?;
        let request = EvalRequest {
            exp,
            recipe,
            split: self.options.split,
            batch_size: self.options.batch_size.unwrap_or(recipe.train.batch_size),
            device,
            decode: self.options.decode,
            bleu_tokenizer: self.options.bleu_tokenizer,
            embeddings: self.options.embeddings,
        };
        let parameters = model.num_params();
        let evaluation = pipeline.evaluate(&model, &request)?;
        let seconds = started.elapsed().as_secs_f64();
        let split = request.split.name();
        write_report(exp, split, checkpoint, parameters, seconds, evaluation)?;
        Ok(())
    }
}
