//! The encoder-decoder Transformer (Vaswani et al. 2017) as fairseq's `transformer` builds it:
//! scaled embeddings plus sinusoidal positions, the encoder stack of `encoder.rs`, a decoder of
//! causal self-attention (with a key/value cache for decoding), cross-attention over the
//! encoder's states and a feed-forward block, post-norm or pre-norm (with a final LayerNorm on
//! each stack), the output projection tied to the target embedding, and optionally one
//! embedding shared by source and target (joint vocabulary).

use super::attention::{Mask, attention, self_attention};
use super::encoder::{Encoder, EncoderConfig};
use super::gelu::gelu;
use super::layer_norm::ForwardFused;
use super::linear::linear;
use super::seq2seq::{Seq2Seq, record_vocab_sizes, recorded_vocab_sizes, sinusoidal_positions};
use crate::error::{Error, Result};
use crate::recipe::{
    DataSizes, ModelOptions, TaskKind, require_dropout, require_heads_divide, require_positive,
};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The `model:` section for `type: transformer_seq2seq` (defaults: a small Transformer that
/// trains on a CPU; `transformer_base` is 6+6 layers, 512 wide, 8 heads, 2048 feed-forward).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransformerSeq2SeqOptions {
    #[serde(default = "default_layers")]
    pub encoder_layers: usize,
    #[serde(default = "default_layers")]
    pub decoder_layers: usize,
    #[serde(default = "default_width")]
    pub d_model: usize,
    #[serde(default = "default_heads")]
    pub n_head: usize,
    #[serde(default = "default_ffn")]
    pub ffn_dim: usize,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// LayerNorm before each sub-layer (fairseq's `--encoder-normalize-before`) instead of after.
    #[serde(default)]
    pub pre_norm: bool,
    /// One embedding for source and target (needs a joint vocabulary: no
    /// `data.target_tokenizer`); the output projection is always tied to the target embedding.
    #[serde(default)]
    pub share_embeddings: bool,
    #[serde(default)]
    pub source_vocab_size: Option<usize>,
    #[serde(default)]
    pub target_vocab_size: Option<usize>,
}

fn default_layers() -> usize {
    3
}
fn default_width() -> usize {
    256
}
fn default_heads() -> usize {
    4
}
fn default_ffn() -> usize {
    1024
}
fn default_dropout() -> f64 {
    0.1
}

impl ModelOptions for TransformerSeq2SeqOptions {
    fn name(&self) -> &'static str {
        "transformer_seq2seq"
    }

    fn task(&self) -> TaskKind {
        TaskKind::Translation
    }

    fn validate(&self, problems: &mut Vec<String>) {
        require_positive(
            problems,
            &[
                ("encoder_layers", self.encoder_layers),
                ("decoder_layers", self.decoder_layers),
                ("d_model", self.d_model),
                ("n_head", self.n_head),
                ("ffn_dim", self.ffn_dim),
            ],
        );
        require_heads_divide(problems, "d_model", self.d_model, self.n_head);
        if !self.d_model.is_multiple_of(2) {
            problems.push("`model.d_model` must be even (sinusoidal positions)".into());
        }
        require_dropout(problems, self.dropout);
    }

    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        let sides = (&mut self.source_vocab_size, &mut self.target_vocab_size);
        record_vocab_sizes(sides, sizes)
    }
}

impl TransformerSeq2SeqOptions {
    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<TransformerSeq2SeqConfig> {
        let (source_vocab, target_vocab) =
            recorded_vocab_sizes(self.name(), self.source_vocab_size, self.target_vocab_size)?;
        if self.share_embeddings && source_vocab != target_vocab {
            return Err(Error::Recipe(format!(
                "`model.share_embeddings: true` needs equal vocabulary sizes (source \
                 {source_vocab}, target {target_vocab})"
            )));
        }
        Ok(TransformerSeq2SeqConfig {
            options: self.clone(),
            source_vocab,
            target_vocab,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransformerSeq2SeqConfig {
    pub options: TransformerSeq2SeqOptions,
    pub source_vocab: usize,
    pub target_vocab: usize,
}

impl TransformerSeq2SeqConfig {
    pub fn init(&self, device: &Device) -> TransformerSeq2Seq {
        let o = &self.options;
        let d = o.d_model;
        // fairseq: embeddings N(0, d^-1/2), scaled by sqrt(d) on the way in.
        let embedding = |vocab| {
            EmbeddingConfig::new(vocab, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: (d as f64).powf(-0.5),
                })
                .init(device)
        };
        let linear = |i, j| {
            LinearConfig::new(i, j)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device)
        };
        let norm = || LayerNormConfig::new(d).init(device);
        let encoder = EncoderConfig {
            n_layer: o.encoder_layers,
            n_head: o.n_head,
            width: d,
            ffn_width: o.ffn_dim,
            dropout: o.dropout,
            pre_norm: o.pre_norm,
            share_layers: false,
            ..EncoderConfig::bert_base()
        }
        .init(device);
        let decoder = (0..o.decoder_layers)
            .map(|_| DecoderLayer {
                self_qkv: linear(d, 3 * d),
                self_out: linear(d, d),
                norm_self: norm(),
                cross_q: linear(d, d),
                cross_kv: linear(d, 2 * d),
                cross_out: linear(d, d),
                norm_cross: norm(),
                ffn_in: linear(d, o.ffn_dim),
                ffn_out: linear(o.ffn_dim, d),
                norm_ffn: norm(),
                dropout: DropoutConfig::new(o.dropout).init(),
                n_head: o.n_head,
                pre_norm: o.pre_norm,
            })
            .collect();
        TransformerSeq2Seq {
            source_embed: embedding(self.source_vocab),
            target_embed: (!o.share_embeddings).then(|| embedding(self.target_vocab)),
            encoder,
            encoder_norm: o.pre_norm.then(norm),
            decoder,
            decoder_norm: o.pre_norm.then(norm),
            dropout: DropoutConfig::new(o.dropout).init(),
            d_model: d,
            n_head: o.n_head,
        }
    }
}

#[derive(Module, Debug)]
pub struct TransformerSeq2Seq {
    source_embed: Embedding,
    /// `None` when the source embedding is shared.
    target_embed: Option<Embedding>,
    encoder: Encoder,
    encoder_norm: Option<LayerNorm>,
    decoder: Vec<DecoderLayer>,
    decoder_norm: Option<LayerNorm>,
    dropout: Dropout,
    d_model: usize,
    n_head: usize,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    self_qkv: Linear,
    self_out: Linear,
    norm_self: LayerNorm,
    cross_q: Linear,
    cross_kv: Linear,
    cross_out: Linear,
    norm_cross: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    norm_ffn: LayerNorm,
    dropout: Dropout,
    n_head: usize,
    pre_norm: bool,
}

/// Per decoder layer, the cross-attention keys and values of the encoder's states
/// `[rows, heads, source_len, head_dim]`, and the source padding `[rows, source_len]`.
#[derive(Debug, Clone)]
pub struct TransformerMemory {
    cross: Vec<(Tensor<4>, Tensor<4>)>,
    padding: Tensor<2, Bool>,
}

/// Per decoder layer, the self-attention keys and values of the target positions so far.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

fn heads(x: Tensor<3>, n_head: usize) -> Tensor<4> {
    let [batch, time, width] = x.dims();
    x.reshape([batch, time, n_head, width / n_head])
        .swap_dims(1, 2)
}

fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [batch, n_head, time, head_dim] = x.dims();
    x.swap_dims(1, 2).reshape([batch, time, n_head * head_dim])
}

impl TransformerSeq2Seq {
    fn target_embedding(&self) -> &Embedding {
        self.target_embed.as_ref().unwrap_or(&self.source_embed)
    }

    /// Scaled embeddings plus positions from `start`, with dropout.
    fn embed(&self, embedding: &Embedding, tokens: Tensor<2, Int>, start: usize) -> Tensor<3> {
        let [_, time] = tokens.dims();
        let device = tokens.device();
        let x = embedding
            .forward(tokens)
            .mul_scalar((self.d_model as f64).sqrt());
        let positions = sinusoidal_positions(start, time, self.d_model, &device);
        self.dropout.forward(x + positions.unsqueeze())
    }

    fn cross_keys(&self, states: Tensor<3>) -> Vec<(Tensor<4>, Tensor<4>)> {
        self.decoder
            .iter()
            .map(|layer| {
                let kv = layer.cross_kv.forward_fused(states.clone());
                let [k, v] = super::split_heads(kv, self.n_head);
                (k, v)
            })
            .collect()
    }

    /// Hidden states `[rows, time, d_model]` of the decoder for `tokens` at positions from
    /// `cache.len`, extending the cache when given.
    fn decode(
        &self,
        memory: &TransformerMemory,
        tokens: Tensor<2, Int>,
        mut cache: Option<&mut DecoderCache>,
    ) -> Tensor<3> {
        let start = cache.as_ref().map_or(0, |c| c.len);
        let time = tokens.dims()[1];
        let mut x = self.embed(self.target_embedding(), tokens, start);
        for (i, layer) in self.decoder.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &memory.cross[i], &memory.padding, layer_cache);
        }
        if let Some(cache) = cache {
            cache.len += time;
        }
        match &self.decoder_norm {
            Some(norm) => norm.forward_fused(x),
            None => x,
        }
    }

    fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        linear(
            hidden,
            self.target_embedding().weight.val().transpose(),
            None,
        )
    }
}

impl DecoderLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        cross: &(Tensor<4>, Tensor<4>),
        source_padding: &Tensor<2, Bool>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let x = self.residual(x, &self.norm_self, |x| self.self_attention(x, cache));
        let x = self.residual(x, &self.norm_cross, |x| {
            let q = heads(self.cross_q.forward_fused(x), self.n_head);
            let (k, v) = cross.clone();
            let padding = Mask::KeyPadding(source_padding.clone());
            let y = attention(q, k, v, padding, None, 0.0);
            self.cross_out.forward_fused(merge_heads(y))
        });
        self.residual(x, &self.norm_ffn, |x| {
            self.ffn_out
                .forward_fused(self.dropout.forward(gelu(self.ffn_in.forward_fused(x))))
        })
    }

    /// A sub-layer with dropout on its output, the residual connection and the LayerNorm before
    /// (pre-norm) or after (post-norm).
    fn residual(
        &self,
        x: Tensor<3>,
        norm: &LayerNorm,
        sublayer: impl FnOnce(Tensor<3>) -> Tensor<3>,
    ) -> Tensor<3> {
        if self.pre_norm {
            x.clone() + self.dropout.forward(sublayer(norm.forward_fused(x)))
        } else {
            norm.forward_fused(x.clone() + self.dropout.forward(sublayer(x)))
        }
    }

    fn self_attention(
        &self,
        x: Tensor<3>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let qkv = self.self_qkv.forward_fused(x);
        let Some(cache) = cache else {
            return self.self_out.forward_fused(self_attention(
                qkv,
                self.n_head,
                Mask::Causal,
                0.0,
            ));
        };
        let [q, mut k, mut v] = super::split_heads(qkv, self.n_head);
        if let Some((past_k, past_v)) = cache.take() {
            k = Tensor::cat(vec![past_k, k], 2);
            v = Tensor::cat(vec![past_v, v], 2);
        }
        *cache = Some((k.clone(), v.clone()));
        // Bottom-right aligned causal mask: new queries see the cached keys and earlier new ones.
        let y = attention(q, k, v, Mask::Causal, None, 0.0);
        self.self_out.forward_fused(merge_heads(y))
    }
}

impl Seq2Seq for TransformerSeq2Seq {
    type Memory = TransformerMemory;
    type State = DecoderCache;

    fn forward(
        &self,
        source: Tensor<2, Int>,
        source_padding: Tensor<2, Bool>,
        target_in: Tensor<2, Int>,
    ) -> Tensor<3> {
        let memory = self.encode(source, source_padding);
        self.logits(self.decode(&memory, target_in, None))
    }

    fn encode(&self, source: Tensor<2, Int>, source_padding: Tensor<2, Bool>) -> TransformerMemory {
        let x = self.embed(&self.source_embed, source, 0);
        let states = self.encoder.forward(x, Some(source_padding.clone()));
        let states = match &self.encoder_norm {
            Some(norm) => norm.forward_fused(states),
            None => states,
        };
        TransformerMemory {
            cross: self.cross_keys(states),
            padding: source_padding,
        }
    }

    fn select_memory(&self, memory: &TransformerMemory, rows: Tensor<1, Int>) -> TransformerMemory {
        TransformerMemory {
            cross: memory
                .cross
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone().select(0, rows.clone()),
                        v.clone().select(0, rows.clone()),
                    )
                })
                .collect(),
            padding: memory.padding.clone().select(0, rows),
        }
    }

    fn start(&self, _memory: &TransformerMemory) -> DecoderCache {
        DecoderCache {
            layers: vec![None; self.decoder.len()],
            len: 0,
        }
    }

    fn step(
        &self,
        memory: &TransformerMemory,
        mut state: DecoderCache,
        tokens: Tensor<1, Int>,
    ) -> (Tensor<2>, DecoderCache) {
        let rows = tokens.dims()[0];
        let hidden = self.decode(memory, tokens.reshape([rows, 1]), Some(&mut state));
        let logits = self.logits(hidden);
        let vocab = logits.dims()[2];
        (logits.reshape([rows, vocab]), state)
    }

    fn select_state(&self, state: DecoderCache, rows: Tensor<1, Int>) -> DecoderCache {
        DecoderCache {
            layers: state
                .layers
                .into_iter()
                .map(|l| l.map(|(k, v)| (k.select(0, rows.clone()), v.select(0, rows.clone()))))
                .collect(),
            len: state.len,
        }
    }

    fn width(&self) -> usize {
        self.d_model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::seq2seq::assert_steps_equal_forward;

    fn tiny(pre_norm: bool, share: bool) -> TransformerSeq2Seq {
        let options = TransformerSeq2SeqOptions {
            encoder_layers: 2,
            decoder_layers: 2,
            d_model: 8,
            n_head: 2,
            ffn_dim: 16,
            dropout: 0.0,
            pre_norm,
            share_embeddings: share,
            source_vocab_size: Some(13),
            target_vocab_size: Some(13),
        };
        options.config().unwrap().init(&Device::flex())
    }

    /// Decoding step by step with the cache gives the teacher-forced logits, and padding the
    /// source changes nothing.
    #[test]
    fn cached_steps_equal_the_full_pass_and_padding_is_invisible() {
        let device = Device::flex();
        for (pre_norm, share) in [(false, false), (true, true)] {
            let model = tiny(pre_norm, share);
            let source = Tensor::<2, Int>::from_data([[3, 4, 5, 2], [6, 2, 0, 0]], &device);
            let target = Tensor::<2, Int>::from_data([[1, 7, 8], [1, 9, 10]], &device);
            assert_steps_equal_forward(&model, source.clone(), target.clone(), 1e-4);
            let full = model.forward(source.clone(), source.equal_elem(0), target.clone());
            // The second sentence alone, unpadded, gives the same logits.
            let alone_src = Tensor::<2, Int>::from_data([[6, 2]], &device);
            let alone = model.forward(
                alone_src.clone(),
                alone_src.equal_elem(0),
                target.clone().narrow(0, 1, 1),
            );
            let diff: f32 = (alone - full.narrow(0, 1, 1)).abs().max().into_scalar();
            assert!(diff < 1e-4, "padding leaked: {diff}");
        }
    }
}
