//! GPT-2: a pre-LayerNorm decoder-only Transformer with learned positions, causal attention,
//! a GELU MLP, dropout, and the output head tied to the token embedding (Radford et al. 2019,
//! in nanoGPT's shapes and initialisation).

use super::activation::Activation;
use super::attention::{Mask, attention, dropout_rate, self_attention};
use super::layer_norm::ForwardFused;
use super::lora::{GPT2_TARGETS, LoraConfig, LoraLinear, LoraOptions};
use crate::error::{Error, Result};
use crate::recipe::{
    DataSizes, ModelOptions, TaskKind, require_dropout, require_heads_divide, require_positive,
    vocab_at_least,
};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    LinearConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The `model:` section for `type: gpt2`. Every field is optional in the file: a `preset`
/// (a name from `configs/` or a path to such a YAML file) fills what is missing, then defaults
/// (GPT-2 small) fill the rest; the resolved recipe has them all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Gpt2Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default)]
    pub n_layer: Option<usize>,
    #[serde(default)]
    pub n_head: Option<usize>,
    #[serde(default)]
    pub n_embd: Option<usize>,
    /// Context length: the longest sequence the model sees (and the training window).
    #[serde(default)]
    pub block_size: Option<usize>,
    /// Rows of the embedding; at least the tokenizer's vocabulary (filled from it when absent).
    #[serde(default)]
    pub vocab_size: Option<usize>,
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Biases in the linear layers and LayerNorms.
    #[serde(default)]
    pub bias: Option<bool>,
    /// The MLP's GELU: exact (nanoGPT's, the default) or `gelu_new` (OpenAI's GPT-2 checkpoints).
    #[serde(default)]
    pub activation: Option<Activation>,
    /// LoRA adapters on the blocks' linear layers; only they train (the LM head is the tied,
    /// frozen token embedding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraOptions>,
}

/// Presets shipped in the binary, by name; the same files are in `configs/`.
const PRESETS: &[(&str, &str)] = &[
    ("gpt2-tiny", include_str!("../../configs/gpt2-tiny.yaml")),
    ("gpt2-small", include_str!("../../configs/gpt2-small.yaml")),
    (
        "gpt2-medium",
        include_str!("../../configs/gpt2-medium.yaml"),
    ),
];

impl ModelOptions for Gpt2Options {
    fn name(&self) -> &'static str {
        "gpt2"
    }

    fn task(&self) -> TaskKind {
        TaskKind::LanguageModel
    }

    /// Fill missing fields from the preset, then from GPT-2 small's defaults.
    fn resolve(&mut self) -> Result<()> {
        if let Some(preset) = self.preset.take() {
            let base: Gpt2Options = super::read_preset(&preset, PRESETS)?;
            self.n_layer = self.n_layer.or(base.n_layer);
            self.n_head = self.n_head.or(base.n_head);
            self.n_embd = self.n_embd.or(base.n_embd);
            self.block_size = self.block_size.or(base.block_size);
            self.vocab_size = self.vocab_size.or(base.vocab_size);
            self.dropout = self.dropout.or(base.dropout);
            self.bias = self.bias.or(base.bias);
            self.activation = self.activation.or(base.activation);
        }
        self.n_layer.get_or_insert(12);
        self.n_head.get_or_insert(12);
        self.n_embd.get_or_insert(768);
        self.block_size.get_or_insert(1024);
        self.dropout.get_or_insert(0.0);
        self.bias.get_or_insert(true);
        self.activation.get_or_insert_default();
        if let Some(lora) = &mut self.lora {
            lora.resolve(GPT2_TARGETS);
        }
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
                ("block_size", self.block_size.unwrap_or(1)),
            ],
        );
        require_heads_divide(problems, "n_embd", n_embd, n_head);
        require_dropout(problems, self.dropout.unwrap_or(0.0));
        if let Some(lora) = &self.lora {
            lora.validate(GPT2_TARGETS, problems);
        }
    }

    /// Rows of the embedding: at least the tokenizer's vocabulary.
    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        self.vocab_size = Some(vocab_at_least(self.vocab_size, sizes.vocab, "vocab_size")?);
        Ok(())
    }
}

impl Gpt2Options {
    /// Take the shape from a pretrained checkpoint's options; a field the recipe sets must agree
    /// with it (a preset is not applied on top of a pretrained shape).
    pub fn inherit(&mut self, pretrained: &Gpt2Options) -> Result<()> {
        use super::inherit_field as take;
        super::refuse_preset_on_pretrained(&self.preset)?;
        take("n_layer", &mut self.n_layer, pretrained.n_layer)?;
        take("n_head", &mut self.n_head, pretrained.n_head)?;
        take("n_embd", &mut self.n_embd, pretrained.n_embd)?;
        super::inherit_length("block_size", &mut self.block_size, pretrained.block_size)?;
        take("vocab_size", &mut self.vocab_size, pretrained.vocab_size)?;
        take("bias", &mut self.bias, pretrained.bias)?;
        take("activation", &mut self.activation, pretrained.activation)?;
        self.dropout = self.dropout.or(pretrained.dropout);
        Ok(())
    }

    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<Gpt2Config> {
        let vocab_size = self.vocab_size.ok_or_else(|| {
            Error::Recipe(
                "the gpt2 model needs `model.vocab_size`, filled in by `nlpkit train`; give an \
                 experiment folder it wrote"
                    .into(),
            )
        })?;
        Ok(Gpt2Config {
            n_layer: self.n_layer.expect("resolved"),
            n_head: self.n_head.expect("resolved"),
            n_embd: self.n_embd.expect("resolved"),
            block_size: self.block_size.expect("resolved"),
            vocab_size,
            dropout: self.dropout.expect("resolved"),
            bias: self.bias.expect("resolved"),
            // Experiments written before the option existed used the exact GELU.
            activation: self.activation.unwrap_or_default(),
            lora: self.lora.as_ref().map(LoraOptions::config),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub block_size: usize,
    pub vocab_size: usize,
    pub dropout: f64,
    pub bias: bool,
    pub activation: Activation,
    /// LoRA adapters on the layers it targets (`c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj`).
    pub lora: Option<LoraConfig>,
}

impl Gpt2Config {
    pub fn init(&self, device: &Device) -> Gpt2 {
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        // GPT-2: residual projections scaled by 1/sqrt(2 * n_layer).
        let proj_std = 0.02 / (2.0 * self.n_layer as f64).sqrt();
        let linear = |d_in, d_out, std, name| {
            let base = LinearConfig::new(d_in, d_out)
                .with_bias(self.bias)
                .with_initializer(normal(std))
                .init(device);
            LoraLinear::new(base, self.lora.as_ref(), name, device)
        };
        let norm = || {
            LayerNormConfig::new(self.n_embd)
                .with_bias(self.bias)
                .init(device)
        };
        let blocks = (0..self.n_layer)
            .map(|_| Block {
                ln_1: norm(),
                attn: CausalSelfAttention {
                    c_attn: linear(self.n_embd, 3 * self.n_embd, 0.02, "attn.c_attn"),
                    c_proj: linear(self.n_embd, self.n_embd, proj_std, "attn.c_proj"),
                    attn_dropout: DropoutConfig::new(self.dropout).init(),
                    resid_dropout: DropoutConfig::new(self.dropout).init(),
                    n_head: self.n_head,
                },
                ln_2: norm(),
                mlp: Mlp::new(
                    self.n_embd,
                    self.bias,
                    self.dropout,
                    self.activation,
                    proj_std,
                    self.lora.as_ref(),
                    device,
                ),
            })
            .collect();
        Gpt2 {
            wte: EmbeddingConfig::new(self.vocab_size, self.n_embd)
                .with_initializer(normal(0.02))
                .init(device),
            wpe: EmbeddingConfig::new(self.block_size, self.n_embd)
                .with_initializer(normal(0.02))
                .init(device),
            drop: DropoutConfig::new(self.dropout).init(),
            blocks,
            ln_f: norm(),
            block_size: self.block_size,
        }
    }

    /// Parameters, counted as GPT-2 papers do (position embeddings excluded).
    pub fn num_params(&self) -> usize {
        let b = usize::from(self.bias);
        let d = self.n_embd;
        let per_block = 2 * (d + b * d)
            + (3 * d * d + b * 3 * d)
            + (d * d + b * d)
            + (4 * d * d + b * 4 * d)
            + (4 * d * d + b * d);
        self.vocab_size * d + self.n_layer * per_block + (d + b * d)
    }
}

#[derive(Module, Debug)]
pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    drop: Dropout,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    block_size: usize,
}

#[derive(Module, Debug)]
struct Block {
    ln_1: LayerNorm,
    attn: CausalSelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

#[derive(Module, Debug)]
struct CausalSelfAttention {
    c_attn: LoraLinear,
    c_proj: LoraLinear,
    attn_dropout: Dropout,
    resid_dropout: Dropout,
    n_head: usize,
}

/// The feed-forward block (also Transformer-XL's): `n_embd -> 4 n_embd -> n_embd`.
#[derive(Module, Debug)]
pub(super) struct Mlp {
    c_fc: LoraLinear,
    c_proj: LoraLinear,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

/// Keys and values of every layer for the positions seen so far, `[batch, heads, time, head_dim]`,
/// so generating one more token costs one position, not the whole prefix.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Gpt2 {
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Logits `[batch, time, vocab]` for every position of `tokens` `[batch, time]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let hidden = self.hidden(tokens, 0, None);
        self.head(hidden)
    }

    /// Logits `[batch, vocab]` for the position after `tokens`, reading and extending `cache`.
    pub fn forward_next(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<2> {
        let [batch, time] = tokens.dims();
        let start = cache.len;
        if cache.layers.is_empty() {
            cache.layers = vec![None; self.blocks.len()];
        }
        let hidden = self.hidden(tokens, start, Some(&mut cache.layers));
        cache.len += time;
        let [_, _, width] = hidden.dims();
        let last = hidden.slice([0..batch, time - 1..time, 0..width]);
        self.head(last).reshape([batch, self.wte.weight.dims()[0]])
    }

    fn hidden(
        &self,
        tokens: Tensor<2, Int>,
        start: usize,
        mut cache: Option<&mut Vec<Option<(Tensor<4>, Tensor<4>)>>>,
    ) -> Tensor<3> {
        let [_, time] = tokens.dims();
        assert!(
            start + time <= self.block_size,
            "sequence of {} positions exceeds block_size {}",
            start + time,
            self.block_size
        );
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(start as i64..(start + time) as i64, &device)
            .reshape([1, time]);
        let mut x = self
            .drop
            .forward(self.wte.forward(tokens) + self.wpe.forward(positions));
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c[i]);
            x = block.forward(x, layer_cache);
        }
        self.ln_f.forward_fused(x)
    }

    /// The output head, tied to the token embedding.
    fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let weight = self.wte.weight.val(); // [vocab, n_embd]
        crate::models::linear::linear(hidden, weight.transpose(), None)
    }
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward_fused(x), cache);
        x.clone() + self.mlp.forward(self.ln_2.forward_fused(x))
    }
}

impl CausalSelfAttention {
    fn forward(
        &self,
        x: Tensor<3>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [batch, time, width] = x.dims();
        let dropout = dropout_rate(&self.attn_dropout, &x.device());
        let qkv = self.c_attn.forward(x);
        let y = match cache {
            None => self_attention(qkv, self.n_head, Mask::Causal, dropout),
            Some(cache) => {
                let [q, mut k, mut v] = super::split_heads(qkv, self.n_head);
                if let Some((past_k, past_v)) = cache.take() {
                    k = Tensor::cat(vec![past_k, k], 2);
                    v = Tensor::cat(vec![past_v, v], 2);
                }
                *cache = Some((k.clone(), v.clone()));
                // Causal mask aligned to the bottom right: the new queries see every cached
                // key and the earlier new ones.
                let y = attention(q, k, v, Mask::Causal, None, dropout);
                y.swap_dims(1, 2).reshape([batch, time, width])
            }
        };
        self.resid_dropout.forward(self.c_proj.forward(y))
    }
}

impl Mlp {
    /// GPT-2's initialisation: N(0, 0.02), the output projection N(0, `proj_std`); LoRA adapters
    /// where `lora` targets `mlp.c_fc`/`mlp.c_proj`.
    pub(super) fn new(
        n_embd: usize,
        bias: bool,
        dropout: f64,
        activation: Activation,
        proj_std: f64,
        lora: Option<&LoraConfig>,
        device: &Device,
    ) -> Self {
        let linear = |d_in, d_out, std, path| {
            let base = LinearConfig::new(d_in, d_out)
                .with_bias(bias)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device);
            LoraLinear::new(base, lora, path, device)
        };
        Self {
            c_fc: linear(n_embd, 4 * n_embd, 0.02, "mlp.c_fc"),
            c_proj: linear(4 * n_embd, n_embd, proj_std, "mlp.c_proj"),
            dropout: DropoutConfig::new(dropout).init(),
            activation,
        }
    }

    pub(super) fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.dropout.forward(
            self.c_proj
                .forward(self.activation.apply(self.c_fc.forward(x))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Gpt2Config {
        Gpt2Config {
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            block_size: 12,
            vocab_size: 11,
            dropout: 0.0,
            bias: true,
            activation: Activation::Gelu,
            lora: None,
        }
    }

    fn tokens(device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(
            TensorData::new(vec![1i64, 4, 2, 7, 3, 9, 0, 5], [1, 8]),
            device,
        )
    }

    #[test]
    fn kv_cache_gives_the_same_logits_as_full_recompute() {
        let device = Device::flex();
        let _generator = crate::rng::seeded_for_test(&device, 0);
        let model = tiny().init(&device);
        let full = model.forward(tokens(&device)); // [1, 8, 11]
        let mut cache = KvCache::default();
        // Prefill 3 tokens, then feed the rest one at a time.
        let mut rows = vec![model.forward_next(tokens(&device).slice([0..1, 0..3]), &mut cache)];
        for t in 3..8 {
            rows.push(model.forward_next(tokens(&device).slice([0..1, t..t + 1]), &mut cache));
        }
        for (i, row) in rows.into_iter().enumerate() {
            let position = i + 2;
            let expected = full
                .clone()
                .slice([0..1, position..position + 1, 0..11])
                .reshape([1, 11]);
            let diff: f32 = (row - expected).abs().max().into_scalar();
            assert!(diff < 1e-4, "position {position}: max diff {diff}");
        }
        assert_eq!(cache.len(), 8);
    }

    #[test]
    fn dropout_path_equals_fused_attention_when_not_training() {
        let device = Device::flex();
        let _generator = crate::rng::seeded_for_test(&device, 1);
        let mut config = tiny();
        let fused = config.init(&device);
        config.dropout = 0.5;
        let mut spelled = config.init(&device);
        // Same weights, different attention code path; dropout is off outside training.
        spelled.wte = fused.wte.clone();
        spelled.wpe = fused.wpe.clone();
        spelled.ln_f = fused.ln_f.clone();
        for (s, f) in spelled.blocks.iter_mut().zip(&fused.blocks) {
            s.ln_1 = f.ln_1.clone();
            s.ln_2 = f.ln_2.clone();
            s.attn.c_attn = f.attn.c_attn.clone();
            s.attn.c_proj = f.attn.c_proj.clone();
            s.mlp.c_fc = f.mlp.c_fc.clone();
            s.mlp.c_proj = f.mlp.c_proj.clone();
        }
        let a = fused.forward(tokens(&device));
        let b = spelled.valid().forward(tokens(&device));
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff < 1e-5, "max diff {diff}");
    }

    #[test]
    fn presets_resolve_and_gpt2_small_has_124m_parameters() {
        let mut small = Gpt2Options {
            preset: Some("gpt2-small".into()),
            ..Default::default()
        };
        small.resolve().unwrap();
        let sizes = DataSizes {
            vocab: 50257,
            target_vocab: 50257,
            labels: vec![],
        };
        small.record_sizes(&sizes).unwrap();
        let config = small.config().unwrap();
        // 124M with the 1024 position embeddings, as the GPT-2 paper counts.
        let with_positions = config.num_params() + config.block_size * config.n_embd;
        assert_eq!(with_positions, 124_439_808);
        // HF's gpt2-medium: 354,823,168.
        let mut medium = Gpt2Options {
            preset: Some("gpt2-medium".into()),
            ..Default::default()
        };
        medium.resolve().unwrap();
        medium.record_sizes(&sizes).unwrap();
        let config = medium.config().unwrap();
        assert_eq!(config.activation, Activation::GeluNew);
        assert_eq!(
            config.num_params() + config.block_size * config.n_embd,
            354_823_168
        );
        let mut tiny = Gpt2Options {
            preset: Some("gpt2-tiny".into()),
            n_layer: Some(2),
            ..Default::default()
        };
        tiny.resolve().unwrap();
        assert_eq!((tiny.n_layer, tiny.n_embd), (Some(2), Some(128)));
    }
}
