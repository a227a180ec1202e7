//! Translation: an encoder-decoder model on sentence pairs, batched by length and capped by
//! tokens, with label-smoothed cross-entropy over the target tokens (padding ignored).

use super::{LossSum, StepLoss, Task};
use crate::data::Split;
use crate::data::batching::EpochBatches;
use crate::data::pair_batches::{PairBatch, bucket_batches, collate};
use crate::data::parallel::{PairSet, ParallelMeta, SpecialIds, load_pair_split};
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::models::rnn_seq2seq::RnnSeq2SeqConfig;
use crate::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
use crate::models::transformer_seq2seq::TransformerSeq2SeqConfig;
use crate::recipe::{BatchScope, ModelSection, Recipe};
use crate::train::checkpoint;
use burn::prelude::*;
use std::path::Path;

/// The model configuration of a translation recipe, given the prepared vocabularies.
pub enum TranslationConfig {
    Rnn(RnnSeq2SeqConfig),
    Transformer(TransformerSeq2SeqConfig),
}

pub fn model_config(recipe: &Recipe, meta: &ParallelMeta) -> Result<TranslationConfig> {
    config_for(
        recipe,
        meta.source_vocab_size,
        meta.target_vocab_size,
        meta.joint_vocabulary,
    )
}

fn config_for(recipe: &Recipe, src: usize, tgt: usize, joint: bool) -> Result<TranslationConfig> {
    match &recipe.model {
        ModelSection::RnnSeq2seq(o) => Ok(TranslationConfig::Rnn(o.config(src, tgt)?)),
        ModelSection::TransformerSeq2seq(o) => {
            Ok(TranslationConfig::Transformer(o.config(src, tgt, joint)?))
        }
        ModelSection::Gpt2(_) | ModelSection::Cnn(_) | ModelSection::Bert(_) => Err(Error::Recipe(
            "this model does not translate; translation needs `model.type: rnn_seq2seq` or \
             `transformer_seq2seq`"
                .into(),
        )),
    }
}

/// Something to do with a trained translation model, whichever type the recipe chose.
pub trait WithTranslationModel {
    type Output;
    fn run<M: Seq2Seq>(self, model: M) -> Result<Self::Output>;
}

/// Build the model of an experiment's resolved recipe (whose vocabulary sizes `train` filled
/// in), load `weights` into it and hand it to `job`.
pub fn with_trained_model<J: WithTranslationModel>(
    recipe: &Recipe,
    weights: &Path,
    device: &Device,
    job: J,
) -> Result<J::Output> {
    let sizes = match &recipe.model {
        ModelSection::RnnSeq2seq(o) => (o.source_vocab_size, o.target_vocab_size),
        ModelSection::TransformerSeq2seq(o) => (o.source_vocab_size, o.target_vocab_size),
        _ => (None, None),
    };
    let (Some(src), Some(tgt)) = sizes else {
        return Err(Error::Usage(
            "this experiment's recipe.yaml has no vocabulary sizes; give the folder of a \
             translation model trained by `nlpkit train`"
                .into(),
        ));
    };
    let joint = recipe.data.target_tokenizer.is_none();
    match config_for(recipe, src, tgt, joint)? {
        TranslationConfig::Rnn(c) => job.run(checkpoint::load_model(c.init(device), weights)?),
        TranslationConfig::Transformer(c) => {
            job.run(checkpoint::load_model(c.init(device), weights)?)
        }
    }
}

/// The resolved recipe states the vocabulary sizes the model was built with.
pub fn record_vocab_sizes(recipe: &mut Recipe, meta: &ParallelMeta) {
    let sizes = (Some(meta.source_vocab_size), Some(meta.target_vocab_size));
    match &mut recipe.model {
        ModelSection::RnnSeq2seq(o) => {
            o.source_vocab_size = o.source_vocab_size.or(sizes.0);
            o.target_vocab_size = o.target_vocab_size.or(sizes.1);
        }
        ModelSection::TransformerSeq2seq(o) => {
            o.source_vocab_size = o.source_vocab_size.or(sizes.0);
            o.target_vocab_size = o.target_vocab_size.or(sizes.1);
        }
        _ => {}
    }
}

pub struct TranslationTask<C: Seq2SeqConfig> {
    pub config: C,
    pub meta: ParallelMeta,
    train: PairSet,
    train_batches: EpochBatches,
    valid: PairSet,
    valid_batches: Vec<Vec<usize>>,
    label_smoothing: f64,
}

/// The most tokens in one of this rank's batches, from `train.max_tokens`.
pub fn max_tokens_per_rank(recipe: &Recipe, ranks: usize) -> Option<usize> {
    recipe
        .train
        .max_tokens
        .map(|t| match recipe.distributed.batch_size_is {
            BatchScope::PerRank => t,
            BatchScope::Global => (t / ranks).max(1),
        })
}

impl<C: Seq2SeqConfig> TranslationTask<C> {
    pub fn new(
        recipe: &Recipe,
        config: C,
        meta: &ParallelMeta,
        prepared_dir: &Path,
        shard: Shard,
    ) -> Result<Self> {
        let train = load_pair_split(prepared_dir, meta, Split::Train)?;
        let valid = load_pair_split(prepared_dir, meta, Split::Valid)?;
        let (sentences, _) = crate::distributed::batch_sizes(recipe, shard.count)?;
        let max_tokens = max_tokens_per_rank(recipe, shard.count);
        let train_batches = bucket_batches(&train, max_tokens, sentences, recipe.seed);
        let valid_batches = bucket_batches(&valid, max_tokens, sentences, recipe.seed);
        Ok(Self {
            config,
            meta: meta.clone(),
            train,
            train_batches: EpochBatches::new(
                train_batches,
                recipe.seed,
                recipe.train.accum_grad,
                shard,
            ),
            valid,
            valid_batches,
            label_smoothing: recipe.loss.label_smoothing,
        })
    }

    pub fn train_batch_count(&self) -> usize {
        self.train_batches.batches.len()
    }

    fn specials(&self) -> (SpecialIds, SpecialIds) {
        (self.meta.source_specials, self.meta.target_specials)
    }
}

/// `(loss, nll)` of one batch: means over its real target tokens.
pub fn pair_loss<M: Seq2Seq>(
    model: &M,
    batch: &PairBatch,
    (source_ids, target_ids): (SpecialIds, SpecialIds),
    smoothing: f64,
    device: &Device,
) -> (Tensor<1>, Tensor<1>) {
    let (source, padding, target_in, target_out) = batch_tensors(batch, source_ids.pad, device);
    let logits = model.forward(source, padding, target_in);
    let [b, t, v] = logits.dims();
    cross_entropy(
        logits.reshape([b * t, v]),
        target_out,
        smoothing,
        Some(target_ids.pad),
    )
}

/// The summed negative log-likelihood of the target tokens of the `batches` that `shard` owns.
pub fn nll_sum<M: Seq2Seq>(
    model: &M,
    set: &PairSet,
    batches: &[Vec<usize>],
    ids: (SpecialIds, SpecialIds),
    device: &Device,
    shard: Shard,
) -> LossSum {
    let mut sum = LossSum::default();
    for (_, indices) in batches.iter().enumerate().filter(|(i, _)| shard.owns(*i)) {
        let batch = collate(set, indices, ids.0, ids.1);
        let (_, nll) = pair_loss(model, &batch, ids, 0.0, device);
        sum.total += nll.into_scalar::<f64>() * batch.target_tokens as f64;
        sum.count += batch.target_tokens as f64;
    }
    sum
}

/// Source `[b, S]`, its padding mask, decoder inputs `[b, T]` and flattened targets `[b * T]`.
pub fn batch_tensors(
    batch: &PairBatch,
    source_pad: u32,
    device: &Device,
) -> (
    Tensor<2, Int>,
    Tensor<2, Bool>,
    Tensor<2, Int>,
    Tensor<1, Int>,
) {
    let shape = |len| [batch.rows, len];
    let source = Tensor::<2, Int>::from_data(
        TensorData::new(batch.source.clone(), shape(batch.source_len)),
        device,
    );
    let padding = source.clone().equal_elem(source_pad as i64);
    let target_in = Tensor::from_data(
        TensorData::new(batch.target_in.clone(), shape(batch.target_len)),
        device,
    );
    let target_out = Tensor::from_data(
        TensorData::new(batch.target_out.clone(), [batch.rows * batch.target_len]),
        device,
    );
    (source, padding, target_in, target_out)
}

impl<C: Seq2SeqConfig> Task for TranslationTask<C> {
    type Model = C::Model;

    fn init_model(&self, device: &Device) -> Result<C::Model> {
        Ok(self.config.init(device))
    }

    fn train_loss(&self, model: &C::Model, step: usize, micro: usize, device: &Device) -> StepLoss {
        // Every rank takes its own batch of the step: the ranks' batches follow one another in
        // the epoch's order, so together they cover the data as one process would.
        let (indices, _) = self.train_batches.at(step, micro);
        let ids = self.specials();
        let batch = collate(&self.train, indices, ids.0, ids.1);
        let (loss, nll) = pair_loss(model, &batch, ids, self.label_smoothing, device);
        StepLoss::single(loss, nll)
    }

    fn validation_sum(&self, model: &C::Model, device: &Device, shard: Shard) -> Result<LossSum> {
        let model = model.valid();
        let device = device.clone().without_autodiff();
        Ok(nll_sum(
            &model,
            &self.valid,
            &self.valid_batches,
            self.specials(),
            &device,
            shard,
        ))
    }

    fn tokens_per_micro_batch(&self) -> usize {
        // Batches vary in size; their mean makes the throughput exact over an epoch.
        let tokens = self.meta.train.target_tokens + self.meta.train.pairs;
        tokens / self.train_batches.batches.len().max(1)
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.train_batches.per_rank_epoch()
    }

    fn model_width(&self) -> usize {
        self.config.width()
    }

    fn step_description(&self, ranks: usize, accum_grad: usize) -> String {
        format!(
            "{} length-bucketed batch(es) (of {} per epoch per rank, about {} target tokens each)",
            ranks * accum_grad,
            self.micro_batches_per_epoch(),
            self.tokens_per_micro_batch()
        )
    }
}
