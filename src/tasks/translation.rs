//! Translation: an encoder-decoder model on sentence pairs, batched by length and capped by
//! tokens, with label-smoothed cross-entropy over the target tokens (padding ignored); scored by
//! the loss and by BLEU and chrF of greedy or beam-search translations.

use super::{EvalRequest, LossSum, Pipeline, PreparedData, StepLoss, Task, TranslateRequest};
use crate::data::Split;
use crate::data::batching::{BatchLimits, EpochBatches};
use crate::data::pair_batches::{PairBatch, bucket_batches, collate};
use crate::data::parallel::{
    self, PairSet, ParallelMeta, SpecialIds, load_pair_split, load_pair_text,
};
use crate::data::prepared::{Preparation, load_meta};
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::Result;
use crate::eval::bleu::{BleuTokenizer, corpus_bleu, corpus_chrf};
use crate::eval::report::{Evaluation, Predictions, Scores};
use crate::eval::translate::translate_all;
use crate::experiment::{Experiment, SOURCE_TOKENIZER, TARGET_TOKENIZER};
use crate::loss::cross_entropy;
use crate::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
use crate::recipe::{DataSizes, Recipe, TaskKind};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Sentence pairs, a tokenizer per side; the experiment keeps both tokenizers.
pub fn prepare(recipe: &Recipe, how: Preparation) -> Result<PreparedData> {
    let prepared = how.run(recipe, parallel::prepare_pairs)?;
    let sizes = DataSizes {
        vocab: prepared.meta.source_vocab_size,
        target_vocab: prepared.meta.target_vocab_size,
        labels: Vec::new(),
    };
    let dir = prepared.dir.clone();
    Ok(PreparedData::new(prepared, sizes, ParallelMeta::describe)
        .with_artefact(parallel::source_tokenizer_path(&dir), SOURCE_TOKENIZER)
        .with_artefact(parallel::target_tokenizer_path(&dir), TARGET_TOKENIZER))
}

/// Translation with the encoder-decoder of configuration `C`.
pub struct Translation<C> {
    config: C,
}

impl<C: Seq2SeqConfig> Translation<C> {
    pub fn new(config: C) -> Self {
        Self { config }
    }
}

/// The scores of a translation model on a whole split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranslationScores {
    /// Mean negative log-likelihood per target token (teacher-forced).
    pub loss: f64,
    pub perplexity: f64,
    pub target_tokens: usize,
    pub sentences: usize,
    pub bleu: f64,
    pub bleu_precisions: Vec<f64>,
    pub bleu_brevity_penalty: f64,
    pub bleu_sys_len: usize,
    pub bleu_ref_len: usize,
    pub bleu_signature: String,
    pub chrf: f64,
    pub beam: usize,
    pub lenpen: f64,
    pub length_penalty: String,
    pub decode_seconds: f64,
    pub sentences_per_second: f64,
}

impl Scores for TranslationScores {
    fn headline(&self) -> String {
        format!(
            "beam {}  BLEU {:5.2}  chrF {:5.2}  loss {:.3}  decoding {:.1} s",
            self.beam, self.bleu, self.chrf, self.loss, self.decode_seconds
        )
    }
}

/// The experiment's two tokenizers and their special ids.
struct Tokenizers {
    source: TextTokenizer,
    target: TextTokenizer,
    ids: (SpecialIds, SpecialIds),
}

impl Tokenizers {
    fn load(exp: &Experiment) -> Result<Self> {
        let source = TextTokenizer::load(&exp.file(SOURCE_TOKENIZER))?;
        let target = TextTokenizer::load(&exp.file(TARGET_TOKENIZER))?;
        let ids = (SpecialIds::of(&source)?, SpecialIds::of(&target)?);
        Ok(Self {
            source,
            target,
            ids,
        })
    }
}

impl<C: Seq2SeqConfig> Pipeline for Translation<C> {
    const KIND: TaskKind = TaskKind::Translation;
    type Model = C::Model;
    type Training = TranslationTask<C>;
    type Scores = TranslationScores;

    fn init_model(&self, device: &Device) -> C::Model {
        self.config.init(device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<TranslationTask<C>> {
        TranslationTask::new(recipe, self.config, shard)
    }

    fn evaluate(
        &self,
        model: &C::Model,
        request: &EvalRequest,
    ) -> Result<Evaluation<TranslationScores>> {
        let (recipe, device, split) = (request.recipe, request.device, request.split);
        let dir = recipe.prepared_dir();
        for (prepared, name) in [
            (parallel::source_tokenizer_path(&dir), SOURCE_TOKENIZER),
            (parallel::target_tokenizer_path(&dir), TARGET_TOKENIZER),
        ] {
            super::check_same_tokenizer(&prepared, &request.exp.file(name))?;
        }
        let tokenizers = Tokenizers::load(request.exp)?;
        let meta: ParallelMeta = load_meta(&dir)?;
        let set = load_pair_split(&dir, &meta, split)?;
        let texts = load_pair_text(&dir, split)?;
        let limits = BatchLimits::scoring(recipe, request.batch_size);
        let mut sum = LossSum::default();
        for batch in bucket_batches(&set, limits, recipe.seed) {
            sum += pair_nll(model, &set, &batch, tokenizers.ids, device);
        }
        let started = std::time::Instant::now();
        let (s, t) = tokenizers.ids;
        let outputs = translate_all(model, &set.sources, s, t, &request.decode, device);
        let decode_seconds = started.elapsed().as_secs_f64();
        let hypotheses: Vec<String> = outputs
            .iter()
            .map(|ids| tokenizers.target.decode_text(ids))
            .collect::<Result<_>>()?;
        let references: Vec<String> = texts.into_iter().map(|(_, t)| t).collect();
        let target_lang = recipe
            .data
            .parallel
            .as_ref()
            .map_or("", |p| p.target_lang.as_str());
        let tokenizer = request
            .bleu_tokenizer
            .unwrap_or_else(|| BleuTokenizer::for_language(target_lang));
        let bleu = corpus_bleu(&hypotheses, &references, tokenizer);
        let decode = &request.decode;
        let scores = TranslationScores {
            loss: sum.mean(),
            perplexity: sum.mean().exp(),
            target_tokens: sum.count as usize,
            sentences: hypotheses.len(),
            bleu: bleu.score,
            bleu_precisions: bleu.precisions.to_vec(),
            bleu_brevity_penalty: bleu.brevity_penalty,
            bleu_sys_len: bleu.sys_len,
            bleu_ref_len: bleu.ref_len,
            bleu_signature: format!(
                "nrefs:1|case:mixed|eff:no|tok:{}|smooth:exp|version:2.5.1",
                tokenizer.name()
            ),
            chrf: corpus_chrf(&hypotheses, &references),
            beam: decode.beam,
            lenpen: decode.alpha,
            length_penalty: format!("{:?}", decode.length_penalty).to_lowercase(),
            decode_seconds,
            sentences_per_second: hypotheses.len() as f64 / decode_seconds,
        };
        Ok(Evaluation {
            scores,
            variant: Some(format!("beam{}", decode.beam)),
            predictions: Some(Predictions {
                kind: "translations",
                extension: "txt",
                text: hypotheses.join("\n") + "\n",
            }),
        })
    }

    /// An empty line stays empty.
    fn translate(&self, model: &C::Model, request: &TranslateRequest) -> Result<Vec<String>> {
        let tokenizers = Tokenizers::load(request.exp)?;
        let lines: Vec<&str> = request.lines.iter().map(|l| l.trim()).collect();
        let sources = tokenizers.source.encode_lines(&lines)?;
        let (s, t) = tokenizers.ids;
        let outputs = translate_all(model, &sources, s, t, &request.decode, request.device);
        outputs
            .iter()
            .zip(&lines)
            .map(|(ids, line)| match line.is_empty() {
                true => Ok(String::new()),
                false => tokenizers.target.decode_text(ids),
            })
            .collect()
    }
}

pub struct TranslationTask<C: Seq2SeqConfig> {
    config: C,
    meta: ParallelMeta,
    train: PairSet,
    train_batches: EpochBatches,
    valid: PairSet,
    valid_batches: Vec<Vec<usize>>,
    label_smoothing: f64,
}

impl<C: Seq2SeqConfig> TranslationTask<C> {
    pub fn new(recipe: &Recipe, config: C, shard: Shard) -> Result<Self> {
        let dir = recipe.prepared_dir();
        let meta: ParallelMeta = load_meta(&dir)?;
        let train = load_pair_split(&dir, &meta, Split::Train)?;
        let valid = load_pair_split(&dir, &meta, Split::Valid)?;
        let limits = BatchLimits::per_rank(recipe, shard.count)?;
        let train_batches = bucket_batches(&train, limits, recipe.seed);
        let valid_batches = bucket_batches(&valid, limits, recipe.seed);
        Ok(Self {
            config,
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
            meta,
        })
    }

    fn specials(&self) -> (SpecialIds, SpecialIds) {
        (self.meta.source_specials, self.meta.target_specials)
    }
}

/// `(loss, nll)` of one batch: means over its real target tokens.
fn pair_loss<M: Seq2Seq>(
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

/// The summed negative log-likelihood of the target tokens of one batch of pairs.
fn pair_nll<M: Seq2Seq>(
    model: &M,
    set: &PairSet,
    indices: &[usize],
    ids: (SpecialIds, SpecialIds),
    device: &Device,
) -> LossSum {
    let batch = collate(set, indices, ids.0, ids.1);
    let (_, nll) = pair_loss(model, &batch, ids, 0.0, device);
    LossSum::of_mean(nll, batch.target_tokens)
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

    fn init_model(&self, device: &Device, _load_pretrained: bool) -> Result<C::Model> {
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

    fn validation_batches(&self) -> usize {
        self.valid_batches.len()
    }

    fn validation_loss(&self, model: &C::Model, batch: usize, device: &Device) -> LossSum {
        let indices = &self.valid_batches[batch];
        pair_nll(model, &self.valid, indices, self.specials(), device)
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
