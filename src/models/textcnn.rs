//! TextCNN (Kim 2014): token embeddings, parallel 1-D convolutions of several widths, ReLU,
//! max-over-time pooling, dropout and a linear classifier. Options: BatchNorm after each
//! convolution, and residual blocks (two width-3 convolutions with a skip connection, as in
//! ResNet/DPCNN) stacked on each branch before the pooling.

use super::classifier::{self, ClassifierConfig, TextBatch};
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
            dropout: DropoutConfig::new(o.dropout).init(),
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
        let x = embedded.swap_dims(1, 2);
        let features: Vec<Tensor<2>> = self
            .branches
            .iter()
            .map(|branch| branch.forward(x.clone(), lengths))
            .collect();
        self.classifier
            .forward(self.dropout.forward(Tensor::cat(features, 1)))
    }

    /// The shortest padded length the convolutions accept.
    pub fn min_len(&self) -> usize {
        self.branches.iter().map(|b| b.width).max().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(batch_norm: bool, residual_blocks: usize) -> TextCnnOptions {
        TextCnnOptions {
            embedding_dim: 8,
            kernel_sizes: vec![2, 3],
            channels: 4,
            dropout: 0.0,
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
}
