//! Autoregressive generation from a GPT-2, with or without the KV cache, and from a
//! Transformer-XL, with or without its memory kept between tokens.

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
