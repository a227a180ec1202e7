//! Autoregressive generation from a GPT-2, with or without the KV cache.

use super::sampling::Sampler;
use crate::models::gpt2::{Gpt2, KvCache};
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
