//! A Transformer encoder: layers of bidirectional self-attention and a GELU feed-forward, each
//! with a residual connection and LayerNorm after it (BERT, Vaswani et al.) or before it
//! (pre-norm), with a padding mask. BERT-base is 12 layers of width 768, 12 heads, feed-forward
//! 3072.

use super::activation::Activation;
use super::attention::{Mask, self_attention};
use super::layer_norm::ForwardFused;
use super::lora::{LoraConfig, LoraLinear};
use burn::nn::{Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, LinearConfig};
use burn::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub width: usize,
    pub ffn_width: usize,
    pub dropout: f64,
    /// LayerNorm before each sub-layer (pre-norm) instead of after the residual sum (BERT).
    pub pre_norm: bool,
    /// One layer's weights applied `n_layer` times (ALBERT's cross-layer sharing).
    pub share_layers: bool,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    /// LoRA adapters on the layers it targets (`qkv`, `out`, `ffn_in`, `ffn_out`).
    pub lora: Option<LoraConfig>,
}

impl EncoderConfig {
    /// BERT-base's shape: 12 layers, width 768, 12 heads, feed-forward 3072, post-norm.
    pub fn bert_base() -> Self {
        Self {
            n_layer: 12,
            n_head: 12,
            width: 768,
            ffn_width: 3072,
            dropout: 0.1,
            pre_norm: false,
            share_layers: false,
            activation: Activation::Gelu,
            layer_norm_eps: 1e-12,
            lora: None,
        }
    }

    pub fn init(&self, device: &Device) -> Encoder {
        // BERT's initialisation: N(0, 0.02) weights, zero biases.
        let linear = |d_in, d_out, name| {
            let base = LinearConfig::new(d_in, d_out)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device);
            LoraLinear::new(base, self.lora.as_ref(), name, device)
        };
        let norm = || {
            LayerNormConfig::new(self.width)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let distinct = if self.share_layers { 1 } else { self.n_layer };
        let layers = (0..distinct)
            .map(|_| EncoderLayer {
                qkv: linear(self.width, 3 * self.width, "qkv"),
                out: linear(self.width, self.width, "out"),
                norm_1: norm(),
                ffn_in: linear(self.width, self.ffn_width, "ffn_in"),
                ffn_out: linear(self.ffn_width, self.width, "ffn_out"),
                norm_2: norm(),
                dropout: DropoutConfig::new(self.dropout).init(),
                n_head: self.n_head,
                pre_norm: self.pre_norm,
                activation: self.activation,
            })
            .collect();
        Encoder {
            layers,
            passes: self.n_layer / distinct,
        }
    }
}

#[derive(Module, Debug)]
pub struct Encoder {
    layers: Vec<EncoderLayer>,
    /// How many times the stack of `layers` is applied (n_layer with shared weights, else 1).
    passes: usize,
}

#[derive(Module, Debug)]
pub struct EncoderLayer {
    qkv: LoraLinear,
    out: LoraLinear,
    norm_1: LayerNorm,
    ffn_in: LoraLinear,
    ffn_out: LoraLinear,
    norm_2: LayerNorm,
    dropout: Dropout,
    n_head: usize,
    pre_norm: bool,
    #[module(skip)]
    activation: Activation,
}

impl Encoder {
    /// Hidden states `[batch, time, width]` for `x` `[batch, time, width]`; `padding`
    /// `[batch, time]` is true at padded positions, which no position attends to.
    pub fn forward(&self, x: Tensor<3>, padding: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let applied = std::iter::repeat_n(&self.layers, self.passes).flatten();
        applied.fold(x, |x, layer| layer.forward(x, padding.clone()))
    }
}

impl EncoderLayer {
    fn forward(&self, x: Tensor<3>, padding: Option<Tensor<2, Bool>>) -> Tensor<3> {
        if self.pre_norm {
            let x = x.clone() + self.attention(self.norm_1.forward_fused(x), padding);
            x.clone() + self.feed_forward(self.norm_2.forward_fused(x))
        } else {
            let x = self
                .norm_1
                .forward_fused(x.clone() + self.attention(x, padding));
            self.norm_2.forward_fused(x.clone() + self.feed_forward(x))
        }
    }

    fn attention(&self, x: Tensor<3>, padding: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let mask = padding.map_or(Mask::None, Mask::KeyPadding);
        let y = self_attention(self.qkv.forward(x), self.n_head, mask, 0.0);
        self.dropout.forward(self.out.forward(y))
    }

    fn feed_forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = self.activation.apply(self.ffn_in.forward(x));
        self.dropout.forward(self.ffn_out.forward(hidden))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(pre_norm: bool) -> EncoderConfig {
        EncoderConfig {
            n_layer: 2,
            n_head: 2,
            width: 8,
            ffn_width: 16,
            dropout: 0.0,
            pre_norm,
            share_layers: false,
            activation: Activation::Gelu,
            layer_norm_eps: 1e-12,
            lora: None,
        }
    }

    /// Padding must not change what the real positions compute: a sequence of 3 padded to 5
    /// gives, at its 3 positions, the unpadded sequence's output.
    #[test]
    fn padded_positions_are_invisible() {
        let device = Device::flex();
        for pre_norm in [false, true] {
            let encoder = small(pre_norm).init(&device);
            let x = Tensor::<3>::random(
                [1, 5, 8],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let padding =
                Tensor::<2, Bool>::from_data([[false, false, false, true, true]], &device);
            let padded = encoder.forward(x.clone(), Some(padding)).narrow(1, 0, 3);
            let alone = encoder.forward(x.clone().narrow(1, 0, 3), None);
            let difference: f32 = (padded - alone).abs().max().into_scalar();
            assert!(difference < 1e-5, "pre_norm {pre_norm}: {difference}");
            // Without the mask the padded positions do leak in, so the test can fail.
            let leaked = encoder.forward(x.clone(), None).narrow(1, 0, 3);
            let alone = encoder.forward(x.narrow(1, 0, 3), None);
            let difference: f32 = (leaked - alone).abs().max().into_scalar();
            assert!(
                difference > 1e-4,
                "pre_norm {pre_norm}: leaked {difference}"
            );
        }
    }
}
