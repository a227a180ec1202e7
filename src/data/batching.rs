//! Batching by length, shared by every task with variable-length examples: examples of similar
//! length share a batch (little padding), batches are capped by examples and by tokens, and each
//! epoch visits the batches in its own seeded order, so the batch of any step is known without
//! replaying the run (exact resume).

use crate::distributed::Shard;
use crate::error::Result;
use crate::recipe::{BatchScope, Recipe};
use crate::rng::SplitMix64;

/// How big one batch of examples of varying length may be: the one rule every such task
/// follows (`train.batch_size` examples and `train.max_tokens` padded tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub examples: usize,
    pub tokens: Option<usize>,
}

impl BatchLimits {
    /// One rank's limits when training: both caps per rank, or the global ones split evenly
    /// across the ranks under `distributed.batch_size_is: global`.
    pub fn per_rank(recipe: &Recipe, ranks: usize) -> Result<Self> {
        let (examples, _) = crate::distributed::batch_sizes(recipe, ranks)?;
        let tokens = recipe
            .train
            .max_tokens
            .map(|t| match recipe.distributed.batch_size_is {
                BatchScope::PerRank => t,
                BatchScope::Global => (t / ranks).max(1),
            });
        Ok(Self { examples, tokens })
    }

    /// The limits of one process scoring a split: `examples` per batch (default
    /// `train.batch_size`) and `train.max_tokens`.
    pub fn scoring(recipe: &Recipe, examples: usize) -> Self {
        Self {
            examples: examples.max(1),
            tokens: recipe.train.max_tokens,
        }
    }
}

/// Indices `0..count` grouped into batches: sorted by `sort_key` (ties in a seeded random order),
/// cut so that no batch has more than `limits.examples` or, with `limits.tokens`, more than that
/// many tokens counting padding (rows times the largest `size`). An example larger than the
/// token cap gets a batch of its own.
pub fn batches_by_length<K: Ord>(
    count: usize,
    sort_key: impl Fn(usize) -> K,
    size: impl Fn(usize) -> usize,
    limits: BatchLimits,
    seed: u64,
) -> Vec<Vec<usize>> {
    let (max_tokens, max_examples) = (limits.tokens, limits.examples);
    let mut order: Vec<usize> = (0..count).collect();
    SplitMix64::new(seed ^ 0xb0c3_7e75).shuffle(&mut order);
    order.sort_by_key(|&i| sort_key(i));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let size = size(i);
        let grown = longest.max(size);
        let fits_tokens = max_tokens.is_none_or(|cap| grown * (current.len() + 1) <= cap);
        if !current.is_empty() && (current.len() == max_examples || !fits_tokens) {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(size);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Which batch the `index`-th drawn micro-batch is: epochs visit every batch once, each epoch
/// in its own seeded order.
pub fn batch_at(batches: usize, index: usize, seed: u64) -> usize {
    let (epoch, position) = (index / batches, index % batches);
    let mut order: Vec<usize> = (0..batches).collect();
    SplitMix64::new(seed ^ (epoch as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f))
        .shuffle(&mut order);
    order[position]
}

/// A task's training batches and which one each micro-batch of each step takes: the `k`-th
/// micro-batch drawn overall is batch `batch_at(k)`, and the ranks' draws follow one another, so
/// N ranks together cover an epoch as one process would.
pub struct EpochBatches {
    pub batches: Vec<Vec<usize>>,
    seed: u64,
    accum_grad: usize,
    shard: Shard,
}

impl EpochBatches {
    pub fn new(batches: Vec<Vec<usize>>, seed: u64, accum_grad: usize, shard: Shard) -> Self {
        Self {
            batches,
            seed,
            accum_grad,
            shard,
        }
    }

    /// The examples of micro-batch `micro` of step `step` on this rank, and its epoch.
    pub fn at(&self, step: usize, micro: usize) -> (&[usize], usize) {
        let drawn = (step * self.accum_grad + micro) * self.shard.count + self.shard.index;
        let n = self.batches.len();
        (&self.batches[batch_at(n, drawn, self.seed)], drawn / n)
    }

    /// Micro-batches one rank draws in an epoch.
    pub fn per_rank_epoch(&self) -> usize {
        (self.batches.len() / self.shard.count).max(1)
    }

    /// Mean examples' `size` summed over a batch (tokens per micro-batch, for throughput).
    pub fn mean_batch_total(&self, size: impl Fn(usize) -> usize) -> usize {
        let total: usize = self.batches.iter().flatten().map(|&i| size(i)).sum();
        total / self.batches.len().max(1)
    }

    /// Mean examples in a batch.
    pub fn mean_batch_len(&self) -> f64 {
        let examples: usize = self.batches.iter().map(Vec::len).sum();
        examples as f64 / self.batches.len().max(1) as f64
    }
}
