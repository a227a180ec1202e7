//! Language modelling with Transformer-XL: the GPT-2 task's data, scores and sampling, read
//! segment by segment with the memory carried.
//!
//! Training keeps exact resume without new checkpoint state: each example is one window of
//! `segments_per_sample` consecutive segments, drawn as GPT-2's windows are (a pure function of
//! the seed, step and micro-batch), read segment by segment with the memory carried (detached)
//! from one segment to the next inside the step. Carrying it across steps, as the original does,
//! would make a step's input depend on the steps before (see docs/architecture.md).

use super::{LmScores, Windows, batch_tensors};
use crate::data::lm_batches::TokenStream;
use crate::data::plain_text::{self, TextMeta, load_split};
use crate::data::prepared::load_meta;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::eval::generate::generate_with_memory;
use crate::eval::report::Evaluation;
use crate::loss::cross_entropy;
use crate::models::transformer_xl::{Memory, TransformerXl, TransformerXlConfig};
use crate::recipe::{Recipe, TaskKind};
use crate::tasks::{
    EvalRequest, GenerateRequest, Generated, LossSum, Pipeline, StepLoss, Task,
    check_same_tokenizer,
};
use burn::prelude::*;

pub struct XlLanguageModel {
    config: TransformerXlConfig,
}

impl XlLanguageModel {
    pub fn new(config: TransformerXlConfig) -> Self {
        Self { config }
    }
}

impl Pipeline for XlLanguageModel {
    const KIND: TaskKind = TaskKind::LanguageModel;
    type Model = TransformerXl;
    type Training = XlLmTask;
    type Scores = LmScores;

    fn init_model(&self, device: &Device) -> TransformerXl {
        self.config.init(device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<XlLmTask> {
        XlLmTask::new(recipe, self.config, shard)
    }

    /// The whole split as `batch_size` contiguous parts read side by side, segment by segment
    /// with the memory carried: every token but fewer than `batch_size` at the end is scored,
    /// each with the context the memory gives it.
    fn evaluate(
        &self,
        model: &TransformerXl,
        request: &EvalRequest,
    ) -> Result<Evaluation<LmScores>> {
        let dir = request.recipe.prepared_dir();
        check_same_tokenizer(
            &plain_text::tokenizer_path(&dir),
            &request.exp.tokenizer_path(),
        )?;
        let meta: TextMeta = load_meta(&dir)?;
        let split = request.split;
        let stream = TokenStream::new(split.name(), load_split(&dir, &meta, split)?);
        let segment = self.config.segment_len;
        check_fits(&stream, segment, "one segment (`model.segment_len`)")?;
        let predicted = stream.tokens.len() - 1;
        let rows = request.batch_size.clamp(1, predicted / segment);
        let length = predicted / rows;
        let starts: Vec<usize> = (0..rows).map(|r| r * length).collect();
        let mut sum = LossSum::default();
        read_segments(
            model,
            &stream,
            &starts,
            length,
            segment,
            request.device,
            |logits, targets| sum += segment_nll(logits, targets),
        );
        let loss = sum.mean();
        Ok(Evaluation::of(LmScores {
            loss,
            perplexity: loss.exp(),
            bits_per_token: loss / std::f64::consts::LN_2,
            tokens: sum.count as usize,
        }))
    }

    fn generate(&self, model: &TransformerXl, request: &GenerateRequest) -> Result<Generated> {
        let tokenizer = TextTokenizer::load(&request.exp.tokenizer_path())?;
        let prompt = tokenizer.encode_prompt(request.prompt)?;
        if prompt.is_empty() {
            return Err(Error::Usage("the prompt encodes to no tokens".into()));
        }
        let new_tokens = generate_with_memory(
            model,
            self.config.segment_len,
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

/// Read `length` tokens of `stream` from each of `starts` side by side (one row each), in
/// segments of `segment` tokens (the last may be shorter), carrying the memory from each segment
/// to the next; `each` gets every segment's logits `[rows, time, vocab]` and its targets
/// `[rows * time]` (the next tokens).
pub fn read_segments(
    model: &TransformerXl,
    stream: &TokenStream,
    starts: &[usize],
    length: usize,
    segment: usize,
    device: &Device,
    mut each: impl FnMut(Tensor<3>, Tensor<1, Int>),
) {
    if starts.is_empty() {
        return;
    }
    let mut memory = Memory::default();
    for offset in (0..length).step_by(segment) {
        let time = segment.min(length - offset);
        let at: Vec<usize> = starts.iter().map(|s| s + offset).collect();
        let (inputs, targets) = batch_tensors(&stream.batch_at(&at, time), device);
        let (logits, next) = model.forward(inputs, &memory);
        memory = next;
        each(logits, targets);
    }
}

/// Fail early, with the numbers, when a split is shorter than `tokens` (`what`) + 1.
fn check_fits(stream: &TokenStream, tokens: usize, what: &str) -> Result<()> {
    if stream.tokens.len() <= tokens {
        return Err(Error::Data(format!(
            "the {} split has {} tokens, fewer than {what} + 1 = {}; give more text, change \
             `data.split`, or lower `model.segment_len` or `model.segments_per_sample`",
            stream.name,
            stream.tokens.len(),
            tokens + 1
        )));
    }
    Ok(())
}

/// The summed negative log-likelihood of one segment's predictions.
fn segment_nll(logits: Tensor<3>, targets: Tensor<1, Int>) -> LossSum {
    let [batch, time, vocab] = logits.dims();
    let (_, nll) = cross_entropy(logits.reshape([batch * time, vocab]), targets, 0.0, None);
    LossSum::of_mean(nll, batch * time)
}

pub struct XlLmTask {
    config: TransformerXlConfig,
    /// Windows of `segments_per_sample` consecutive segments, drawn as GPT-2's windows are.
    windows: Windows,
    label_smoothing: f64,
}

impl XlLmTask {
    /// The task of rank `shard.index` of `shard.count`.
    pub fn new(recipe: &Recipe, config: TransformerXlConfig, shard: Shard) -> Result<Self> {
        let window = config.sample_len();
        let check = |stream: &TokenStream| {
            check_fits(
                stream,
                window,
                "one training window (`model.segments_per_sample` x `model.segment_len`)",
            )
        };
        Ok(Self {
            windows: Windows::new(recipe, shard, window, check)?,
            config,
            label_smoothing: recipe.loss.label_smoothing,
        })
    }
}

impl Task for XlLmTask {
    type Model = TransformerXl;

    fn init_model(&self, device: &Device, _load_pretrained: bool) -> Result<TransformerXl> {
        Ok(self.config.init(device))
    }

    /// Windows drawn as GPT-2's are, each read segment by segment with the memory carried; the
    /// loss is the mean over every token of every segment.
    fn train_loss(
        &self,
        model: &TransformerXl,
        step: usize,
        micro: usize,
        device: &Device,
    ) -> StepLoss {
        let starts = self.windows.train_starts(step, micro);
        let (mut all_logits, mut all_targets) = (Vec::new(), Vec::new());
        read_segments(
            model,
            &self.windows.train,
            &starts,
            self.config.sample_len(),
            self.config.segment_len,
            device,
            |logits, targets| {
                let [batch, time, vocab] = logits.dims();
                all_logits.push(logits.reshape([batch * time, vocab]));
                all_targets.push(targets);
            },
        );
        let (loss, nll) = cross_entropy(
            Tensor::cat(all_logits, 0),
            Tensor::cat(all_targets, 0),
            self.label_smoothing,
            None,
        );
        StepLoss::single(loss, nll)
    }

    fn validation_batches(&self) -> usize {
        self.windows.validation_batches()
    }

    fn validation_loss(&self, model: &TransformerXl, batch: usize, device: &Device) -> LossSum {
        let mut sum = LossSum::default();
        read_segments(
            model,
            &self.windows.valid,
            self.windows.validation_starts(batch),
            self.config.sample_len(),
            self.config.segment_len,
            device,
            |logits, targets| sum += segment_nll(logits, targets),
        );
        sum
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.windows.tokens_per_micro_batch()
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.windows.micro_batches_per_epoch()
    }

    fn model_width(&self) -> usize {
        self.config.n_embd
    }

    fn step_description(&self, _ranks: usize, accum_grad: usize) -> String {
        format!(
            "{} tokens ({} windows of {} segments of {}, memory {})",
            self.windows.global_batch() * accum_grad * self.config.sample_len(),
            self.windows.global_batch() * accum_grad,
            self.config.segments_per_sample,
            self.config.segment_len,
            self.config.mem_len
        )
    }
}
