//! Bengio et al.'s neural probabilistic language model (2003): the embeddings of the `context`
//! tokens before a position, concatenated, a tanh hidden layer, optionally direct connections
//! from the concatenated embeddings to the output, and a softmax over the vocabulary:
//! `y = b + W x + U tanh(d + H x)`.
//!
//! It reads windows as GPT-2 does (`tasks::lm`): every position of a window predicts its next
//! token from itself and the `context - 1` tokens before it. Context that would reach before
//! the window (or the text) is a learned "before the text" embedding, the extra last row.

use crate::error::{Error, Result};
use crate::recipe::{
    DataSizes, ModelOptions, TaskKind, require_dropout, require_positive, vocab_at_least,
};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The `model:` section for `type: nnlm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NnlmOptions {
    /// Tokens each prediction reads: n - 1 of an n-gram model.
    #[serde(default = "default_context")]
    pub context: usize,
    #[serde(default = "default_embedding")]
    pub embedding_dim: usize,
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    /// Direct connections from the concatenated embeddings to the output (Bengio's W).
    #[serde(default)]
    pub direct: bool,
    /// Dropout on the concatenated embeddings and on the hidden layer.
    #[serde(default)]
    pub dropout: f64,
    /// The training window: positions drawn together (each predicted from its own context).
    #[serde(default = "default_block")]
    pub block_size: usize,
    /// Filled from the tokenizer by `train`.
    #[serde(default)]
    pub vocab_size: Option<usize>,
}

fn default_context() -> usize {
    4
}
fn default_embedding() -> usize {
    60
}
fn default_hidden() -> usize {
    100
}
fn default_block() -> usize {
    64
}

impl ModelOptions for NnlmOptions {
    fn name(&self) -> &'static str {
        "nnlm"
    }

    fn task(&self) -> TaskKind {
        TaskKind::LanguageModel
    }

    fn validate(&self, problems: &mut Vec<String>) {
        require_positive(
            problems,
            &[
                ("context", self.context),
                ("embedding_dim", self.embedding_dim),
                ("hidden_size", self.hidden_size),
                ("block_size", self.block_size),
            ],
        );
        require_dropout(problems, self.dropout);
    }

    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        self.vocab_size = Some(vocab_at_least(self.vocab_size, sizes.vocab, "vocab_size")?);
        Ok(())
    }
}

impl NnlmOptions {
    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<NnlmConfig> {
        let vocab_size = self.vocab_size.ok_or_else(|| {
            Error::Recipe(
                "the nnlm model needs `model.vocab_size`, filled in by `nlpkit train`; give an \
                 experiment folder it wrote"
                    .into(),
            )
        })?;
        Ok(NnlmConfig {
            options: self.clone(),
            vocab_size,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NnlmConfig {
    pub options: NnlmOptions,
    pub vocab_size: usize,
}

impl NnlmConfig {
    pub fn init(&self, device: &Device) -> Nnlm {
        let o = &self.options;
        let concat = o.context * o.embedding_dim;
        Nnlm {
            // One more row: the context before the text.
            embedding: EmbeddingConfig::new(self.vocab_size + 1, o.embedding_dim).init(device),
            hidden: LinearConfig::new(concat, o.hidden_size).init(device),
            output: LinearConfig::new(o.hidden_size, self.vocab_size).init(device),
            direct: o.direct.then(|| {
                LinearConfig::new(concat, self.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
            dropout: DropoutConfig::new(o.dropout).init(),
            context: o.context,
            vocab_size: self.vocab_size,
        }
    }
}

#[derive(Module, Debug)]
pub struct Nnlm {
    embedding: Embedding,
    hidden: Linear,
    output: Linear,
    direct: Option<Linear>,
    dropout: Dropout,
    context: usize,
    vocab_size: usize,
}

impl Nnlm {
    pub fn context(&self) -> usize {
        self.context
    }

    /// Logits `[batch, time, vocab]`: position `p` predicts the token after it from tokens
    /// `p + 1 - context ..= p` of `tokens` `[batch, time]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [batch, time] = tokens.dims();
        let device = tokens.device();
        let before = self.context - 1;
        let padded = match before {
            0 => tokens,
            _ => {
                let start =
                    Tensor::<2, Int>::full([batch, before], self.vocab_size as i64, &device);
                Tensor::cat(vec![start, tokens], 1)
            }
        };
        let embedded = self.embedding.forward(padded);
        // Oldest first: slice j holds, at position p, the embedding of token p + 1 - context + j.
        let windows = (0..self.context)
            .map(|j| embedded.clone().narrow(1, j, time))
            .collect();
        let x = self.dropout.forward(Tensor::cat(windows, 2));
        let h = self.dropout.forward(self.hidden.forward(x.clone()).tanh());
        let y = self.output.forward(h);
        match &self.direct {
            Some(direct) => y + direct.forward(x),
            None => y,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The logits at a position depend on its context window only: changing a token before the
    /// window leaves them bit for bit, changing one inside changes them.
    #[test]
    fn a_position_reads_only_its_context_window() {
        let device = Device::flex();
        for direct in [false, true] {
            let model = NnlmOptions {
                context: 3,
                embedding_dim: 4,
                hidden_size: 6,
                direct,
                dropout: 0.0,
                block_size: 8,
                vocab_size: Some(11),
            }
            .config()
            .unwrap()
            .init(&device);
            let ids =
                |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [1, 8]), &device);
            let base = model.forward(ids(vec![1, 2, 3, 4, 5, 6, 7, 8]));
            // Position 5 reads tokens 3, 4, 5; token 2 is outside, token 3 inside.
            let outside = model.forward(ids(vec![1, 2, 9, 4, 5, 6, 7, 8]));
            let inside = model.forward(ids(vec![1, 2, 3, 9, 5, 6, 7, 8]));
            let at = |t: &Tensor<3>, p: usize| -> Vec<f32> {
                t.clone().narrow(1, p, 1).try_into_vec_as::<f32>().unwrap()
            };
            assert_eq!(at(&base, 5), at(&outside, 5), "direct {direct}");
            assert_ne!(at(&base, 5), at(&inside, 5), "direct {direct}");
            // Positions before the change are untouched too (no look-ahead).
            assert_eq!(at(&base, 1), at(&outside, 1));
        }
    }
}
