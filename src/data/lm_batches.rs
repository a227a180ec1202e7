//! Language-model batches from a token stream, as nanoGPT draws them: windows of
//! `block_size + 1` tokens at random offsets, the input being the first `block_size` and the
//! target the same shifted by one.

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

pub struct TokenStream {
    pub name: String,
    pub tokens: Vec<u32>,
}

/// One batch as flat row-major `[batch, block]` token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct LmBatch {
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    pub batch: usize,
    pub block: usize,
}

impl TokenStream {
    pub fn new(name: impl Into<String>, tokens: Vec<u32>) -> Self {
        Self {
            name: name.into(),
            tokens,
        }
    }

    /// Fail early, with the numbers, when a split is too short for one window.
    pub fn check_fits(&self, block: usize) -> Result<()> {
        if self.tokens.len() <= block {
            return Err(Error::Data(format!(
                "the {} split has {} tokens, fewer than block_size + 1 = {}; give more text, change \
                 `data.split`, or lower `model.block_size`",
                self.name,
                self.tokens.len(),
                block + 1
            )));
        }
        Ok(())
    }

    /// `count` window offsets drawn uniformly from `rng`.
    pub fn random_starts(&self, rng: &mut SplitMix64, count: usize, block: usize) -> Vec<usize> {
        let last_start = (self.tokens.len() - block - 1) as u64;
        (0..count)
            .map(|_| rng.below(last_start + 1) as usize)
            .collect()
    }

    /// Windows at the given offsets.
    pub fn batch_at(&self, starts: &[usize], block: usize) -> LmBatch {
        let mut inputs = Vec::with_capacity(starts.len() * block);
        let mut targets = Vec::with_capacity(starts.len() * block);
        for &s in starts {
            inputs.extend(self.tokens[s..s + block].iter().map(|&t| t as i64));
            targets.extend(self.tokens[s + 1..s + block + 1].iter().map(|&t| t as i64));
        }
        LmBatch {
            inputs,
            targets,
            batch: starts.len(),
            block,
        }
    }

    /// Offsets of consecutive non-overlapping windows covering the whole stream once (the last
    /// partial window is dropped): the exact perplexity pass of `nlpkit eval`.
    pub fn sequential_starts(&self, block: usize) -> Vec<usize> {
        (0..(self.tokens.len().saturating_sub(1)) / block)
            .map(|i| i * block)
            .collect()
    }

    /// Training tokens per epoch in windows, for `max_epochs`.
    pub fn windows_per_epoch(&self, block: usize) -> usize {
        self.tokens.len().saturating_sub(1) / block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let s = TokenStream::new("t", (0..100).collect());
        let b = s.batch_at(&s.random_starts(&mut SplitMix64::new(3), 4, 8), 8);
        assert_eq!(b.inputs.len(), 32);
        for row in 0..4 {
            for i in 0..8 {
                assert_eq!(b.targets[row * 8 + i], b.inputs[row * 8 + i] + 1);
            }
        }
    }

    #[test]
    fn sequential_windows_cover_the_stream_once() {
        let s = TokenStream::new("t", (0..21).collect());
        assert_eq!(s.sequential_starts(5), vec![0, 5, 10, 15]);
        assert!(TokenStream::new("v", vec![1, 2]).check_fits(2).is_err());
    }
}
