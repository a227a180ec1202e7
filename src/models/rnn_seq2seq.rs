//! RNN encoder-decoder with additive attention (Bahdanau et al. 2015), as in the d2l and PyTorch
//! seq2seq tutorials: a (bi)directional GRU/LSTM encoder over source embeddings; a decoder whose
//! state starts from the encoder's final state (through a tanh bridge per layer), reads at every
//! step the embedding of the previous target token and the attention context computed from its
//! previous top-layer state, and predicts through a deep output layer
//! `tanh(W [state; context; embedding])` tied to the target embedding.

use super::layer_norm::ForwardFused;
use super::recurrent::{CellKind, Recurrent, RnnState, run_stack, unstack_time};
use super::rnn_cell::tanh;
use super::seq2seq::{Seq2Seq, record_vocab_sizes, recorded_vocab_sizes};
use crate::error::Result;
use crate::recipe::{DataSizes, ModelOptions, TaskKind, require_dropout, require_positive};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

/// The `model:` section for `type: rnn_seq2seq`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RnnSeq2SeqOptions {
    /// `gru` or `lstm`.
    #[serde(default)]
    pub cell: CellKind,
    #[serde(default = "default_embed_dim")]
    pub embed_dim: usize,
    /// State width of each direction of each layer.
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    /// Layers of the encoder and of the decoder.
    #[serde(default = "default_layers")]
    pub num_layers: usize,
    /// A backward encoder layer beside each forward one, their states concatenated.
    #[serde(default = "default_true")]
    pub bidirectional: bool,
    /// Width of the additive attention's hidden layer (default: `hidden_size`).
    #[serde(default)]
    pub attention_dim: Option<usize>,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Filled from the tokenizers when absent.
    #[serde(default)]
    pub source_vocab_size: Option<usize>,
    #[serde(default)]
    pub target_vocab_size: Option<usize>,
}

fn default_embed_dim() -> usize {
    256
}
fn default_hidden() -> usize {
    256
}
fn default_layers() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_dropout() -> f64 {
    0.2
}

impl ModelOptions for RnnSeq2SeqOptions {
    fn name(&self) -> &'static str {
        "rnn_seq2seq"
    }

    fn task(&self) -> TaskKind {
        TaskKind::Translation
    }

    fn validate(&self, problems: &mut Vec<String>) {
        require_positive(
            problems,
            &[
                ("embed_dim", self.embed_dim),
                ("hidden_size", self.hidden_size),
                ("num_layers", self.num_layers),
                ("attention_dim", self.attention_dim.unwrap_or(1)),
            ],
        );
        require_dropout(problems, self.dropout);
    }

    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        let sides = (&mut self.source_vocab_size, &mut self.target_vocab_size);
        record_vocab_sizes(sides, sizes)
    }
}

impl RnnSeq2SeqOptions {
    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<RnnSeq2SeqConfig> {
        let (source_vocab, target_vocab) =
            recorded_vocab_sizes(self.name(), self.source_vocab_size, self.target_vocab_size)?;
        Ok(RnnSeq2SeqConfig {
            options: self.clone(),
            source_vocab,
            target_vocab,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RnnSeq2SeqConfig {
    pub options: RnnSeq2SeqOptions,
    pub source_vocab: usize,
    pub target_vocab: usize,
}

impl RnnSeq2SeqConfig {
    pub fn init(&self, device: &Device) -> RnnSeq2Seq {
        let o = &self.options;
        let (e, h, layers) = (o.embed_dim, o.hidden_size, o.num_layers);
        let dirs = if o.bidirectional { 2 } else { 1 };
        let enc_width = dirs * h;
        let attention = o.attention_dim.unwrap_or(h);
        let linear = |i, j, bias| LinearConfig::new(i, j).with_bias(bias).init(device);
        // N(0, 1/embed): the output layer is tied to the target embedding, and logits of
        // unit-scale rows would start far from uniform.
        let embedding = |vocab| {
            EmbeddingConfig::new(vocab, e)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: (e as f64).powf(-0.5),
                })
                .init(device)
        };
        RnnSeq2Seq {
            source_embed: embedding(self.source_vocab),
            target_embed: embedding(self.target_vocab),
            encoder_forward: (0..layers)
                .map(|l| Recurrent::new(o.cell, if l == 0 { e } else { enc_width }, h, device))
                .collect(),
            encoder_backward: (0..layers * (dirs - 1))
                .map(|l| Recurrent::new(o.cell, if l == 0 { e } else { enc_width }, h, device))
                .collect(),
            bridge_h: (0..layers).map(|_| linear(enc_width, h, true)).collect(),
            bridge_c: (0..layers)
                .filter(|_| o.cell == CellKind::Lstm)
                .map(|_| linear(enc_width, h, true))
                .collect(),
            attention_key: linear(enc_width, attention, false),
            attention_query: linear(h, attention, true),
            attention_score: linear(attention, 1, false),
            decoder: (0..layers)
                .map(|l| Recurrent::new(o.cell, if l == 0 { e + enc_width } else { h }, h, device))
                .collect(),
            deep_output: linear(h + enc_width + e, e, true),
            dropout: DropoutConfig::new(o.dropout).init(),
            hidden: h,
        }
    }
}

#[derive(Module, Debug)]
pub struct RnnSeq2Seq {
    source_embed: Embedding,
    target_embed: Embedding,
    encoder_forward: Vec<Recurrent>,
    encoder_backward: Vec<Recurrent>,
    /// Encoder final state (both directions) to decoder initial state, per layer.
    bridge_h: Vec<Linear>,
    bridge_c: Vec<Linear>,
    attention_key: Linear,
    attention_query: Linear,
    attention_score: Linear,
    decoder: Vec<Recurrent>,
    deep_output: Linear,
    dropout: Dropout,
    hidden: usize,
}

/// The encoder's states `[rows, source_len, dirs * hidden]`, their attention keys, the padding,
/// and the decoder's initial state.
#[derive(Debug, Clone)]
pub struct RnnMemory {
    states: Tensor<3>,
    keys: Tensor<3>,
    padding: Tensor<2, Bool>,
    initial: Vec<RnnState>,
}

impl RnnSeq2Seq {
    /// Additive attention: context `[rows, enc_width]` for the query state `[rows, hidden]`.
    fn context(&self, memory: &RnnMemory, query: Tensor<2>) -> Tensor<2> {
        let [rows, len, _] = memory.keys.dims();
        let q = self.attention_query.forward_fused(query).unsqueeze_dim(1);
        let scores = self
            .attention_score
            .forward_fused(tanh(memory.keys.clone() + q))
            .reshape([rows, len]);
        let weights = softmax(scores.mask_fill(memory.padding.clone(), -1e9), 1);
        let width = memory.states.dims()[2];
        weights
            .unsqueeze_dim::<3>(1)
            .matmul(memory.states.clone())
            .reshape([rows, width])
    }

    /// One decoder step from the embedded previous token `[rows, embed]`; returns the deep
    /// output `[rows, embed]` and the new layer states.
    fn decode_step(
        &self,
        memory: &RnnMemory,
        states: Vec<RnnState>,
        embedded: Tensor<2>,
    ) -> (Tensor<2>, Vec<RnnState>) {
        let top = states.last().expect("at least one layer").h.clone();
        let context = self.context(memory, top);
        let mut x = Tensor::cat(vec![embedded.clone(), context.clone()], 1);
        let mut next = Vec::with_capacity(states.len());
        for (l, (layer, state)) in self.decoder.iter().zip(states).enumerate() {
            if l > 0 {
                x = self.dropout.forward(x);
            }
            let s = layer.step(layer.project_step(x), state, None);
            x = s.h.clone();
            next.push(s);
        }
        let out = tanh(
            self.deep_output
                .forward_fused(Tensor::cat(vec![x, context, embedded], 1)),
        );
        (self.dropout.forward(out), next)
    }

    /// Logits over the target vocabulary from deep outputs, through the tied embedding.
    fn logits<const D: usize>(&self, out: Tensor<D>) -> Tensor<D> {
        super::linear::linear(out, self.target_embed.weight.val().transpose(), None)
    }
}

impl Seq2Seq for RnnSeq2Seq {
    type Memory = RnnMemory;
    type State = Vec<RnnState>;

    fn forward(
        &self,
        source: Tensor<2, Int>,
        source_padding: Tensor<2, Bool>,
        target_in: Tensor<2, Int>,
    ) -> Tensor<3> {
        let memory = self.encode(source, source_padding);
        let embedded = self.dropout.forward(self.target_embed.forward(target_in));
        let time = embedded.dims()[1];
        let mut states = memory.initial.clone();
        let mut outputs = Vec::with_capacity(time);
        for e in unstack_time(embedded) {
            let (out, next) = self.decode_step(&memory, states, e);
            states = next;
            outputs.push(out);
        }
        self.logits(Tensor::stack::<3>(outputs, 1))
    }

    fn encode(&self, source: Tensor<2, Int>, source_padding: Tensor<2, Bool>) -> RnnMemory {
        let keep = source_padding.clone().bool_not().float();
        let embedded = self.dropout.forward(self.source_embed.forward(source));
        let (x, finals) = run_stack(
            &self.encoder_forward,
            &self.encoder_backward,
            embedded,
            keep,
            &self.dropout,
        );
        let initial = finals
            .into_iter()
            .enumerate()
            .map(|(l, state)| RnnState {
                h: self.bridge_h[l].forward_fused(state.h).tanh(),
                c: state.c.map(|c| self.bridge_c[l].forward_fused(c).tanh()),
            })
            .collect();
        RnnMemory {
            keys: self.attention_key.forward_fused(x.clone()),
            states: x,
            padding: source_padding,
            initial,
        }
    }

    fn select_memory(&self, memory: &RnnMemory, rows: Tensor<1, Int>) -> RnnMemory {
        RnnMemory {
            states: memory.states.clone().select(0, rows.clone()),
            keys: memory.keys.clone().select(0, rows.clone()),
            padding: memory.padding.clone().select(0, rows.clone()),
            initial: memory
                .initial
                .iter()
                .map(|s| s.clone().select(rows.clone()))
                .collect(),
        }
    }

    fn start(&self, memory: &RnnMemory) -> Vec<RnnState> {
        memory.initial.clone()
    }

    fn step(
        &self,
        memory: &RnnMemory,
        state: Vec<RnnState>,
        tokens: Tensor<1, Int>,
    ) -> (Tensor<2>, Vec<RnnState>) {
        let rows = tokens.dims()[0];
        let embedded = self
            .target_embed
            .forward(tokens.reshape([rows, 1]))
            .squeeze_dim(1);
        let (out, next) = self.decode_step(memory, state, embedded);
        (self.logits(out), next)
    }

    fn select_state(&self, state: Vec<RnnState>, rows: Tensor<1, Int>) -> Vec<RnnState> {
        state.into_iter().map(|s| s.select(rows.clone())).collect()
    }

    fn width(&self) -> usize {
        self.hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::seq2seq::assert_steps_equal_forward;

    fn tiny(cell: CellKind, bidirectional: bool) -> RnnSeq2Seq {
        let options = RnnSeq2SeqOptions {
            cell,
            embed_dim: 6,
            hidden_size: 5,
            num_layers: 2,
            bidirectional,
            attention_dim: None,
            dropout: 0.0,
            source_vocab_size: Some(11),
            target_vocab_size: Some(13),
        };
        options.config().unwrap().init(&Device::flex())
    }

    /// Stepping the decoder token by token gives the teacher-forced logits.
    #[test]
    fn stepwise_decoding_equals_the_teacher_forced_pass() {
        let device = Device::flex();
        for (cell, bi) in [(CellKind::Gru, true), (CellKind::Lstm, false)] {
            let source = Tensor::<2, Int>::from_data([[3, 4, 5, 2], [6, 2, 0, 0]], &device);
            let target = Tensor::<2, Int>::from_data([[1, 7, 8], [1, 9, 0]], &device);
            assert_steps_equal_forward(&tiny(cell, bi), source, target, 1e-5);
        }
    }
}
