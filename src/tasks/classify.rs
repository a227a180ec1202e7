//! Text classification: TextCNN or BERT (fine-tuned from a pretraining experiment or from
//! scratch) on labelled texts, cross-entropy over the labels, batches of similar length; scored
//! by accuracy, per-label and macro precision/recall/F1 and the confusion matrix.

use super::{EvalRequest, ExplainRequest, LossSum, Pipeline, StepLoss, Task};
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
use crate::eval::explain::{Explained, Method, grad_x_input, integrated_gradients, leave_one_out};
use crate::eval::report::{Evaluation, Predictions, Scores};
use crate::loss::cross_entropy;
use crate::models::classifier::{ClassifierConfig, MultiSampleDropout, multi_sample_loss};
use crate::recipe::{Recipe, TaskKind};
use crate::train::pretrained::{Pretrained, with_pretrained};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
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

    fn explain(&self, model: &S::Model, request: &ExplainRequest) -> Result<Vec<Explained>> {
        explain_texts(&self.spec, model, request)
    }
}

/// Texts per forward pass of leave-one-out (one variant per removed token).
const VARIANTS_PER_PASS: usize = 64;

/// `nlpkit explain` for a classifier: the score is the log-probability of the target label
/// (the predicted one unless `--target` names one), differentiated w.r.t. the token embeddings
/// (`[CLS]`/`[SEP]` included, as they are inputs too); leave-one-out removes one token at a
/// time (never `[CLS]`/`[SEP]`).
fn explain_texts<S: ClassifierConfig>(
    spec: &S,
    model: &S::Model,
    request: &ExplainRequest,
) -> Result<Vec<Explained>> {
    let labels = request.labels()?;
    let target = match &request.options.target {
        Some(t) => Some(labels.iter().position(|l| l == t).ok_or_else(|| {
            Error::Usage(format!(
                "--target {t}: not one of the experiment's labels ({})",
                labels.join(", ")
            ))
        })?),
        None => None,
    };
    let (tokenizer, specials) = load_tokenizer(&request.exp.tokenizer_path())?;
    let refs: Vec<&str> = request.texts.iter().map(|(_, t)| t.as_str()).collect();
    let cls_sep = spec.wraps_in_cls_sep().then_some(&specials);
    let encoded = encode_texts(&tokenizer, &refs, spec.max_len(), cls_sep)?;
    let device = request.device;
    let methods = Method::expand(&request.options.methods);
    let batch = |seqs: &[&[u32]]| {
        TokenBatch::pad(seqs, None, specials.pad, spec.min_len()).text_batch(device)
    };
    let mut out = Vec::with_capacity(encoded.len());
    for ((line, _), ids) in request.texts.iter().zip(&encoded) {
        let probabilities = |label: Option<usize>, seqs: &[Vec<u32>]| {
            let mut probs = Vec::new();
            let mut states: Option<Vec<Vec<f32>>> = None;
            for chunk in seqs.chunks(VARIANTS_PER_PASS) {
                let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                let p = softmax(S::logits(model, batch(&refs)), 1);
                let n = p.dims()[1];
                let p = p.try_into_vec_as::<f32>().expect("f32 probabilities");
                probs.extend(p.chunks(n).map(|row| row.to_vec()));
                if let Some(state) = S::pooled_state(model, batch(&refs)) {
                    let width = state.dims()[1];
                    let state = state.try_into_vec_as::<f32>().expect("f32 state");
                    states
                        .get_or_insert_with(Vec::new)
                        .extend(state.chunks(width).map(|row| row.to_vec()));
                }
            }
            let label = label.unwrap_or(0);
            let picked = probs.iter().map(|row| row[label] as f64).collect();
            (probs, picked, states)
        };
        let (probs, _, _) = probabilities(None, std::slice::from_ref(ids));
        let label = target.unwrap_or_else(|| argmax(&probs[0]));
        let score = |x: Tensor<3>| -> Tensor<1> {
            let seqs = vec![ids.as_slice(); x.dims()[0]];
            log_softmax(S::logits_embedded(model, x, batch(&seqs)), 1)
                .narrow(1, label, 1)
                .sum()
        };
        let x = S::embed(model, batch(&[ids]).ids);
        let mut columns = Vec::new();
        let mut completeness_gap = None;
        for &method in &methods {
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
                Method::Occlusion => {
                    let keep: Vec<bool> = (0..ids.len())
                        .map(|i| cls_sep.is_some() && (i == 0 || i + 1 == ids.len()))
                        .collect();
                    let (drop, change) = leave_one_out(ids, &keep, &|variants| {
                        let (_, picked, states) = probabilities(Some(label), variants);
                        (picked, states)
                    });
                    columns.push((method.name(), drop));
                    if let Some(change) = change {
                        columns.push(("state_change", change));
                    }
                }
                Method::All => {}
            }
        }
        out.push(Explained {
            line: *line,
            tokens: ids.iter().map(|&id| tokenizer.id_to_token(id)).collect(),
            label: labels
                .get(label)
                .cloned()
                .unwrap_or_else(|| label.to_string()),
            token_labels: None,
            probability: probs[0][label] as f64,
            columns,
            completeness_gap,
        });
    }
    Ok(out)
}

/// The index of the largest value.
fn argmax(values: &[f32]) -> usize {
    (0..values.len())
        .max_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap_or(0)
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
