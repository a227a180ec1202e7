//! Batches of sentence pairs: bucketed by length and capped by tokens (`max_tokens`, padding
//! included) and by sentences, as fairseq's `batch_by_size`; padded, with the decoder's inputs
//! shifted right behind `<s>` and `</s>` closing the source and the target.

pub use super::batching::batch_at;
use super::batching::{BatchLimits, batches_by_length};
use super::parallel::{PairSet, SpecialIds};

/// One padded batch of pairs, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PairBatch {
    pub rows: usize,
    /// `[rows, source_len]`: tokens then `</s>`, padded.
    pub source: Vec<i64>,
    pub source_len: usize,
    /// `[rows, target_len]`: `<s>` then tokens (the decoder's input), padded.
    pub target_in: Vec<i64>,
    /// `[rows, target_len]`: tokens then `</s>` (what is predicted), padded.
    pub target_out: Vec<i64>,
    pub target_len: usize,
    /// Real (non-padding) target tokens: the loss's denominator.
    pub target_tokens: usize,
}

/// The batches' cost of one pair: its longer side with `</s>` (or `<s>`) added.
fn pair_size(set: &PairSet, i: usize) -> usize {
    set.sources[i].len().max(set.targets[i].len()) + 1
}

/// Pair indices grouped into batches by [`batches_by_length`]: sorted by target then source
/// length, a pair's size its longer side (fairseq's `batch_by_size`).
pub fn bucket_batches(set: &PairSet, limits: BatchLimits, seed: u64) -> Vec<Vec<usize>> {
    batches_by_length(
        set.len(),
        |i| (set.targets[i].len(), set.sources[i].len()),
        |i| pair_size(set, i),
        limits,
        seed,
    )
}

/// Pad the pairs at `indices` into a batch.
pub fn collate(
    set: &PairSet,
    indices: &[usize],
    source_ids: SpecialIds,
    target_ids: SpecialIds,
) -> PairBatch {
    let rows = indices.len();
    let source_len = indices.iter().map(|&i| set.sources[i].len() + 1).max();
    let target_len = indices.iter().map(|&i| set.targets[i].len() + 1).max();
    let (source_len, target_len) = (source_len.unwrap_or(1), target_len.unwrap_or(1));
    let mut source = vec![source_ids.pad as i64; rows * source_len];
    let mut target_in = vec![target_ids.pad as i64; rows * target_len];
    let mut target_out = target_in.clone();
    let mut target_tokens = 0;
    for (row, &i) in indices.iter().enumerate() {
        let (src, tgt) = (&set.sources[i], &set.targets[i]);
        let s = &mut source[row * source_len..];
        for (slot, &t) in s.iter_mut().zip(src) {
            *slot = t as i64;
        }
        s[src.len()] = source_ids.eos as i64;
        let (inp, out) = (
            &mut target_in[row * target_len..],
            &mut target_out[row * target_len..],
        );
        inp[0] = target_ids.bos as i64;
        for (k, &t) in tgt.iter().enumerate() {
            inp[k + 1] = t as i64;
            out[k] = t as i64;
        }
        out[tgt.len()] = target_ids.eos as i64;
        target_tokens += tgt.len() + 1;
    }
    PairBatch {
        rows,
        source,
        source_len,
        target_in,
        target_out,
        target_len,
        target_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(lengths: &[(usize, usize)]) -> PairSet {
        PairSet {
            sources: lengths.iter().map(|&(s, _)| vec![7; s]).collect(),
            targets: lengths.iter().map(|&(_, t)| vec![8; t]).collect(),
        }
    }

    const IDS: SpecialIds = SpecialIds {
        pad: 0,
        bos: 1,
        eos: 2,
        unk: 3,
    };

    #[test]
    fn batches_respect_both_caps_and_cover_every_pair_once() {
        let lengths: Vec<(usize, usize)> =
            (0..200).map(|i| (1 + i % 17, 1 + (i * 7) % 23)).collect();
        let set = set(&lengths);
        let limits = BatchLimits {
            examples: 8,
            tokens: Some(100),
        };
        let batches = bucket_batches(&set, limits, 3);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        for batch in &batches {
            let longest = batch.iter().map(|&i| pair_size(&set, i)).max().unwrap();
            assert!(batch.len() <= 8);
            assert!(longest * batch.len() <= 100 || batch.len() == 1);
        }
        // Bucketing keeps padding low: similar lengths share a batch.
        let padded: usize = batches
            .iter()
            .map(|b| b.len() * b.iter().map(|&i| set.targets[i].len()).max().unwrap())
            .sum();
        let real: usize = lengths.iter().map(|l| l.1).sum();
        assert!((padded as f64) < 1.3 * real as f64, "{padded} vs {real}");
    }

    #[test]
    fn epochs_visit_every_batch_in_a_seeded_order() {
        let first: Vec<usize> = (0..10).map(|k| batch_at(10, k, 5)).collect();
        let second: Vec<usize> = (10..20).map(|k| batch_at(10, k, 5)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(first, second);
        assert_eq!(batch_at(10, 13, 5), second[3]);
    }

    #[test]
    fn collate_pads_and_shifts_the_target() {
        let set = PairSet {
            sources: vec![vec![10, 11], vec![12]],
            targets: vec![vec![20], vec![21, 22, 23]],
        };
        let b = collate(&set, &[0, 1], IDS, IDS);
        assert_eq!((b.source_len, b.target_len), (3, 4));
        assert_eq!(b.source, vec![10, 11, 2, 12, 2, 0]);
        assert_eq!(b.target_in, vec![1, 20, 0, 0, 1, 21, 22, 23]);
        assert_eq!(b.target_out, vec![20, 2, 0, 0, 21, 22, 23, 2]);
        assert_eq!(b.target_tokens, 6);
    }
}
