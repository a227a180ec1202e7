//! TextCNN (Kim 2014): token embeddings, parallel 1-D convolutions of several widths, ReLU,
//! max-over-time pooling, dropout and a linear classifier. Options: BatchNorm after each
//! convolution, and residual blocks (two width-3 convolutions with a skip connection, as in
//! ResNet/DPCNN) stacked on each branch before the pooling.

use super::classifier::{self, ClassifierConfig, MultiSampleDropout, TextBatch};
use crate::error::Result;
use crate::recipe::{DataSizes, ModelOptions, TaskKind, require_dropout, require_positive};
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer,
    Linear, LinearConfig, PaddingConfig1d,
};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

/// The `model:` section for `type: cnn`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextCnnOptions {
    #[serde(default = "default_embedding_dim")]
    pub embedding_dim: usize,
    /// The convolution widths, one branch each (Kim: 3, 4, 5).
    #[serde(default = "default_kernel_sizes")]
    pub kernel_sizes: Vec<usize>,
    /// Feature maps per branch.
    #[serde(default = "default_channels")]
    pub channels: usize,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Multi-sample dropout in the head (its `rate` replaces `dropout` there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_sample_dropout: Option<MultiSampleDropout>,
    /// BatchNorm after every convolution.
    #[serde(default)]
    pub batch_norm: bool,
    /// Residual blocks on each branch after its first convolution.
    #[serde(default)]
    pub residual_blocks: usize,
    /// Texts are cut to this many tokens.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Filled from the tokenizer and the label map by `train`.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    #[serde(default)]
    pub num_labels: Option<usize>,
}

fn default_embedding_dim() -> usize {
    128
}
fn default_kernel_sizes() -> Vec<usize> {
    vec![3, 4, 5]
}
fn default_channels() -> usize {
    100
}
fn default_dropout() -> f64 {
    0.5
}
fn default_max_len() -> usize {
    256
}

impl ModelOptions for TextCnnOptions {
    fn name(&self) -> &'static str {
        "cnn"
    }

    fn task(&self) -> TaskKind {
        TaskKind::Classification
    }

    fn validate(&self, problems: &mut Vec<String>) {
        if self.kernel_sizes.is_empty() || self.kernel_sizes.contains(&0) {
            problems.push("`model.kernel_sizes` must list at least one width, each >= 1".into());
        }
        if self.max_len < self.kernel_sizes.iter().copied().max().unwrap_or(1) {
            problems.push("`model.max_len` must be at least the widest kernel".into());
        }
        require_positive(
            problems,
            &[
                ("embedding_dim", self.embedding_dim),
                ("channels", self.channels),
            ],
        );
        require_dropout(problems, self.dropout);
        MultiSampleDropout::validate(self.multi_sample_dropout.as_ref(), problems);
    }

    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        classifier::record_sizes((&mut self.vocab_size, &mut self.num_labels), sizes);
        Ok(())
    }
}

impl TextCnnOptions {
    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<TextCnnConfig> {
        let (vocab_size, num_labels) =
            classifier::recorded_sizes(self.name(), self.vocab_size, self.num_labels)?;
        Ok(TextCnnConfig {
            options: self.clone(),
            vocab_size,
            num_labels,
        })
    }
}

impl ClassifierConfig for TextCnnConfig {
    type Model = TextCnn;
    fn init(&self, device: &Device) -> TextCnn {
        TextCnnConfig::init(self, device)
    }
    fn logits(model: &TextCnn, batch: TextBatch) -> Tensor<2> {
        model.forward(batch.ids, &batch.lengths)
    }
    fn embed(model: &TextCnn, ids: Tensor<2, Int>) -> Tensor<3> {
        model.embed(ids)
    }
    fn logits_embedded(model: &TextCnn, embedded: Tensor<3>, batch: TextBatch) -> Tensor<2> {
        model.forward_embedded(embedded, &batch.lengths)
    }
    fn features(model: &TextCnn, batch: TextBatch) -> Tensor<2> {
        model.features(batch.ids, &batch.lengths)
    }
    fn head(model: &TextCnn) -> (&Dropout, &Linear) {
        (&model.dropout, &model.classifier)
    }
    fn multi_sample_dropout(&self) -> Option<MultiSampleDropout> {
        self.options.multi_sample_dropout
    }
    fn max_len(&self) -> usize {
        self.options.max_len
    }
    fn min_len(&self) -> usize {
        self.options.kernel_sizes.iter().copied().max().unwrap_or(1)
    }
    fn width(&self) -> usize {
        self.options.embedding_dim
    }
}

#[derive(Debug, Clone)]
pub struct TextCnnConfig {
    pub options: TextCnnOptions,
    pub vocab_size: usize,
    pub num_labels: usize,
}

impl TextCnnConfig {
    pub fn init(&self, device: &Device) -> TextCnn {
        let o = &self.options;
        let norm = |channels| {
            o.batch_norm
                .then(|| BatchNormConfig::new(channels).init(device))
        };
        let conv = |d_in, width, padding| {
            Conv1dConfig::new(d_in, o.channels, width)
                .with_padding(padding)
                .with_initializer(Initializer::KaimingUniform {
                    gain: 1.0 / 3f64.sqrt(),
                    fan_out_only: false,
                })
                .init(device)
        };
        let branches = o
            .kernel_sizes
            .iter()
            .map(|&width| ConvBranch {
                conv: conv(o.embedding_dim, width, PaddingConfig1d::Valid),
                norm: norm(o.channels),
                blocks: (0..o.residual_blocks)
                    .map(|_| ResidualBlock {
                        conv_1: conv(o.channels, 3, PaddingConfig1d::Explicit(1, 1)),
                        norm_1: norm(o.channels),
                        conv_2: conv(o.channels, 3, PaddingConfig1d::Explicit(1, 1)),
                        norm_2: norm(o.channels),
                    })
                    .collect(),
                width,
            })
            .collect();
        TextCnn {
            embedding: EmbeddingConfig::new(self.vocab_size, o.embedding_dim).init(device),
            branches,
            dropout: DropoutConfig::new(MultiSampleDropout::head_rate(
                o.multi_sample_dropout.as_ref(),
                o.dropout,
            ))
            .init(),
            classifier: LinearConfig::new(o.channels * o.kernel_sizes.len(), self.num_labels)
                .init(device),
        }
    }
}

#[derive(Module, Debug)]
pub struct TextCnn {
    embedding: Embedding,
    branches: Vec<ConvBranch>,
    dropout: Dropout,
    classifier: Linear,
}

#[derive(Module, Debug)]
struct ConvBranch {
    conv: Conv1d,
    norm: Option<BatchNorm>,
    blocks: Vec<ResidualBlock>,
    width: usize,
}

#[derive(Module, Debug)]
struct ResidualBlock {
    conv_1: Conv1d,
    norm_1: Option<BatchNorm>,
    conv_2: Conv1d,
    norm_2: Option<BatchNorm>,
}

fn normalise(norm: &Option<BatchNorm>, x: Tensor<3>) -> Tensor<3> {
    match norm {
        Some(norm) => norm.forward(x),
        None => x,
    }
}

impl ResidualBlock {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = relu(normalise(&self.norm_1, self.conv_1.forward(x.clone())));
        relu(x + normalise(&self.norm_2, self.conv_2.forward(h)))
    }
}

impl ConvBranch {
    /// Max-over-time features `[batch, channels]`; windows that start past a text's end are left
    /// out (they only see padding), so a text scores the same in any batch.
    fn forward(&self, x: Tensor<3>, lengths: &[usize]) -> Tensor<2> {
        let h = relu(normalise(&self.norm, self.conv.forward(x)));
        let h = self.blocks.iter().fold(h, |h, block| block.forward(h));
        let [batch, channels, windows] = h.dims();
        let keep: Vec<f32> = lengths
            .iter()
            .flat_map(|&len| {
                let real = (len + 1).saturating_sub(self.width).max(1);
                (0..windows).map(move |t| if t < real { 1.0 } else { 0.0 })
            })
            .collect();
        let keep =
            Tensor::<1>::from_floats(keep.as_slice(), &h.device()).reshape([batch, 1, windows]);
        // After the ReLU every feature is >= 0, so zeroed windows never win the max.
        (h * keep).max_dim(2).reshape([batch, channels])
    }
}

impl TextCnn {
    /// Class logits `[batch, labels]` for token ids `[batch, time]` (padded, `time` at least the
    /// widest kernel) whose real lengths are `lengths`.
    pub fn forward(&self, ids: Tensor<2, Int>, lengths: &[usize]) -> Tensor<2> {
        self.forward_embedded(self.embed(ids), lengths)
    }

    /// The token embeddings `[batch, time, dim]`: where saliency differentiates.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embedding.forward(ids)
    }

    /// [`TextCnn::forward`] from the token embeddings.
    pub fn forward_embedded(&self, embedded: Tensor<3>, lengths: &[usize]) -> Tensor<2> {
        let features = self.features_embedded(embedded, lengths);
        self.classifier.forward(self.dropout.forward(features))
    }

    /// The pooled features of every branch `[batch, channels x branches]`, before the head.
    pub fn features(&self, ids: Tensor<2, Int>, lengths: &[usize]) -> Tensor<2> {
        self.features_embedded(self.embed(ids), lengths)
    }

    /// [`TextCnn::features`] from the token embeddings.
    fn features_embedded(&self, embedded: Tensor<3>, lengths: &[usize]) -> Tensor<2> {
        let x = embedded.swap_dims(1, 2);
        let features: Vec<Tensor<2>> = self
            .branches
            .iter()
            .map(|branch| branch.forward(x.clone(), lengths))
            .collect();
        Tensor::cat(features, 1)
    }

    /// The shortest padded length the convolutions accept.
    pub fn min_len(&self) -> usize {
        self.branches.iter().map(|b| b.width).max().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::cross_entropy;
    use crate::models::classifier::multi_sample_loss;

    fn options(batch_norm: bool, residual_blocks: usize) -> TextCnnOptions {
        TextCnnOptions {
            embedding_dim: 8,
            kernel_sizes: vec![2, 3],
            channels: 4,
            dropout: 0.0,
            multi_sample_dropout: None,
            batch_norm,
            residual_blocks,
            max_len: 16,
            vocab_size: Some(20),
            num_labels: Some(3),
        }
    }

    /// Padding a text further must not change its logits: the windows over padding are masked.
    #[test]
    fn padding_does_not_change_the_logits() {
        let device = Device::flex();
        for batch_norm in [false, true] {
            let model = options(batch_norm, 0).config().unwrap().init(&device);
            let short = Tensor::<2, Int>::from_data([[3i64, 4, 5, 6]], &device);
            let long = Tensor::<2, Int>::from_data([[3i64, 4, 5, 6, 0, 0, 0]], &device);
            let a = model.forward(short, &[4]);
            let b = model.forward(long, &[4]);
            assert_eq!(a.dims(), [1, 3]);
            let difference: f32 = (a - b).abs().max().into_scalar();
            assert!(difference < 1e-5, "batch_norm {batch_norm}: {difference}");
        }
    }

    /// Residual blocks keep the feature maps' shape, and a block adds two convolutions (and two
    /// BatchNorms) per branch.
    #[test]
    fn residual_blocks_add_their_convolutions() {
        let device = Device::flex();
        let plain = options(true, 0).config().unwrap().init(&device);
        let deep = options(true, 2).config().unwrap().init(&device);
        let conv = 4 * 4 * 3 + 4;
        // Gain and shift, plus the running mean and variance that `num_params` counts too.
        let norm = 4 * 4;
        let per_branch = 2 * 2 * (conv + norm);
        assert_eq!(deep.num_params() - plain.num_params(), 2 * per_branch);
        let ids = Tensor::<2, Int>::from_data([[3i64, 4, 5, 6, 7], [1, 2, 0, 0, 0]], &device);
        assert_eq!(deep.forward(ids, &[5, 2]).dims(), [2, 3]);
    }

    /// A model on an autodiff device (so dropout is on), two texts, their features and a
    /// cross-entropy over their labels. Burn's random generator is one for the process, which
    /// tests running beside these draw from too, so nothing here depends on which numbers
    /// come out of it: the same masks for two computations are checked end to end instead
    /// (tests/labelled.rs, one process per run).
    fn case(dropout: f64, multi_sample: Option<MultiSampleDropout>) -> TextCnn {
        let mut o = options(false, 0);
        o.dropout = dropout;
        o.multi_sample_dropout = multi_sample;
        o.config().unwrap().init(&Device::flex().autodiff())
    }

    /// The features of two texts (a fresh graph each call).
    fn features(model: &TextCnn) -> Tensor<2> {
        let device = model.embedding.weight.device();
        let ids = Tensor::<2, Int>::from_data([[3i64, 4, 5, 6, 7], [1, 2, 8, 0, 0]], &device);
        model.features(ids, &[5, 3])
    }

    fn ce(logits: Tensor<2>) -> (Tensor<1>, Tensor<1>) {
        let targets = Tensor::<1, Int>::from_data([2i64, 0], &logits.device());
        cross_entropy(logits, targets, 0.1, None)
    }

    /// Each sample draws its own mask on the same features, and the loss is the mean of the
    /// samples' losses; one sample is the head's loss itself.
    #[test]
    fn multi_sample_dropout_averages_independent_samples() {
        let msd = MultiSampleDropout {
            samples: 3,
            rate: 0.5,
        };
        let model = case(0.1, Some(msd));
        let head = TextCnnConfig::head(&model);
        let features = features(&model);
        let mut seen: Vec<(Vec<f32>, f32)> = Vec::new();
        let (loss, _) = multi_sample_loss(features.clone(), head, 3, |logits| {
            let (l, n) = ce(logits.clone());
            seen.push((logits.try_into_vec_as().unwrap(), l.clone().into_scalar()));
            (l, n)
        });
        assert_eq!(seen.len(), 3);
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            assert_ne!(seen[a].0, seen[b].0, "samples {a} and {b} share a mask");
        }
        let mean = seen.iter().map(|s| s.1).sum::<f32>() / 3.0;
        let got: f32 = loss.into_scalar();
        assert!((got - mean).abs() < 1e-6, "{got} vs {mean}");
        // Every sample differs from the head without dropout, and the head drops at `rate`
        // 0.5 in place of `model.dropout` 0.1 (800 of 1600 expected; 0.1 would drop 160).
        let plain: Vec<f32> = head.1.forward(features.clone()).try_into_vec_as().unwrap();
        assert!(seen.iter().all(|s| s.0 != plain));
        let ones = Tensor::<2>::ones([100, 16], &features.device());
        let dropped: f32 = head
            .0
            .forward(ones)
            .equal_elem(0.0)
            .float()
            .sum()
            .into_scalar();
        assert!(
            (600.0..=1000.0).contains(&dropped),
            "{dropped} of 1600 dropped"
        );

        let mut single: Option<f32> = None;
        let (one, _) = multi_sample_loss(features, head, 1, |logits| {
            let (l, n) = ce(logits);
            single = Some(l.clone().into_scalar());
            (l, n)
        });
        assert_eq!(one.into_scalar::<f32>(), single.unwrap());
    }

    /// With rate 0 any number of samples gives the loss and gradients of the head without
    /// dropout, although `model.dropout` is 0.5: `rate` replaces it in the head.
    #[test]
    fn multi_sample_dropout_at_rate_zero_is_the_plain_loss() {
        let msd = MultiSampleDropout {
            samples: 5,
            rate: 0.0,
        };
        let model = case(0.5, Some(msd));
        let head = TextCnnConfig::head(&model);
        let with_grads = |loss: Tensor<1>| {
            let value: f32 = loss.clone().into_scalar();
            let grads = loss.backward();
            let grad = |p: &burn::module::Param<Tensor<2>>| -> Vec<f32> {
                p.val().grad(&grads).unwrap().try_into_vec_as().unwrap()
            };
            (
                value,
                grad(&model.classifier.weight),
                grad(&model.embedding.weight),
            )
        };
        let reference = with_grads(ce(head.1.forward(features(&model))).0);
        let got = with_grads(multi_sample_loss(features(&model), head, 5, ce).0);
        assert!((got.0 - reference.0).abs() < 1e-6, "{got:?} {reference:?}");
        let all = |g: &(f32, Vec<f32>, Vec<f32>)| [g.1.clone(), g.2.clone()].concat();
        for (a, b) in all(&got).iter().zip(all(&reference)) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
    }
}
