//! Token classification (NER): BERT with a softmax per token or a linear-chain CRF over the
//! tags. A corpus token may be several sub-tokens (a pretrained tokenizer's pieces); its tag is
//! learnt and predicted at its first. Sentences longer than the model's window are cut into
//! pieces between tokens for training and prediction, and the pieces' tags joined again for
//! scoring, one per corpus token.

use super::{EvalRequest, ExplainRequest, LossSum, Pipeline, StepLoss, Task};
use crate::data::Split;
use crate::data::batching::{BatchLimits, EpochBatches, batches_by_length};
use crate::data::labelled::{
    Example, LabelledMeta, Specials, TokenAlignment, TokenIds, alignment, encode_tokens,
    load_examples, load_tokenizer, tokenizer_path,
};
use crate::data::prepared::load_meta;
use crate::data::token_batches::TokenBatch;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::eval::entities::{self, Prf};
use crate::eval::explain::{Explained, Method, grad_x_input, integrated_gradients};
use crate::eval::report::{Evaluation, Predictions, Scores};
use crate::loss::cross_entropy_kept;
use crate::models::bert::{BertConfig, BertTagger};
use crate::models::classifier::{MultiSampleDropout, multi_sample_loss};
use crate::recipe::{Recipe, TaskKind};
use crate::train::pretrained::{Pretrained, with_pretrained};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
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

    fn explain(&self, model: &BertTagger, request: &ExplainRequest) -> Result<Vec<Explained>> {
        explain_sentences(&self.config, model, request)
    }
}

/// A line to explain as corpus tokens: split at whitespace, or into characters when it has
/// none (a Chinese sentence, as the MSRA corpus tokenizes it).
fn line_tokens(text: &str) -> Vec<String> {
    if text.trim().contains(char::is_whitespace) {
        text.split_whitespace().map(str::to_string).collect()
    } else {
        text.trim().chars().map(String::from).collect()
    }
}

/// `nlpkit explain` for a tagger. The score is the log-probability of the predicted tag
/// sequence: with a softmax the sum over tokens of each predicted tag's log-probability, with
/// the CRF the path's log p(tags | text) (its score minus the log-partition). A line longer than
/// the model's window is cut to its first window.
fn explain_sentences(
    config: &BertConfig,
    model: &BertTagger,
    request: &ExplainRequest,
) -> Result<Vec<Explained>> {
    if request.options.target.is_some() {
        return Err(Error::Usage(
            "--target names a classifier's label; a tagger's target is its predicted tag \
             sequence (leave --target out)"
                .into(),
        ));
    }
    if request.options.methods == [Method::Occlusion] {
        return Err(Error::Usage(
            "--method occlusion is for classifiers (removing a token changes a tagger's \
             output length); use grad_x_input or integrated_gradients"
                .into(),
        ));
    }
    let tags = request.labels()?;
    let n = tags.len();
    let (tokenizer, specials) = load_tokenizer(&request.exp.tokenizer_path())?;
    let how = alignment(request.recipe);
    let device = request.device;
    let window = config.max_len - 2;
    let mut out = Vec::with_capacity(request.texts.len());
    for (line, text) in request.texts {
        let tokens = line_tokens(text);
        let encoded = encode_tokens(&tokenizer, &tokens, specials.unk, how)?;
        let range = token_windows(&encoded, window)
            .into_iter()
            .next()
            .unwrap_or(0..0);
        if range.end < tokens.len() {
            log::warn!(
                "line {line}: {} tokens, more than the model's window; explaining the first {}",
                tokens.len(),
                range.end
            );
        }
        let mut piece = vec![specials.cls];
        let mut shown = vec![tokenizer.id_to_token(specials.cls)];
        let mut firsts = Vec::new();
        for t in range.clone() {
            firsts.push(piece.len() as i64);
            let ids = &encoded.of(t)[..encoded.of(t).len().min(window)];
            piece.extend(ids);
            match how {
                TokenAlignment::Whole => shown.push(tokens[t].clone()),
                TokenAlignment::FirstSubToken => {
                    shown.extend(ids.iter().map(|&id| tokenizer.id_to_token(id)))
                }
            }
        }
        piece.push(specials.sep);
        shown.push(tokenizer.id_to_token(specials.sep));
        let length = firsts.len();
        let input = |rows: usize| {
            TokenBatch::pad(&vec![piece.as_slice(); rows], None, specials.pad, 1).bert_input(device)
        };
        let firsts_index = Tensor::<1, Int>::from_data(firsts.as_slice(), device);
        let emissions = |logits: Tensor<3>| logits.select(1, firsts_index.clone());
        let scores = emissions(model.forward(input(1)))
            .try_into_vec_as::<f32>()
            .expect("f32 scores");
        let path: Vec<usize> = match &model.crf {
            Some(crf) => crf.decode(&[scores]).remove(0),
            None => scores
                .chunks(n)
                .map(|s| (0..n).max_by(|&a, &b| s[a].total_cmp(&s[b])).expect("tags"))
                .collect(),
        };
        let path_ids: Vec<i64> = path.iter().map(|&t| t as i64).collect();
        let score = |x: Tensor<3>| -> Tensor<1> {
            let rows = x.dims()[0];
            let e = emissions(model.forward_embedded(x, input(rows)));
            let path = Tensor::<1, Int>::from_data(path_ids.as_slice(), device)
                .reshape([1, length])
                .expand([rows, length]);
            match &model.crf {
                // The CRF's loss is the mean over rows of -log p(path): times -rows, the sum.
                Some(crf) => crf
                    .neg_log_likelihood(e, path, &vec![length; rows])
                    .mul_scalar(-(rows as f64)),
                None => log_softmax(e, 2).gather(2, path.unsqueeze_dim(2)).sum(),
            }
        };
        let x = model.bert.embed(input(1).ids);
        let log_p = crate::eval::explain::score_of(&score, x.clone());
        let mut columns = Vec::new();
        let mut completeness_gap = None;
        for method in Method::expand(&request.options.methods) {
            match method {
                Method::GradXInput => {
                    columns.push((method.name(), grad_x_input(&score, x.clone())))
                }
                Method::IntegratedGradients => {
                    let (attr, gap) =
                        integrated_gradients(&score, x.clone(), request.options.steps);
                    completeness_gap = Some(gap);
                    columns.push((method.name(), attr));
                }
                Method::Occlusion | Method::All => {}
            }
        }
        let mut token_labels = vec![String::new(); piece.len()];
        for (&p, &t) in firsts.iter().zip(&path) {
            token_labels[p as usize] = tags[t].clone();
        }
        let predicted: Vec<&str> = path.iter().map(|&t| tags[t].as_str()).collect();
        out.push(Explained {
            line: *line,
            tokens: shown,
            label: predicted.join(" "),
            token_labels: Some(token_labels),
            probability: log_p.exp(),
            columns,
            completeness_gap,
        });
    }
    Ok(out)
}

/// Tagged sentences, encoded and cut into pieces that fit the model.
#[derive(Default)]
pub struct TaggedSet {
    /// Per piece: `[CLS] sub-tokens [SEP]`.
    pub ids: Vec<Vec<u32>>,
    /// Per piece: the position in `ids` of each of its tokens' first sub-token.
    pub firsts: Vec<Vec<usize>>,
    /// Per piece: a tag id per token.
    pub tags: Vec<Vec<usize>>,
    /// Per piece: its sentence and the offset of its first token there.
    pub origin: Vec<(usize, usize)>,
    /// The sentences' tokens and gold tags.
    pub sentences: Vec<(Vec<String>, Vec<String>)>,
    /// Sub-tokens (before any cut to the window) and corpus tokens, over all sentences.
    pub sub_tokens: usize,
    pub tokens: usize,
}

/// The tokens of each piece of a sentence: consecutive runs whose sub-tokens fit `window`,
/// cut between tokens only, so a token's sub-tokens stay together and its first keeps its
/// context. A token longer than the window on its own gets a piece of its own (and is cut there
/// to its first `window` sub-tokens). With one id per token, pieces of `window` tokens.
pub fn token_windows(tokens: &TokenIds, window: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for i in 0..tokens.tokens() {
        let n = tokens.of(i).len().min(window);
        if used + n > window && i > start {
            out.push(start..i);
            (start, used) = (i, 0);
        }
        used += n;
    }
    if start < tokens.tokens() {
        out.push(start..tokens.tokens());
    }
    out
}

/// A padded batch of pieces and what the tags are read against.
struct TagBatch {
    tokens: TokenBatch,
    /// Rows × `width` tag ids, padded with 0.
    tags: Vec<i64>,
    width: usize,
    /// Corpus tokens per row.
    lengths: Vec<usize>,
    /// Rows × `width` positions in the flattened `[rows * time]` logits of each token's first
    /// sub-token (padding slots at their row's `[CLS]`, masked by `lengths`); `None` when every
    /// token is one id, where the tokens are positions `1..` and a narrow does.
    firsts: Option<Vec<i64>>,
}

impl TagBatch {
    /// `[rows, width, tags]`: the logits at each token's first sub-token. The CRF and the
    /// softmax both see these only: the CRF's transitions then link consecutive corpus tokens,
    /// as the tags do, instead of passing through sub-tokens that have no tag (HF's CRF taggers
    /// gather first sub-tokens the same way), and for the softmax it is HF's -100 on the other
    /// sub-tokens. Gathered on the device, so the gradient flows back to the first sub-tokens.
    fn emissions(&self, logits: Tensor<3>, device: &Device) -> Tensor<3> {
        let [rows, time, n] = logits.dims();
        match &self.firsts {
            None => logits.narrow(1, 1, time - 1),
            Some(firsts) => {
                let index = Tensor::<1, Int>::from_data(firsts.as_slice(), device);
                logits
                    .reshape([rows * time, n])
                    .select(0, index)
                    .reshape([rows, self.width, n])
            }
        }
    }
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
        let mut set = TaggedSet::default();
        let window = max_len - 2;
        for (s, example) in load_examples(dir, split)?.into_iter().enumerate() {
            let Example::Tagged { tokens, tags } = example else {
                return Err(Error::Data(format!(
                    "{} does not hold tagged sentences; prepare the data again",
                    dir.display()
                )));
            };
            let encoded = encode_tokens(tokenizer, &tokens, specials.unk, meta.alignment)?;
            let tag_ids: Vec<usize> = tags
                .iter()
                .map(|t| meta.label_id(t, dir))
                .collect::<Result<_>>()?;
            set.push_pieces(s, &encoded, &tag_ids, window, specials);
            set.sentences.push((tokens, tags));
        }
        Ok(set)
    }

    /// Sentence `s`'s pieces: `[CLS] sub-tokens [SEP]` of each of its windows.
    fn push_pieces(
        &mut self,
        s: usize,
        encoded: &TokenIds,
        tag_ids: &[usize],
        window: usize,
        specials: &Specials,
    ) {
        for range in token_windows(encoded, window) {
            let mut piece = vec![specials.cls];
            let mut firsts = Vec::with_capacity(range.len());
            for t in range.clone() {
                firsts.push(piece.len());
                let ids = encoded.of(t);
                piece.extend(&ids[..ids.len().min(window)]);
            }
            piece.push(specials.sep);
            self.ids.push(piece);
            self.firsts.push(firsts);
            self.tags.push(tag_ids[range.clone()].to_vec());
            self.origin.push((s, range.start));
        }
        self.sub_tokens += encoded.ids.len();
        self.tokens += encoded.tokens();
    }

    fn batch(&self, indices: &[usize], pad: u32) -> TagBatch {
        let seqs: Vec<&[u32]> = indices.iter().map(|&i| self.ids[i].as_slice()).collect();
        let tokens = TokenBatch::pad(&seqs, None, pad, 1);
        let time = tokens.time;
        let lengths: Vec<usize> = indices.iter().map(|&i| self.tags[i].len()).collect();
        let one_id_each = indices
            .iter()
            .all(|&i| self.firsts[i].iter().enumerate().all(|(k, &p)| p == k + 1));
        // Tags at the tokens (1.. after [CLS] when each is one id), padded with tag 0.
        let width = if one_id_each {
            time - 1
        } else {
            lengths.iter().copied().max().unwrap_or(0)
        };
        let mut tags = vec![0i64; indices.len() * width];
        for (row, &i) in indices.iter().enumerate() {
            for (t, &tag) in self.tags[i].iter().enumerate() {
                tags[row * width + t] = tag as i64;
            }
        }
        let firsts = (!one_id_each).then(|| {
            let mut firsts = vec![0i64; indices.len() * width];
            for (row, &i) in indices.iter().enumerate() {
                let base = row * time;
                firsts[row * width..][..width].fill(base as i64);
                for (t, &p) in self.firsts[i].iter().enumerate() {
                    firsts[row * width + t] = (base + p) as i64;
                }
            }
            firsts
        });
        TagBatch {
            tokens,
            tags,
            width,
            lengths,
            firsts,
        }
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

    /// `(loss, nll, items)`: per token for the softmax, per sentence piece for the CRF;
    /// `samples` of the head's dropout averaged (multi-sample dropout: one encoder pass, the
    /// per-sample softmax losses or CRF NLLs of the emissions averaged; 1 in validation).
    fn batch_loss(
        &self,
        model: &BertTagger,
        set: &TaggedSet,
        indices: &[usize],
        (smoothing, samples): (f64, usize),
        device: &Device,
    ) -> (Tensor<1>, Tensor<1>, usize) {
        let batch = set.batch(indices, self.pad);
        let hidden = model.bert.forward(batch.tokens.bert_input(device));
        let (rows, width) = (batch.lengths.len(), batch.width);
        let lengths = &batch.lengths;
        let tags =
            Tensor::<1, Int>::from_data(batch.tags.as_slice(), device).reshape([rows, width]);
        let keep = model.crf.is_none().then(|| {
            let keep: Vec<f32> = lengths
                .iter()
                .flat_map(|&l| (0..width).map(move |t| if t < l { 1.0 } else { 0.0 }))
                .collect();
            Tensor::<1>::from_floats(keep.as_slice(), device)
        });
        let (loss, nll) = multi_sample_loss(hidden, model.head(), samples, |logits| {
            let emissions = batch.emissions(logits, device);
            match &model.crf {
                Some(crf) => {
                    let nll = crf.neg_log_likelihood(emissions, tags.clone(), lengths);
                    (nll.clone(), nll)
                }
                None => {
                    let n = emissions.dims()[2];
                    cross_entropy_kept(
                        emissions.reshape([rows * width, n]),
                        tags.clone().reshape([rows * width]),
                        smoothing,
                        keep.clone(),
                    )
                }
            }
        });
        let items = match &model.crf {
            Some(_) => rows,
            None => lengths.iter().sum(),
        };
        (loss, nll, items)
    }
}

impl Task for TaggingTask {
    type Model = BertTagger;

    fn init_model(&self, device: &Device, load_pretrained: bool) -> Result<BertTagger> {
        let model = self.config.init_tagger(device);
        with_pretrained(model, self.pretrained.as_ref().filter(|_| load_pretrained))
    }

    fn train_loss(
        &self,
        model: &BertTagger,
        step: usize,
        micro: usize,
        device: &Device,
    ) -> StepLoss {
        let (indices, _) = self.train_batches.at(step, micro);
        let samples = MultiSampleDropout::samples(self.config.multi_sample_dropout.as_ref());
        let (loss, nll, _) = self.batch_loss(
            model,
            &self.train,
            indices,
            (self.label_smoothing, samples),
            device,
        );
        StepLoss::single(loss, nll)
    }

    fn validation_batches(&self) -> usize {
        self.valid_batches.len()
    }

    fn validation_loss(&self, model: &BertTagger, batch: usize, device: &Device) -> LossSum {
        let indices = &self.valid_batches[batch];
        let (_, nll, items) = self.batch_loss(model, &self.valid, indices, (0.0, 1), device);
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
        let sub_tokens = match self.train.sub_tokens {
            n if n == self.train.tokens => String::new(),
            n => format!(
                ", {:.2} sub-tokens per token",
                n as f64 / self.train.tokens.max(1) as f64
            ),
        };
        format!(
            "~{:.0} sentences, {} tags, {}{sub_tokens}",
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
        let batch = set.batch(&indices, pad);
        let logits = model.forward(batch.tokens.bert_input(device));
        let (rows, width, lengths) = (indices.len(), batch.width, &batch.lengths);
        let scores: Vec<f32> = batch
            .emissions(logits, device)
            .try_into_vec_as::<f32>()
            .expect("f32 scores");
        let row_scores =
            |r: usize| -> Vec<f32> { scores[r * width * n..][..lengths[r] * n].to_vec() };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens of `sizes[i]` sub-tokens each (ids counting up from 10).
    fn token_ids(sizes: &[usize]) -> TokenIds {
        let mut out = TokenIds {
            ids: vec![],
            starts: vec![],
        };
        for &n in sizes {
            let base = out.ids.len();
            out.starts.push(base);
            out.ids.extend((0..n).map(|k| (10 + base + k) as u32));
        }
        out
    }

    #[test]
    fn windows_count_sub_tokens_and_never_split_a_token() {
        // One id per token: windows of `window` tokens, as before sub-tokens.
        assert_eq!(token_windows(&token_ids(&[1; 7]), 3), [0..3, 3..6, 6..7]);
        // 2 + 2 fit 5, the next 3 does not; a token longer than the window goes alone.
        let sizes = [2, 2, 3, 1, 1, 9, 1];
        assert_eq!(
            token_windows(&token_ids(&sizes), 5),
            [0..2, 2..5, 5..6, 6..7]
        );
    }

    #[test]
    fn the_tags_are_read_at_each_tokens_first_sub_token() {
        let window = 4;
        let sentences = [vec![2, 1, 3, 1], vec![1, 1]];
        let mut set = TaggedSet::default();
        let specials = Specials {
            pad: 0,
            unk: 1,
            cls: 2,
            sep: 3,
            mask: 4,
        };
        for (s, sizes) in sentences.iter().enumerate() {
            let tags: Vec<usize> = (0..sizes.len()).collect();
            set.push_pieces(s, &token_ids(sizes), &tags, window, &specials);
        }
        assert_eq!((set.sub_tokens, set.tokens), (9, 6));
        // Pieces: [2 1] and [3 1] of the first sentence, [1 1] of the second.
        assert_eq!(set.firsts, [vec![1, 3], vec![1, 4], vec![1, 2]]);
        let batch = set.batch(&[0, 1, 2], 0);
        assert_eq!(batch.width, 2);
        assert_eq!(batch.lengths, [2, 2, 2]);
        // Logits whose value is the row's id at that position: the emissions are the first
        // sub-tokens' ids, one per corpus token.
        let device = Device::flex();
        let time = batch.tokens.time;
        let values: Vec<f32> = (0..3)
            .flat_map(|r: usize| {
                let ids = &set.ids[r];
                (0..time).map(move |p| ids.get(p).map_or(-1.0, |&id| id as f32))
            })
            .collect();
        let logits = Tensor::<1>::from_floats(values.as_slice(), &device).reshape([3, time, 1]);
        let emissions: Vec<f32> = batch
            .emissions(logits, &device)
            .try_into_vec_as::<f32>()
            .unwrap();
        let first_ids = |sizes: &[usize], from: usize| -> Vec<f32> {
            let e = token_ids(sizes);
            e.at_firsts(&e.ids)[from..][..2]
                .iter()
                .map(|&i| i as f32)
                .collect()
        };
        let expected: Vec<f32> = [
            first_ids(&sentences[0], 0),
            first_ids(&sentences[0], 2),
            first_ids(&sentences[1], 0),
        ]
        .concat();
        assert_eq!(emissions, expected);

        // One id per token: the tokens are positions 1.. and no gather is needed.
        let batch = set.batch(&[2], 0);
        assert!(batch.firsts.is_none());
        assert_eq!(batch.width, batch.tokens.time - 1);
    }
}
