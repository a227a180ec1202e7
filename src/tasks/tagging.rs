//! Token classification (NER): BERT with a softmax per token or a linear-chain CRF over the
//! tags. Sentences longer than the model's window are cut into pieces for training and
//! prediction, and the pieces' tags joined again for scoring.

use super::{LossSum, StepLoss, Task};
use crate::data::Split;
use crate::data::batching::{EpochBatches, batches_by_length};
use crate::data::labelled::{Example, LabelledMeta, Specials, encode_tokens, load_examples};
use crate::data::token_batches::TokenBatch;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::{Shard, batch_sizes};
use crate::error::{Error, Result};
use crate::loss::cross_entropy_kept;
use crate::models::bert::{BertConfig, BertTagger};
use crate::recipe::Recipe;
use crate::train::checkpoint;
use burn::prelude::*;
use std::path::{Path, PathBuf};

/// Tagged sentences, encoded and cut into pieces that fit the model.
pub struct TaggedSet {
    /// Per piece: `[CLS] tokens [SEP]`.
    pub ids: Vec<Vec<u32>>,
    /// Per piece: a tag id per token.
    pub tags: Vec<Vec<usize>>,
    /// Per piece: its sentence and the offset of its first token there.
    pub origin: Vec<(usize, usize)>,
    /// The sentences' tokens and gold tags.
    pub sentences: Vec<(Vec<String>, Vec<String>)>,
}

impl TaggedSet {
    pub fn load(
        dir: &Path,
        split: Split,
        meta: &LabelledMeta,
        tokenizer: &TextTokenizer,
        specials: &Specials,
        max_len: usize,
    ) -> Result<Self> {
        let mut set = TaggedSet {
            ids: vec![],
            tags: vec![],
            origin: vec![],
            sentences: vec![],
        };
        let window = max_len - 2;
        for (s, example) in load_examples(dir, split)?.into_iter().enumerate() {
            let Example::Tagged { tokens, tags } = example else {
                return Err(Error::Data(format!(
                    "{} does not hold tagged sentences; prepare the data again",
                    dir.display()
                )));
            };
            let ids = encode_tokens(tokenizer, &tokens, specials.unk)?;
            let tag_ids: Vec<usize> = tags
                .iter()
                .map(|t| meta.labels.iter().position(|l| l == t).unwrap_or(0))
                .collect();
            for offset in (0..ids.len()).step_by(window) {
                let end = (offset + window).min(ids.len());
                let mut piece = vec![specials.cls];
                piece.extend(&ids[offset..end]);
                piece.push(specials.sep);
                set.ids.push(piece);
                set.tags.push(tag_ids[offset..end].to_vec());
                set.origin.push((s, offset));
            }
            set.sentences.push((tokens, tags));
        }
        Ok(set)
    }

    fn batch(&self, indices: &[usize], pad: u32) -> (TokenBatch, Vec<i64>, Vec<usize>) {
        let seqs: Vec<&[u32]> = indices.iter().map(|&i| self.ids[i].as_slice()).collect();
        let batch = TokenBatch::pad(&seqs, None, pad, 1);
        // Tags at the token positions (1.. after [CLS]), padded with tag 0.
        let width = batch.time - 1;
        let mut tags = vec![0i64; indices.len() * width];
        for (row, &i) in indices.iter().enumerate() {
            for (t, &tag) in self.tags[i].iter().enumerate() {
                tags[row * width + t] = tag as i64;
            }
        }
        let lengths = indices.iter().map(|&i| self.tags[i].len()).collect();
        (batch, tags, lengths)
    }
}

pub struct TaggingTask {
    pub config: BertConfig,
    pub tags: Vec<String>,
    pretrained: Option<PathBuf>,
    train: TaggedSet,
    train_batches: EpochBatches,
    valid: TaggedSet,
    valid_batches: Vec<Vec<usize>>,
    pad: u32,
    label_smoothing: f64,
}

fn piece_batches(
    set: &TaggedSet,
    batch: usize,
    max_tokens: Option<usize>,
    seed: u64,
) -> Vec<Vec<usize>> {
    let ids = &set.ids;
    batches_by_length(
        ids.len(),
        |i| ids[i].len(),
        |i| ids[i].len(),
        max_tokens,
        batch,
        seed,
    )
}

impl TaggingTask {
    pub fn new(
        recipe: &Recipe,
        config: BertConfig,
        meta: &LabelledMeta,
        dir: &Path,
        tokenizer: &TextTokenizer,
        shard: Shard,
    ) -> Result<Self> {
        let specials = Specials::of(tokenizer)?;
        let load = |split| TaggedSet::load(dir, split, meta, tokenizer, &specials, config.max_len);
        let (train, valid) = (load(Split::Train)?, load(Split::Valid)?);
        if valid.ids.is_empty() {
            return Err(Error::Data(
                "the validation split is empty; raise `data.split.valid`".into(),
            ));
        }
        let (batch, _) = batch_sizes(recipe, shard.count)?;
        let max_tokens = recipe.train.max_tokens;
        let train_batches = piece_batches(&train, batch, max_tokens, recipe.seed);
        Ok(Self {
            train_batches: EpochBatches::new(
                train_batches,
                recipe.seed,
                recipe.train.accum_grad,
                shard,
            ),
            valid_batches: piece_batches(&valid, batch, max_tokens, recipe.seed),
            config,
            tags: meta.labels.clone(),
            pretrained: checkpoint::init_from_weights(recipe)?,
            train,
            valid,
            pad: specials.pad,
            label_smoothing: recipe.loss.label_smoothing,
        })
    }

    /// `(loss, nll, items)`: per token for the softmax, per sentence piece for the CRF.
    fn batch_loss(
        &self,
        model: &BertTagger,
        set: &TaggedSet,
        indices: &[usize],
        smoothing: f64,
        device: &Device,
    ) -> (Tensor<1>, Tensor<1>, usize) {
        let (batch, tags, lengths) = set.batch(indices, self.pad);
        let logits = model.forward(batch.bert_input(device));
        let [rows, time, n] = logits.dims();
        let emissions = logits.narrow(1, 1, time - 1);
        let tags = Tensor::<1, Int>::from_data(tags.as_slice(), device).reshape([rows, time - 1]);
        match &model.crf {
            Some(crf) => {
                let nll = crf.neg_log_likelihood(emissions, tags, &lengths);
                (nll.clone(), nll, rows)
            }
            None => {
                let keep: Vec<f32> = lengths
                    .iter()
                    .flat_map(|&l| (0..time - 1).map(move |t| if t < l { 1.0 } else { 0.0 }))
                    .collect();
                let keep = Tensor::<1>::from_floats(keep.as_slice(), device);
                let (loss, nll) = cross_entropy_kept(
                    emissions.reshape([rows * (time - 1), n]),
                    tags.reshape([rows * (time - 1)]),
                    smoothing,
                    Some(keep),
                );
                (loss, nll, lengths.iter().sum())
            }
        }
    }
}

impl Task for TaggingTask {
    type Model = BertTagger;

    fn init_model(&self, device: &Device) -> Result<BertTagger> {
        let model = self.config.init_tagger(&self.tags, device);
        checkpoint::with_pretrained_encoder(model, self.pretrained.as_deref())
    }

    fn train_loss(
        &self,
        model: &BertTagger,
        step: usize,
        micro: usize,
        device: &Device,
    ) -> StepLoss {
        let (indices, _) = self.train_batches.at(step, micro);
        let (loss, nll, _) =
            self.batch_loss(model, &self.train, indices, self.label_smoothing, device);
        StepLoss::single(loss, nll)
    }

    fn validation_sum(&self, model: &BertTagger, device: &Device, shard: Shard) -> Result<LossSum> {
        let model = model.valid();
        let device = device.clone().without_autodiff();
        let mut sum = LossSum::default();
        for (_, indices) in self
            .valid_batches
            .iter()
            .enumerate()
            .filter(|(i, _)| shard.owns(*i))
        {
            let (_, nll, items) = self.batch_loss(&model, &self.valid, indices, 0.0, &device);
            sum.total += nll.into_scalar::<f64>() * items as f64;
            sum.count += items as f64;
        }
        Ok(sum)
    }

    fn loss_is_token_nll(&self) -> bool {
        !self.config.crf
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.train_batches
            .mean_batch_total(|i| self.train.ids[i].len())
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.train_batches.per_rank_epoch()
    }

    fn model_width(&self) -> usize {
        self.config.encoder.width
    }

    fn step_description(&self, ranks: usize, accum_grad: usize) -> String {
        format!(
            "~{:.0} sentences, {} tags, {}",
            self.train_batches.mean_batch_len() * (ranks * accum_grad) as f64,
            self.tags.len(),
            if self.config.crf { "CRF" } else { "softmax" }
        )
    }
}

/// The predicted tags of every sentence of `set` (pieces joined again).
pub fn predict_tags(
    model: &BertTagger,
    tags: &[String],
    set: &TaggedSet,
    batch_size: usize,
    pad: u32,
    device: &Device,
) -> Vec<Vec<String>> {
    let mut predicted: Vec<Vec<String>> = set
        .sentences
        .iter()
        .map(|(tokens, _)| vec![String::new(); tokens.len()])
        .collect();
    let n = tags.len();
    for indices in piece_batches(set, batch_size, None, 0) {
        let (batch, _, lengths) = set.batch(&indices, pad);
        let logits = model.forward(batch.bert_input(device));
        let [rows, time, _] = logits.dims();
        let scores: Vec<f32> = logits
            .narrow(1, 1, time - 1)
            .try_into_vec_as::<f32>()
            .expect("f32 scores");
        let row_scores =
            |r: usize| -> Vec<f32> { scores[r * (time - 1) * n..][..lengths[r] * n].to_vec() };
        let paths: Vec<Vec<usize>> = match &model.crf {
            Some(crf) => crf.decode(&(0..rows).map(row_scores).collect::<Vec<_>>()),
            None => (0..rows)
                .map(|r| {
                    row_scores(r)
                        .chunks(n)
                        .map(|s| (0..n).max_by(|&a, &b| s[a].total_cmp(&s[b])).expect("tags"))
                        .collect()
                })
                .collect(),
        };
        for (&piece, path) in indices.iter().zip(paths) {
            let (sentence, offset) = set.origin[piece];
            for (k, tag) in path.into_iter().enumerate() {
                predicted[sentence][offset + k] = tags[tag].clone();
            }
        }
    }
    predicted
}
