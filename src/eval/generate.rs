//! Autoregressive generation from a GPT-2, with or without the KV cache, from a Transformer-XL,
//! with or without its memory kept between tokens, and the sampling loop of the other language
//! models (`sample_with`).

use super::sampling::Sampler;
use crate::models::gpt2::{Gpt2, KvCache};
use crate::models::transformer_xl::{Memory, TransformerXl};
use crate::rng::SplitMix64;
use burn::prelude::*;

/// Generate `max_new_tokens` after `prompt` (non-empty). Like nanoGPT, the model conditions on at
/// most its last `block_size` tokens. With `use_cache`, each new token costs one position; when
/// the context outgrows the block, the cache is rebuilt from the last `block_size` tokens.
pub fn generate(
    model: &Gpt2,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &Sampler,
    seed: u64,
    use_cache: bool,
    device: &Device,
) -> Vec<u32> {
    assert!(
        !prompt.is_empty(),
        "generation needs at least one prompt token"
    );
    let block = model.block_size();
    let mut rng = SplitMix64::new(seed);
    let mut tokens = prompt.to_vec();
    let mut cache = KvCache::default();
    let as_tensor = |ids: &[u32]| {
        let data: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        Tensor::<2, Int>::from_data(TensorData::new(data, [1, ids.len()]), device)
    };
    let window = |tokens: &[u32]| tokens[tokens.len().saturating_sub(block)..].to_vec();
    for _ in 0..max_new_tokens {
        let logits = if use_cache {
            if cache.is_empty() || cache.len() >= block {
                cache = KvCache::default();
                model.forward_next(as_tensor(&window(&tokens)), &mut cache)
            } else {
                model.forward_next(as_tensor(&tokens[tokens.len() - 1..]), &mut cache)
            }
        } else {
            let context = window(&tokens);
            let logits = model.forward(as_tensor(&context));
            let [_, time, vocab] = logits.dims();
            logits
                .slice([0..1, time - 1..time, 0..vocab])
                .reshape([1, vocab])
        };
        let values: Vec<f32> = logits.try_into_vec_as::<f32>().expect("logits read back");
        tokens.push(sampler.sample(&values, &mut rng));
    }
    tokens.split_off(prompt.len())
}

/// Sample `max_new_tokens` after `prompt` with a model that gives the next token's logits:
/// `next(tokens, new)` is called with every token so far, of which the last `new` it has not
/// been given yet (the whole prompt first, then each sampled token), so a model that carries
/// state (an RNN) reads only those and a windowed one (NNLM) reads what it needs.
pub fn sample_with(
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &Sampler,
    seed: u64,
    mut next: impl FnMut(&[u32], usize) -> Vec<f32>,
) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    let mut tokens = prompt.to_vec();
    let mut new = prompt.len();
    for _ in 0..max_new_tokens {
        let logits = next(&tokens, new);
        tokens.push(sampler.sample(&logits, &mut rng));
        new = 1;
    }
    tokens.split_off(prompt.len())
}

/// Token ids as a `[1, len]` tensor, for generation.
pub fn row_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

/// Generate `max_new_tokens` after `prompt` (non-empty) from a Transformer-XL reading segments
/// of `segment_len` tokens, cut from the prompt's start as evaluation cuts a split. Each token is
/// predicted from the memory and the unfinished segment; a segment that fills up moves into the
/// memory (which keeps at most the model's `mem_len` positions). With `use_memory`, the memory
/// is kept from token to token; without it (for comparisons), it is rebuilt from the start for
/// every token, which gives the same tokens.
#[allow(clippy::too_many_arguments)]
pub fn generate_with_memory(
    model: &TransformerXl,
    segment_len: usize,

    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &Sampler,
    seed: u64,
    use_memory: bool,
    device: &Device,
) -> Vec<u32> {
    assert!(
        !prompt.is_empty(),
        "generation needs at least one prompt token"
    );
    let mut rng = SplitMix64::new(seed);
    let mut tokens = prompt.to_vec();
    let as_tensor = |ids: &[u32]| {
        let data: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        Tensor::<2, Int>::from_data(TensorData::new(data, [1, ids.len()]), device)
    };
    let mut memory = Memory::default();
    // tokens[..read] are in the memory.
    let mut read = 0;
    for _ in 0..max_new_tokens {
        if !use_memory {
            (memory, read) = (Memory::default(), 0);
        }
        while tokens.len() - read > segment_len {
            let (_, next) = model.forward(as_tensor(&tokens[read..read + segment_len]), &memory);
            (memory, read) = (next, read + segment_len);
        }
        let (logits, _) = model.forward(as_tensor(&tokens[read..]), &memory);
        let [_, time, vocab] = logits.dims();
        let last = logits.narrow(1, time - 1, 1).reshape([vocab]);
        let values: Vec<f32> = last.try_into_vec_as::<f32>().expect("logits read back");
        tokens.push(sampler.sample(&values, &mut rng));
    }
    tokens.split_off(prompt.len())
}
