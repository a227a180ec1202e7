//! The tasks: what a recipe trains a model to do. Each module owns its task's pipeline: the data
//! it prepares (through a `data` module), the sizes the model takes from that data, the training
//! task the loop runs, the trained model, and its evaluation.
//!
//! Two matches pick the concrete code, each exhaustive: [`prepare`] by the task kind (which data
//! the task reads) and [`with_pipeline`] by the model (which types train and evaluate). Every
//! command is written once over [`Pipeline`].

pub mod classify;
pub mod embeddings;
pub mod lm;
pub mod pretrain;
pub mod rnn_lm;
pub mod tagging;
pub mod translation;

use crate::data::Split;
use crate::data::prepared::{Preparation, Prepared};
use crate::distributed::Shard;
use crate::error::{Error, IoContext, Result};
use crate::eval::explain::{ExplainOptions, Explained};
use crate::eval::report::{Evaluation, Scores};
use crate::eval::sampling::Sampler;
use crate::eval::translate::DecodeOptions;
use crate::experiment::Experiment;
use crate::models::bert::BertHead;
use crate::recipe::{DataSizes, ModelSection, Recipe, TaskKind};
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use std::path::{Path, PathBuf};

/// What the training loop sees of a task: it never names a concrete model.
pub trait Task {
    type Model: Module + ModuleSnapshot;

    /// A freshly initialised model on `device` (seeded by the caller); a fine-tuning task loads
    /// the pretrained weights into it when `load_pretrained` (not when a checkpoint's weights
    /// will replace them).
    fn init_model(&self, device: &Device, load_pretrained: bool) -> Result<Self::Model>;

    /// The losses of micro-batch `micro` of optimiser step `step`. The batch must be a pure
    /// function of `(step, micro)` so a resumed run sees the same data.
    fn train_loss(
        &self,
        model: &Self::Model,
        step: usize,
        micro: usize,
        device: &Device,
    ) -> StepLoss;

    /// The names of the losses when there are several (the training loop weights them as
    /// `loss.weighting` says); empty for a task with one loss.
    fn loss_names(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The learned log-variances of uncertainty weighting, when the model has them.
    fn log_variances(&self, _model: &Self::Model) -> Option<Tensor<1>> {
        None
    }

    /// Batches in the fixed validation sample (fixed so evaluations are comparable); the loop
    /// deals them to the ranks.
    fn validation_batches(&self) -> usize;

    /// The summed validation loss of batch `batch` of the sample, with its count of items.
    fn validation_loss(&self, model: &Self::Model, batch: usize, device: &Device) -> LossSum;

    /// Is the validation loss a per-token negative log-likelihood (so perplexity means
    /// something)? Classification and the CRF's per-sentence loss are not.
    fn loss_is_token_nll(&self) -> bool {
        true
    }

    /// Tokens in one micro-batch of this rank, for throughput.
    fn tokens_per_micro_batch(&self) -> usize;

    /// Micro-batches in one pass over the training data, for `max_epochs`.
    fn micro_batches_per_epoch(&self) -> usize;

    /// The model width, for schedules that scale by it (noam).
    fn model_width(&self) -> usize;

    /// What one step trains on, for the start-up line.
    fn step_description(&self, ranks: usize, accum_grad: usize) -> String;

    /// State carried from one training step to the next besides the weights (truncated BPTT's
    /// hidden state), which the loop saves in each checkpoint: named tensors of the whole job,
    /// this rank's rows filled and zeros elsewhere, so that their sum over the ranks is the
    /// whole. None for a task whose batches are all of its state.
    fn carried_state(&self) -> Option<CarriedState> {
        None
    }

    /// Take back the state a checkpoint saved (the whole job's; the task keeps its rows).
    fn restore_carried_state(&self, _state: CarriedState) -> Result<()> {
        Ok(())
    }
}

/// Named host tensors a task carries between steps ([`Task::carried_state`]).
pub type CarriedState = std::collections::BTreeMap<String, crate::hf::HfTensor>;

/// What one micro-batch costs.
pub struct StepLoss {
    /// One loss, or one per name of [`Task::loss_names`] (label-smoothed where the recipe asks).
    pub losses: Vec<Tensor<1>>,
    /// The plain negative log-likelihood reported beside the optimised loss.
    pub nll: Tensor<1>,
    /// With several losses, one KPI per loss (an accuracy in [0, 1]) for dynamic task
    /// prioritisation; empty for a single loss.
    pub kpis: Vec<Tensor<1>>,
}

impl StepLoss {
    pub fn single(loss: Tensor<1>, nll: Tensor<1>) -> Self {
        Self {
            losses: vec![loss],
            nll,
            kpis: Vec::new(),
        }
    }
}

/// A loss summed over items (tokens, sentences) with their count, so that parts computed on
/// several ranks or batches add up before the mean is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossSum {
    pub total: f64,
    pub count: f64,
}

impl LossSum {
    /// The sum of a batch whose mean loss is `mean` over `count` items.
    pub fn of_mean(mean: Tensor<1>, count: usize) -> Self {
        Self {
            total: mean.into_scalar::<f64>() * count as f64,
            count: count as f64,
        }
    }

    pub fn mean(&self) -> f64 {
        self.total / self.count.max(1.0)
    }
}

impl std::ops::AddAssign for LossSum {
    fn add_assign(&mut self, other: Self) {
        self.total += other.total;
        self.count += other.count;
    }
}

/// What a task kind supplies to the commands, from a built model configuration to scores.
pub trait Pipeline {
    const KIND: TaskKind;
    /// The model trained and evaluated.
    type Model: Module + ModuleSnapshot;
    /// What the training loop runs.
    type Training: Task<Model = Self::Model>;
    /// The task's scores, as the eval report holds them.
    type Scores: Scores;

    /// A freshly initialised model (the trained one is this with a checkpoint's weights).
    fn init_model(&self, device: &Device) -> Self::Model;

    /// The training task over the recipe's prepared data, for rank `shard` of the job.
    fn training(self, recipe: &Recipe, shard: Shard) -> Result<Self::Training>;

    /// Score `model` on a split of the recipe's prepared data.
    fn evaluate(
        &self,
        model: &Self::Model,
        request: &EvalRequest,
    ) -> Result<Evaluation<Self::Scores>>;

    /// `nlpkit generate`: text after a prompt.
    fn generate(&self, _model: &Self::Model, _request: &GenerateRequest) -> Result<Generated> {
        Err(unsupported(Self::KIND, "generate", "language models"))
    }

    /// `nlpkit translate`: one translation per line.
    fn translate(&self, _model: &Self::Model, _request: &TranslateRequest) -> Result<Vec<String>> {
        Err(unsupported(Self::KIND, "translate", "translation models"))
    }

    /// `nlpkit export` of word vectors (and their copy in the experiment folder after
    /// training): the file `out` in word2vec's text format; what was written, for the user.
    fn write_vectors(
        &self,
        _model: &Self::Model,
        _exp: &Experiment,
        _out: &Path,
    ) -> Result<String> {
        Err(unsupported(
            Self::KIND,
            "export of word vectors",
            "word embeddings",
        ))
    }

    /// `nlpkit explain`: per-token attributions of each text (the model on an autodiff
    /// device, frozen).
    fn explain(&self, _model: &Self::Model, _request: &ExplainRequest) -> Result<Vec<Explained>> {
        Err(unsupported(
            Self::KIND,
            "explain",
            "classifiers and taggers",
        ))
    }
}

fn unsupported(kind: TaskKind, verb: &str, what: &str) -> Error {
    Error::Usage(format!(
        "`nlpkit {verb}` works on {what}; this is a {} experiment",
        kind.name()
    ))
}

/// Something to do with a task's pipeline, whichever concrete types the recipe picked.
pub trait PipelineJob {
    type Output;
    fn run<P: Pipeline>(self, pipeline: P) -> Result<Self::Output>;
}

/// The one match from a recipe's model to the concrete types of its task. The recipe's model
/// section must hold the sizes `train` records (the resolved recipe of an experiment does).
pub fn with_pipeline<J: PipelineJob>(recipe: &Recipe, job: J) -> Result<J::Output> {
    match &recipe.model {
        ModelSection::Gpt2(o) => job.run(lm::LanguageModel::new(o.config()?)),
        ModelSection::RnnLm(o) => job.run(rnn_lm::RecurrentLm::new(o.config()?)),
        ModelSection::Nnlm(o) => job.run(lm::LanguageModel::new(o.config()?)),
        ModelSection::RnnSeq2seq(o) => job.run(translation::Translation::new(o.config()?)),
        ModelSection::TransformerSeq2seq(o) => job.run(translation::Translation::new(o.config()?)),
        ModelSection::Cnn(o) => job.run(classify::Classification::new(o.config()?)),
        ModelSection::Rnn(o) => job.run(classify::Classification::new(o.config()?)),
        ModelSection::Bert(o) => match o.head {
            BertHead::SequenceClassification => job.run(classify::Classification::new(o.config()?)),
            BertHead::TokenClassification => job.run(tagging::Tagging::new(o.config()?)),
            BertHead::Pretraining => job.run(pretrain::Pretraining::new(o.config()?, recipe)),
        },
        ModelSection::TransformerXl(o) => {
            job.run(lm::transformer_xl::XlLanguageModel::new(o.config()?))
        }
        ModelSection::Word2vec(o) => job.run(embeddings::Embeddings::new(o.config()?)),
        ModelSection::Glove(o) => job.run(embeddings::Embeddings::new(o.config()?)),
    }
}

/// A task's prepared data, as the commands see it whatever its format.
pub struct PreparedData {
    pub dir: PathBuf,
    pub up_to_date: bool,
    /// The sizes the model takes from the data, recorded in the resolved recipe.
    pub sizes: DataSizes,
    /// Files that go into the experiment folder: (prepared file, name there).
    pub artefacts: Vec<(PathBuf, &'static str)>,
    /// What `prepare-data` prints about the data.
    pub description: String,
}

impl PreparedData {
    fn new<M>(prepared: Prepared<M>, sizes: DataSizes, describe: impl Fn(&M) -> String) -> Self {
        Self {
            description: describe(&prepared.meta),
            dir: prepared.dir,
            up_to_date: prepared.up_to_date,
            sizes,
            artefacts: Vec::new(),
        }
    }

    fn with_artefact(mut self, prepared_file: PathBuf, name: &'static str) -> Self {
        self.artefacts.push((prepared_file, name));
        self
    }
}

/// The one match from a task kind to the data it reads: prepare it (or, with
/// [`Preparation::Reuse`], read what was prepared).
pub fn prepare(recipe: &Recipe, how: Preparation) -> Result<PreparedData> {
    match recipe.task() {
        TaskKind::LanguageModel => lm::prepare(recipe, how),
        TaskKind::Translation => translation::prepare(recipe, how),
        TaskKind::WordEmbeddings => embeddings::prepare(recipe, how),
        TaskKind::Classification | TaskKind::Tagging | TaskKind::Pretraining => {
            prepare_labelled(recipe, how)
        }
    }
}

/// Labelled texts, tagged sentences or documents: the data classification, tagging and
/// pretraining share.
fn prepare_labelled(recipe: &Recipe, how: Preparation) -> Result<PreparedData> {
    use crate::data::labelled::{self, LabelledMeta};
    let prepared = how.run(recipe, labelled::prepare_labelled)?;
    let sizes = DataSizes {
        vocab: prepared.meta.vocab_size,
        target_vocab: prepared.meta.vocab_size,
        labels: prepared.meta.labels.clone(),
    };
    let dir = prepared.dir.clone();
    Ok(PreparedData::new(prepared, sizes, LabelledMeta::describe)
        .with_artefact(labelled::tokenizer_path(&dir), crate::experiment::TOKENIZER)
        .with_artefact(labelled::labels_path(&dir), crate::experiment::LABELS))
}

/// Scoring one split with a trained model.
pub struct EvalRequest<'a> {
    pub exp: &'a Experiment,
    pub recipe: &'a Recipe,
    pub split: Split,
    /// Examples per forward pass.
    pub batch_size: usize,
    pub device: &'a Device,
    /// Translation: how to decode, and BLEU's tokenizer (default: by the target language).
    pub decode: DecodeOptions,
    pub bleu_tokenizer: Option<crate::eval::bleu::BleuTokenizer>,
    /// Word embeddings: neighbours, analogies and word-pair similarity to score.
    pub embeddings: crate::eval::embeddings::EmbeddingQueries,
}

/// Sampling text from a trained language model.
pub struct GenerateRequest<'a> {
    pub exp: &'a Experiment,
    pub prompt: &'a str,
    pub max_new_tokens: usize,
    pub sampler: Sampler,
    pub seed: u64,
    /// Reuse the keys and values of earlier positions instead of recomputing the context.
    pub kv_cache: bool,
    pub device: &'a Device,
}

/// Generated text and how many tokens it took.
pub struct Generated {
    pub text: String,
    pub tokens: usize,
}

/// Translating sentences with a trained translation model.
pub struct TranslateRequest<'a> {
    pub exp: &'a Experiment,
    pub lines: &'a [String],
    pub decode: DecodeOptions,
    pub device: &'a Device,
}

/// Explaining a trained classifier's or tagger's outputs (`nlpkit explain`).
pub struct ExplainRequest<'a> {
    pub exp: &'a Experiment,
    pub recipe: &'a Recipe,
    /// The texts with their (1-based) input lines; empty lines are left out before.
    pub texts: &'a [(usize, String)],
    pub options: &'a ExplainOptions,
    /// An autodiff device (the model's).
    pub device: &'a Device,
}

impl ExplainRequest<'_> {
    /// The experiment's labels (or tags) in id order.
    pub fn labels(&self) -> Result<Vec<String>> {
        let path = self.exp.file(crate::experiment::LABELS);
        let bytes = std::fs::read(&path).with_path("read", &path)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Data(format!(
                "{} is not a JSON list of labels ({e}); train the experiment again",
                path.display()
            ))
        })
    }
}

/// Fail unless the prepared data was tokenized by the experiment's tokenizer: token files
/// encoded by another one would be read as the wrong words, or out of the model's vocabulary.
pub fn check_same_tokenizer(prepared: &Path, experiment: &Path) -> Result<()> {
    let read = |p: &Path| crate::error::read_file(p, "tokenizer");
    if read(prepared)? != read(experiment)? {
        return Err(Error::Data(format!(
            "the prepared data was tokenized by {}, which differs from the experiment's {}; \
             prepare it again from the experiment's recipe (`nlpkit prepare-data \
             EXP_DIR/recipe.yaml`)",
            prepared.display(),
            experiment.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::parse_recipe;

    /// The task kind of the pipeline a recipe runs.
    struct KindOf;

    impl PipelineJob for KindOf {
        type Output = TaskKind;
        fn run<P: Pipeline>(self, _pipeline: P) -> Result<TaskKind> {
            Ok(P::KIND)
        }
    }

    #[test]
    fn every_model_runs_the_pipeline_of_the_task_its_recipe_names() {
        let models = [
            ("gpt2", TaskKind::LanguageModel),
            ("rnn_lm", TaskKind::LanguageModel),
            ("nnlm", TaskKind::LanguageModel),
            ("rnn_seq2seq", TaskKind::Translation),
            ("transformer_seq2seq", TaskKind::Translation),
            ("cnn", TaskKind::Classification),
            ("rnn", TaskKind::Classification),
            ("bert\n  head: pretraining", TaskKind::Pretraining),
            (
                "bert\n  head: sequence_classification",
                TaskKind::Classification,
            ),
            ("bert\n  head: token_classification", TaskKind::Tagging),
            ("transformer_xl", TaskKind::LanguageModel),
            ("word2vec", TaskKind::WordEmbeddings),
            ("glove", TaskKind::WordEmbeddings),
        ];
        for (model, kind) in models {
            let text = format!(
                "data:\n  train: x.txt\n  tokenizer:\n    type: char\nmodel:\n  type: {model}\n"
            );
            let mut recipe = parse_recipe(&text, "test").unwrap();
            let options = recipe.model.options_mut();
            options.resolve().unwrap();
            let labels = vec!["O".to_string(), "B-PER".into(), "I-PER".into()];
            let sizes = DataSizes {
                vocab: 10,
                target_vocab: 12,
                labels,
            };
            options.record_sizes(&sizes).unwrap();
            assert_eq!(recipe.task(), kind, "{model}");
            assert_eq!(with_pipeline(&recipe, KindOf).unwrap(), kind, "{model}");
        }
    }
}
