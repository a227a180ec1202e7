//! word2vec (Mikolov et al. 2013) with negative sampling, as word2vec.c trains it: skip-gram
//! (each context word's input vector predicts the centre word) or CBOW (the mean of the context
//! words' input vectors predicts it), against `negative` words drawn from the unigram
//! distribution raised to 3/4. The input vectors (word2vec.c's `syn0`) are the word vectors; the
//! output vectors (`syn1neg`) start at zero. Which words and contexts a batch holds (dynamic
//! window, sub-sampling) is the task's business: `tasks::embeddings`.

use crate::error::{Error, Result};
use crate::recipe::{DataSizes, ModelOptions, TaskKind, require_positive};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::log_sigmoid;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Word2VecMethod {
    #[default]
    SkipGram,
    Cbow,
}

/// The `model:` section for `type: word2vec`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Word2VecOptions {
    #[serde(default)]
    pub method: Word2VecMethod,
    /// The vectors' size (word2vec.c's `-size`).
    #[serde(default = "default_dim")]
    pub dim: usize,
    /// The largest window each side; each centre word draws its own in `1..=window`.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Negative samples per prediction.
    #[serde(default = "default_negative")]
    pub negative: usize,
    /// Sub-sampling threshold of frequent words (word2vec.c's `-sample`; 0 keeps every word).
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// Words seen fewer times in the training split are dropped from the text.
    #[serde(default = "default_min_count")]
    pub min_count: usize,
    /// Filled from the prepared vocabulary by `train`.
    #[serde(default)]
    pub vocab_size: Option<usize>,
}

fn default_dim() -> usize {
    100
}
fn default_window() -> usize {
    5
}
fn default_negative() -> usize {
    5
}
fn default_sample() -> f64 {
    1e-3
}
pub(crate) fn default_min_count() -> usize {
    5
}

impl ModelOptions for Word2VecOptions {
    fn name(&self) -> &'static str {
        "word2vec"
    }

    fn title(&self) -> String {
        match self.method {
            Word2VecMethod::SkipGram => "word2vec (skip-gram)".into(),
            Word2VecMethod::Cbow => "word2vec (CBOW)".into(),
        }
    }

    fn task(&self) -> TaskKind {
        TaskKind::WordEmbeddings
    }

    fn validate(&self, problems: &mut Vec<String>) {
        require_positive(
            problems,
            &[
                ("dim", self.dim),
                ("window", self.window),
                ("negative", self.negative),
                ("min_count", self.min_count),
            ],
        );
        if !(self.sample >= 0.0 && self.sample < 1.0) {
            problems.push(format!(
                "`model.sample` must be in [0, 1) (0: keep every word; word2vec.c's default \
                 1e-3), got {}",
                self.sample
            ));
        }
    }

    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        record_vocab(&mut self.vocab_size, sizes)
    }
}

impl Word2VecOptions {
    /// The model configuration of a resolved recipe whose vocabulary `train` recorded.
    pub fn config(&self) -> Result<Word2VecConfig> {
        Ok(Word2VecConfig {
            options: self.clone(),
            vocab_size: recorded_vocab(self.name(), self.vocab_size)?,
        })
    }
}

/// Take the prepared vocabulary's size: the words kept decide it, so a recipe's own value must
/// agree (a resumed experiment's does).
pub(crate) fn record_vocab(slot: &mut Option<usize>, sizes: &DataSizes) -> Result<()> {
    match *slot {
        Some(given) if given != sizes.vocab => Err(Error::Recipe(format!(
            "`model.vocab_size` ({given}) differs from the prepared vocabulary ({} words seen \
             `min_count` times); remove it, the data decides it",
            sizes.vocab
        ))),
        _ => {
            *slot = Some(sizes.vocab);
            Ok(())
        }
    }
}

/// The vocabulary size `train` recorded, or an error saying the recipe is not an experiment's.
pub(crate) fn recorded_vocab(model: &str, vocab_size: Option<usize>) -> Result<usize> {
    vocab_size.filter(|&v| v > 0).ok_or_else(|| {
        Error::Recipe(format!(
            "`model.vocab_size` of this {model} recipe is not recorded: give the experiment \
             folder written by `nlpkit train`"
        ))
    })
}

#[derive(Debug, Clone)]
pub struct Word2VecConfig {
    pub options: Word2VecOptions,
    pub vocab_size: usize,
}

#[derive(Module, Debug)]
pub struct Word2Vec {
    /// `[vocab, dim]`: word2vec.c's `syn0`, the word vectors.
    pub input_embed: Param<Tensor<2>>,
    /// `[vocab, dim]`: `syn1neg`, the vectors predicted words are scored against.
    pub output_embed: Param<Tensor<2>>,
}

impl Word2VecConfig {
    /// word2vec.c's initialisation: input vectors uniform in `[-0.5, 0.5) / dim`, output
    /// vectors zero.
    pub fn init(&self, device: &Device) -> Word2Vec {
        let (v, d) = (self.vocab_size, self.options.dim);
        let half = 0.5 / d as f64;
        Word2Vec {
            input_embed: Param::from_tensor(Tensor::random(
                [v, d],
                Distribution::Uniform(-half, half),
                device,
            )),
            output_embed: Param::from_tensor(Tensor::zeros([v, d], device)),
        }
    }
}

/// Centre words with their context words, padded to `width` with a mask, and the negative
/// words: per (context, centre) pair for skip-gram (`[batch, width, negative]`), per centre
/// for CBOW (`[batch, negative]`). A negative equal to its centre word is masked out, as
/// word2vec.c skips it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextBatch {
    pub batch: usize,
    pub width: usize,
    pub negative: usize,
    pub centres: Vec<i64>,
    pub contexts: Vec<i64>,
    pub context_mask: Vec<f32>,
    pub negatives: Vec<i64>,
    pub negative_mask: Vec<f32>,
}

impl ContextBatch {
    /// Predictions the batch makes: context words (skip-gram) or centres with a context (CBOW).
    pub fn predictions(&self, method: Word2VecMethod) -> usize {
        match method {
            Word2VecMethod::SkipGram => self.context_mask.iter().filter(|&&m| m > 0.0).count(),
            Word2VecMethod::Cbow => self
                .context_mask
                .chunks(self.width.max(1))
                .filter(|row| row.iter().any(|&m| m > 0.0))
                .count(),
        }
    }
}

pub(crate) fn ints<const D: usize>(
    values: &[i64],
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

pub(crate) fn floats<const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Each of `ids` `times` times in a row.
fn repeat(ids: &[i64], times: usize) -> Vec<i64> {
    ids.iter()
        .flat_map(|&i| std::iter::repeat_n(i, times))
        .collect()
}

/// Rows `ids` of `table` (`[n, dim]`), shaped `[shape..., dim]` (the last entry of `shape` is a
/// placeholder for `dim`).
pub(crate) fn rows<const D: usize>(table: &Tensor<2>, ids: &[i64], shape: [usize; D]) -> Tensor<D> {
    let dim = table.dims()[1];
    let mut full = [0; D];
    full[..D - 1].copy_from_slice(&shape[..D - 1]);
    full[D - 1] = dim;
    let index = ints(ids, [ids.len()], &table.device());
    table.clone().select(0, index).reshape(full)
}

impl Word2Vec {
    /// The negative-sampling loss summed over the batch's predictions and divided by their
    /// number: `-log s(u_o . h) - sum_n log s(-u_n . h)`, with `h` a context word's input vector
    /// (skip-gram) or the mean of the context's (CBOW), `u` the output vectors of the centre `o`
    /// and of the negatives `n`. Returns the mean and the number of predictions.
    pub fn loss(&self, batch: &ContextBatch, method: Word2VecMethod) -> (Tensor<1>, usize) {
        let (b, c, k) = (batch.batch, batch.width, batch.negative);
        let input = self.input_embed.val();
        let output = self.output_embed.val();
        let device = input.device();
        let d = input.dims()[1];
        let count = batch.predictions(method);
        // A negative counts only where its prediction does (a context slot that holds a word,
        // a centre with a context), whatever the batch's own mask says.
        let live_negatives: Vec<f32> = batch
            .negative_mask
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let live = match method {
                    Word2VecMethod::SkipGram => batch.context_mask[i / k],
                    Word2VecMethod::Cbow => {
                        let row = &batch.context_mask[(i / k) * c..][..c];
                        if row.iter().any(|&x| x > 0.0) {
                            1.0
                        } else {
                            0.0
                        }
                    }
                };
                m * live
            })
            .collect();
        // Everything as rows of `[n, dim]`: each score is a row-wise dot product.
        let score = |x: Tensor<2>, y: Tensor<2>| {
            let n = x.dims()[0];
            (x * y).sum_dim(1).reshape([n])
        };
        let total = match method {
            Word2VecMethod::SkipGram => {
                // Each (centre, context word) pair, the empty slots left out (about a third
                // with word2vec.c's window): the context word predicts the centre.
                let live: Vec<usize> = (0..b * c)
                    .filter(|&i| batch.context_mask[i] > 0.0)
                    .collect();
                if live.is_empty() {
                    // Nothing to predict: a zero loss that still reaches the weights.
                    return (input.sum().mul_scalar(0.0), 0);
                }
                let pick = |values: &[i64], per: usize| -> Vec<i64> {
                    live.iter()
                        .flat_map(|&i| values[i * per..(i + 1) * per].iter().copied())
                        .collect()
                };
                let contexts = pick(&batch.contexts, 1);
                let centres: Vec<i64> = live.iter().map(|&i| batch.centres[i / c]).collect();
                let n = live.len();
                let positive = score(
                    rows(&input, &contexts, [n, 0]),
                    rows(&output, &centres, [n, 0]),
                );
                let negatives = rows(&output, &pick(&batch.negatives, k), [n * k, 0]);
                let negative = score(rows(&input, &repeat(&contexts, k), [n * k, 0]), negatives);
                let weights: Vec<f32> = live
                    .iter()
                    .flat_map(|&i| live_negatives[i * k..(i + 1) * k].iter().copied())
                    .collect();
                log_sigmoid(positive).sum()
                    + (log_sigmoid(negative.neg()) * floats(&weights, [n * k], &device)).sum()
            }
            Word2VecMethod::Cbow => {
                // word2vec.c's `cbow_mean`: the mean of the context's vectors.
                let mask = floats(&batch.context_mask, [b * c], &device);
                let neg_mask = floats(&live_negatives, [live_negatives.len()], &device);
                let context =
                    rows(&input, &batch.contexts, [b * c, 0]) * mask.clone().reshape([b * c, 1]);
                let sizes = mask.clone().reshape([b, c]).sum_dim(1).clamp_min(1.0); // [b, 1]
                let hidden = context.reshape([b, c, d]).sum_dim(1).reshape([b, d]) / sizes;
                let has_context = mask.reshape([b, c]).sum_dim(1).clamp_max(1.0).reshape([b]);
                let positive = score(hidden.clone(), rows(&output, &batch.centres, [b, 0]));
                let each: Vec<i64> = repeat(&(0..b as i64).collect::<Vec<_>>(), k);
                let hidden = hidden.select(0, ints(&each, [b * k], &device));
                let negative = score(hidden, rows(&output, &batch.negatives, [b * k, 0]));
                (log_sigmoid(positive) * has_context).sum()
                    + (log_sigmoid(negative.neg()) * neg_mask).sum()
            }
        };
        (total.neg().div_scalar(count.max(1) as f64), count)
    }

    /// The word vectors, `[vocab, dim]`.
    pub fn vectors(&self) -> Tensor<2> {
        self.input_embed.val()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::optim::GradientsParams;

    /// Deterministic values in about [-0.8, 0.8], large enough for non-trivial gradients.
    pub(crate) fn values(n: usize, salt: u64) -> Vec<f64> {
        let mut rng = crate::rng::SplitMix64::new(salt);
        (0..n).map(|_| rng.unit() * 1.6 - 0.8).collect()
    }

    pub(crate) fn param2(v: &[f64], shape: [usize; 2], device: &Device) -> Param<Tensor<2>> {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), device))
    }

    pub(crate) fn grad_values(grads: &GradientsParams, p: &Param<Tensor<2>>) -> Vec<f64> {
        let g = grads.get::<2>(p.id).expect("a gradient");
        let v: Vec<f32> = g.try_into_vec_as::<f32>().unwrap();
        v.into_iter().map(f64::from).collect()
    }

    /// Central differences of `f` at `x`, one coordinate at a time.
    pub(crate) fn numeric_gradient(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        let h = 1e-6;
        (0..x.len())
            .map(|i| {
                let (mut up, mut down) = (x.to_vec(), x.to_vec());
                up[i] += h;
                down[i] -= h;
                (f(&up) - f(&down)) / (2.0 * h)
            })
            .collect()
    }

    pub(crate) fn assert_close(what: &str, got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() < 1e-4,
                "{what}[{i}]: autodiff {g} vs numeric {w}"
            );
        }
    }

    const V: usize = 5;
    const D: usize = 3;

    fn sigmoid_log(x: f64) -> f64 {
        -(1.0 + (-x).exp()).ln()
    }

    fn row(t: &[f64], i: i64) -> &[f64] {
        &t[i as usize * D..][..D]
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// The negative-sampling objective from its definition, in f64: one term per prediction.
    fn reference(input: &[f64], output: &[f64], b: &ContextBatch, method: Word2VecMethod) -> f64 {
        let (w, k) = (b.width, b.negative);
        let (mut total, mut count) = (0.0, 0);
        for r in 0..b.batch {
            let centre = row(output, b.centres[r]);
            let live: Vec<usize> = (0..w)
                .filter(|&s| b.context_mask[r * w + s] > 0.0)
                .collect();
            match method {
                Word2VecMethod::SkipGram => {
                    for &s in &live {
                        let v = row(input, b.contexts[r * w + s]);
                        count += 1;
                        total -= sigmoid_log(dot(v, centre));
                        for n in 0..k {
                            let at = (r * w + s) * k + n;
                            if b.negative_mask[at] > 0.0 {
                                total -= sigmoid_log(-dot(v, row(output, b.negatives[at])));
                            }
                        }
                    }
                }
                Word2VecMethod::Cbow => {
                    if live.is_empty() {
                        continue;
                    }
                    let mut h = vec![0.0; D];
                    for &s in &live {
                        for (x, y) in h.iter_mut().zip(row(input, b.contexts[r * w + s])) {
                            *x += y / live.len() as f64;
                        }
                    }
                    count += 1;
                    total -= sigmoid_log(dot(&h, centre));
                    for n in 0..k {
                        let at = r * k + n;
                        if b.negative_mask[at] > 0.0 {
                            total -= sigmoid_log(-dot(&h, row(output, b.negatives[at])));
                        }
                    }
                }
            }
        }
        total / count as f64
    }

    /// Three centres, window 1 each side (width 2), 2 negatives; masked slots and negatives.
    fn toy_batch(method: Word2VecMethod) -> ContextBatch {
        let negatives = match method {
            Word2VecMethod::SkipGram => vec![3, 4, 2, 1, 0, 4, 0, 2, 1, 3, 3, 3],
            Word2VecMethod::Cbow => vec![3, 4, 0, 2, 4, 1],
        };
        let negative_mask = match method {
            Word2VecMethod::SkipGram => vec![1., 1., 1., 0., 1., 1., 0., 0., 1., 1., 1., 1.],
            Word2VecMethod::Cbow => vec![1., 1., 1., 0., 0., 0.],
        };
        ContextBatch {
            batch: 3,
            width: 2,
            negative: 2,
            centres: vec![0, 1, 2],
            contexts: vec![1, 2, 3, 0, 4, 0],
            // The third centre has no context (CBOW skips it).
            context_mask: vec![1., 1., 1., 0., 0., 0.],
            negatives,
            negative_mask,
        }
    }

    #[test]
    fn negative_sampling_gradients_equal_finite_differences() {
        let device = Device::flex().autodiff();
        for method in [Word2VecMethod::Cbow, Word2VecMethod::SkipGram] {
            let batch = toy_batch(method);
            let (input, output) = (values(V * D, 1), values(V * D, 2));
            let model = Word2Vec {
                input_embed: param2(&input, [V, D], &device),
                output_embed: param2(&output, [V, D], &device),
            };
            let (loss, count) = model.loss(&batch, method);
            let want = reference(&input, &output, &batch, method);
            let got = loss.clone().into_scalar::<f64>();
            assert!(
                (got - want).abs() < 1e-5,
                "{method:?}: loss {got} vs {want}"
            );
            assert_eq!(count, if method == Word2VecMethod::Cbow { 2 } else { 3 });
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let d_input = numeric_gradient(&input, |x| reference(x, &output, &batch, method));
            let d_output = numeric_gradient(&output, |x| reference(&input, x, &batch, method));
            assert_close(
                &format!("{method:?} input"),
                &grad_values(&grads, &model.input_embed),
                &d_input,
            );
            assert_close(
                &format!("{method:?} output"),
                &grad_values(&grads, &model.output_embed),
                &d_output,
            );
            // A batch with nothing to predict costs nothing.
            let mut empty = toy_batch(method);
            empty.context_mask.iter_mut().for_each(|m| *m = 0.0);
            let (loss, count) = model.loss(&empty, method);
            assert_eq!((loss.into_scalar::<f64>(), count), (0.0, 0), "{method:?}");
        }
    }
}
