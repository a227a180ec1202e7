//! Transformer-XL (Dai et al. 2019): a decoder-only Transformer that reads a token stream segment
//! by segment, each layer attending over its own inputs of the previous segments (the memory,
//! detached, at most `mem_len` positions) and the current segment, with relative positions:
//! sinusoidal embeddings of the query-key distance projected by `W_{k,R}`, and two learned
//! biases per layer and head, `u` (content) and `v` (position), in place of the query's position.
//!
//! The score of query `i` and key `j` (at distance `i - j`, memory included) is
//! `(q_i + u)·k_j + (q_i + v)·W_{k,R} R_{i-j}`, scaled by `1/√d_head`; the second term is computed
//! for every (query, distance) pair with one matmul and moved to (query, key) by the paper's
//! "relative shift" (pad, reshape, drop a row), an exact re-indexing.
//!
//! Pre-LayerNorm like nlpkit's GPT-2 (the original is post-LN by default, with a `pre_lnorm`
//! option): the memory holds each layer's input before its LayerNorm, and a final LayerNorm comes
//! before the output head, which is tied to the token embedding. The feed-forward block is
//! GPT-2's (GELU); initialisation is GPT-2's, `u` and `v` N(0, 0.02) as in the original; the
//! token embedding is not scaled by `√d` (so GPT-2 and this model differ only in attention).

use super::activation::Activation;
use super::gpt2::Mlp;
use super::layer_norm::ForwardFused;
use crate::error::{Error, Result};
use crate::recipe::{
    DataSizes, ModelOptions, TaskKind, require_dropout, require_heads_divide, require_positive,
    vocab_at_least,
};
use burn::module::Param;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use serde::{Deserialize, Serialize};

/// The `model:` section for `type: transformer_xl`; the resolved recipe states every field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TransformerXlOptions {
    #[serde(default)]
    pub n_layer: Option<usize>,
    #[serde(default)]
    pub n_head: Option<usize>,
    #[serde(default)]
    pub n_embd: Option<usize>,
    /// Tokens the model reads at once (the original's `tgt_len`).
    #[serde(default)]
    pub segment_len: Option<usize>,
    /// Hidden states kept per layer from earlier segments; 0: no memory.
    #[serde(default)]
    pub mem_len: Option<usize>,
    /// Consecutive segments in one training example, read in order with the memory carried
    /// (detached) between them; the loss averages over all of them.
    #[serde(default)]
    pub segments_per_sample: Option<usize>,
    /// Rows of the embedding; at least the tokenizer's vocabulary (filled from it when absent).
    #[serde(default)]
    pub vocab_size: Option<usize>,
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Biases in the linear layers (but `W_{k,R}`, where one would not change the softmax) and
    /// the LayerNorms.
    #[serde(default)]
    pub bias: Option<bool>,
}

impl ModelOptions for TransformerXlOptions {
    fn name(&self) -> &'static str {
        "transformer_xl"
    }

    fn task(&self) -> TaskKind {
        TaskKind::LanguageModel
    }

    /// Defaults: the shape of the `gpt2-tiny` preset, segments of its block size, as much memory.
    fn resolve(&mut self) -> Result<()> {
        self.n_layer.get_or_insert(4);
        self.n_head.get_or_insert(4);
        self.n_embd.get_or_insert(128);
        self.segment_len.get_or_insert(64);
        self.mem_len.get_or_insert(64);
        self.segments_per_sample.get_or_insert(4);
        self.dropout.get_or_insert(0.0);
        self.bias.get_or_insert(true);
        Ok(())
    }

    fn validate(&self, problems: &mut Vec<String>) {
        let (n_embd, n_head) = (self.n_embd.unwrap_or(0), self.n_head.unwrap_or(0));
        require_positive(
            problems,
            &[
                ("n_layer", self.n_layer.unwrap_or(1)),
                ("n_head", self.n_head.unwrap_or(1)),
                ("n_embd", self.n_embd.unwrap_or(1)),
                ("segment_len", self.segment_len.unwrap_or(1)),
                ("segments_per_sample", self.segments_per_sample.unwrap_or(1)),
            ],
        );
        require_heads_divide(problems, "n_embd", n_embd, n_head);
        if n_embd % 2 != 0 {
            problems.push(format!(
                "`model.n_embd` ({n_embd}) must be even: the relative position embeddings are \
                 half sines, half cosines"
            ));
        }
        let mem_len = self.mem_len.unwrap_or(0);
        if mem_len > 0 && self.segments_per_sample == Some(1) {
            problems.push(format!(
                "`model.segments_per_sample` is 1, so training never attends to the memory that \
                 `model.mem_len` ({mem_len}) gives evaluation and generation; set it to 2 or \
                 more, or `model.mem_len: 0` for a model without memory"
            ));
        }
        require_dropout(problems, self.dropout.unwrap_or(0.0));
    }

    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        self.vocab_size = Some(vocab_at_least(self.vocab_size, sizes.vocab, "vocab_size")?);
        Ok(())
    }
}

impl TransformerXlOptions {
    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<TransformerXlConfig> {
        let vocab_size = self.vocab_size.ok_or_else(|| {
            Error::Recipe(
                "the transformer_xl model needs `model.vocab_size`, filled in by `nlpkit train`; \
                 give an experiment folder it wrote"
                    .into(),
            )
        })?;
        Ok(TransformerXlConfig {
            n_layer: self.n_layer.expect("resolved"),
            n_head: self.n_head.expect("resolved"),
            n_embd: self.n_embd.expect("resolved"),
            segment_len: self.segment_len.expect("resolved"),
            mem_len: self.mem_len.expect("resolved"),
            segments_per_sample: self.segments_per_sample.expect("resolved"),
            vocab_size,
            dropout: self.dropout.expect("resolved"),
            bias: self.bias.expect("resolved"),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransformerXlConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub segment_len: usize,
    pub mem_len: usize,
    pub segments_per_sample: usize,
    pub vocab_size: usize,
    pub dropout: f64,
    pub bias: bool,
}

impl TransformerXlConfig {
    /// Tokens in one training example: `segments_per_sample` consecutive segments.
    pub fn sample_len(&self) -> usize {
        self.segments_per_sample * self.segment_len
    }

    pub fn init(&self, device: &Device) -> TransformerXl {
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        let proj_std = 0.02 / (2.0 * self.n_layer as f64).sqrt();
        let linear = |d_in, d_out, bias, std| {
            LinearConfig::new(d_in, d_out)
                .with_bias(bias)
                .with_initializer(normal(std))
                .init(device)
        };
        let norm = || {
            LayerNormConfig::new(self.n_embd)
                .with_bias(self.bias)
                .init(device)
        };
        let bias_param = || {
            Param::from_tensor(Tensor::random(
                [self.n_embd],
                Distribution::Normal(0.0, 0.02),
                device,
            ))
        };
        let layers = (0..self.n_layer)
            .map(|_| XlLayer {
                ln_1: norm(),
                attn: RelAttention {
                    qkv: linear(self.n_embd, 3 * self.n_embd, self.bias, 0.02),
                    r_net: linear(self.n_embd, self.n_embd, false, 0.02),
                    proj: linear(self.n_embd, self.n_embd, self.bias, proj_std),
                    u: bias_param(),
                    v: bias_param(),
                    attn_dropout: DropoutConfig::new(self.dropout).init(),
                    resid_dropout: DropoutConfig::new(self.dropout).init(),
                    n_head: self.n_head,
                },
                ln_2: norm(),
                mlp: Mlp::new(
                    self.n_embd,
                    self.bias,
                    self.dropout,
                    Activation::Gelu,
                    proj_std,
                    None,
                    device,
                ),
            })
            .collect();
        TransformerXl {
            wte: EmbeddingConfig::new(self.vocab_size, self.n_embd)
                .with_initializer(normal(0.02))
                .init(device),
            drop: DropoutConfig::new(self.dropout).init(),
            layers,
            ln_f: norm(),
            n_embd: self.n_embd,
            mem_len: self.mem_len,
        }
    }
}

#[derive(Module, Debug)]
pub struct TransformerXl {
    wte: Embedding,
    drop: Dropout,
    layers: Vec<XlLayer>,
    ln_f: LayerNorm,
    n_embd: usize,
    mem_len: usize,
}

#[derive(Module, Debug)]
struct XlLayer {
    ln_1: LayerNorm,
    attn: RelAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

#[derive(Module, Debug)]
struct RelAttention {
    /// Queries, keys and values of the memory and the segment, `[q | k | v]`.
    qkv: Linear,
    /// `W_{k,R}`: the relative position embeddings' keys.
    r_net: Linear,
    proj: Linear,
    /// The content bias `u` and the position bias `v`, `[heads * d_head]`: rank 1, so weight
    /// decay leaves them alone as it does other biases (`train::params::no_decay_ids`).
    u: Param<Tensor<1>>,
    v: Param<Tensor<1>>,
    attn_dropout: Dropout,
    resid_dropout: Dropout,
    n_head: usize,
}

/// Each layer's inputs of the latest positions read, `[batch, time, n_embd]` per layer,
/// detached: what the next segment attends to beyond itself. Empty before the first segment and
/// for a model with `mem_len: 0`.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    layers: Vec<Tensor<3>>,
}

impl Memory {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |t| t.dims()[1])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TransformerXl {
    /// Logits `[batch, time, vocab]` of a segment `tokens` `[batch, time]` that follows the
    /// positions in `memory` (which must have the same batch), and the memory for the segment
    /// after it: the last `mem_len` of the old memory and this segment's layer inputs.
    pub fn forward(&self, tokens: Tensor<2, Int>, memory: &Memory) -> (Tensor<3>, Memory) {
        let [_, time] = tokens.dims();
        let keys = memory.len() + time;
        let positions = relative_embeddings(keys, self.n_embd, &tokens.device());
        let mut x = self.drop.forward(self.wte.forward(tokens));
        let mut inputs = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            if self.mem_len > 0 {
                inputs.push(x.clone());
            }
            x = layer.forward(x, memory.layers.get(i).cloned(), positions.clone());
        }
        let logits = self.head(self.ln_f.forward_fused(x));
        (logits, self.next_memory(memory, inputs))
    }

    /// Per layer, the last `mem_len` positions of the old memory followed by the new inputs,
    /// detached (the stop-gradient of the paper).
    fn next_memory(&self, memory: &Memory, inputs: Vec<Tensor<3>>) -> Memory {
        let layers = inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| {
                let all = match memory.layers.get(i) {
                    Some(old) => Tensor::cat(vec![old.clone(), input], 1),
                    None => input,
                };
                let time = all.dims()[1];
                let keep = time.min(self.mem_len);
                all.narrow(1, time - keep, keep).detach()
            })
            .collect();
        Memory { layers }
    }

    /// The output head, tied to the token embedding.
    fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let weight = self.wte.weight.val(); // [vocab, n_embd]
        let [batch, time, width] = hidden.dims();
        let vocab = weight.dims()[0];
        hidden
            .reshape([batch * time, width])
            .matmul(weight.transpose())
            .reshape([batch, time, vocab])
    }
}

/// Sinusoidal embeddings `[keys, width]` of the distances `keys - 1, ..., 1, 0` (row `c` holds
/// distance `keys - 1 - c`, the original's order, which the relative shift expects): sines of
/// `distance / 10000^(2t/width)` in the first half, cosines in the second.
fn relative_embeddings(keys: usize, width: usize, device: &Device) -> Tensor<2> {
    let half = width / 2;
    let mut values = Vec::with_capacity(keys * width);
    for c in 0..keys {
        let distance = (keys - 1 - c) as f64;
        let angle = |t: usize| distance / 10000f64.powf(2.0 * t as f64 / width as f64);
        values.extend((0..half).map(|t| angle(t).sin() as f32));
        values.extend((0..half).map(|t| angle(t).cos() as f32));
    }
    Tensor::from_data(TensorData::new(values, [keys, width]), device)
}

/// `scores[.., i, c]` for column `c` = distance `keys - 1 - c` moved to `[.., i, j]` for key `j`
/// at distance `memory + i - j` (`memory = keys - queries`): prepend a zero column, read the
/// buffer as `[keys + 1, queries]`, drop its first row and read it back as `[queries, keys]`.
/// Exact for `j <= memory + i`; the entries above (future keys) are other scores, masked after.
fn relative_shift(scores: Tensor<4>) -> Tensor<4> {
    let [batch, heads, queries, keys] = scores.dims();
    let zeros = Tensor::zeros([batch, heads, queries, 1], &scores.device());
    Tensor::cat(vec![zeros, scores], 3)
        .reshape([batch, heads, keys + 1, queries])
        .narrow(2, 1, keys)
        .reshape([batch, heads, queries, keys])
}

impl XlLayer {
    fn forward(&self, x: Tensor<3>, memory: Option<Tensor<3>>, positions: Tensor<2>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(&self.ln_1, x, memory, positions);
        x.clone() + self.mlp.forward(self.ln_2.forward_fused(x))
    }
}

impl RelAttention {
    /// Self-attention of the segment `x` `[batch, time, width]` over the memory and itself;
    /// `norm` is the layer's pre-attention LayerNorm, applied to memory and segment alike.
    fn forward(
        &self,
        norm: &LayerNorm,
        x: Tensor<3>,
        memory: Option<Tensor<3>>,
        positions: Tensor<2>,
    ) -> Tensor<3> {
        let [batch, time, width] = x.dims();
        let context = match memory {
            Some(m) => Tensor::cat(vec![m, x], 1),
            None => x,
        };
        let keys = context.dims()[1];
        let heads = self.n_head;
        let d_head = width / heads;
        let [q, k, v] = super::split_heads(self.qkv.forward(norm.forward_fused(context)), heads);
        let q = q.narrow(2, keys - time, time); // the segment's queries only
        // [1, heads, d_head, keys]: the projected embedding of each distance, per head.
        let r = self
            .r_net
            .forward(positions)
            .reshape([keys, heads, d_head])
            .permute([1, 2, 0])
            .reshape([1, heads, d_head, keys]);
        let bias = |p: &Param<Tensor<1>>| p.val().reshape([1, heads, 1, d_head]);
        let by_distance =
            (q.clone() + bias(&self.v)).matmul(r.expand([batch, heads, d_head, keys]));
        let scale = 1.0 / (d_head as f64).sqrt();
        let position_scores = relative_shift(by_distance).mul_scalar(scale);
        let q = q + bias(&self.u);
        let y = if self.attn_dropout.prob > 0.0 {
            self.attention_with_dropout(q, k, v, position_scores, scale)
        } else {
            // The causal mask is aligned to the bottom right: query i sees the memory and the
            // segment's keys up to i.
            let options = AttentionModuleOptions {
                scale: Some(scale),
                softcap: None,
                is_causal: true,
            };
            attention(q, k, v, None, Some(position_scores), options)
        };
        let y = y.swap_dims(1, 2).reshape([batch, time, width]);
        self.resid_dropout.forward(self.proj.forward(y))
    }

    /// The same attention spelled out, for dropout on the attention weights.
    fn attention_with_dropout(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        position_scores: Tensor<4>,
        scale: f64,
    ) -> Tensor<4> {
        let [_, _, queries, _] = q.dims();
        let keys = k.dims()[2];
        let device = q.device();
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + position_scores;
        let rows = Tensor::<1, Int>::arange(0..queries as i64, &device)
            .reshape([queries, 1])
            .add_scalar((keys - queries) as i64);
        let cols = Tensor::<1, Int>::arange(0..keys as i64, &device).reshape([1, keys]);
        let future = cols.greater(rows).reshape([1, 1, queries, keys]);
        let shape = scores.dims();
        let scores = scores.mask_fill(future.expand(shape), f32::NEG_INFINITY);
        self.attn_dropout.forward(softmax(scores, 3)).matmul(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleMapper, Param};

    fn tiny(mem_len: usize) -> TransformerXlConfig {
        TransformerXlConfig {
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            segment_len: 5,
            mem_len,
            segments_per_sample: 3,
            vocab_size: 11,
            dropout: 0.0,
            bias: true,
        }
    }

    /// Every parameter drawn again from N(0, 0.3): GPT-2's initialisation leaves the attention
    /// a small part of each output, where a wrong position term would hide under 1e-5.
    fn model(config: &TransformerXlConfig, device: &Device) -> TransformerXl {
        struct Redraw;
        impl ModuleMapper for Redraw {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                param.map(|t| {
                    let new =
                        Tensor::random(t.shape(), Distribution::Normal(0.0, 0.3), &t.device());
                    if t.is_require_grad() {
                        new.require_grad()
                    } else {
                        new
                    }
                })
            }
        }
        config.init(device).map(&mut Redraw)
    }

    fn tokens(rows: &[&[i64]], device: &Device) -> Tensor<2, Int> {
        let time = rows[0].len();
        let data: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(data, [rows.len(), time]), device)
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.try_into_vec_as::<f32>().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// A plain causal decoder with relative positions, its attention written out as the paper's
    /// formula, one (query, key) pair at a time: score(i, j) = ((q_i + u)·k_j + (q_i + v)·
    /// W_{k,R} R_{i-j}) / √d_head for j <= i, R_d = [sin(d ω_t), cos(d ω_t)], ω_t =
    /// 10000^(-2t/d). The other parts (embedding, LayerNorms, projections, MLP, head) are the
    /// model's own modules. Logits `[time, vocab]` of one sequence.
    fn reference(model: &TransformerXl, ids: &[i64], device: &Device) -> Vec<f32> {
        let n = ids.len();
        let d = model.n_embd;
        let mut x = model.wte.forward(tokens(&[ids], device));
        for layer in &model.layers {
            let attn = &layer.attn;
            let (heads, dh) = (attn.n_head, d / attn.n_head);
            let qkv = values(attn.qkv.forward(layer.ln_1.forward_fused(x.clone()))); // [n, 3d]
            let (u, v) = (values(attn.u.val()), values(attn.v.val()));
            let w_r = values(attn.r_net.weight.val()); // [d_in, d_out]
            let rel = |dist: usize| -> Vec<f32> {
                let r: Vec<f64> = (0..d)
                    .map(|c| {
                        let t = c % (d / 2);
                        let angle = dist as f64 * 10000f64.powf(-2.0 * t as f64 / d as f64);
                        if c < d / 2 { angle.sin() } else { angle.cos() }
                    })
                    .collect();
                (0..d)
                    .map(|o| (0..d).map(|c| r[c] * w_r[c * d + o] as f64).sum::<f64>() as f32)
                    .collect()
            };
            let at = |row: usize, part: usize, h: usize, t: usize| {
                qkv[row * 3 * d + part * d + h * dh + t]
            };
            let mut out = vec![0f32; n * d];
            for h in 0..heads {
                for i in 0..n {
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let r = rel(i - j);
                            let s: f64 = (0..dh)
                                .map(|t| {
                                    let q = at(i, 0, h, t) as f64;
                                    (q + u[h * dh + t] as f64) * at(j, 1, h, t) as f64
                                        + (q + v[h * dh + t] as f64) * r[h * dh + t] as f64
                                })
                                .sum();
                            s / (dh as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = exp.iter().sum();
                    for t in 0..dh {
                        let y: f64 = (0..=i)
                            .map(|j| exp[j] / total * at(j, 2, h, t) as f64)
                            .sum();
                        out[i * d + h * dh + t] = y as f32;
                    }
                }
            }
            let y = Tensor::from_data(TensorData::new(out, [1, n, d]), device);
            x = x + attn.proj.forward(y);
            x = x.clone() + layer.mlp.forward(layer.ln_2.forward_fused(x));
        }
        values(model.head(model.ln_f.forward_fused(x)))
    }

    #[test]
    fn without_memory_it_is_a_causal_decoder_with_relative_positions() {
        let device = Device::flex();
        let _generator = crate::rng::seeded_for_test(&device, 3);
        let model = model(&tiny(0), &device);
        let first: &[i64] = &[1, 4, 2, 7, 3, 9, 0, 5];
        let second: &[i64] = &[6, 10, 2, 2, 8];
        let (logits, memory) = model.forward(tokens(&[first], &device), &Memory::default());
        assert!(memory.is_empty());
        let diff = max_diff(&values(logits), &reference(&model, first, &device));
        assert!(diff < 1e-5, "first segment: max diff {diff}");
        // The next segment sees nothing of the first.
        let (logits, memory) = model.forward(tokens(&[second], &device), &memory);
        assert!(memory.is_empty());
        let diff = max_diff(&values(logits), &reference(&model, second, &device));
        assert!(diff < 1e-5, "second segment: max diff {diff}");
    }

    #[test]
    fn the_attention_with_dropout_equals_the_fused_one_outside_training() {
        let device = Device::flex();
        let _generator = crate::rng::seeded_for_test(&device, 4);
        let fused = model(&tiny(8), &device);
        let mut spelled = fused.clone();
        for layer in &mut spelled.layers {
            layer.attn.attn_dropout = DropoutConfig::new(0.5).init();
        }
        let ids: &[i64] = &[1, 4, 2, 7, 3, 9, 0, 5];
        let (a, memory_a) = fused.forward(tokens(&[ids], &device), &Memory::default());
        let (b, memory_b) = spelled.forward(tokens(&[ids], &device), &Memory::default());
        assert!(max_diff(&values(a), &values(b)) < 1e-5);
        let (a, _) = fused.forward(tokens(&[&ids[..3]], &device), &memory_a);
        let (b, _) = spelled.forward(tokens(&[&ids[..3]], &device), &memory_b);
        let diff = max_diff(&values(a), &values(b));
        assert!(diff < 1e-5, "with memory: max diff {diff}");
    }

    /// "Full recompute": one forward pass over the concatenated segments without memory, every
    /// position attending to all earlier ones. Reading the segments one by one carrying the
    /// memory gives the same logits when `mem_len` holds all earlier positions (with a shorter
    /// memory, layer l of a segment sees less than a recompute over the same tokens would).
    #[test]
    fn segment_by_segment_with_memory_equals_the_full_recompute() {
        let device = Device::flex();
        let _generator = crate::rng::seeded_for_test(&device, 5);
        let model = model(&tiny(20), &device);
        let rows: [&[i64]; 2] = [
            &[1, 4, 2, 7, 3, 9, 0, 5, 6, 10, 2, 2, 8, 1, 3],
            &[5, 5, 1, 0, 9, 3, 7, 8, 2, 4, 6, 1, 10, 0, 2],
        ];
        let (full, _) = model.forward(tokens(&rows, &device), &Memory::default());
        let mut memory = Memory::default();
        let mut parts = Vec::new();
        for (start, end) in [(0, 5), (5, 9), (9, 15)] {
            let segment: Vec<&[i64]> = rows.iter().map(|r| &r[start..end]).collect();
            let (logits, next) = model.forward(tokens(&segment, &device), &memory);
            assert_eq!(next.len(), end, "the memory holds every position read");
            parts.push(logits);
            memory = next;
        }
        let diff = max_diff(&values(Tensor::cat(parts, 1)), &values(full));
        assert!(diff < 1e-5, "max diff {diff}");
    }

    #[test]
    fn the_memory_keeps_the_last_mem_len_inputs_of_each_layer_detached() {
        let device = Device::flex().autodiff();
        let _generator = crate::rng::seeded_for_test(&device, 6);
        let model = tiny(3).init(&device);
        let ids: [i64; 9] = [1, 4, 2, 7, 3, 9, 0, 5, 6];
        let (_, first) = model.forward(tokens(&[&ids[..5]], &device), &Memory::default());
        let (_, second) = model.forward(tokens(&[&ids[5..]], &device), &first);
        assert_eq!((first.len(), second.len()), (3, 3));
        // Layer 0's input is the token embedding (no dropout here): the last 3 tokens'.
        let embedded = model.wte.forward(tokens(&[&ids[6..]], &device));
        assert!(max_diff(&values(second.layers[0].clone()), &values(embedded)) < 1e-7);
        assert_eq!(second.layers.len(), 2);
        // Stop-gradient: the next segment's gradients are those with the memory's values taken
        // as constants (through the memory they would reach the first segment's computation).
        let constants = Memory {
            layers: first
                .layers
                .iter()
                .map(|m| Tensor::from_data(m.to_data(), &device))
                .collect(),
        };
        let gradient = |memory: &Memory| {
            let (logits, _) = model.forward(tokens(&[&ids[5..]], &device), memory);
            // Each output weighted differently, so a gradient in the wrong place shows.
            let [b, t, v] = logits.dims();
            let w: Vec<f32> = (0..b * t * v).map(|i| (i % 7) as f32 - 3.0).collect();
            let weights = Tensor::from_data(TensorData::new(w, [b, t, v]), &device);
            let grads = (logits * weights).sum().backward();
            values(model.layers[0].attn.qkv.weight.val().grad(&grads).unwrap())
        };
        let (through_memory, of_constants) = (gradient(&first), gradient(&constants));
        let diff = max_diff(&through_memory, &of_constants);
        assert!(diff < 1e-7, "max diff {diff}");
    }

    #[test]
    fn options_resolve_and_bad_ones_are_named() {
        let mut options = TransformerXlOptions::default();
        options.resolve().unwrap();
        let mut problems = Vec::new();
        options.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let bad = TransformerXlOptions {
            n_embd: Some(15),
            n_head: Some(5),
            segments_per_sample: Some(1),
            mem_len: Some(32),
            ..options
        };
        let mut problems = Vec::new();
        bad.validate(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("`model.n_embd` (15) must be even"));
        assert!(problems[1].starts_with("`model.segments_per_sample` is 1"));
    }
}
