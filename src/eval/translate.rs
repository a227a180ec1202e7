//! Decoding translations: greedy search and beam search (fairseq's algorithm), batched over
//! sentences, with the decoder state (KV cache or recurrent state) carried per hypothesis.
//!
//! Beam search keeps `beam` hypotheses per sentence. Each step ranks the `2 * beam` best
//! extensions; an extension ending in `</s>` among the first `beam` is finished and scored
//! `log p / L^alpha` (or GNMT's `((5 + L) / 6)^alpha`), L counting `</s>`; the others continue.
//! A sentence is done once it has `beam` finished hypotheses, or at its maximum length
//! `ceil(max_len_a * source_len) + max_len_b`, where the live hypotheses are closed with `</s>`.
//! With `beam: 1` this is exactly greedy search.

use crate::data::pair_batches::collate;
use crate::data::parallel::{PairSet, SpecialIds};
use crate::models::seq2seq::Seq2Seq;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LengthPenalty {
    /// `log p / L^alpha` (fairseq's `--lenpen`).
    Simple,
    /// `log p / ((5 + L) / 6)^alpha` (Wu et al. 2016, GNMT).
    Gnmt,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// 1 decodes greedily.
    pub beam: usize,
    pub max_len_a: f64,
    pub max_len_b: usize,
    pub length_penalty: LengthPenalty,
    pub alpha: f64,
    /// Sentences decoded together.
    pub batch_sentences: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            beam: 5,
            max_len_a: 1.5,
            max_len_b: 10,
            length_penalty: LengthPenalty::Simple,
            alpha: 0.75,
            batch_sentences: 32,
        }
    }
}

impl DecodeOptions {
    fn normalise(&self, log_prob: f64, len: usize) -> f64 {
        let len = len as f64;
        match self.length_penalty {
            LengthPenalty::Simple => log_prob / len.powf(self.alpha),
            LengthPenalty::Gnmt => log_prob / ((5.0 + len) / 6.0).powf(self.alpha),
        }
    }

    fn max_len(&self, source_len: usize) -> usize {
        ((self.max_len_a * source_len as f64).ceil() as usize + self.max_len_b).max(1)
    }
}

/// Translate every source (token ids without `</s>`), in batches of similar length; returns the
/// target ids without `</s>`, in the sources' order.
pub fn translate_all<M: Seq2Seq>(
    model: &M,
    sources: &[Vec<u32>],
    source_ids: SpecialIds,
    target_ids: SpecialIds,
    options: &DecodeOptions,
    device: &Device,
) -> Vec<Vec<u32>> {
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| sources[i].len());
    let mut out = vec![Vec::new(); sources.len()];
    for chunk in order.chunks(options.batch_sentences.max(1)) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| sources[i].clone()).collect();
        let translated = if options.beam <= 1 {
            greedy_batch(model, &batch, source_ids, target_ids, options, device)
        } else {
            translate_batch(model, &batch, source_ids, target_ids, options, device)
        };
        for (&i, t) in chunk.iter().zip(translated) {
            out[i] = t;
        }
    }
    out
}

/// The encoder's memory for `sources`, padded into one batch (each closed by `</s>`).
fn encode_sources<M: Seq2Seq>(
    model: &M,
    sources: &[Vec<u32>],
    source_ids: SpecialIds,
    device: &Device,
) -> M::Memory {
    let n = sources.len();
    let set = PairSet {
        sources: sources.to_vec(),
        targets: vec![Vec::new(); n],
    };
    let indices: Vec<usize> = (0..n).collect();
    // The target side is empty; its specials do not matter here.
    let batch = collate(&set, &indices, source_ids, source_ids);
    let source =
        Tensor::<2, Int>::from_data(TensorData::new(batch.source, [n, batch.source_len]), device);
    let padding = source.clone().equal_elem(source_ids.pad as i64);
    model.encode(source, padding)
}

/// One decoder step for the tokens `inputs` (one a row): the log-probabilities `[rows, vocab]`
/// read back to the host, the vocabulary size and the new state.
fn step_log_probs<M: Seq2Seq>(
    model: &M,
    memory: &M::Memory,
    state: M::State,
    inputs: &[i64],
    device: &Device,
) -> (Vec<f32>, usize, M::State) {
    let tokens =
        Tensor::<1, Int>::from_data(TensorData::new(inputs.to_vec(), [inputs.len()]), device);
    let (logits, state) = model.step(memory, state, tokens);
    let vocab = logits.dims()[1];
    let log_probs = log_softmax(logits, 1)
        .into_data()
        .try_to_vec::<f32>()
        .expect("logits are f32");
    (log_probs, vocab, state)
}

/// One live hypothesis: where its state is, its tokens and its summed log-probability.
#[derive(Debug, Clone)]
struct Live {
    row: usize,
    tokens: Vec<u32>,
    score: f64,
}

pub fn translate_batch<M: Seq2Seq>(
    model: &M,
    sources: &[Vec<u32>],
    source_ids: SpecialIds,
    target_ids: SpecialIds,
    options: &DecodeOptions,
    device: &Device,
) -> Vec<Vec<u32>> {
    let n = sources.len();
    let beam = options.beam.max(1);
    let memory = encode_sources(model, sources, source_ids, device);
    // Row s * beam + k holds hypothesis k of sentence s.
    let repeat: Vec<i64> = (0..n * beam).map(|r| (r / beam) as i64).collect();
    let memory = model.select_memory(
        &memory,
        Tensor::from_data(TensorData::new(repeat, [n * beam]), device),
    );
    let mut state = model.start(&memory);
    let max_len: Vec<usize> = sources.iter().map(|s| options.max_len(s.len())).collect();

    let mut live: Vec<Vec<Live>> = (0..n)
        .map(|s| {
            vec![Live {
                row: s * beam,
                tokens: Vec::new(),
                score: 0.0,
            }]
        })
        .collect();
    let mut finished: Vec<Vec<(f64, Vec<u32>)>> = vec![Vec::new(); n];
    let mut inputs = vec![target_ids.bos as i64; n * beam];
    for step in 0.. {
        let (log_probs, vocab, next_state) = step_log_probs(model, &memory, state, &inputs, device);
        // Which old row each new row continues (rows of finished sentences stay put).
        let mut origin: Vec<i64> = (0..(n * beam) as i64).collect();
        for s in 0..n {
            if live[s].is_empty() {
                continue;
            }
            let row_scores = |row: usize| &log_probs[row * vocab..(row + 1) * vocab];
            if step + 1 >= max_len[s] {
                // Out of length: close every live hypothesis with `</s>`.
                for h in std::mem::take(&mut live[s]) {
                    let score = h.score + row_scores(h.row)[target_ids.eos as usize] as f64;
                    let len = h.tokens.len() + 1;
                    finished[s].push((options.normalise(score, len), h.tokens));
                }
                continue;
            }
            let candidates = best_extensions(&live[s], &row_scores, target_ids, 2 * beam);
            let mut next = Vec::with_capacity(beam);
            for (rank, (score, k, token)) in candidates.into_iter().enumerate() {
                let parent = &live[s][k];
                if token == target_ids.eos {
                    if rank < beam {
                        let len = parent.tokens.len() + 1;
                        finished[s].push((options.normalise(score, len), parent.tokens.clone()));
                    }
                } else if next.len() < beam {
                    let mut tokens = parent.tokens.clone();
                    tokens.push(token);
                    next.push(Live {
                        row: parent.row,
                        tokens,
                        score,
                    });
                }
            }
            if finished[s].len() >= beam {
                next.clear();
            }
            for (k, h) in next.iter_mut().enumerate() {
                let row = s * beam + k;
                origin[row] = h.row as i64;
                inputs[row] = *h.tokens.last().expect("a live hypothesis has a token") as i64;
                h.row = row;
            }
            live[s] = next;
        }
        if live.iter().all(|l| l.is_empty()) {
            break;
        }
        let rows = Tensor::<1, Int>::from_data(TensorData::new(origin, [n * beam]), device);
        state = model.select_state(next_state, rows);
    }
    finished
        .into_iter()
        .map(|hyps| {
            // The best normalised score; ties go to the earliest finished.
            let mut best: Option<(f64, Vec<u32>)> = None;
            for (score, tokens) in hyps {
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, tokens));
                }
            }
            best.map(|b| b.1).unwrap_or_default()
        })
        .collect()
}

/// The `count` best (summed log-probability, hypothesis, token) extensions of a sentence's live
/// hypotheses, best first; ties go to the earlier hypothesis and the lower token id (as
/// `argmax`). Padding and `<s>` are never proposed.
fn best_extensions<'a>(
    live: &[Live],
    row_scores: &impl Fn(usize) -> &'a [f32],
    target_ids: SpecialIds,
    count: usize,
) -> Vec<(f64, usize, u32)> {
    let mut all: Vec<(f64, usize, u32)> = Vec::new();
    for (k, h) in live.iter().enumerate() {
        for (token, &lp) in row_scores(h.row).iter().enumerate() {
            let token = token as u32;
            if token == target_ids.pad || token == target_ids.bos {
                continue;
            }
            all.push((h.score + lp as f64, k, token));
        }
    }
    let order = |a: &(f64, usize, u32), b: &(f64, usize, u32)| {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    };
    if all.len() > count {
        all.select_nth_unstable_by(count - 1, order);
        all.truncate(count);
    }
    all.sort_by(order);
    all
}

/// Greedy decoding: the most likely token at every step until `</s>` or the maximum length.
pub fn greedy_batch<M: Seq2Seq>(
    model: &M,
    sources: &[Vec<u32>],
    source_ids: SpecialIds,
    target_ids: SpecialIds,
    options: &DecodeOptions,
    device: &Device,
) -> Vec<Vec<u32>> {
    let n = sources.len();
    let memory = encode_sources(model, sources, source_ids, device);
    let mut state = model.start(&memory);
    let mut out = vec![Vec::new(); n];
    let mut done = vec![false; n];
    let mut inputs = vec![target_ids.bos as i64; n];
    for step in 0.. {
        // The same log-probabilities beam search ranks, so ties break the same way.
        let (scores, vocab, next) = step_log_probs(model, &memory, state, &inputs, device);
        state = next;
        for s in 0..n {
            if done[s] {
                continue;
            }
            let row = &scores[s * vocab..(s + 1) * vocab];
            let mut best = None;
            for (token, &v) in row.iter().enumerate() {
                let token = token as u32;
                if token == target_ids.pad || token == target_ids.bos {
                    continue;
                }
                if best.is_none_or(|(_, b)| v > b) {
                    best = Some((token, v));
                }
            }
            let token = best.expect("</s> is always a candidate").0;
            if token == target_ids.eos || step + 1 >= options.max_len(sources[s].len()) {
                done[s] = true;
            } else {
                out[s].push(token);
                inputs[s] = token as i64;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::rnn_seq2seq::RnnSeq2SeqOptions;
    use crate::models::transformer_seq2seq::TransformerSeq2SeqOptions;

    const IDS: SpecialIds = SpecialIds {
        pad: 0,
        bos: 1,
        eos: 2,
        unk: 3,
    };

    fn sources() -> Vec<Vec<u32>> {
        vec![vec![5, 6, 7], vec![8], vec![9, 10, 11, 12, 13], vec![4, 4]]
    }

    fn options(beam: usize) -> DecodeOptions {
        DecodeOptions {
            beam,
            max_len_a: 1.0,
            max_len_b: 4,
            ..DecodeOptions::default()
        }
    }

    /// Beam search with one hypothesis is greedy search, token for token, for both model types
    /// (random weights: long, varied outputs); a wider beam finds a sequence at least as likely.
    #[test]
    fn beam_of_one_equals_greedy() {
        let device = Device::flex();
        let _generator = crate::rng::seeded_for_test(&device, 7);
        let rnn = RnnSeq2SeqOptions {
            cell: crate::models::recurrent::CellKind::Lstm,
            embed_dim: 8,
            hidden_size: 8,
            num_layers: 1,
            bidirectional: true,
            attention_dim: None,
            dropout: 0.0,
            source_vocab_size: Some(14),
            target_vocab_size: Some(20),
        }
        .config()
        .unwrap()
        .init(&device);
        check(&rnn, &device);
        let transformer = TransformerSeq2SeqOptions {
            encoder_layers: 1,
            decoder_layers: 2,
            d_model: 8,
            n_head: 2,
            ffn_dim: 16,
            dropout: 0.0,
            pre_norm: true,
            share_embeddings: false,
            source_vocab_size: Some(14),
            target_vocab_size: Some(20),
        }
        .config()
        .unwrap()
        .init(&device);
        check(&transformer, &device);
    }

    fn check<M: Seq2Seq>(model: &M, device: &Device) {
        let greedy = greedy_batch(model, &sources(), IDS, IDS, &options(1), device);
        let beam_one = translate_batch(model, &sources(), IDS, IDS, &options(1), device);
        assert_eq!(greedy, beam_one);
        assert!(greedy.iter().any(|t| !t.is_empty()), "{greedy:?}");
        for (s, out) in sources().iter().zip(&greedy) {
            assert!(out.len() < options(1).max_len(s.len()));
            assert!(
                out.iter().all(|&t| t > 2),
                "no specials in the output: {out:?}"
            );
        }
        // Sorted into batches of two, the translations are the same.
        let mut batched = options(1);
        batched.batch_sentences = 2;
        assert_eq!(
            translate_all(model, &sources(), IDS, IDS, &batched, device),
            greedy
        );
        // With alpha 0 the beam ranks by log p alone, so it never finds a less likely output.
        let mut wide = options(4);
        wide.alpha = 0.0;
        let beam = translate_batch(model, &sources(), IDS, IDS, &wide, device);
        for ((s, g), b) in sources().iter().zip(&greedy).zip(&beam) {
            let (lg, lb) = (log_prob(model, s, g, device), log_prob(model, s, b, device));
            assert!(lb >= lg - 1e-4, "beam {b:?} ({lb}) vs greedy {g:?} ({lg})");
        }
    }

    /// log p(target + </s> | source) under teacher forcing.
    fn log_prob<M: Seq2Seq>(model: &M, source: &[u32], target: &[u32], device: &Device) -> f64 {
        let set = PairSet {
            sources: vec![source.to_vec()],
            targets: vec![target.to_vec()],
        };
        let batch = collate(&set, &[0], IDS, IDS);
        let (src, pad, tin, tout) = crate::tasks::translation::batch_tensors(&batch, 0, device);
        let logits = model.forward(src, pad, tin);
        let [_, t, v] = logits.dims();
        let lp = log_softmax(logits.reshape([t, v]), 1);
        let picked = lp.gather(1, tout.unsqueeze_dim(1));
        picked.sum().into_scalar::<f64>()
    }
}
