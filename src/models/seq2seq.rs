//! What every encoder-decoder model offers the translation task and the decoders: a
//! teacher-forced forward pass for training, and encode-once / step-by-step decoding with a
//! state that can be reordered row by row (beam search).

use crate::error::{Error, Result};
use crate::recipe::{DataSizes, vocab_at_least};
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;

pub trait Seq2Seq: Module + ModuleSnapshot {
    /// What the encoder computed for a batch of sources, read by every decoding step.
    type Memory: Clone;
    /// The decoder's incremental state (recurrent state, or keys and values so far).
    type State: Clone;

    /// Logits `[batch, target_len, target_vocab]` for the decoder inputs `target_in`
    /// `[batch, target_len]` given `source` `[batch, source_len]`, whose padding is true in
    /// `source_padding`.
    fn forward(
        &self,
        source: Tensor<2, Int>,
        source_padding: Tensor<2, Bool>,
        target_in: Tensor<2, Int>,
    ) -> Tensor<3>;

    fn encode(&self, source: Tensor<2, Int>, source_padding: Tensor<2, Bool>) -> Self::Memory;

    /// The rows of `memory` at `rows` (to repeat each sentence once per beam).
    fn select_memory(&self, memory: &Self::Memory, rows: Tensor<1, Int>) -> Self::Memory;

    /// The state before the first target token.
    fn start(&self, memory: &Self::Memory) -> Self::State;

    /// Logits `[rows, target_vocab]` for the next token after `tokens` `[rows]`, and the state
    /// that includes them.
    fn step(
        &self,
        memory: &Self::Memory,
        state: Self::State,
        tokens: Tensor<1, Int>,
    ) -> (Tensor<2>, Self::State);

    /// The rows of `state` at `rows`, in that order (beam search keeps the best hypotheses).
    fn select_state(&self, state: Self::State, rows: Tensor<1, Int>) -> Self::State;

    /// The model width, for schedules that scale by it.
    fn width(&self) -> usize;
}

/// Record both sides' vocabulary sizes (`model.source_vocab_size`, `model.target_vocab_size`):
/// the tokenizers' unless the recipe gives larger ones.
pub fn record_vocab_sizes(
    (source, target): (&mut Option<usize>, &mut Option<usize>),
    sizes: &DataSizes,
) -> Result<()> {
    *source = Some(vocab_at_least(*source, sizes.vocab, "source_vocab_size")?);
    *target = Some(vocab_at_least(
        *target,
        sizes.target_vocab,
        "target_vocab_size",
    )?);
    Ok(())
}

/// Both sides' vocabulary sizes, as `train` recorded them in the resolved recipe.
pub fn recorded_vocab_sizes(
    model: &str,
    source: Option<usize>,
    target: Option<usize>,
) -> Result<(usize, usize)> {
    match (source, target) {
        (Some(s), Some(t)) => Ok((s, t)),
        _ => Err(Error::Recipe(format!(
            "the {model} model needs `model.source_vocab_size` and `model.target_vocab_size`, \
             filled in by `nlpkit train`; give an experiment folder it wrote"
        ))),
    }
}

/// A model's configuration: what the task needs to build it.
pub trait Seq2SeqConfig {
    type Model: Seq2Seq;
    fn init(&self, device: &Device) -> Self::Model;
    fn width(&self) -> usize;
}

impl Seq2SeqConfig for super::rnn_seq2seq::RnnSeq2SeqConfig {
    type Model = super::rnn_seq2seq::RnnSeq2Seq;
    fn init(&self, device: &Device) -> Self::Model {
        self.init(device)
    }
    fn width(&self) -> usize {
        self.options.hidden_size
    }
}

impl Seq2SeqConfig for super::transformer_seq2seq::TransformerSeq2SeqConfig {
    type Model = super::transformer_seq2seq::TransformerSeq2Seq;
    fn init(&self, device: &Device) -> Self::Model {
        self.init(device)
    }
    fn width(&self) -> usize {
        self.options.d_model
    }
}

/// Sinusoidal positions (Vaswani et al. 2017) `[len, width]` starting at `start`: sines in the
/// first half of each row and cosines in the second, as fairseq lays them out.
pub fn sinusoidal_positions(start: usize, len: usize, width: usize, device: &Device) -> Tensor<2> {
    let half = width / 2;
    let scale = (10_000f64).ln() / (half.max(2) - 1) as f64;
    let mut table = vec![0f32; len * width];
    for p in 0..len {
        let pos = (start + p) as f64;
        for i in 0..half {
            let angle = pos * (-(i as f64) * scale).exp();
            table[p * width + i] = angle.sin() as f32;
            table[p * width + half + i] = angle.cos() as f32;
        }
    }
    Tensor::from_data(TensorData::new(table, [len, width]), device)
}

/// Test helper: stepping the decoder token by token from `start` gives the teacher-forced
/// logits of `forward`, so decoding scores what training optimised.
#[cfg(test)]
pub(crate) fn assert_steps_equal_forward<M: Seq2Seq>(
    model: &M,
    source: Tensor<2, Int>,
    target: Tensor<2, Int>,
    tolerance: f32,
) {
    let padding = source.clone().equal_elem(0);
    let full = model.forward(source.clone(), padding.clone(), target.clone());
    let [rows, time, vocab] = full.dims();
    let memory = model.encode(source, padding);
    let mut state = model.start(&memory);
    for t in 0..time {
        let tokens = target.clone().narrow(1, t, 1).reshape([rows]);
        let (logits, next) = model.step(&memory, state, tokens);
        state = next;
        let expected = full.clone().narrow(1, t, 1).reshape([rows, vocab]);
        let diff: f32 = (logits - expected).abs().max().into_scalar();
        assert!(diff < tolerance, "step {t}: {diff}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_sines_then_cosines() {
        let device = Device::flex();
        let table = sinusoidal_positions(0, 3, 8, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // Position 0: sin 0 = 0, cos 0 = 1; position 2, first frequency: sin 2, cos 2.
        assert_eq!(&table[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!((table[16] - 2f32.sin()).abs() < 1e-6);
        assert!((table[20] - 2f32.cos()).abs() < 1e-6);
        // Starting later gives the same rows as the tail of a longer table.
        let tail = sinusoidal_positions(2, 1, 8, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(&tail[..], &table[16..24]);
    }
}
