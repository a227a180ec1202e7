//! Padded batches of token sequences (classification, tagging, pretraining), with the segment
//! ids and padding mask BERT takes.

use crate::models::bert::BertInput;
use crate::models::classifier::TextBatch;
use burn::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub rows: usize,
    pub time: usize,
    /// `[rows, time]` row-major, padded.
    pub ids: Vec<i64>,
    /// `[rows, time]`: 1 from a row's second segment on (before its padding), else 0.
    pub segments: Vec<i64>,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
}

impl TokenBatch {
    /// Pad `sequences` to the longest (and at least `min_time`); `second_segment_at[r]` is where
    /// row r's second segment starts (its length when it has none).
    pub fn pad(
        sequences: &[&[u32]],
        second_segment_at: Option<&[usize]>,
        pad: u32,
        min_time: usize,
    ) -> Self {
        let rows = sequences.len();
        let time = sequences
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(1)
            .max(min_time);
        let mut ids = vec![pad as i64; rows * time];
        let mut segments = vec![0i64; rows * time];
        for (r, seq) in sequences.iter().enumerate() {
            for (t, &id) in seq.iter().enumerate() {
                ids[r * time + t] = id as i64;
            }
            if let Some(starts) = second_segment_at {
                for slot in &mut segments[r * time + starts[r]..r * time + seq.len()] {
                    *slot = 1;
                }
            }
        }
        Self {
            rows,
            time,
            ids,
            segments,
            lengths: sequences.iter().map(|s| s.len()).collect(),
        }
    }

    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::<1, Int>::from_data(self.ids.as_slice(), device).reshape([self.rows, self.time])
    }

    /// `[rows, time]` true at padding.
    pub fn padding(&self, device: &Device) -> Tensor<2, Bool> {
        let mask: Vec<bool> = self
            .lengths
            .iter()
            .flat_map(|&len| (0..self.time).map(move |t| t >= len))
            .collect();
        Tensor::<1, Bool>::from_data(mask.as_slice(), device).reshape([self.rows, self.time])
    }

    /// The batch as a classifier takes it.
    pub fn text_batch(&self, device: &Device) -> TextBatch {
        TextBatch {
            ids: self.ids_tensor(device),
            segments: self.segments_tensor(device),
            padding: self.padding(device),
            lengths: self.lengths.clone(),
        }
    }

    fn segments_tensor(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::<1, Int>::from_data(self.segments.as_slice(), device)
            .reshape([self.rows, self.time])
    }

    pub fn bert_input(&self, device: &Device) -> BertInput {
        self.bert_input_with(self.ids_tensor(device), device)
    }

    /// BERT's input with other ids in the same layout (the masked ones).
    pub fn bert_input_with(&self, ids: Tensor<2, Int>, device: &Device) -> BertInput {
        BertInput {
            ids,
            segments: self.segments_tensor(device),
            padding: self.padding(device),
        }
    }
}
