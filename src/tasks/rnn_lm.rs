//! Language modelling with a recurrent model (`model.type: rnn_lm`), trained by truncated BPTT
//! as PyTorch's word_language_model example trains it: the training stream is cut into one
//! contiguous stream per batch row, each step reads the next `bptt` tokens of every row, and the
//! state is carried (detached) from one step to the next, from zeros again when the streams wrap
//! to their start. The same data and scores as GPT-2's task (`tasks::lm`).
//!
//! The carried state is the task's: it is saved in each checkpoint (`Task::carried_state`) so a
//! resumed run reads on exactly. Gradient accumulation's micro-batches are more rows, not more
//! time: micro-batch `m` of rank `r` reads rows `m * global_batch + r * batch_size ..`, so
//! `accum_grad` k and `batch_size` b train on the streams `batch_size` k * b would (to float
//! rounding), as data parallelism does with its ranks.

use super::lm::{LmScores, eval_stream};
use super::{
    CarriedState, EvalRequest, GenerateRequest, Generated, LossSum, Pipeline, StepLoss, Task,
};
use crate::data::Split;
use crate::data::lm_batches::TokenStream;
use crate::data::plain_text::{TextMeta, load_split};
use crate::data::prepared::load_meta;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::eval::generate::{row_tensor, sample_with};
use crate::eval::report::Evaluation;
use crate::hf::HfTensor;
use crate::loss::cross_entropy_kept;
use crate::models::recurrent::RnnState;
use crate::models::rnn_lm::{RnnLm, RnnLmConfig, detach};
use crate::recipe::{Recipe, TaskKind};
use burn::prelude::*;
use std::cell::RefCell;

pub struct RecurrentLm {
    config: RnnLmConfig,
}

impl RecurrentLm {
    pub fn new(config: RnnLmConfig) -> Self {
        Self { config }
    }
}

impl Pipeline for RecurrentLm {
    const KIND: TaskKind = TaskKind::LanguageModel;
    type Model = RnnLm;
    type Training = BpttTask;
    type Scores = LmScores;

    fn init_model(&self, device: &Device) -> RnnLm {
        self.config.init(device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<BpttTask> {
        BpttTask::new(recipe, self.config, shard)
    }

    /// The whole split in `batch_size` rows, each read through with its state carried.
    fn evaluate(&self, model: &RnnLm, request: &EvalRequest) -> Result<Evaluation<LmScores>> {
        let stream = eval_stream(request)?;
        let rows = cut_rows(&stream, request.batch_size.max(1))?;
        let sum = stream_nll(model, &stream, &rows, self.bptt(), request.device);
        Ok(Evaluation::of(LmScores::of(sum)))
    }

    fn generate(&self, model: &RnnLm, request: &GenerateRequest) -> Result<Generated> {
        let tokenizer = TextTokenizer::load(&request.exp.tokenizer_path())?;
        let prompt = tokenizer.encode_prompt(request.prompt)?;
        if prompt.is_empty() {
            return Err(Error::Usage("the prompt encodes to no tokens".into()));
        }
        let device = request.device;
        let mut state = Some(model.zero_state(1, device));
        // The prompt once, then each new token, the state carried: no window, no recompute.
        let next = |tokens: &[u32], new: usize| {
            let input = row_tensor(&tokens[tokens.len() - new..], device);
            let (logits, after) = model.forward(input, state.take().expect("a state"), None);
            state = Some(after);
            let [_, time, vocab] = logits.dims();
            let last = logits.slice([0..1, time - 1..time, 0..vocab]);
            last.try_into_vec_as::<f32>().expect("logits read back")
        };
        let sampler = &request.sampler;
        let new_tokens = sample_with(&prompt, request.max_new_tokens, sampler, request.seed, next);
        Ok(Generated {
            text: tokenizer.decode(&new_tokens)?,
            tokens: new_tokens.len(),
        })
    }
}

impl RecurrentLm {
    fn bptt(&self) -> usize {
        self.config.options.bptt
    }
}

/// A row of a stream: the `len` (input, target) pairs from `start` (inputs
/// `tokens[start..start + len]`, targets one further).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    start: usize,
    len: usize,
}

/// Every (input, target) pair of `stream` in `rows` contiguous rows, the first ones one pair
/// longer when the count does not divide (evaluation scores every token after the first).
fn cut_rows(stream: &TokenStream, rows: usize) -> Result<Vec<Row>> {
    let pairs = stream.tokens.len().saturating_sub(1);
    if pairs < rows {
        return Err(Error::Data(format!(
            "the {} split has {} tokens, too few for {rows} rows of at least one; give more \
             text or a smaller batch size",
            stream.name,
            stream.tokens.len()
        )));
    }
    let (base, longer) = (pairs / rows, pairs % rows);
    let mut start = 0;
    Ok((0..rows)
        .map(|r| {
            let len = base + usize::from(r < longer);
            let row = Row { start, len };
            start += len;
            row
        })
        .collect())
}

/// One segment of `rows` from `offset`: inputs and targets `[rows, time]` (row-major) with
/// `time` the longest row's remaining length up to `bptt`, and where a row has ended, a
/// keep-mask of 0 (None when every row has the whole segment).
struct Segment {
    inputs: Vec<i64>,
    targets: Vec<i64>,
    keep: Option<Vec<f32>>,
    rows: usize,
    time: usize,
}

fn segment(stream: &TokenStream, rows: &[Row], offset: usize, bptt: usize) -> Segment {
    let longest = rows.iter().map(|r| r.len).max().unwrap_or(0);
    let time = bptt.min(longest.saturating_sub(offset));
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    let mut keep = Vec::new();
    for row in rows {
        for t in offset..offset + time {
            let real = t < row.len;
            let at = row.start + t.min(row.len.saturating_sub(1));
            inputs.push(stream.tokens[at] as i64);
            targets.push(stream.tokens[at + 1] as i64);
            keep.push(if real { 1.0 } else { 0.0 });
        }
    }
    let ragged = keep.contains(&0.0);
    Segment {
        inputs,
        targets,
        keep: ragged.then_some(keep),
        rows: rows.len(),
        time,
    }
}

/// `(loss, nll, state after)` of one segment read on from `state`.
fn segment_loss(
    model: &RnnLm,
    segment: &Segment,
    state: Vec<RnnState>,
    smoothing: f64,
    device: &Device,
) -> (Tensor<1>, Tensor<1>, Vec<RnnState>) {
    let (rows, time) = (segment.rows, segment.time);
    let inputs = Tensor::from_data(
        TensorData::new(segment.inputs.clone(), [rows, time]),
        device,
    );
    let targets = Tensor::from_data(
        TensorData::new(segment.targets.clone(), [rows * time]),
        device,
    );
    let keep = segment
        .keep
        .as_ref()
        .map(|k| Tensor::<1>::from_data(TensorData::new(k.clone(), [rows * time]), device));
    let keep_2d = keep.clone().map(|k| k.reshape([rows, time]));
    let (logits, after) = model.forward(inputs, state, keep_2d);
    let vocab = logits.dims()[2];
    let (loss, nll) = cross_entropy_kept(
        logits.reshape([rows * time, vocab]),
        targets,
        smoothing,
        keep,
    );
    (loss, nll, after)
}

/// The summed negative log-likelihood of every pair of `rows`, each row read from its start in
/// segments of `bptt` with the state carried (`model` without autodiff).
fn stream_nll(
    model: &RnnLm,
    stream: &TokenStream,
    rows: &[Row],
    bptt: usize,
    device: &Device,
) -> LossSum {
    let longest = rows.iter().map(|r| r.len).max().unwrap_or(0);
    let mut state = model.zero_state(rows.len(), device);
    let mut sum = LossSum::default();
    for offset in (0..longest).step_by(bptt) {
        let segment = segment(stream, rows, offset, bptt);
        let counted = match &segment.keep {
            Some(keep) => keep.iter().filter(|&&k| k > 0.0).count(),
            None => segment.rows * segment.time,
        };
        let (_, nll, after) = segment_loss(model, &segment, state, 0.0, device);
        sum += LossSum::of_mean(nll, counted);
        state = after;
    }
    sum
}

/// A layer's state on the host: `h` and (LSTM) `c`, `[rows, width]` row-major.
type HostState = Vec<(Vec<f32>, Option<Vec<f32>>)>;

pub struct BpttTask {
    config: RnnLmConfig,
    train: TokenStream,
    valid: TokenStream,
    /// Every row of the whole job (`global_batch * accum_grad`), equally long.
    train_rows: Vec<Row>,
    /// The validation split in `global_batch` rows; validation batch `b` is rows
    /// `b * batch_size ..`, so the ranks share them out.
    valid_rows: Vec<Row>,
    /// Segments in one pass over the rows.
    segments: usize,
    batch_size: usize,
    global_batch: usize,
    shard: Shard,
    label_smoothing: f64,
    /// The state each micro-batch's rows carry into the next step (None: zeros).
    carried: RefCell<Vec<Option<HostState>>>,
}

impl BpttTask {
    pub fn new(recipe: &Recipe, config: RnnLmConfig, shard: Shard) -> Result<Self> {
        let dir = recipe.prepared_dir();
        let meta: TextMeta = load_meta(&dir)?;
        let train = TokenStream::new("train", load_split(&dir, &meta, Split::Train)?);
        let valid = TokenStream::new("valid", load_split(&dir, &meta, Split::Valid)?);
        let (batch_size, global_batch) = crate::distributed::batch_sizes(recipe, shard.count)?;
        let accum = recipe.train.accum_grad;
        let rows = global_batch * accum;
        // Every row equally long, as `batchify` cuts them: the remainder is left out.
        let per_row = train.tokens.len().saturating_sub(1) / rows;
        if per_row == 0 {
            return Err(Error::Data(format!(
                "the train split has {} tokens, too few for {rows} streams (batch_size x \
                 accum_grad x ranks); give more text or lower `train.batch_size`",
                train.tokens.len()
            )));
        }
        let train_rows = (0..rows)
            .map(|r| Row {
                start: r * per_row,
                len: per_row,
            })
            .collect();
        let valid_rows = cut_rows(&valid, global_batch)?;
        let bptt = config.options.bptt;
        Ok(Self {
            config,
            train,
            valid,
            train_rows,
            valid_rows,
            segments: per_row.div_ceil(bptt),
            batch_size,
            global_batch,
            shard,
            label_smoothing: recipe.loss.label_smoothing,
            carried: RefCell::new(vec![None; accum]),
        })
    }

    /// The first row (of the whole job) that micro-batch `micro` of this rank reads.
    fn first_row(&self, micro: usize) -> usize {
        micro * self.global_batch + self.shard.index * self.batch_size
    }

    fn width(&self) -> usize {
        self.config.options.hidden_size
    }
}

fn to_device(state: &HostState, rows: usize, device: &Device) -> Vec<RnnState> {
    let tensor = |v: &Vec<f32>| {
        Tensor::from_data(TensorData::new(v.clone(), [rows, v.len() / rows]), device)
    };
    state
        .iter()
        .map(|(h, c)| RnnState {
            h: tensor(h),
            c: c.as_ref().map(tensor),
        })
        .collect()
}

fn to_host(state: Vec<RnnState>) -> HostState {
    let read = |t: Tensor<2>| t.try_into_vec_as::<f32>().expect("state read back");
    state
        .into_iter()
        .map(|s| (read(s.h), s.c.map(read)))
        .collect()
}

impl Task for BpttTask {
    type Model = RnnLm;

    fn init_model(&self, device: &Device, _load_pretrained: bool) -> Result<RnnLm> {
        Ok(self.config.init(device))
    }

    fn train_loss(&self, model: &RnnLm, step: usize, micro: usize, device: &Device) -> StepLoss {
        let bptt = self.config.options.bptt;
        let index = step % self.segments;
        let rows = &self.train_rows[self.first_row(micro)..][..self.batch_size];
        let segment = segment(&self.train, rows, index * bptt, bptt);
        // The streams start (and start again, wrapped) from zeros.
        let carried = self.carried.borrow_mut()[micro].take();
        let state = match carried.filter(|_| index > 0) {
            Some(host) => to_device(&host, self.batch_size, device),
            None => model.zero_state(self.batch_size, device),
        };
        let (loss, nll, after) = segment_loss(model, &segment, state, self.label_smoothing, device);
        self.carried.borrow_mut()[micro] = Some(to_host(detach(after)));
        StepLoss::single(loss, nll)
    }

    fn validation_batches(&self) -> usize {
        self.global_batch / self.batch_size
    }

    fn validation_loss(&self, model: &RnnLm, batch: usize, device: &Device) -> LossSum {
        let rows = &self.valid_rows[batch * self.batch_size..][..self.batch_size];
        stream_nll(model, &self.valid, rows, self.config.options.bptt, device)
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.batch_size * self.config.options.bptt
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.segments * self.carried.borrow().len()
    }

    fn model_width(&self) -> usize {
        self.width()
    }

    fn step_description(&self, _ranks: usize, accum_grad: usize) -> String {
        format!(
            "{} streams x {} tokens (truncated BPTT)",
            self.global_batch * accum_grad,
            self.config.options.bptt
        )
    }

    /// `h.<layer>` (and `c.<layer>`) `[rows of the job, width]`.
    fn carried_state(&self) -> Option<CarriedState> {
        let (rows, width) = (self.train_rows.len(), self.width());
        let layers = self.config.options.num_layers;
        let lstm = self.config.options.cell == crate::models::recurrent::CellKind::Lstm;
        let mut out = CarriedState::new();
        let zeros = || HfTensor {
            shape: vec![rows, width],
            values: vec![0.0; rows * width],
        };
        for l in 0..layers {
            out.insert(format!("h.{l}"), zeros());
            if lstm {
                out.insert(format!("c.{l}"), zeros());
            }
        }
        for (micro, state) in self.carried.borrow().iter().enumerate() {
            let Some(state) = state else { continue };
            let at = self.first_row(micro) * width;
            for (l, (h, c)) in state.iter().enumerate() {
                let h_all = out.get_mut(&format!("h.{l}")).expect("made above");
                h_all.values[at..at + h.len()].copy_from_slice(h);
                if let Some(c) = c {
                    let c_all = out.get_mut(&format!("c.{l}")).expect("made above");
                    c_all.values[at..at + c.len()].copy_from_slice(c);
                }
            }
        }
        Some(out)
    }

    fn restore_carried_state(&self, state: CarriedState) -> Result<()> {
        let expected = self.carried_state().expect("carried");
        let shapes = |s: &CarriedState| -> Vec<(String, Vec<usize>)> {
            s.iter()
                .map(|(k, t)| (k.clone(), t.shape.clone()))
                .collect()
        };
        if shapes(&state) != shapes(&expected) {
            return Err(Error::Usage(format!(
                "the checkpoint's carried RNN state ({:?}) does not fit this run's ({:?}: \
                 batch_size x accum_grad x ranks rows, the model's layers and width); resume \
                 with the settings it was trained with, or start the streams afresh with \
                 --reset-schedule",
                shapes(&state),
                shapes(&expected)
            )));
        }
        let width = self.width();
        let take = |t: &HfTensor, first: usize| {
            t.values[first * width..][..self.batch_size * width].to_vec()
        };
        let mut carried = self.carried.borrow_mut();
        for (micro, slot) in carried.iter_mut().enumerate() {
            let first = self.first_row(micro);
            let layers = (0..self.config.options.num_layers).map(|l| {
                let h = take(&state[&format!("h.{l}")], first);
                let c = state.get(&format!("c.{l}")).map(|c| take(c, first));
                (h, c)
            });
            *slot = Some(layers.collect());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_cover_every_pair_once_and_segments_mask_ended_rows() {
        let stream = TokenStream::new("t", (0..12).collect());
        let rows = cut_rows(&stream, 3).unwrap();
        // 11 pairs: 4, 4, 3.
        assert_eq!(
            rows.iter().map(|r| (r.start, r.len)).collect::<Vec<_>>(),
            vec![(0, 4), (4, 4), (8, 3)]
        );
        let first = segment(&stream, &rows, 0, 3);
        assert_eq!(first.inputs, vec![0, 1, 2, 4, 5, 6, 8, 9, 10]);
        assert_eq!(first.targets, vec![1, 2, 3, 5, 6, 7, 9, 10, 11]);
        assert!(first.keep.is_none());
        let last = segment(&stream, &rows, 3, 3);
        assert_eq!((last.rows, last.time), (3, 1));
        assert_eq!(last.targets[..2], [4, 8]);
        assert_eq!(last.keep, Some(vec![1.0, 1.0, 0.0]));
        assert!(cut_rows(&stream, 12).is_err());
    }
}
