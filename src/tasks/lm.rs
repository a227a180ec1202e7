//! Causal language modelling on a token stream with models read in windows (GPT-2, NNLM), as
//! nanoGPT trains it: plain text, random windows for training, perplexity over whole splits,
//! sampling. The recurrent model's truncated BPTT is `tasks::rnn_lm`, on the same data and
//! scores; Transformer-XL shares them too, reading segment by segment with its memory
//! (`transformer_xl`).

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
use crate::eval::generate::{generate, row_tensor, sample_with};
use crate::eval::report::{Evaluation, Scores};
use crate::loss::cross_entropy;
use crate::models::gpt2::{Gpt2, Gpt2Config};
use crate::models::nnlm::{Nnlm, NnlmConfig};
use crate::recipe::{DataSizes, Recipe, TaskKind};
use crate::rng::SplitMix64;
use crate::train::pretrained::{Pretrained, with_pretrained};
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
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

/// What the task needs of a model read in windows: its configuration builds it, and its logits
/// are those of every position of a window.
pub trait WindowLmConfig {
    type Model: Module + ModuleSnapshot;
    fn init(&self, device: &Device) -> Self::Model;
    /// Tokens in a training and evaluation window.
    fn block_size(&self) -> usize;
    /// The model width, for schedules that scale by it (noam).
    fn width(&self) -> usize;
    /// Logits `[batch, time, vocab]` for every position of `tokens` `[batch, time]`.
    fn logits(model: &Self::Model, tokens: Tensor<2, Int>) -> Tensor<3>;
    /// `max_new_tokens` sampled after `prompt` (not empty).
    fn generate(model: &Self::Model, prompt: &[u32], request: &GenerateRequest) -> Vec<u32>;
}

impl WindowLmConfig for Gpt2Config {
    type Model = Gpt2;
    fn init(&self, device: &Device) -> Gpt2 {
        Gpt2Config::init(self, device)
    }
    fn block_size(&self) -> usize {
        self.block_size
    }
    fn width(&self) -> usize {
        self.n_embd
    }
    fn logits(model: &Gpt2, tokens: Tensor<2, Int>) -> Tensor<3> {
        model.forward(tokens)
    }
    fn generate(model: &Gpt2, prompt: &[u32], request: &GenerateRequest) -> Vec<u32> {
        generate(
            model,
            prompt,
            request.max_new_tokens,
            &request.sampler,
            request.seed,
            request.kv_cache,
            request.device,
        )
    }
}

impl WindowLmConfig for NnlmConfig {
    type Model = Nnlm;
    fn init(&self, device: &Device) -> Nnlm {
        NnlmConfig::init(self, device)
    }
    fn block_size(&self) -> usize {
        self.options.block_size
    }
    fn width(&self) -> usize {
        self.options.hidden_size
    }
    fn logits(model: &Nnlm, tokens: Tensor<2, Int>) -> Tensor<3> {
        model.forward(tokens)
    }
    /// Each token from the last `context` tokens only.
    fn generate(model: &Nnlm, prompt: &[u32], request: &GenerateRequest) -> Vec<u32> {
        let next = |tokens: &[u32], _new: usize| {
            let window = &tokens[tokens.len().saturating_sub(model.context())..];
            let logits = model.forward(row_tensor(window, request.device));
            let [_, time, vocab] = logits.dims();
            let last = logits.slice([0..1, time - 1..time, 0..vocab]);
            last.try_into_vec_as::<f32>().expect("logits read back")
        };
        let (sampler, seed) = (&request.sampler, request.seed);
        sample_with(prompt, request.max_new_tokens, sampler, seed, next)
    }
}

pub struct LanguageModel<C> {
    config: C,
}

impl<C> LanguageModel<C> {
    pub fn new(config: C) -> Self {
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

impl LmScores {
    /// The scores of a summed negative log-likelihood over a split's tokens.
    pub fn of(sum: LossSum) -> Self {
        let loss = sum.mean();
        Self {
            loss,
            perplexity: loss.exp(),
            bits_per_token: loss / std::f64::consts::LN_2,
            tokens: sum.count as usize,
        }
    }
}

/// The split `eval` scores, once its prepared data is known to be the experiment's tokens.
pub fn eval_stream(request: &EvalRequest) -> Result<TokenStream> {
    let dir = request.recipe.prepared_dir();
    super::check_same_tokenizer(
        &plain_text::tokenizer_path(&dir),
        &request.exp.tokenizer_path(),
    )?;
    let meta: TextMeta = load_meta(&dir)?;
    let split = request.split;
    Ok(TokenStream::new(
        split.name(),
        load_split(&dir, &meta, split)?,
    ))
}

impl Scores for LmScores {
    fn headline(&self) -> String {
        format!(
            "loss {:.4}  ppl {:.2}  ({} tokens)",
            self.loss, self.perplexity, self.tokens
        )
    }
}

impl<C: WindowLmConfig> Pipeline for LanguageModel<C> {
    const KIND: TaskKind = TaskKind::LanguageModel;
    type Model = C::Model;
    type Training = LmTask<C>;
    type Scores = LmScores;

    fn init_model(&self, device: &Device) -> C::Model {
        self.config.init(device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<LmTask<C>> {
        LmTask::new(recipe, self.config, shard)
    }

    /// Every window of the split, one after the other.
    fn evaluate(&self, model: &C::Model, request: &EvalRequest) -> Result<Evaluation<LmScores>> {
        let stream = eval_stream(request)?;
        let block = self.config.block_size();
        stream.check_fits(block)?;
        let starts = stream.sequential_starts(block);
        let mut sum = LossSum::default();
        for chunk in starts.chunks(request.batch_size) {
            sum += window_nll::<C>(model, &stream, chunk, block, request.device);
        }
        Ok(Evaluation::of(LmScores::of(sum)))
    }

    fn generate(&self, model: &C::Model, request: &GenerateRequest) -> Result<Generated> {
        let tokenizer = TextTokenizer::load(&request.exp.tokenizer_path())?;
        let prompt = tokenizer.encode_prompt(request.prompt)?;
        if prompt.is_empty() {
            return Err(Error::Usage("the prompt encodes to no tokens".into()));
        }
        let new_tokens = C::generate(model, &prompt, request);
        Ok(Generated {
            text: tokenizer.decode(&new_tokens)?,
            tokens: new_tokens.len(),
        })
    }
}

pub struct LmTask<C> {
    config: C,
    /// Fine-tuning: the checkpoint it starts from.
    pretrained: Option<Pretrained>,
    windows: Windows,
    label_smoothing: f64,
}

impl<C: WindowLmConfig> LmTask<C> {
    /// The task of rank `shard.index` of `shard.count`.
    pub fn new(recipe: &Recipe, config: C, shard: Shard) -> Result<Self> {
        let block = config.block_size();
        Ok(Self {
            windows: Windows::new(recipe, shard, block, |stream| stream.check_fits(block))?,
            config,
            pretrained: Pretrained::of(recipe)?,
            label_smoothing: recipe.loss.label_smoothing,
        })
    }
}

/// The windows a task reading random windows of the token stream trains and validates on
/// (GPT-2 and NNLM here, Transformer-XL's windows of segments): every rank draws a step's
/// global batch as a pure function of the seed, step and micro-batch (so resume is exact and
/// the ranks together see what one process with the global batch would) and keeps its slice;
/// the validation sample is `eval_batches` global batches drawn once, which the ranks share out.
pub struct Windows {
    pub train: TokenStream,
    pub valid: TokenStream,
    /// Tokens in one window.
    window: usize,
    seed: u64,
    /// Windows this rank trains on per micro-batch.
    batch_size: usize,
    /// Windows drawn per micro-batch across all ranks.
    global_batch: usize,
    shard: Shard,
    /// Window starts of the fixed validation sample.
    valid_starts: Vec<usize>,
}

impl Windows {
    /// The train and valid splits of the recipe's prepared text, each first passed to `check`
    /// (which fails, with the model's keys, when a split is too short for one window).
    pub fn new(
        recipe: &Recipe,
        shard: Shard,
        window: usize,
        check: impl Fn(&TokenStream) -> Result<()>,
    ) -> Result<Self> {
        let dir = recipe.prepared_dir();
        let meta: TextMeta = load_meta(&dir)?;
        let train = TokenStream::new("train", load_split(&dir, &meta, Split::Train)?);
        let valid = TokenStream::new("valid", load_split(&dir, &meta, Split::Valid)?);
        check(&train)?;
        check(&valid)?;
        let (batch_size, global_batch) = crate::distributed::batch_sizes(recipe, shard.count)?;
        let mut rng = SplitMix64::new(recipe.seed ^ 0x7a11_d000);
        let valid_starts =
            valid.random_starts(&mut rng, global_batch * recipe.train.eval_batches, window);
        Ok(Self {
            train,
            valid,
            window,
            seed: recipe.seed,
            batch_size,
            global_batch,
            shard,
            valid_starts,
        })
    }

    /// This rank's window starts in micro-batch `micro` of `step`.
    pub fn train_starts(&self, step: usize, micro: usize) -> Vec<usize> {
        let mut rng = SplitMix64::for_step(self.seed, step as u64, micro as u64);
        let starts = self
            .train
            .random_starts(&mut rng, self.global_batch, self.window);
        starts[self.shard.index * self.batch_size..][..self.batch_size].to_vec()
    }

    pub fn validation_batches(&self) -> usize {
        self.valid_starts.len().div_ceil(self.batch_size)
    }

    /// The window starts of validation batch `batch` (empty past the last).
    pub fn validation_starts(&self, batch: usize) -> &[usize] {
        let chunk = self.valid_starts.chunks(self.batch_size).nth(batch);
        chunk.unwrap_or_default()
    }

    pub fn tokens_per_micro_batch(&self) -> usize {
        self.batch_size * self.window
    }

    pub fn micro_batches_per_epoch(&self) -> usize {
        (self.train.windows_per_epoch(self.window) / self.global_batch).max(1)
    }

    /// Windows drawn per micro-batch across all ranks.
    pub fn global_batch(&self) -> usize {
        self.global_batch
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
fn batch_loss<C: WindowLmConfig>(
    model: &C::Model,
    batch: &LmBatch,
    smoothing: f64,
    device: &Device,
) -> (Tensor<1>, Tensor<1>) {
    let (inputs, targets) = batch_tensors(batch, device);
    let logits = C::logits(model, inputs);
    let [b, t, v] = logits.dims();
    cross_entropy(logits.reshape([b * t, v]), targets, smoothing, None)
}

/// The summed negative log-likelihood of the windows at `starts`, one batch.
fn window_nll<C: WindowLmConfig>(
    model: &C::Model,
    stream: &TokenStream,
    starts: &[usize],
    block: usize,
    device: &Device,
) -> LossSum {
    let batch = stream.batch_at(starts, block);
    let (_, nll) = batch_loss::<C>(model, &batch, 0.0, device);
    LossSum::of_mean(nll, batch.batch * batch.block)
}

impl<C: WindowLmConfig> Task for LmTask<C> {
    type Model = C::Model;

    fn init_model(&self, device: &Device, load_pretrained: bool) -> Result<C::Model> {
        with_pretrained(
            self.config.init(device),
            self.pretrained.as_ref().filter(|_| load_pretrained),
        )
    }

    fn train_loss(&self, model: &C::Model, step: usize, micro: usize, device: &Device) -> StepLoss {
        let starts = self.windows.train_starts(step, micro);
        let block = self.config.block_size();
        let batch = self.windows.train.batch_at(&starts, block);
        let (loss, nll) = batch_loss::<C>(model, &batch, self.label_smoothing, device);
        StepLoss::single(loss, nll)
    }

    fn validation_batches(&self) -> usize {
        self.windows.validation_batches()
    }

    fn validation_loss(&self, model: &C::Model, batch: usize, device: &Device) -> LossSum {
        let starts = self.windows.validation_starts(batch);
        let block = self.config.block_size();
        window_nll::<C>(model, &self.windows.valid, starts, block, device)
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.windows.tokens_per_micro_batch()
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.windows.micro_batches_per_epoch()
    }

    fn model_width(&self) -> usize {
        self.config.width()
    }

    fn step_description(&self, _ranks: usize, accum_grad: usize) -> String {
        format!(
            "{} tokens",
            self.windows.global_batch() * accum_grad * self.config.block_size()
        )
    }
}
