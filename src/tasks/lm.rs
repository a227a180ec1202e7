//! Causal language modelling (GPT-2 on a token stream), as nanoGPT trains it: plain text, random
//! windows for training, perplexity over whole splits, sampling. Transformer-XL shares the data,
//! scores and sampling, reading them segment by segment with its memory (`transformer_xl`).

pub mod transformer_xl;

use super::{
    EvalRequest, GenerateRequest, Generated, LossSum, Pipeline, PreparedData, StepLoss, Task,
};
use crate::data::Split;
use crate::data::lm_batches::{LmBatch, TokenStream};
use crate::data::plain_text::{self, TextMeta, load_split};
use crate::data::prepared::{Preparation, load_meta};
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::eval::generate::generate;
use crate::eval::report::{Evaluation, Scores};
use crate::loss::cross_entropy;
use crate::models::gpt2::{Gpt2, Gpt2Config};
use crate::recipe::{DataSizes, Recipe, TaskKind};
use crate::rng::SplitMix64;
use crate::train::pretrained::{Pretrained, with_pretrained};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Plain text, one tokenizer; the experiment keeps the tokenizer.
pub fn prepare(recipe: &Recipe, how: Preparation) -> Result<PreparedData> {
    let prepared = how.run(recipe, plain_text::prepare_text)?;
    let vocab = prepared.meta.vocab_size;
    let sizes = DataSizes {
        vocab,
        target_vocab: vocab,
        labels: Vec::new(),
    };
    let tokenizer = plain_text::tokenizer_path(&prepared.dir);
    Ok(PreparedData::new(prepared, sizes, TextMeta::describe)
        .with_artefact(tokenizer, crate::experiment::TOKENIZER))
}

pub struct LanguageModel {
    config: Gpt2Config,
}

impl LanguageModel {
    pub fn new(config: Gpt2Config) -> Self {
        Self { config }
    }
}

/// The scores of a language model on a whole split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmScores {
    /// Mean negative log-likelihood per token.
    pub loss: f64,
    pub perplexity: f64,
    pub bits_per_token: f64,
    pub tokens: usize,
}

impl Scores for LmScores {
    fn headline(&self) -> String {
        format!(
            "loss {:.4}  ppl {:.2}  ({} tokens)",
            self.loss, self.perplexity, self.tokens
        )
    }
}

impl Pipeline for LanguageModel {
    const KIND: TaskKind = TaskKind::LanguageModel;
    type Model = Gpt2;
    type Training = LmTask;
    type Scores = LmScores;

    fn init_model(&self, device: &Device) -> Gpt2 {
        self.config.init(device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<LmTask> {
        LmTask::new(recipe, self.config, shard)
    }

    /// Every window of the split, one after the other.
    fn evaluate(&self, model: &Gpt2, request: &EvalRequest) -> Result<Evaluation<LmScores>> {
        let dir = request.recipe.prepared_dir();
        super::check_same_tokenizer(
            &plain_text::tokenizer_path(&dir),
            &request.exp.tokenizer_path(),
        )?;
        let meta: TextMeta = load_meta(&dir)?;
        let split = request.split;
        let stream = TokenStream::new(split.name(), load_split(&dir, &meta, split)?);
        let block = self.config.block_size;
        stream.check_fits(block)?;
        let starts = stream.sequential_starts(block);
        let mut sum = LossSum::default();
        for chunk in starts.chunks(request.batch_size) {
            sum += window_nll(model, &stream, chunk, request.device);
        }
        let loss = sum.mean();
        Ok(Evaluation::of(LmScores {
            loss,
            perplexity: loss.exp(),
            bits_per_token: loss / std::f64::consts::LN_2,
            tokens: sum.count as usize,
        }))
    }

    fn generate(&self, model: &Gpt2, request: &GenerateRequest) -> Result<Generated> {
        let tokenizer = TextTokenizer::load(&request.exp.tokenizer_path())?;
        let prompt = tokenizer.encode_prompt(request.prompt)?;
        if prompt.is_empty() {
            return Err(Error::Usage("the prompt encodes to no tokens".into()));
        }
        let new_tokens = generate(
            model,
            &prompt,
            request.max_new_tokens,
            &request.sampler,
            request.seed,
            request.kv_cache,
            request.device,
        );
        Ok(Generated {
            text: tokenizer.decode(&new_tokens)?,
            tokens: new_tokens.len(),
        })
    }
}

pub struct LmTask {
    config: Gpt2Config,
    /// Fine-tuning: the checkpoint it starts from.
    pretrained: Option<Pretrained>,
    train: TokenStream,
    valid: TokenStream,
    seed: u64,
    /// Sequences this rank trains on per micro-batch.
    batch_size: usize,
    /// Sequences drawn per micro-batch across all ranks; this rank takes its slice.
    global_batch: usize,
    shard: Shard,
    label_smoothing: f64,
    /// Window starts of the fixed validation sample.
    valid_starts: Vec<usize>,
}

impl LmTask {
    /// The task of rank `shard.index` of `shard.count`.
    pub fn new(recipe: &Recipe, config: Gpt2Config, shard: Shard) -> Result<Self> {
        let dir = recipe.prepared_dir();
        let meta: TextMeta = load_meta(&dir)?;
        let block = config.block_size;
        let train = TokenStream::new("train", load_split(&dir, &meta, Split::Train)?);
        let valid = TokenStream::new("valid", load_split(&dir, &meta, Split::Valid)?);
        train.check_fits(block)?;
        valid.check_fits(block)?;
        let (batch_size, global_batch) = crate::distributed::batch_sizes(recipe, shard.count)?;
        // `eval_batches` global batches, which the ranks share out.
        let mut rng = SplitMix64::new(recipe.seed ^ 0x7a11_d000);
        let valid_starts =
            valid.random_starts(&mut rng, global_batch * recipe.train.eval_batches, block);
        Ok(Self {
            config,
            pretrained: Pretrained::of(recipe)?,
            train,
            valid,
            seed: recipe.seed,
            batch_size,
            global_batch,
            shard,
            label_smoothing: recipe.loss.label_smoothing,
            valid_starts,
        })
    }
}

/// Inputs `[batch, block]` and flattened targets `[batch * block]` on `device`.
pub fn batch_tensors(batch: &LmBatch, device: &Device) -> (Tensor<2, Int>, Tensor<1, Int>) {
    let inputs = Tensor::from_data(
        TensorData::new(batch.inputs.clone(), [batch.batch, batch.block]),
        device,
    );
    let targets = Tensor::from_data(
        TensorData::new(batch.targets.clone(), [batch.batch * batch.block]),
        device,
    );
    (inputs, targets)
}

/// `(loss, nll)` of one batch of windows, means over its tokens.
fn batch_loss(
    model: &Gpt2,
    batch: &LmBatch,
    smoothing: f64,
    device: &Device,
) -> (Tensor<1>, Tensor<1>) {
    let (inputs, targets) = batch_tensors(batch, device);
    let logits = model.forward(inputs);
    let [b, t, v] = logits.dims();
    cross_entropy(logits.reshape([b * t, v]), targets, smoothing, None)
}

/// The summed negative log-likelihood of the windows at `starts`, one batch.
fn window_nll(model: &Gpt2, stream: &TokenStream, starts: &[usize], device: &Device) -> LossSum {
    let batch = stream.batch_at(starts, model.block_size());
    let (_, nll) = batch_loss(model, &batch, 0.0, device);
    LossSum::of_mean(nll, batch.batch * batch.block)
}

impl Task for LmTask {
    type Model = Gpt2;

    fn init_model(&self, device: &Device, load_pretrained: bool) -> Result<Gpt2> {
        with_pretrained(
            self.config.init(device),
            self.pretrained.as_ref().filter(|_| load_pretrained),
        )
    }

    fn train_loss(&self, model: &Gpt2, step: usize, micro: usize, device: &Device) -> StepLoss {
        // Every rank draws the same global batch and keeps its slice, so the ranks together
        // see exactly what one process with the global batch would.
        let mut rng = SplitMix64::for_step(self.seed, step as u64, micro as u64);
        let block = self.config.block_size;
        let starts = self.train.random_starts(&mut rng, self.global_batch, block);
        let mine = &starts[self.shard.index * self.batch_size..][..self.batch_size];
        let batch = self.train.batch_at(mine, block);
        let (loss, nll) = batch_loss(model, &batch, self.label_smoothing, device);
        StepLoss::single(loss, nll)
    }

    fn validation_batches(&self) -> usize {
        self.valid_starts.len().div_ceil(self.batch_size)
    }

    fn validation_loss(&self, model: &Gpt2, batch: usize, device: &Device) -> LossSum {
        let chunk = self.valid_starts.chunks(self.batch_size).nth(batch);
        window_nll(model, &self.valid, chunk.unwrap_or_default(), device)
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.batch_size * self.config.block_size
    }

    fn micro_batches_per_epoch(&self) -> usize {
        (self.train.windows_per_epoch(self.config.block_size) / self.global_batch).max(1)
    }

    fn model_width(&self) -> usize {
        self.config.n_embd
    }

    fn step_description(&self, _ranks: usize, accum_grad: usize) -> String {
        format!(
            "{} tokens",
            self.global_batch * accum_grad * self.config.block_size
        )
    }
}
