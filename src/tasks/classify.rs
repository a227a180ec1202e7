//! Text classification: TextCNN or BERT (fine-tuned from a pretraining experiment or from
//! scratch) on labelled texts, cross-entropy over the labels, batches of similar length; scored
//! by accuracy, per-label and macro precision/recall/F1 and the confusion matrix.

use super::{EvalRequest, LossSum, Pipeline, StepLoss, Task};
use crate::data::Split;
use crate::data::batching::{BatchLimits, EpochBatches, batches_by_length};
use crate::data::labelled::{
    Example, LabelledMeta, Specials, load_examples, load_tokenizer, tokenizer_path,
};
use crate::data::prepared::load_meta;
use crate::data::token_batches::TokenBatch;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::eval::classification::{self, ClassificationScores};
use crate::eval::report::{Evaluation, Predictions, Scores};
use crate::loss::cross_entropy;
use crate::models::classifier::{ClassifierConfig, MultiSampleDropout, multi_sample_loss};
use crate::recipe::{Recipe, TaskKind};
use crate::train::pretrained::{Pretrained, with_pretrained};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Classification with the classifier of configuration `S`.
pub struct Classification<S> {
    spec: S,
}

impl<S: ClassifierConfig> Classification<S> {
    pub fn new(spec: S) -> Self {
        Self { spec }
    }
}

/// The scores of a classifier on a whole split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifyScores {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub by_label: Vec<LabelScores>,
    pub labels: Vec<String>,
    /// `confusion[gold][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub texts: usize,
    pub texts_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelScores {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

impl ClassifyScores {
    fn new(scores: ClassificationScores, labels: &[String], texts: usize, seconds: f64) -> Self {
        Self {
            accuracy: scores.accuracy,
            macro_f1: scores.macro_f1,
            macro_precision: scores.macro_precision,
            macro_recall: scores.macro_recall,
            by_label: scores
                .by_label
                .iter()
                .map(|(label, p)| LabelScores {
                    label: label.clone(),
                    precision: p.precision,
                    recall: p.recall,
                    f1: p.f1,
                    support: p.support,
                })
                .collect(),
            labels: labels.to_vec(),
            confusion: scores.confusion,
            texts,
            texts_per_s: texts as f64 / seconds,
        }
    }
}

impl Scores for ClassifyScores {
    fn summary(&self) -> Option<String> {
        let mut out = format!(
            "accuracy {:.4}, macro-F1 {:.4} over {} texts ({:.0} texts/s)\n",
            self.accuracy, self.macro_f1, self.texts, self.texts_per_s
        );
        for l in &self.by_label {
            out += &format!(
                "  {:<8} P {:.4} R {:.4} F1 {:.4} ({})\n",
                l.label, l.precision, l.recall, l.f1, l.support
            );
        }
        Some(out + &classification::confusion_table(&self.labels, &self.confusion))
    }

    fn headline(&self) -> String {
        format!(
            "accuracy {:.4}  macro-F1 {:.4}",
            self.accuracy, self.macro_f1
        )
    }
}

impl<S: ClassifierConfig> Pipeline for Classification<S> {
    const KIND: TaskKind = TaskKind::Classification;
    type Model = S::Model;
    type Training = ClassifyTask<S>;
    type Scores = ClassifyScores;

    fn init_model(&self, device: &Device) -> S::Model {
        self.spec.init(device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<ClassifyTask<S>> {
        ClassifyTask::new(recipe, self.spec, shard)
    }

    fn evaluate(
        &self,
        model: &S::Model,
        request: &EvalRequest,
    ) -> Result<Evaluation<ClassifyScores>> {
        let dir = request.recipe.prepared_dir();
        let meta: LabelledMeta = load_meta(&dir)?;
        let (tokenizer, specials) = load_tokenizer(&request.exp.tokenizer_path())?;
        let set = LabelledSet::load(
            &self.spec,
            &dir,
            request.split,
            &meta,
            &tokenizer,
            &specials,
        )?;
        if set.ids.is_empty() {
            return Err(Error::Data(format!(
                "the {} split is empty",
                request.split.name()
            )));
        }
        let started = std::time::Instant::now();
        let limits = BatchLimits::scoring(request.recipe, request.batch_size);
        let predicted = predict(
            &self.spec,
            model,
            &set,
            limits,
            specials.pad,
            request.device,
        );
        let seconds = started.elapsed().as_secs_f64();
        let scores = classification::score(&meta.labels, &set.labels, &predicted);
        let rows: String = set
            .texts
            .iter()
            .zip(&set.labels)
            .zip(&predicted)
            .map(|((text, &g), &p)| {
                let text = text.replace(['\t', '\n'], " ");
                format!("{}\t{}\t{text}\n", meta.labels[g], meta.labels[p])
            })
            .collect();
        Ok(Evaluation {
            scores: ClassifyScores::new(scores, &meta.labels, set.labels.len(), seconds),
            variant: None,
            predictions: Some(Predictions {
                kind: "predictions",
                extension: "tsv",
                text: format!("gold\tpredicted\ttext\n{rows}"),
            }),
        })
    }
}

/// Token ids of `text`, cut to fit `max_len` with `[CLS]`/`[SEP]` when the model wants them.
pub fn encode_texts(
    tokenizer: &TextTokenizer,
    texts: &[&str],
    max_len: usize,
    cls_sep: Option<&Specials>,
) -> Result<Vec<Vec<u32>>> {
    let encoded = tokenizer.encode_lines(texts)?;
    Ok(encoded
        .into_iter()
        .map(|mut ids| match cls_sep {
            Some(s) => {
                ids.truncate(max_len - 2);
                let mut out = Vec::with_capacity(ids.len() + 2);
                out.push(s.cls);
                out.extend(ids);
                out.push(s.sep);
                out
            }
            None => {
                ids.truncate(max_len);
                ids
            }
        })
        .collect())
}

/// Encoded texts with their label ids.
pub struct LabelledSet {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<usize>,
    pub texts: Vec<String>,
}

impl LabelledSet {
    pub fn load<S: ClassifierConfig>(
        spec: &S,
        dir: &Path,
        split: Split,
        meta: &LabelledMeta,
        tokenizer: &TextTokenizer,
        specials: &Specials,
    ) -> Result<Self> {
        let mut texts = Vec::new();
        let mut labels = Vec::new();
        for example in load_examples(dir, split)? {
            let Example::Labelled { text, label } = example else {
                return Err(Error::Data(format!(
                    "{} does not hold labelled texts; prepare the data again",
                    dir.display()
                )));
            };
            labels.push(meta.label_id(&label, dir)?);
            texts.push(text);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let cls_sep = spec.wraps_in_cls_sep().then_some(specials);
        let ids = encode_texts(tokenizer, &refs, spec.max_len(), cls_sep)?;
        Ok(Self { ids, labels, texts })
    }

    pub fn batch(&self, indices: &[usize], pad: u32, min_len: usize) -> (TokenBatch, Vec<i64>) {
        let seqs: Vec<&[u32]> = indices.iter().map(|&i| self.ids[i].as_slice()).collect();
        let labels = indices.iter().map(|&i| self.labels[i] as i64).collect();
        (TokenBatch::pad(&seqs, None, pad, min_len), labels)
    }
}

/// Texts of similar length batched together, within `limits`.
pub fn length_batches(ids: &[Vec<u32>], limits: BatchLimits, seed: u64) -> Vec<Vec<usize>> {
    batches_by_length(ids.len(), |i| ids[i].len(), |i| ids[i].len(), limits, seed)
}

pub struct ClassifyTask<S: ClassifierConfig> {
    spec: S,
    pretrained: Option<Pretrained>,
    train: LabelledSet,
    train_batches: EpochBatches,
    valid: LabelledSet,
    valid_batches: Vec<Vec<usize>>,
    num_labels: usize,
    pad: u32,
    label_smoothing: f64,
}

impl<S: ClassifierConfig> ClassifyTask<S> {
    pub fn new(recipe: &Recipe, spec: S, shard: Shard) -> Result<Self> {
        let dir = recipe.prepared_dir();
        let meta: LabelledMeta = load_meta(&dir)?;
        let (tokenizer, specials) = load_tokenizer(&tokenizer_path(&dir))?;
        let train = LabelledSet::load(&spec, &dir, Split::Train, &meta, &tokenizer, &specials)?;
        let valid = LabelledSet::load(&spec, &dir, Split::Valid, &meta, &tokenizer, &specials)?;
        if valid.ids.is_empty() {
            return Err(Error::Data(
                "the validation split is empty; raise `data.split.valid`".into(),
            ));
        }
        let limits = BatchLimits::per_rank(recipe, shard.count)?;
        let train_batches = length_batches(&train.ids, limits, recipe.seed);
        Ok(Self {
            train_batches: EpochBatches::new(
                train_batches,
                recipe.seed,
                recipe.train.accum_grad,
                shard,
            ),
            valid_batches: length_batches(&valid.ids, limits, recipe.seed),
            spec,
            pretrained: Pretrained::of(recipe)?,
            train,
            valid,
            num_labels: meta.labels.len(),
            pad: specials.pad,
            label_smoothing: recipe.loss.label_smoothing,
        })
    }

    /// `(loss, nll)` of a batch; `samples` of the head's dropout averaged (multi-sample
    /// dropout; 1 in validation, where dropout is off and every sample would be the same).
    fn batch_loss(
        &self,
        model: &S::Model,
        set: &LabelledSet,
        indices: &[usize],
        (smoothing, samples): (f64, usize),
        device: &Device,
    ) -> (Tensor<1>, Tensor<1>) {
        let (batch, labels) = set.batch(indices, self.pad, self.spec.min_len());
        let features = S::features(model, batch.text_batch(device));
        let targets = Tensor::<1, Int>::from_data(labels.as_slice(), device);
        multi_sample_loss(features, S::head(model), samples, |logits| {
            cross_entropy(logits, targets.clone(), smoothing, None)
        })
    }
}

impl<S: ClassifierConfig> Task for ClassifyTask<S> {
    type Model = S::Model;

    fn init_model(&self, device: &Device, load_pretrained: bool) -> Result<S::Model> {
        with_pretrained(
            self.spec.init(device),
            self.pretrained.as_ref().filter(|_| load_pretrained),
        )
    }

    fn train_loss(&self, model: &S::Model, step: usize, micro: usize, device: &Device) -> StepLoss {
        let (indices, _) = self.train_batches.at(step, micro);
        let samples = MultiSampleDropout::samples(self.spec.multi_sample_dropout().as_ref());
        let (loss, nll) = self.batch_loss(
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

    fn validation_loss(&self, model: &S::Model, batch: usize, device: &Device) -> LossSum {
        let indices = &self.valid_batches[batch];
        let (_, nll) = self.batch_loss(model, &self.valid, indices, (0.0, 1), device);
        LossSum::of_mean(nll, indices.len())
    }

    fn loss_is_token_nll(&self) -> bool {
        false
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.train_batches
            .mean_batch_total(|i| self.train.ids[i].len())
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.train_batches.per_rank_epoch()
    }

    fn model_width(&self) -> usize {
        self.spec.width()
    }

    fn step_description(&self, ranks: usize, accum_grad: usize) -> String {
        format!(
            "~{:.0} texts ({} labels)",
            self.train_batches.mean_batch_len() * (ranks * accum_grad) as f64,
            self.num_labels
        )
    }
}

/// The predicted label of every text of `set`, in order.
pub fn predict<S: ClassifierConfig>(
    spec: &S,
    model: &S::Model,
    set: &LabelledSet,
    limits: BatchLimits,
    pad: u32,
    device: &Device,
) -> Vec<usize> {
    let mut predicted = vec![0; set.ids.len()];
    for indices in &length_batches(&set.ids, limits, 0) {
        let (batch, _) = set.batch(indices, pad, spec.min_len());
        let logits = S::logits(model, batch.text_batch(device));
        let best: Vec<i64> = logits.argmax(1).try_into_vec_as::<i64>().expect("ids");
        for (&i, &label) in indices.iter().zip(&best) {
            predicted[i] = label as usize;
        }
    }
    predicted
}
