//! Token classification (NER): BERT with a softmax per token or a linear-chain CRF over the
//! tags. Sentences longer than the model's window are cut into pieces for training and
//! prediction, and the pieces' tags joined again for scoring.

use super::{EvalRequest, LossSum, Pipeline, StepLoss, Task};
use crate::data::Split;
use crate::data::batching::{BatchLimits, EpochBatches, batches_by_length};
use crate::data::labelled::{
    Example, LabelledMeta, Specials, encode_tokens, load_examples, load_tokenizer, tokenizer_path,
};
use crate::data::prepared::load_meta;
use crate::data::token_batches::TokenBatch;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::eval::entities::{self, Prf};
use crate::eval::report::{Evaluation, Predictions, Scores};
use crate::loss::cross_entropy_kept;
use crate::models::bert::{BertConfig, BertTagger};
use crate::recipe::{Recipe, TaskKind};
use crate::train::pretrained::{Pretrained, with_pretrained};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Tagging with BERT, a softmax per token or a CRF.
pub struct Tagging {
    config: BertConfig,
}

impl Tagging {
    pub fn new(config: BertConfig) -> Self {
        Self { config }
    }
}

/// Entity-level scores of a tagger on a whole split (conlleval's and seqeval's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaggingScores {
    pub entity_precision: f64,
    pub entity_recall: f64,
    pub entity_f1: f64,
    pub token_accuracy: f64,
    pub by_type: BTreeMap<String, Prf>,
    pub crf: bool,
    pub sentences: usize,
    pub tokens: usize,
}

impl Scores for TaggingScores {
    fn summary(&self) -> Option<String> {
        let gold: usize = self.by_type.values().map(|p| p.support).sum();
        let mut out = format!(
            "entities: precision {:.4} recall {:.4} F1 {:.4} ({gold} gold); token accuracy {:.4}\n",
            self.entity_precision, self.entity_recall, self.entity_f1, self.token_accuracy
        );
        for (kind, prf) in &self.by_type {
            out += &format!(
                "  {kind:<6} P {:.4} R {:.4} F1 {:.4} ({})\n",
                prf.precision, prf.recall, prf.f1, prf.support
            );
        }
        Some(out)
    }

    fn headline(&self) -> String {
        format!(
            "P {:.4}  R {:.4}  F1 {:.4}",
            self.entity_precision, self.entity_recall, self.entity_f1
        )
    }
}

impl Pipeline for Tagging {
    const KIND: TaskKind = TaskKind::Tagging;
    type Model = BertTagger;
    type Training = TaggingTask;
    type Scores = TaggingScores;

    fn init_model(&self, device: &Device) -> BertTagger {
        self.config.init_tagger(device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<TaggingTask> {
        TaggingTask::new(recipe, self.config, shard)
    }

    fn evaluate(
        &self,
        model: &BertTagger,
        request: &EvalRequest,
    ) -> Result<Evaluation<TaggingScores>> {
        let dir = request.recipe.prepared_dir();
        let meta: LabelledMeta = load_meta(&dir)?;
        let (tokenizer, specials) = load_tokenizer(&request.exp.tokenizer_path())?;
        let set = TaggedSet::load(
            &dir,
            request.split,
            &meta,
            &tokenizer,
            &specials,
            self.config.max_len,
        )?;
        let limits = BatchLimits::scoring(request.recipe, request.batch_size);
        let predicted = predict_tags(
            model,
            &meta.labels,
            &set,
            limits,
            specials.pad,
            request.device,
        );
        let gold: Vec<Vec<String>> = set.sentences.iter().map(|(_, t)| t.clone()).collect();
        let scores = entities::score(&gold, &predicted);
        // CoNLL layout: token, gold, predicted; a blank line between sentences.
        let conll: String = set
            .sentences
            .iter()
            .zip(&predicted)
            .map(|((tokens, gold), pred)| {
                let mut s: String = tokens
                    .iter()
                    .zip(gold)
                    .zip(pred)
                    .map(|((t, g), p)| format!("{t} {g} {p}\n"))
                    .collect();
                s.push('\n');
                s
            })
            .collect();
        Ok(Evaluation {
            scores: TaggingScores {
                entity_precision: scores.overall.precision,
                entity_recall: scores.overall.recall,
                entity_f1: scores.overall.f1,
                token_accuracy: scores.token_accuracy,
                by_type: scores.by_type,
                crf: self.config.crf,
                sentences: gold.len(),
                tokens: gold.iter().map(Vec::len).sum(),
            },
            variant: None,
            predictions: Some(Predictions {
                kind: "predictions",
                extension: "conll",
                text: conll,
            }),
        })
    }
}

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
                .map(|t| meta.label_id(t, dir))
                .collect::<Result<_>>()?;
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
    config: BertConfig,
    tags: Vec<String>,
    pretrained: Option<Pretrained>,
    train: TaggedSet,
    train_batches: EpochBatches,
    valid: TaggedSet,
    valid_batches: Vec<Vec<usize>>,
    pad: u32,
    label_smoothing: f64,
}

fn piece_batches(set: &TaggedSet, limits: BatchLimits, seed: u64) -> Vec<Vec<usize>> {
    let ids = &set.ids;
    batches_by_length(ids.len(), |i| ids[i].len(), |i| ids[i].len(), limits, seed)
}

impl TaggingTask {
    pub fn new(recipe: &Recipe, config: BertConfig, shard: Shard) -> Result<Self> {
        let dir = recipe.prepared_dir();
        let meta: LabelledMeta = load_meta(&dir)?;
        let (tokenizer, specials) = load_tokenizer(&tokenizer_path(&dir))?;
        let load =
            |split| TaggedSet::load(&dir, split, &meta, &tokenizer, &specials, config.max_len);
        let (train, valid) = (load(Split::Train)?, load(Split::Valid)?);
        if valid.ids.is_empty() {
            return Err(Error::Data(
                "the validation split is empty; raise `data.split.valid`".into(),
            ));
        }
        let limits = BatchLimits::per_rank(recipe, shard.count)?;
        let train_batches = piece_batches(&train, limits, recipe.seed);
        Ok(Self {
            train_batches: EpochBatches::new(
                train_batches,
                recipe.seed,
                recipe.train.accum_grad,
                shard,
            ),
            valid_batches: piece_batches(&valid, limits, recipe.seed),
            config,
            tags: meta.labels,
            pretrained: Pretrained::of(recipe)?,
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
        let model = self.config.init_tagger(device);
        with_pretrained(model, self.pretrained.as_ref())
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

    fn validation_batches(&self) -> usize {
        self.valid_batches.len()
    }

    fn validation_loss(&self, model: &BertTagger, batch: usize, device: &Device) -> LossSum {
        let indices = &self.valid_batches[batch];
        let (_, nll, items) = self.batch_loss(model, &self.valid, indices, 0.0, device);
        LossSum::of_mean(nll, items)
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
    limits: BatchLimits,
    pad: u32,
    device: &Device,
) -> Vec<Vec<String>> {
    let mut predicted: Vec<Vec<String>> = set
        .sentences
        .iter()
        .map(|(tokens, _)| vec![String::new(); tokens.len()])
        .collect();
    let n = tags.len();
    for indices in piece_batches(set, limits, 0) {
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
