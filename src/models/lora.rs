//! LoRA (Hu et al. 2021), as PEFT applies it: a targeted linear layer `x W + b` gains a trainable
//! low-rank update, `x W + b + (alpha / r) * dropout(x) A B`, with `A` `[d_in, r]` drawn as
//! PEFT draws it (Kaiming-uniform, bound 1/sqrt(d_in)) and `B` `[r, d_out]` zero, so the model
//! starts equal to its base. The frozen `W` and `b` keep Burn `Linear`'s names (`weight`,
//! `bias`), so every parameter path, checkpoint and HF rule stays as it was; the adapters are
//! `lora_a` and `lora_b` beside them, absent when LoRA is off (files stay byte-identical).
//! Freezing and merging are the training side's (`train::lora`).

use crate::models::linear::linear;
use crate::recipe::require_dropout;
use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// `model.lora` of a bert or gpt2 recipe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraOptions {
    /// The adapters' rank r.
    #[serde(default = "default_rank")]
    pub rank: usize,
    /// The update is scaled by alpha / r.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout on the adapters' input (PEFT's `lora_dropout`).
    #[serde(default)]
    pub dropout: f64,
    /// The linear layers that get adapters, by their name in the parameter paths (a suffix of
    /// the layer's path, as PEFT's `target_modules`), or `all`; default: the attention's input
    /// projection (`qkv` in bert, `c_attn` in gpt2: PEFT's query and value, fused here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<String>>,
}

fn default_rank() -> usize {
    8
}

fn default_alpha() -> f64 {
    16.0
}

/// The targets of BERT's encoder layers (`bert.encoder.layers.N.<name>`).
pub const BERT_TARGETS: &[&str] = &["qkv", "out", "ffn_in", "ffn_out"];
/// The targets of GPT-2's blocks (`blocks.N.attn.c_attn` ...); `c_proj` names both projections.
pub const GPT2_TARGETS: &[&str] = &["c_attn", "c_proj", "attn.c_proj", "c_fc", "mlp.c_proj"];

impl LoraOptions {
    /// Fill the default target (the first of the model's `targets`).
    pub fn resolve(&mut self, targets: &[&str]) {
        self.target.get_or_insert_with(|| vec![targets[0].into()]);
    }

    /// Range and name checks, with the key path; `targets` the model's valid names.
    pub fn validate(&self, targets: &[&str], problems: &mut Vec<String>) {
        if self.rank == 0 {
            problems.push("`model.lora.rank` must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            problems.push(format!(
                "`model.lora.alpha` must be above 0, got {}",
                self.alpha
            ));
        }
        let mut dropout = Vec::new();
        require_dropout(&mut dropout, self.dropout);
        problems.extend(
            dropout
                .into_iter()
                .map(|p| p.replace("`model.dropout`", "`model.lora.dropout`")),
        );
        let given = self.target.as_deref().unwrap_or_default();
        if self.target.is_some() && given.is_empty() {
            problems.push(format!(
                "`model.lora.target` is empty; name at least one of: all, {}",
                targets.join(", ")
            ));
        }
        for name in given {
            if name != "all" && !targets.contains(&name.as_str()) {
                problems.push(format!(
                    "`model.lora.target`: unknown layer `{name}`; valid: all, {}",
                    targets.join(", ")
                ));
            }
        }
    }

    /// The configuration the model is built with (a resolved, validated section).
    pub fn config(&self) -> LoraConfig {
        LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: self.target.clone().unwrap_or_default(),
        }
    }
}

/// What a model needs to build its adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Layer names as [`LoraOptions::target`] gives them (`all` included).
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// alpha / r, the update's scale.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Whether the layer at `path` (dotted, within its block) is a target: `all`, or a target
    /// that is the path or a suffix of it at a `.` (PEFT's matching).
    pub fn targets(&self, path: &str) -> bool {
        self.targets
            .iter()
            .any(|t| t == "all" || path == t || path.ends_with(&format!(".{t}")))
    }
}

/// A linear layer with optional LoRA adapters: Burn's `Linear` fields plus `lora_a`, `lora_b`.
#[derive(Module, Debug)]
pub struct LoraLinear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// `[d_in, r]`.
    pub lora_a: Option<Param<Tensor<2>>>,
    /// `[r, d_out]`.
    pub lora_b: Option<Param<Tensor<2>>>,
    lora_dropout: Dropout,
    /// alpha / r.
    scale: f64,
}

impl LoraLinear {
    /// `base` with adapters when `lora` targets `path` (the layer's path within its block).
    pub fn new(base: Linear, lora: Option<&LoraConfig>, path: &str, device: &Device) -> Self {
        let Linear { weight, bias } = base;
        let (lora_a, lora_b, dropout, scale) = match lora.filter(|l| l.targets(path)) {
            Some(lora) => {
                let [d_in, d_out] = weight.shape().dims();
                // PEFT's kaiming_uniform_(a=sqrt(5)) of A: bound 1/sqrt(d_in), as Linear's own.
                let a = Initializer::KaimingUniform {
                    gain: 1.0 / 3f64.sqrt(),
                    fan_out_only: false,
                }
                .init_with([d_in, lora.rank], Some(d_in), Some(lora.rank), device);
                let b = Param::from_tensor(Tensor::zeros([lora.rank, d_out], device));
                (Some(a), Some(b), lora.dropout, lora.scale())
            }
            None => (None, None, 0.0, 0.0),
        };
        Self {
            weight,
            bias,
            lora_a,
            lora_b,
            lora_dropout: DropoutConfig::new(dropout).init(),
            scale,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        match (&self.lora_a, &self.lora_b) {
            (Some(a), Some(b)) => {
                let low = linear(self.lora_dropout.forward(x.clone()), a.val(), None);
                let update = linear(low, b.val(), None).mul_scalar(self.scale);
                linear(x, self.weight.val(), bias) + update
            }
            _ => linear(x, self.weight.val(), bias),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;

    #[test]
    fn starts_equal_to_its_base_and_targets_by_suffix() {
        let device = Device::flex();
        let lora = LoraConfig {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
            targets: vec!["c_proj".into()],
        };
        assert!(lora.targets("mlp.c_proj") && lora.targets("attn.c_proj"));
        assert!(!lora.targets("attn.c_attn") && !lora.targets("mlp.xc_proj"));
        let base = LinearConfig::new(3, 5).init(&device);
        let x = Tensor::<2>::random([4, 3], burn::tensor::Distribution::Default, &device);
        let plain = base.forward(x.clone());
        let adapted = LoraLinear::new(base, Some(&lora), "attn.c_proj", &device);
        assert_eq!(adapted.lora_a.as_ref().unwrap().val().dims(), [3, 2]);
        let difference: f32 = (adapted.forward(x) - plain).abs().max().into_scalar();
        assert_eq!(difference, 0.0);
    }
}
