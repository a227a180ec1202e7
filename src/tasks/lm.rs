//! Causal language modelling (GPT-2 on a token stream), as nanoGPT trains it.

use super::{LossSum, StepLoss, Task};
use crate::data::Split;
use crate::data::lm_batches::{LmBatch, TokenStream};
use crate::data::prepare::{PreparedMeta, load_split};
use crate::distributed::Shard;
use crate::error::Result;
use crate::loss::cross_entropy;
use crate::models::gpt2::{Gpt2, Gpt2Config};
use crate::recipe::{ModelSection, Recipe};
use crate::rng::SplitMix64;
use burn::prelude::*;
use std::path::Path;

pub struct LmTask {
    pub config: Gpt2Config,
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

/// The GPT-2 configuration of a recipe, given its tokenizer's vocabulary size.
pub fn model_config(recipe: &Recipe, vocab_size: usize) -> Result<Gpt2Config> {
    match &recipe.model {
        ModelSection::Gpt2(options) => options.config(vocab_size),
        other => Err(crate::error::Error::Recipe(format!(
            "`model.type: {}` is a translation model; language modelling needs `type: gpt2`",
            other.name()
        ))),
    }
}

impl LmTask {
    /// The task of rank `shard.index` of `shard.count`.
    pub fn new(
        recipe: &Recipe,
        meta: &PreparedMeta,
        prepared_dir: &Path,
        shard: Shard,
    ) -> Result<Self> {
        let config = model_config(recipe, meta.vocab_size)?;
        let block = config.block_size;
        let train = TokenStream::new("train", load_split(prepared_dir, meta, Split::Train)?);
        let valid = TokenStream::new("valid", load_split(prepared_dir, meta, Split::Valid)?);
        train.check_fits(block)?;
        valid.check_fits(block)?;
        let (batch_size, global_batch) = crate::distributed::batch_sizes(recipe, shard.count)?;
        // `eval_batches` global batches, which the ranks share out.
        let mut rng = SplitMix64::new(recipe.seed ^ 0x7a11_d000);
        let valid_starts =
            valid.random_starts(&mut rng, global_batch * recipe.train.eval_batches, block);
        Ok(Self {
            config,
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

    pub fn batch_loss(
        &self,
        model: &Gpt2,
        batch: &LmBatch,
        device: &Device,
    ) -> (Tensor<1>, Tensor<1>) {
        let (inputs, targets) = batch_tensors(batch, device);
        let logits = model.forward(inputs);
        let [b, t, v] = logits.dims();
        cross_entropy(
            logits.reshape([b * t, v]),
            targets,
            self.label_smoothing,
            None,
        )
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

/// Mean negative log-likelihood per token over windows at `starts`, in batches of
/// `batch_size`; returns (mean nll, tokens scored).
pub fn mean_nll(
    model: &Gpt2,
    stream: &TokenStream,
    starts: &[usize],
    batch_size: usize,
    device: &Device,
) -> (f64, usize) {
    let sum = nll_sum(model, stream, starts, batch_size, device, Shard::WHOLE);
    (sum.mean(), sum.count as usize)
}

/// The summed negative log-likelihood of the batches of `starts` that `shard` owns.
fn nll_sum(
    model: &Gpt2,
    stream: &TokenStream,
    starts: &[usize],
    batch_size: usize,
    device: &Device,
    shard: Shard,
) -> LossSum {
    let block = model.block_size();
    let mut total = 0.0;
    let mut tokens = 0;
    let batches = starts.chunks(batch_size).enumerate();
    for (_, chunk) in batches.filter(|(i, _)| shard.owns(*i)) {
        let batch = stream.batch_at(chunk, block);
        let (inputs, targets) = batch_tensors(&batch, device);
        let logits = model.forward(inputs);
        let [b, t, v] = logits.dims();
        let (_, nll) = cross_entropy(logits.reshape([b * t, v]), targets, 0.0, None);
        total += nll.into_scalar::<f64>() * (b * t) as f64;
        tokens += b * t;
    }
    LossSum {
        total,
        count: tokens as f64,
    }
}

impl Task for LmTask {
    type Model = Gpt2;

    fn init_model(&self, device: &Device) -> Result<Gpt2> {
        Ok(self.config.init(device))
    }

    fn train_loss(&self, model: &Gpt2, step: usize, micro: usize, device: &Device) -> StepLoss {
        // Every rank draws the same global batch and keeps its slice, so the ranks together
        // see exactly what one process with the global batch would.
        let mut rng = SplitMix64::for_step(self.seed, step as u64, micro as u64);
        let block = self.config.block_size;
        let starts = self.train.random_starts(&mut rng, self.global_batch, block);
        let mine = &starts[self.shard.index * self.batch_size..][..self.batch_size];
        let batch = self.train.batch_at(mine, block);
        let (loss, nll) = self.batch_loss(model, &batch, device);
        StepLoss::single(loss, nll)
    }

    fn validation_sum(&self, model: &Gpt2, device: &Device, shard: Shard) -> Result<LossSum> {
        let model = model.valid();
        let device = device.clone().without_autodiff();
        Ok(nll_sum(
            &model,
            &self.valid,
            &self.valid_starts,
            self.batch_size,
            &device,
            shard,
        ))
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
