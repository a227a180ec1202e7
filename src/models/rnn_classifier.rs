//! A recurrent text classifier: embeddings, a (bidirectional) GRU or LSTM stack, the states
//! pooled over the text (the final states, max or mean over time, or additive attention as in
//! Yang et al. 2016), dropout and a linear layer to the labels. Padding never reaches the
//! pooling: the state holds through it and pooled positions are masked.

use super::classifier::{self, ClassifierConfig, MultiSampleDropout, TextBatch};
use super::recurrent::{CellKind, Recurrent, run_stack};
use crate::error::Result;
use crate::recipe::{DataSizes, ModelOptions, TaskKind, require_dropout, require_positive};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

/// How the states of a text become one vector.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The top layer's final states (both directions).
    Last,
    /// The largest value of each feature over the text.
    #[default]
    Max,
    /// The mean over the text.
    Mean,
    /// A learned weighted mean: softmax over `v . tanh(W h_t)`.
    Attention,
}

/// The `model:` section for `type: rnn`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RnnClassifierOptions {
    /// `gru` or `lstm`.
    #[serde(default = "default_cell")]
    pub cell: CellKind,
    #[serde(default = "default_width")]
    pub embedding_dim: usize,
    /// State width of each direction of each layer.
    #[serde(default = "default_width")]
    pub hidden_size: usize,
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    #[serde(default = "default_true")]
    pub bidirectional: bool,
    #[serde(default)]
    pub pooling: Pooling,
    /// Dropout on the embeddings, between layers and before the output layer.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Multi-sample dropout in the head (its `rate` replaces `dropout` before the output layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_sample_dropout: Option<MultiSampleDropout>,
    /// Texts are cut to this many tokens.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Filled from the tokenizer and the label map by `train`.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    #[serde(default)]
    pub num_labels: Option<usize>,
}

fn default_cell() -> CellKind {
    CellKind::Lstm
}
fn default_width() -> usize {
    128
}
fn default_layers() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_dropout() -> f64 {
    0.3
}
fn default_max_len() -> usize {
    256
}

impl ModelOptions for RnnClassifierOptions {
    fn name(&self) -> &'static str {
        "rnn"
    }

    fn task(&self) -> TaskKind {
        TaskKind::Classification
    }

    fn validate(&self, problems: &mut Vec<String>) {
        require_positive(
            problems,
            &[
                ("embedding_dim", self.embedding_dim),
                ("hidden_size", self.hidden_size),
                ("num_layers", self.num_layers),
                ("max_len", self.max_len),
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

impl RnnClassifierOptions {
    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<RnnClassifierConfig> {
        let (vocab_size, num_labels) =
            classifier::recorded_sizes(self.name(), self.vocab_size, self.num_labels)?;
        Ok(RnnClassifierConfig {
            options: self.clone(),
            vocab_size,
            num_labels,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RnnClassifierConfig {
    pub options: RnnClassifierOptions,
    pub vocab_size: usize,
    pub num_labels: usize,
}

impl RnnClassifierConfig {
    pub fn init(&self, device: &Device) -> RnnClassifier {
        let o = &self.options;
        let dirs = if o.bidirectional { 2 } else { 1 };
        let width = dirs * o.hidden_size;
        let layer_input = |l: usize| if l == 0 { o.embedding_dim } else { width };
        let layers = |count: usize| -> Vec<Recurrent> {
            (0..count)
                .map(|l| Recurrent::new(o.cell, layer_input(l), o.hidden_size, device))
                .collect()
        };
        RnnClassifier {
            embedding: EmbeddingConfig::new(self.vocab_size, o.embedding_dim).init(device),
            forward: layers(o.num_layers),
            backward: layers(o.num_layers * (dirs - 1)),
            attention: (o.pooling == Pooling::Attention).then(|| {
                (
                    LinearConfig::new(width, width).init(device),
                    LinearConfig::new(width, 1).with_bias(false).init(device),
                )
            }),
            dropout: DropoutConfig::new(o.dropout).init(),
            head_dropout: DropoutConfig::new(MultiSampleDropout::head_rate(
                o.multi_sample_dropout.as_ref(),
                o.dropout,
            ))
            .init(),
            output: LinearConfig::new(width, self.num_labels).init(device),
            pooling: o.pooling,
        }
    }
}

impl ClassifierConfig for RnnClassifierConfig {
    type Model = RnnClassifier;
    fn init(&self, device: &Device) -> RnnClassifier {
        RnnClassifierConfig::init(self, device)
    }
    fn logits(model: &RnnClassifier, batch: TextBatch) -> Tensor<2> {
        model.forward(batch.ids, batch.padding)
    }
    fn embed(model: &RnnClassifier, ids: Tensor<2, Int>) -> Tensor<3> {
        model.embed(ids)
    }
    fn logits_embedded(model: &RnnClassifier, embedded: Tensor<3>, batch: TextBatch) -> Tensor<2> {
        model.forward_embedded(embedded, batch.padding)
    }
    fn pooled_state(model: &RnnClassifier, batch: TextBatch) -> Option<Tensor<2>> {
        Some(model.pooled_embedded(model.embed(batch.ids), batch.padding))
    }
    fn features(model: &RnnClassifier, batch: TextBatch) -> Tensor<2> {
        model.features(batch.ids, batch.padding)
    }
    fn head(model: &RnnClassifier) -> (&Dropout, &Linear) {
        (&model.head_dropout, &model.output)
    }
    fn multi_sample_dropout(&self) -> Option<MultiSampleDropout> {
        self.options.multi_sample_dropout
    }
    fn max_len(&self) -> usize {
        self.options.max_len
    }
    fn width(&self) -> usize {
        self.options.hidden_size
    }
}

#[derive(Module, Debug)]
pub struct RnnClassifier {
    embedding: Embedding,
    forward: Vec<Recurrent>,
    backward: Vec<Recurrent>,
    /// Attention pooling's projection and scoring vector.
    attention: Option<(Linear, Linear)>,
    /// On the embeddings and between layers.
    dropout: Dropout,
    /// Before the output layer: `dropout`'s rate, or multi-sample dropout's.
    head_dropout: Dropout,
    output: Linear,
    #[module(skip)]
    pooling: Pooling,
}

impl RnnClassifier {
    /// Label logits `[batch, labels]` for token ids `[batch, time]` whose padding is true in
    /// `padding`.
    pub fn forward(&self, ids: Tensor<2, Int>, padding: Tensor<2, Bool>) -> Tensor<2> {
        self.forward_embedded(self.embed(ids), padding)
    }

    /// The token embeddings `[batch, time, dim]`: where saliency differentiates.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embedding.forward(ids)
    }

    /// [`RnnClassifier::forward`] from the token embeddings.
    pub fn forward_embedded(&self, embedded: Tensor<3>, padding: Tensor<2, Bool>) -> Tensor<2> {
        let pooled = self.pooled_embedded(embedded, padding);
        self.output.forward(self.head_dropout.forward(pooled))
    }

    /// The pooled states `[batch, width]`, before the head.
    pub fn features(&self, ids: Tensor<2, Int>, padding: Tensor<2, Bool>) -> Tensor<2> {
        self.pooled_embedded(self.embed(ids), padding)
    }

    /// The pooled state `[batch, width]` the output layer reads (the last state, or the max,
    /// mean or attention pooling of the states), from the token embeddings.
    pub fn pooled_embedded(&self, embedded: Tensor<3>, padding: Tensor<2, Bool>) -> Tensor<2> {
        let keep = padding.clone().bool_not().float();
        let x = self.dropout.forward(embedded);
        let (states, finals) = run_stack(
            &self.forward,
            &self.backward,
            x,
            keep.clone(),
            &self.dropout,
        );
        let [batch, time, width] = states.dims();
        let pad3 = padding.clone().unsqueeze_dim::<3>(2);
        match self.pooling {
            Pooling::Last => finals.last().expect("at least one layer").h.clone(),
            Pooling::Max => {
                // An empty text (all padding) pools to zeros, as its states are.
                let empty = keep.clone().sum_dim(1).equal_elem(0.0);
                states
                    .mask_fill(pad3.expand([batch, time, width]), f32::NEG_INFINITY)
                    .max_dim(1)
                    .reshape([batch, width])
                    .mask_fill(empty.expand([batch, width]), 0.0)
            }
            Pooling::Mean => {
                let keep = keep.unsqueeze_dim::<3>(2);
                let lengths = keep.clone().sum_dim(1).clamp_min(1.0);
                ((states * keep).sum_dim(1) / lengths).reshape([batch, width])
            }
            Pooling::Attention => {
                let (project, score) = self.attention.as_ref().expect("attention pooling");
                let scores = score
                    .forward(project.forward(states.clone()).tanh())
                    .reshape([batch, time]);
                let weights = softmax(scores.mask_fill(padding, -1e9), 1);
                weights
                    .unsqueeze_dim::<3>(1)
                    .matmul(states)
                    .reshape([batch, width])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pooling: Pooling, cell: CellKind, bidirectional: bool) -> RnnClassifier {
        let options = RnnClassifierOptions {
            cell,
            embedding_dim: 6,
            hidden_size: 5,
            num_layers: 2,
            bidirectional,
            pooling,
            dropout: 0.0,
            multi_sample_dropout: None,
            max_len: 16,
            vocab_size: Some(20),
            num_labels: Some(3),
        };
        options.config().unwrap().init(&Device::flex())
    }

    /// A text padded in a batch gets the logits it gets alone, with every pooling.
    #[test]
    fn padding_changes_no_text_s_logits() {
        let device = Device::flex();
        let ids = |flat: Vec<i64>, rows: usize| {
            let time = flat.len() / rows;
            Tensor::<2, Int>::from_data(TensorData::new(flat, [rows, time]), &device)
        };
        for pooling in [
            Pooling::Last,
            Pooling::Max,
            Pooling::Mean,
            Pooling::Attention,
        ] {
            for (cell, bidirectional) in [(CellKind::Lstm, true), (CellKind::Gru, false)] {
                let m = model(pooling, cell, bidirectional);
                let batch = ids(vec![3, 4, 5, 0, 0, 6, 7, 8, 9, 10], 2);
                let padding = batch.clone().equal_elem(0);
                let together = m.forward(batch, padding);
                let alone = ids(vec![3, 4, 5], 1);
                let alone = m.forward(alone.clone(), alone.equal_elem(0));
                let diff: f32 = (together.narrow(0, 0, 1) - alone).abs().max().into_scalar();
                assert!(diff < 1e-5, "{pooling:?} {cell:?}: {diff}");
            }
        }
    }
}
