//! Model families, one file each. Models know Burn and nothing of recipes' files or the CLI.

pub mod bert;
pub mod classifier;
pub mod crf;
pub mod encoder;
pub mod gelu;
pub mod gpt2;
pub mod recurrent;
pub mod rnn_classifier;
pub mod rnn_seq2seq;
pub mod seq2seq;
pub mod textcnn;
pub mod transformer_seq2seq;

use burn::prelude::*;

/// Queries, keys and values `[batch, heads, time, width / heads]` from a fused projection
/// `[batch, time, 3 * width]` laid out `[q | k | v]`.
fn split_qkv_heads(qkv: Tensor<3>, heads: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let [batch, time, three_widths] = qkv.dims();
    let width = three_widths / 3;
    let split = |i: usize| {
        qkv.clone()
            .narrow(2, i * width, width)
            .reshape([batch, time, heads, width / heads])
            .swap_dims(1, 2)
    };
    (split(0), split(1), split(2))
}
