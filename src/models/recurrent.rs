//! GRU and LSTM layers with PyTorch's equations, in the layout that runs fast under autodiff:
//! the input projection of every time step is one matmul, and each step adds one matmul of the
//! state (Burn's `Gru` does six per step and writes the output by `slice_assign`). Steps take a
//! keep-mask, so padded positions leave the state as it was. The step's gates are one fused
//! operation (`rnn_cell.rs`).

use super::layer_norm::ForwardFused;
use super::rnn_cell::{gru_cell, lstm_cell};
use burn::module::Module;
use burn::nn::{Dropout, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    #[default]
    Gru,
    Lstm,
}

impl CellKind {
    fn gates(self) -> usize {
        match self {
            CellKind::Gru => 3,
            CellKind::Lstm => 4,
        }
    }
}

/// One recurrent layer (one direction).
#[derive(Module, Debug)]
pub struct Recurrent {
    /// Input to gates, `[d_in, gates * width]` (GRU: r, z, n; LSTM: i, f, g, o).
    input: Linear,
    /// State to gates, `[width, gates * width]`.
    hidden: Linear,
    lstm: bool,
    width: usize,
}

/// A layer's state `[rows, width]`; LSTMs also carry the cell.
#[derive(Debug, Clone)]
pub struct RnnState {
    pub h: Tensor<2>,
    pub c: Option<Tensor<2>>,
}

impl RnnState {
    pub fn select(self, rows: Tensor<1, Int>) -> Self {
        Self {
            h: self.h.select(0, rows.clone()),
            c: self.c.map(|c| c.select(0, rows)),
        }
    }
}

impl Recurrent {
    pub fn new(kind: CellKind, d_in: usize, width: usize, device: &Device) -> Self {
        let gates = kind.gates() * width;
        Self {
            input: LinearConfig::new(d_in, gates).init(device),
            hidden: LinearConfig::new(width, gates).init(device),
            lstm: kind == CellKind::Lstm,
            width,
        }
    }

    pub fn zero_state(&self, rows: usize, device: &Device) -> RnnState {
        let zeros = Tensor::zeros([rows, self.width], device);
        RnnState {
            c: self.lstm.then(|| zeros.clone()),
            h: zeros,
        }
    }

    /// The input projections of all steps at once: `[batch, time, d_in]` to
    /// `[batch, time, gates * width]`.
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        self.input.forward_fused(x)
    }

    pub fn project_step(&self, x: Tensor<2>) -> Tensor<2> {
        self.input.forward_fused(x)
    }

    /// One step from the projected input `[rows, gates * width]`. Where `keep` `[rows, 1]` is 0
    /// the state stays as it was (padding).
    pub fn step(&self, projected: Tensor<2>, state: RnnState, keep: Option<Tensor<2>>) -> RnnState {
        let from_state = self.hidden.forward_fused(state.h.clone());
        match state.c {
            Some(c) if self.lstm => {
                let (h, c) = lstm_cell(projected, from_state, c, state.h, keep);
                RnnState { h, c: Some(c) }
            }
            _ => {
                assert!(!self.lstm, "an LSTM state has a cell");
                RnnState {
                    h: gru_cell(projected, from_state, state.h, keep),
                    c: None,
                }
            }
        }
    }

    /// Run over `x` `[batch, time, d_in]` forwards or backwards from zeros, holding the state
    /// through padding (`keep` `[batch, time]`, 1 for real positions). Returns every step's
    /// output `[batch, time, width]` (in time order) and the final state.
    pub fn run(&self, x: Tensor<3>, keep: Tensor<2>, backwards: bool) -> (Tensor<3>, RnnState) {
        let state = self.zero_state(x.dims()[0], &x.device());
        self.run_from(x, Some(keep), state, backwards)
    }

    /// [`Recurrent::run`] from `state` instead of zeros, `keep` optional (no padding): a
    /// language model's stream goes on from where the previous segment left it.
    pub fn run_from(
        &self,
        x: Tensor<3>,
        keep: Option<Tensor<2>>,
        mut state: RnnState,
        backwards: bool,
    ) -> (Tensor<3>, RnnState) {
        let time = x.dims()[1];
        let mut steps: Vec<(usize, Tensor<2>)> = unstack_time(self.project(x))
            .into_iter()
            .enumerate()
            .collect();
        if backwards {
            steps.reverse();
        }
        let mut outputs = Vec::with_capacity(time);
        for (t, p) in steps {
            let k = keep.as_ref().map(|k| k.clone().narrow(1, t, 1));
            state = self.step(p, state, k);
            outputs.push(state.h.clone());
        }
        if backwards {
            outputs.reverse();
        }
        (Tensor::stack(outputs, 1), state)
    }
}

/// `x` `[batch, time, width]` as its `time` steps `[batch, width]`, cut in halves recursively.
/// Autodiff's backward of a narrow writes the part's gradient into a zeroed tensor the size of
/// what was cut, so `time` narrows of the whole zero and add `time` whole-size tensors (quadratic
/// in the length), where halving zeros and adds `log₂(time)` of them per step. The gradients are
/// the same to the bit: each element has one non-zero term either way.
pub fn unstack_time(x: Tensor<3>) -> Vec<Tensor<2>> {
    fn halves(x: Tensor<3>, steps: &mut Vec<Tensor<2>>) {
        match x.dims()[1] {
            0 => {}
            1 => steps.push(x.squeeze_dim(1)),
            time => {
                let first = time / 2;
                halves(x.clone().narrow(1, 0, first), steps);
                halves(x.narrow(1, first, time - first), steps);
            }
        }
    }
    let mut steps = Vec::with_capacity(x.dims()[1]);
    halves(x, &mut steps);
    steps
}

/// Run a stack of layers over `x` `[batch, time, d_in]` (`keep` as for [`Recurrent::run`]),
/// each layer with a backward twin when `backward` has one for it, `dropout` between layers.
/// Returns the top layer's outputs `[batch, time, dirs * width]` (the directions concatenated)
/// and each layer's final state, likewise concatenated.
pub fn run_stack(
    forward: &[Recurrent],
    backward: &[Recurrent],
    mut x: Tensor<3>,
    keep: Tensor<2>,
    dropout: &Dropout,
) -> (Tensor<3>, Vec<RnnState>) {
    let mut finals = Vec::with_capacity(forward.len());
    for (l, layer) in forward.iter().enumerate() {
        if l > 0 {
            x = dropout.forward(x);
        }
        let (out_f, state_f) = layer.run(x.clone(), keep.clone(), false);
        match backward.get(l) {
            Some(twin) => {
                let (out_b, state_b) = twin.run(x, keep.clone(), true);
                x = Tensor::cat(vec![out_f, out_b], 2);
                finals.push(RnnState {
                    h: Tensor::cat(vec![state_f.h, state_b.h], 1),
                    c: state_f
                        .c
                        .zip(state_b.c)
                        .map(|(f, b)| Tensor::cat(vec![f, b], 1)),
                });
            }
            None => {
                x = out_f;
                finals.push(state_f);
            }
        }
    }
    (x, finals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The halving split gives each step's values, and a loss over the steps the same gradient
    /// to the bit as one narrow per step, at odd and even lengths.
    #[test]
    fn unstacked_steps_are_the_narrows_with_the_same_gradient() {
        let device = Device::flex().autodiff();
        for time in [1, 2, 5, 8] {
            let x = Tensor::<3>::random([2, time, 3], Distribution::Normal(0.0, 1.0), &device);
            let weights =
                Tensor::<3>::random([2, time, 3], Distribution::Normal(0.0, 1.0), &device);
            let (xa, xb) = (x.clone().require_grad(), x.require_grad());
            let halved = unstack_time(xa.clone());
            let narrowed: Vec<Tensor<2>> = (0..time)
                .map(|t| xb.clone().narrow(1, t, 1).squeeze_dim(1))
                .collect();
            assert_eq!(halved.len(), time);
            let loss = |steps: Vec<Tensor<2>>| {
                let w = unstack_time(weights.clone());
                let terms: Vec<Tensor<1>> = steps
                    .into_iter()
                    .zip(w)
                    .enumerate()
                    .map(|(t, (s, w))| (s * w).sum() * (t + 1) as f32)
                    .collect();
                Tensor::cat(terms, 0).sum()
            };
            for (a, b) in halved.iter().zip(&narrowed) {
                a.to_data().assert_eq(&b.to_data(), true);
            }
            let (ga, gb) = (loss(halved).backward(), loss(narrowed).backward());
            let (ga, gb) = (xa.grad(&ga).unwrap(), xb.grad(&gb).unwrap());
            ga.to_data().assert_eq(&gb.to_data(), true);
        }
    }

    /// A sequence padded at the end gives, at its real positions and in its final state, what the
    /// unpadded sequence gives; also backwards, where the padding comes first.
    #[test]
    fn padding_leaves_the_state_untouched() {
        let device = Device::flex();
        for kind in [CellKind::Gru, CellKind::Lstm] {
            let layer = Recurrent::new(kind, 3, 4, &device);
            let x = Tensor::<3>::random([1, 5, 3], Distribution::Normal(0.0, 1.0), &device);
            let keep = Tensor::<2>::from_data([[1.0f32, 1.0, 1.0, 0.0, 0.0]], &device);
            for backwards in [false, true] {
                let (padded, padded_state) = layer.run(x.clone(), keep.clone(), backwards);
                let (alone, alone_state) = layer.run(
                    x.clone().narrow(1, 0, 3),
                    Tensor::ones([1, 3], &device),
                    backwards,
                );
                let diff: f32 = (padded.narrow(1, 0, 3) - alone).abs().max().into_scalar();
                assert!(diff < 1e-6, "{kind:?} backwards {backwards}: {diff}");
                let diff: f32 = (padded_state.h - alone_state.h).abs().max().into_scalar();
                assert!(diff < 1e-6, "{kind:?} backwards {backwards}: final {diff}");
            }
        }
    }
}
