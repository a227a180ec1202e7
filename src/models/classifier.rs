//! What every text classifier offers the classification task: label logits for a padded batch
//! of token ids, and the facts the task needs to encode and batch texts for it.

use super::bert::BertInput;
use crate::error::{Error, Result};
use crate::recipe::DataSizes;
use burn::module::Module;
use burn::nn::{Dropout, Linear};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use serde::{Deserialize, Serialize};

/// A padded batch of texts.
#[derive(Debug, Clone)]
pub struct TextBatch {
    /// `[batch, time]` token ids, padded.
    pub ids: Tensor<2, Int>,
    /// `[batch, time]` 0 for a text's first segment (and padding), 1 for its second.
    pub segments: Tensor<2, Int>,
    /// `[batch, time]` true at padding.
    pub padding: Tensor<2, Bool>,
    /// Each text's real length.
    pub lengths: Vec<usize>,
}

impl TextBatch {
    pub fn bert_input(self) -> BertInput {
        BertInput {
            ids: self.ids,
            segments: self.segments,
            padding: self.padding,
        }
    }
}

/// A classifier's configuration: what the classification task needs to build and feed it.
pub trait ClassifierConfig {
    type Model: Module + ModuleSnapshot;
    fn init(&self, device: &Device) -> Self::Model;
    /// Label logits `[batch, labels]`: [`Self::head`] applied to [`Self::features`].
    fn logits(model: &Self::Model, batch: TextBatch) -> Tensor<2>;
    /// The token embeddings `[batch, time, dim]` of `ids`: the input saliency differentiates
    /// against (`nlpkit explain`).
    fn embed(model: &Self::Model, ids: Tensor<2, Int>) -> Tensor<3>;
    /// [`ClassifierConfig::logits`] from the token embeddings (`batch.ids` give only the shape):
    /// `logits(m, b)` is `logits_embedded(m, embed(m, b.ids), b)`, bit for bit.
    fn logits_embedded(model: &Self::Model, embedded: Tensor<3>, batch: TextBatch) -> Tensor<2>;
    /// The pooled state a recurrent classifier's output layer reads, `[batch, width]`; `None`
    /// for models without one (leave-one-out reports its change).
    fn pooled_state(_model: &Self::Model, _batch: TextBatch) -> Option<Tensor<2>> {
        None
    }
    /// What the head sees `[batch, features]`: the text's vector before the head's dropout.
    fn features(model: &Self::Model, batch: TextBatch) -> Tensor<2>;
    /// The head: its dropout and the linear layer to the labels.
    fn head(model: &Self::Model) -> (&Dropout, &Linear);
    /// The model's `multi_sample_dropout`, if set.
    fn multi_sample_dropout(&self) -> Option<MultiSampleDropout>;
    /// Texts are wrapped in `[CLS] ... [SEP]` (BERT).
    fn wraps_in_cls_sep(&self) -> bool {
        false
    }
    /// The longest input, special tokens included.
    fn max_len(&self) -> usize;
    /// The shortest padded input the model accepts.
    fn min_len(&self) -> usize {
        1
    }
    /// The model width, for schedules that scale by it.
    fn width(&self) -> usize;
}

/// Record a classifier's vocabulary size and number of labels from the data.
pub fn record_sizes((vocab, labels): (&mut Option<usize>, &mut Option<usize>), sizes: &DataSizes) {
    *vocab = Some(sizes.vocab);
    *labels = Some(sizes.labels.len());
}

/// A classifier's vocabulary size and number of labels, as `train` recorded them.
pub fn recorded_sizes(
    model: &str,
    vocab: Option<usize>,
    labels: Option<usize>,
) -> Result<(usize, usize)> {
    vocab.zip(labels).ok_or_else(|| {
        Error::Recipe(format!(
            "the {model} model needs `model.vocab_size` and `model.num_labels` (filled in by \
             `nlpkit train`; give an experiment folder it wrote)"
        ))
    })
}

/// `model.multi_sample_dropout` (Inoue 2019, "Multi-Sample Dropout for Accelerated Training and
/// Better Generalization"): in training, the head's dropout and linear layer are applied to the
/// encoder's one output `samples` times with independent masks and the losses averaged. `rate`
/// replaces `model.dropout` in the head (the encoder keeps `model.dropout`). Without dropout
/// (validation, prediction) every sample is the same, so one is computed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MultiSampleDropout {
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default = "default_rate")]
    pub rate: f64,
}

fn default_samples() -> usize {
    5
}
fn default_rate() -> f64 {
    0.5
}

impl MultiSampleDropout {
    /// The recipe problems of a model's `multi_sample_dropout`, with their key paths.
    pub fn validate(this: Option<&Self>, problems: &mut Vec<String>) {
        let Some(m) = this else { return };
        if m.samples == 0 {
            problems.push("`model.multi_sample_dropout.samples` must be at least 1".into());
        }
        if !(0.0..1.0).contains(&m.rate) {
            problems.push(format!(
                "`model.multi_sample_dropout.rate` must be in [0, 1), got {}",
                m.rate
            ));
        }
    }

    /// The head's dropout rate: `rate` when multi-sample dropout is on, else the model's.
    pub fn head_rate(this: Option<&Self>, dropout: f64) -> f64 {
        this.map_or(dropout, |m| m.rate)
    }

    /// How many samples a training loss averages (1: plain dropout).
    pub fn samples(this: Option<&Self>) -> usize {
        this.map_or(1, |m| m.samples.max(1))
    }
}

/// The loss of a head over `features` (`[batch, features]` for a classifier, `[batch, time,
/// width]` for a tagger), averaged over `samples` applications of its dropout and linear layer:
/// one encoder pass, `samples` masks drawn in turn. `loss` maps the logits to `(loss, nll)`,
/// both averaged. With one sample this is the plain head, the same random draws included.
pub fn multi_sample_loss<const D: usize>(
    features: Tensor<D>,
    (dropout, linear): (&Dropout, &Linear),
    samples: usize,
    mut loss: impl FnMut(Tensor<D>) -> (Tensor<1>, Tensor<1>),
) -> (Tensor<1>, Tensor<1>) {
    let mut sample = || loss(linear.forward(dropout.forward(features.clone())));
    let first = sample();
    if samples <= 1 {
        return first;
    }
    let (loss, nll) = (1..samples).fold(first, |(l, n), _| {
        let (l2, n2) = sample();
        (l + l2, n + n2)
    });
    let k = samples as f64;
    (loss.div_scalar(k), nll.div_scalar(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::{DropoutConfig, LinearConfig};

    /// Through an identity linear layer each sample's logits are the dropped-out features
    /// themselves: every value is 0 or the feature / (1 - rate), i.e. dropout applied once per
    /// sample, at the given rate, with no other change (checked without depending on which
    /// numbers the process-wide generator gives).
    #[test]
    fn each_sample_is_the_linear_layer_over_one_dropout() {
        let device = Device::flex().autodiff();
        let values: Vec<f32> = (1..=64).map(|i| i as f32 / 8.0).collect();
        let features = Tensor::<1>::from_floats(values.as_slice(), &device).reshape([4, 16]);
        let mut linear = LinearConfig::new(16, 16).init(&device);
        linear.weight = Param::from_tensor(Tensor::eye(16, &device));
        linear.bias = Some(Param::from_tensor(Tensor::zeros([16], &device)));
        let dropout = DropoutConfig::new(0.25).init();
        for samples in [1, 4] {
            let mut calls = 0;
            multi_sample_loss(features.clone(), (&dropout, &linear), samples, |logits| {
                calls += 1;
                let got: Vec<f32> = logits.clone().try_into_vec_as().unwrap();
                for (g, f) in got.iter().zip(&values) {
                    let kept = (g - f / 0.75).abs() < 1e-5;
                    assert!(*g == 0.0 || kept, "{g} from {f}");
                }
                assert!(got.contains(&0.0) && got.iter().any(|&g| g != 0.0));
                let loss = logits.sum();
                (loss.clone(), loss)
            });
            assert_eq!(calls, samples);
        }
    }
}
