//! GloVe (Pennington, Socher & Manning 2014): word vectors `w`, context vectors `w~` and their
//! biases fitted to the log co-occurrence counts by weighted least squares,
//! `J = sum f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2` with `f(x) = min(1, (x / x_max)^alpha)`,
//! halved as glove.c does. The counts are built when the data is prepared
//! (`data::embedding_corpus`); the vectors exported are `w + w~`, as the paper does.

use super::word2vec::{default_min_count, floats, ints, record_vocab, recorded_vocab, rows};
use crate::error::Result;
use crate::recipe::{DataSizes, ModelOptions, TaskKind, require_positive};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

/// The `model:` section for `type: glove`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GloveOptions {
    #[serde(default = "default_dim")]
    pub dim: usize,
    /// Words up to this far apart on either side co-occur, weighted by 1 / distance.
    #[serde(default = "default_window")]
    pub window: usize,
    /// The count at which the weighting reaches 1.
    #[serde(default = "default_x_max")]
    pub x_max: f64,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
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
    10
}
fn default_x_max() -> f64 {
    100.0
}
fn default_alpha() -> f64 {
    0.75
}

impl ModelOptions for GloveOptions {
    fn name(&self) -> &'static str {
        "glove"
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
                ("min_count", self.min_count),
            ],
        );
        if !(self.x_max > 0.0 && self.x_max.is_finite()) {
            problems.push(format!(
                "`model.x_max` must be a positive count (GloVe: 100), got {}",
                self.x_max
            ));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            problems.push(format!(
                "`model.alpha` must be in (0, 1] (GloVe: 0.75), got {}",
                self.alpha
            ));
        }
    }

    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        record_vocab(&mut self.vocab_size, sizes)
    }
}

impl GloveOptions {
    pub fn config(&self) -> Result<GloveConfig> {
        Ok(GloveConfig {
            options: self.clone(),
            vocab_size: recorded_vocab(self.name(), self.vocab_size)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct GloveConfig {
    pub options: GloveOptions,
    pub vocab_size: usize,
}

#[derive(Module, Debug)]
pub struct Glove {
    /// `[vocab, dim]`: `w`.
    pub word_embed: Param<Tensor<2>>,
    /// `[vocab, dim]`: `w~`.
    pub context_embed: Param<Tensor<2>>,
    pub word_bias: Param<Tensor<1>>,
    pub context_bias: Param<Tensor<1>>,
}

impl GloveConfig {
    /// glove.c's initialisation: every weight uniform in `[-0.5, 0.5) / dim`.
    pub fn init(&self, device: &Device) -> Glove {
        let (v, d) = (self.vocab_size, self.options.dim);
        let half = 0.5 / d as f64;
        let uniform = Distribution::Uniform(-half, half);
        Glove {
            word_embed: Param::from_tensor(Tensor::random([v, d], uniform, device)),
            context_embed: Param::from_tensor(Tensor::random([v, d], uniform, device)),
            word_bias: Param::from_tensor(Tensor::random([v], uniform, device)),
            context_bias: Param::from_tensor(Tensor::random([v], uniform, device)),
        }
    }
}

/// Co-occurrence entries `(i, j, X_ij)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CooccurrenceBatch {
    pub words: Vec<i64>,
    pub contexts: Vec<i64>,
    pub counts: Vec<f32>,
}

impl Glove {
    /// `0.5 f(X) (w_i . w~_j + b_i + b~_j - log X)^2`, the mean over the batch's entries.
    pub fn loss(&self, batch: &CooccurrenceBatch, x_max: f64, alpha: f64) -> Tensor<1> {
        let n = batch.counts.len();
        let w = rows(&self.word_embed.val(), &batch.words, [n, 0]);
        let c = rows(&self.context_embed.val(), &batch.contexts, [n, 0]);
        let device = w.device();
        let column = |bias: Tensor<1>, ids: &[i64]| bias.select(0, ints(ids, [n], &device));
        let prediction = (w * c).sum_dim(1).reshape([n])
            + column(self.word_bias.val(), &batch.words)
            + column(self.context_bias.val(), &batch.contexts);
        let log_counts: Vec<f32> = batch.counts.iter().map(|x| x.ln()).collect();
        let weights: Vec<f32> = batch
            .counts
            .iter()
            .map(|&x| (x as f64 / x_max).powf(alpha).min(1.0) as f32)
            .collect();
        let diff = prediction - floats(&log_counts, [n], &device);
        (diff.powi_scalar(2) * floats(&weights, [n], &device))
            .sum()
            .mul_scalar(0.5 / n.max(1) as f64)
    }

    /// The word vectors, `w + w~`, `[vocab, dim]`.
    pub fn vectors(&self) -> Tensor<2> {
        self.word_embed.val() + self.context_embed.val()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::word2vec::tests::{
        assert_close, grad_values, numeric_gradient, param2, values,
    };
    use burn::optim::GradientsParams;

    const V: usize = 4;
    const D: usize = 3;

    /// GloVe's objective from the paper, in f64, halved and averaged over the entries.
    fn reference(p: &[f64], batch: &CooccurrenceBatch, x_max: f64, alpha: f64) -> f64 {
        let (w, rest) = p.split_at(V * D);
        let (c, rest) = rest.split_at(V * D);
        let (bw, bc) = rest.split_at(V);
        let n = batch.counts.len();
        (0..n)
            .map(|e| {
                let (i, j) = (batch.words[e] as usize, batch.contexts[e] as usize);
                let x = batch.counts[e] as f64;
                let dot: f64 = (0..D).map(|k| w[i * D + k] * c[j * D + k]).sum();
                let f = (x / x_max).powf(alpha).min(1.0);
                0.5 * f * (dot + bw[i] + bc[j] - x.ln()).powi(2)
            })
            .sum::<f64>()
            / n as f64
    }

    #[test]
    fn weighted_least_squares_gradients_equal_finite_differences() {
        let device = Device::flex().autodiff();
        let p = values(2 * V * D + 2 * V, 3);
        let bias = |v: &[f64]| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Param::from_tensor(Tensor::from_data(TensorData::new(v, [V]), &device))
        };
        let model = Glove {
            word_embed: param2(&p[..V * D], [V, D], &device),
            context_embed: param2(&p[V * D..2 * V * D], [V, D], &device),
            word_bias: bias(&p[2 * V * D..2 * V * D + V]),
            context_bias: bias(&p[2 * V * D + V..]),
        };
        // Counts below and above x_max = 3 (weight capped at 1); a repeated pair.
        let batch = CooccurrenceBatch {
            words: vec![0, 1, 2, 0, 3],
            contexts: vec![1, 0, 3, 1, 2],
            counts: vec![0.5, 2.0, 7.0, 0.5, 1.25],
        };
        let (x_max, alpha) = (3.0, 0.75);
        let loss = model.loss(&batch, x_max, alpha);
        let want = reference(&p, &batch, x_max, alpha);
        let got = loss.clone().into_scalar::<f64>();
        assert!((got - want).abs() < 1e-5, "loss {got} vs {want}");
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let numeric = numeric_gradient(&p, |x| reference(x, &batch, x_max, alpha));
        let mut autodiff = grad_values(&grads, &model.word_embed);
        autodiff.extend(grad_values(&grads, &model.context_embed));
        for b in [&model.word_bias, &model.context_bias] {
            let g: Vec<f32> = grads.get::<1>(b.id).unwrap().try_into_vec_as().unwrap();
            autodiff.extend(g.into_iter().map(f64::from));
        }
        assert_close("glove", &autodiff, &numeric);
        // The exported vectors are w + w~.
        let sum: Vec<f32> = model.vectors().try_into_vec_as().unwrap();
        assert!((sum[4] as f64 - (p[4] + p[V * D + 4])).abs() < 1e-6);
    }
}
