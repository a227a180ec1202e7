//! A recurrent language model as PyTorch's word_language_model example builds it: embeddings,
//! a stack of LSTM or GRU layers, dropout on the embeddings, between layers and on the top
//! layer's outputs, and a linear layer to the vocabulary, optionally tied to the embedding
//! (Press & Wolf 2017; Inan et al. 2017). The state goes in and comes out, so a stream can be
//! read segment by segment (truncated BPTT, `tasks::rnn_lm`).

use super::recurrent::{CellKind, Recurrent, RnnState};
use crate::error::{Error, Result};
use crate::recipe::{
    DataSizes, ModelOptions, TaskKind, require_dropout, require_positive, vocab_at_least,
};
use burn::module::Param;
use burn::nn::LinearConfig;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The `model:` section for `type: rnn_lm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RnnLmOptions {
    /// `lstm` or `gru`.
    #[serde(default = "default_cell")]
    pub cell: CellKind,
    #[serde(default = "default_width")]
    pub embedding_dim: usize,
    /// State width of each layer.
    #[serde(default = "default_width")]
    pub hidden_size: usize,
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    /// Dropout on the embeddings, between layers and on the top layer's outputs.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// The output layer is the embedding matrix (transposed), plus a bias: needs
    /// `hidden_size == embedding_dim`.
    #[serde(default)]
    pub tie_weights: bool,
    /// Truncated BPTT: the tokens each batch row reads per training step (gradients flow back
    /// this far; the state carries on past it).
    #[serde(default = "default_bptt")]
    pub bptt: usize,
    /// Filled from the tokenizer by `train`.
    #[serde(default)]
    pub vocab_size: Option<usize>,
}

fn default_cell() -> CellKind {
    CellKind::Lstm
}
fn default_width() -> usize {
    200
}
fn default_layers() -> usize {
    2
}
fn default_dropout() -> f64 {
    0.2
}
fn default_bptt() -> usize {
    35
}

impl ModelOptions for RnnLmOptions {
    fn name(&self) -> &'static str {
        "rnn_lm"
    }

    fn task(&self) -> TaskKind {
        TaskKind::LanguageModel
    }

    fn validate(&self, problems: &mut Vec<String>) {
        require_positive(
            problems,
            &[
                ("embedding_dim", self.embedding_dim),
                ("hidden_size", self.hidden_size),
                ("num_layers", self.num_layers),
                ("bptt", self.bptt),
            ],
        );
        require_dropout(problems, self.dropout);
        if self.tie_weights && self.hidden_size != self.embedding_dim {
            problems.push(format!(
                "`model.tie_weights` needs `model.hidden_size` ({}) equal to \
                 `model.embedding_dim` ({}): the output layer is the embedding matrix; set \
                 them equal or turn tie_weights off",
                self.hidden_size, self.embedding_dim
            ));
        }
    }

    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        self.vocab_size = Some(vocab_at_least(self.vocab_size, sizes.vocab, "vocab_size")?);
        Ok(())
    }
}

impl RnnLmOptions {
    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<RnnLmConfig> {
        let vocab_size = self.vocab_size.ok_or_else(|| {
            Error::Recipe(
                "the rnn_lm model needs `model.vocab_size`, filled in by `nlpkit train`; give an \
                 experiment folder it wrote"
                    .into(),
            )
        })?;
        Ok(RnnLmConfig {
            options: self.clone(),
            vocab_size,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RnnLmConfig {
    pub options: RnnLmOptions,
    pub vocab_size: usize,
}

impl RnnLmConfig {
    pub fn init(&self, device: &Device) -> RnnLm {
        let o = &self.options;
        // The example's initialisation: embedding and output weights uniform in ±0.1.
        let uniform = Initializer::Uniform {
            min: -0.1,
            max: 0.1,
        };
        let layers = (0..o.num_layers)
            .map(|l| {
                let d_in = if l == 0 {
                    o.embedding_dim
                } else {
                    o.hidden_size
                };
                Recurrent::new(o.cell, d_in, o.hidden_size, device)
            })
            .collect();
        let (output, output_bias) = match o.tie_weights {
            true => (
                None,
                Some(Param::from_tensor(Tensor::zeros([self.vocab_size], device))),
            ),
            false => (
                Some(
                    LinearConfig::new(o.hidden_size, self.vocab_size)
                        .with_initializer(uniform.clone())
                        .init(device),
                ),
                None,
            ),
        };
        RnnLm {
            embedding: EmbeddingConfig::new(self.vocab_size, o.embedding_dim)
                .with_initializer(uniform)
                .init(device),
            layers,
            dropout: DropoutConfig::new(o.dropout).init(),
            output,
            output_bias,
        }
    }
}

#[derive(Module, Debug)]
pub struct RnnLm {
    embedding: Embedding,
    layers: Vec<Recurrent>,
    dropout: Dropout,
    /// The output layer, when not tied to the embedding.
    output: Option<Linear>,
    /// The tied output layer's bias.
    output_bias: Option<Param<Tensor<1>>>,
}

impl RnnLm {
    /// Every layer's state at the start of a stream: zeros for `rows` rows.
    pub fn zero_state(&self, rows: usize, device: &Device) -> Vec<RnnState> {
        let layers = self.layers.iter();
        layers.map(|l| l.zero_state(rows, device)).collect()
    }

    /// Logits `[batch, time, vocab]` for `tokens` `[batch, time]` read on from `state` (one per
    /// layer), and the state after them. Where `keep` `[batch, time]` is 0 (a row's stream has
    /// ended) the state holds.
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        state: Vec<RnnState>,
        keep: Option<Tensor<2>>,
    ) -> (Tensor<3>, Vec<RnnState>) {
        let mut x = self.dropout.forward(self.embedding.forward(tokens));
        let mut finals = Vec::with_capacity(self.layers.len());
        for (l, (layer, state)) in self.layers.iter().zip(state).enumerate() {
            if l > 0 {
                x = self.dropout.forward(x);
            }
            let (out, last) = layer.run_from(x, keep.clone(), state, false);
            x = out;
            finals.push(last);
        }
        (self.head(self.dropout.forward(x)), finals)
    }

    fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [batch, time, width] = hidden.dims();
        let flat = hidden.reshape([batch * time, width]);
        let logits = match (&self.output, &self.output_bias) {
            (Some(output), _) => output.forward(flat),
            (None, Some(bias)) => {
                let tied = self.embedding.weight.val().transpose();
                flat.matmul(tied) + bias.val().unsqueeze_dim(0)
            }
            (None, None) => unreachable!("an output layer or a tied bias"),
        };
        let vocab = logits.dims()[1];
        logits.reshape([batch, time, vocab])
    }
}

/// A state with its gradient history cut: what truncated BPTT carries to the next segment.
pub fn detach(state: Vec<RnnState>) -> Vec<RnnState> {
    state
        .into_iter()
        .map(|s| RnnState {
            h: s.h.detach(),
            c: s.c.map(|c| c.detach()),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::Distribution;

    pub fn options(cell: CellKind) -> RnnLmOptions {
        RnnLmOptions {
            cell,
            embedding_dim: 8,
            hidden_size: 8,
            num_layers: 2,
            dropout: 0.0,
            tie_weights: false,
            bptt: 5,
            vocab_size: Some(13),
        }
    }

    /// A stream read in two halves, the state carried from the first to the second, gives the
    /// logits of one pass over the whole, for both cells and tied or not.
    #[test]
    fn two_halves_with_the_state_carried_equal_one_pass() {
        let device = Device::flex();
        for (cell, tie_weights) in [
            (CellKind::Lstm, false),
            (CellKind::Gru, false),
            (CellKind::Lstm, true),
        ] {
            let model = RnnLmOptions {
                tie_weights,
                ..options(cell)
            }
            .config()
            .unwrap()
            .init(&device);
            let tokens = Tensor::<2>::random([3, 12], Distribution::Uniform(0.0, 13.0), &device)
                .int()
                .clamp(0, 12);
            let (whole, whole_state) =
                model.forward(tokens.clone(), model.zero_state(3, &device), None);
            let (first, carried) = model.forward(
                tokens.clone().narrow(1, 0, 7),
                model.zero_state(3, &device),
                None,
            );
            let (second, state) =
                model.forward(tokens.clone().narrow(1, 7, 5), detach(carried), None);
            let halves = Tensor::cat(vec![first, second], 1);
            let diff: f32 = (halves - whole.clone()).abs().max().into_scalar();
            assert!(diff < 1e-5, "{cell:?} tied {tie_weights}: {diff}");
            let last: f32 = (state[1].h.clone() - whole_state[1].h.clone())
                .abs()
                .max()
                .into_scalar();
            assert!(last < 1e-5, "{cell:?}: final state {last}");
            // The second half from a fresh state differs: the carried state matters.
            let (fresh, _) =
                model.forward(tokens.narrow(1, 7, 5), model.zero_state(3, &device), None);
            let gap: f32 = (fresh - whole.narrow(1, 7, 5)).abs().max().into_scalar();
            assert!(gap > 1e-4, "{cell:?}: the state changed nothing ({gap})");
        }
    }

    #[test]
    fn tied_weights_need_equal_widths() {
        let mut problems = Vec::new();
        RnnLmOptions {
            tie_weights: true,
            hidden_size: 16,
            ..options(CellKind::Gru)
        }
        .validate(&mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("`model.tie_weights`"),
            "{problems:?}"
        );
    }
}
