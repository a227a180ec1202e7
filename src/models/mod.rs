//! Model families, one file each. Models know Burn and nothing of recipes' files or the CLI.

pub mod activation;
pub mod attention;
pub mod bert;
#[cfg(feature = "flex")]
pub mod blas;
pub mod classifier;
pub mod crf;
pub mod encoder;
pub mod gelu;
pub mod glove;
pub mod gpt2;
pub mod layer_norm;
pub mod linear;
pub mod lora;
pub mod nnlm;
pub mod recurrent;
pub mod rnn_cell;
pub mod rnn_classifier;
pub mod rnn_lm;
pub mod rnn_seq2seq;
pub mod seq2seq;
pub mod textcnn;
pub mod transformer_seq2seq;
pub mod transformer_xl;
pub(crate) mod vectorised;
pub mod word2vec;

use burn::prelude::*;

/// The options of `model.preset`: a shipped preset by name (`shipped`: name, YAML text) or a
/// YAML file by path.
pub(crate) fn read_preset<T: serde::de::DeserializeOwned>(
    preset: &str,
    shipped: &[(&str, &str)],
) -> crate::error::Result<T> {
    use crate::error::Error;
    let (origin, text) = match shipped.iter().find(|(name, _)| *name == preset) {
        Some((name, text)) => (format!("preset {name}"), text.to_string()),
        None => {
            let text = std::fs::read_to_string(preset).map_err(|_| {
                let names: Vec<&str> = shipped.iter().map(|(n, _)| *n).collect();
                Error::Recipe(format!(
                    "`model.preset: {preset}` is neither a shipped preset ({}) nor a readable \
                     file",
                    names.join(", ")
                ))
            })?;
            (preset.to_string(), text)
        }
    };
    serde_saphyr::from_str(&text).map_err(|e| {
        Error::Recipe(format!(
            "{origin}: {}",
            e.to_string().lines().next().unwrap_or("")
        ))
    })
}

/// A preset names a shape of its own, which a pretrained model's would contradict.
pub(crate) fn refuse_preset_on_pretrained(preset: &Option<String>) -> crate::error::Result<()> {
    match preset {
        Some(preset) => Err(crate::error::Error::Recipe(format!(
            "`model.preset: {preset}` cannot apply to a pretrained model, whose shape is its \
             own; remove it"
        ))),
        None => Ok(()),
    }
}

/// One shape field of a fine-tuning recipe, taken from the pretrained model's: filled when the
/// recipe leaves it out, an error naming it when the recipe gives another value.
pub(crate) fn inherit_field<T: PartialEq + Copy + std::fmt::Debug>(
    key: &str,
    mine: &mut Option<T>,
    theirs: Option<T>,
) -> crate::error::Result<()> {
    match (*mine, theirs) {
        (Some(a), Some(b)) if a != b => Err(crate::error::Error::Recipe(format!(
            "`model.{key}: {a:?}` differs from the pretrained model's {b:?}; remove it to take \
             the pretrained value"
        ))),
        (None, b) => {
            *mine = b;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A length a fine-tuning recipe may shorten (the position table's first rows are kept): filled
/// from the pretrained model's when left out, an error when longer than it.
pub(crate) fn inherit_length(
    key: &str,
    mine: &mut Option<usize>,
    theirs: Option<usize>,
) -> crate::error::Result<()> {
    match (*mine, theirs) {
        (Some(a), Some(b)) if a > b => Err(crate::error::Error::Recipe(format!(
            "`model.{key}: {a}` is longer than the pretrained model's {b} positions; give at \
             most {b}, or remove it"
        ))),
        (None, b) => {
            *mine = b;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The `N` parts `[batch, heads, time, width / heads]` of a fused projection
/// `[batch, time, N·width]` laid out `[part 0 | part 1 | …]` (`[q | k | v]`, `[k | v]`).
fn split_heads<const N: usize>(packed: Tensor<3>, heads: usize) -> [Tensor<4>; N] {
    let [batch, time, widths] = packed.dims();
    // Heads first, then the parts: reshaping the contiguous projection is free, while
    // reshaping a narrowed (strided) view made burn-flex copy it, in the forward and again in
    // the backward. The attention kernel reads the strided views as they are.
    let by_head = packed.reshape([batch, time, N * heads, widths / N / heads]);
    std::array::from_fn(|i| by_head.clone().narrow(2, i * heads, heads).swap_dims(1, 2))
}
