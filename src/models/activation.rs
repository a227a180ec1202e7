//! The feed-forward activation of the Transformer models: GELU exact (BERT, nanoGPT,
//! `torch.nn.GELU()`) or in OpenAI's tanh approximation (HF's `gelu_new`: GPT-2, ALBERT), so a
//! pretrained checkpoint computes what it was trained with.

use super::gelu::gelu;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x·Φ(x)`.
    #[default]
    Gelu,
    /// `x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluNew,
}

impl Activation {
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Gelu => gelu(x),
            Activation::GeluNew => burn::tensor::activation::gelu_approximate(x),
        }
    }

    /// The name in an HF `config.json` (`hidden_act`, `activation_function`).
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluNew => "gelu_new",
        }
    }

    /// The activation an HF config names; `None` for one nlpkit does not have.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::Gelu),
            // The same function under transformers' other names for it.
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluNew),
            _ => None,
        }
    }
}
