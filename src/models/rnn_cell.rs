//! One step of a GRU or an LSTM (PyTorch's equations) as a custom Burn operation with its own
//! gradient, so that a recurrent step on the default CPU backend is one pass over its rows
//! forward and one backward.
//!
//! Why: composed of Burn's operations, a step was about fifteen small tensors (slices, adds,
//! sigmoids, tanhs, the keep-mask blend), each one recorded by autodiff, and burn-flex evaluates
//! sigmoid and tanh on one thread through libm's scalar `expf`/`tanhf`: in the GRU
//! encoder-decoder's training step that was a quarter of the time. The flex kernel here runs
//! the rows over the CPU pool with sigmoid and tanh in plain arithmetic that vectorises,
//! saves the gates' activations, and gives every input's gradient in one pass. Every other
//! backend (and flex with other float types) composes Burn's operations.
//!
//! The keep-mask `[rows, 1]` blends the new state with the old, `old + keep·(new - old)`: 1
//! takes the step, 0 leaves the state as it was (padding). It is data, not a parameter: it
//! gets no gradient.

// NdArray is deprecated by Burn but stays selectable (src/backend.rs); the extension names it.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

/// The keep-mask the operations take: backend extensions take no optional tensors, and a mask
/// of ones keeps every row's new state.
fn keep_or_ones(keep: Option<Tensor<2>>, h: &Tensor<2>) -> Tensor<2> {
    keep.unwrap_or_else(|| Tensor::<2>::ones([h.dims()[0], 1], &h.device()).cast(h.dtype()))
}

/// A GRU step: `projected` `[rows, 3w]` is the input's projection (gates r, z, n), `from_state`
/// `[rows, 3w]` the state's (`h W_h + b_h`), `h` `[rows, w]` the state. With
/// `r = σ(x_r + s_r)`, `z = σ(x_z + s_z)`, `n = tanh(x_n + r·s_n)`, the new state is
/// `n + z·(h - n)`, blended with `h` by `keep` `[rows, 1]`.
pub fn gru_cell(
    projected: Tensor<2>,
    from_state: Tensor<2>,
    h: Tensor<2>,
    keep: Option<Tensor<2>>,
) -> Tensor<2> {
    let [rows, w] = h.dims();
    assert_eq!(projected.dims(), [rows, 3 * w], "GRU input projection");
    assert_eq!(from_state.dims(), [rows, 3 * w], "GRU state projection");
    let keep = keep_or_ones(keep, &h);
    Tensor::from_dispatch(<Dispatch as RnnCellOps>::fused_gru(
        projected.into_dispatch(),
        from_state.into_dispatch(),
        h.into_dispatch(),
        keep.into_dispatch(),
    ))
}

/// An LSTM step: gates `projected + from_state` `[rows, 4w]` (i, f, g, o), cell `c` and state
/// `h` `[rows, w]`. With `c' = σ(f)·c + σ(i)·tanh(g)` and `h' = σ(o)·tanh(c')`, returns
/// `(h', c')`, each blended with the old by `keep` `[rows, 1]`.
pub fn lstm_cell(
    projected: Tensor<2>,
    from_state: Tensor<2>,
    c: Tensor<2>,
    h: Tensor<2>,
    keep: Option<Tensor<2>>,
) -> (Tensor<2>, Tensor<2>) {
    let [rows, w] = h.dims();
    assert_eq!(projected.dims(), [rows, 4 * w], "LSTM input projection");
    assert_eq!(from_state.dims(), [rows, 4 * w], "LSTM state projection");
    assert_eq!(c.dims(), [rows, w], "LSTM cell");
    let keep = keep_or_ones(keep, &h);
    // One output `[rows, 2w]` (h' then c'): an autodiff node has one output.
    let both = Tensor::<2>::from_dispatch(<Dispatch as RnnCellOps>::fused_lstm(
        projected.into_dispatch(),
        from_state.into_dispatch(),
        c.into_dispatch(),
        h.into_dispatch(),
        keep.into_dispatch(),
    ));
    (both.clone().narrow(1, 0, w), both.narrow(1, w, w))
}

/// `tanh(x)`, differentiable, the values of Burn's `tanh` to f32 rounding: the recurrent models'
/// other tanh (additive attention's scores, the deep output), through the cell's fast kernel.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as RnnCellOps>::fused_tanh(x.into_dispatch()))
}

/// The operations and their gradients, per backend. The default bodies are Burn's operations.
/// What forward saves for backward has one layout on every backend: the GRU's activations
/// `[r | z | n]` `[rows, 3w]`, the LSTM's `[σ(i) | σ(f) | tanh(g) | σ(o) | tanh(c_new)]`
/// `[rows, 5w]`, where `c_new` is the cell before the keep blend.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait RnnCellOps: Backend {
    /// The new state `[rows, w]`.
    fn fused_gru(
        projected: FloatTensor<Self>,
        from_state: FloatTensor<Self>,
        h: FloatTensor<Self>,
        keep: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::gru_forward::<Self>(projected, from_state, h, keep).0
    }

    /// The new state and the activations backward needs.
    fn fused_gru_saving(
        projected: FloatTensor<Self>,
        from_state: FloatTensor<Self>,
        h: FloatTensor<Self>,
        keep: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::gru_forward::<Self>(projected, from_state, h, keep)
    }

    /// `(d projected, d from_state, d h)` for the upstream gradient `grad` `[rows, w]`.
    fn fused_gru_backward(
        saved: FloatTensor<Self>,
        from_state: FloatTensor<Self>,
        h: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::gru_backward::<Self>(saved, from_state, h, keep, grad)
    }

    /// `[h' | c']` `[rows, 2w]`.
    fn fused_lstm(
        projected: FloatTensor<Self>,
        from_state: FloatTensor<Self>,
        c: FloatTensor<Self>,
        h: FloatTensor<Self>,
        keep: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed::lstm_forward::<Self>(projected, from_state, c, h, keep).0
    }

    /// `[h' | c']` and the activations backward needs.
    fn fused_lstm_saving(
        projected: FloatTensor<Self>,
        from_state: FloatTensor<Self>,
        c: FloatTensor<Self>,
        h: FloatTensor<Self>,
        keep: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::lstm_forward::<Self>(projected, from_state, c, h, keep)
    }

    /// `(d gates, d c, d h)` for the upstream gradient `grad` `[rows, 2w]` of `[h' | c']`; the
    /// gates' gradient is both `projected`'s and `from_state`'s.
    fn fused_lstm_backward(
        saved: FloatTensor<Self>,
        c: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::lstm_backward::<Self>(saved, c, keep, grad)
    }

    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_tanh(x)
    }

    /// `grad·(1 - y²)` from the output `y = tanh(x)`.
    fn fused_tanh_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::tanh_backward::<Self>(y, grad)
    }
}

#[cfg(feature = "ndarray")]
impl RnnCellOps for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl RnnCellOps for burn::backend::LibTorch {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl RnnCellOps for burn::backend::Cube {}

/// The GRU's backward node; its parents are `projected`, `from_state` and `h`.
#[derive(Debug)]
struct GruBackward;

impl<B: RnnCellOps> Backward<B, 3> for GruBackward {
    /// The saved activations, `from_state` (for `s_n`), `h` and the keep-mask.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (saved, from_state, h, keep) = ops.state;
        let (dp, ds, dh) = B::fused_gru_backward(saved, from_state, h, keep, grad);
        for (parent, gradient) in ops.parents.into_iter().zip([dp, ds, dh]) {
            if let Some(parent) = parent {
                grads.register::<B>(parent.id, gradient);
            }
        }
    }
}

/// The LSTM's backward node; its parents are `projected`, `from_state`, `c` and `h`.
#[derive(Debug)]
struct LstmBackward;

impl<B: RnnCellOps> Backward<B, 4> for LstmBackward {
    /// The saved activations, `c` and the keep-mask.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (saved, c, keep) = ops.state;
        let (dgates, dc, dh) = B::fused_lstm_backward(saved, c, keep, grad);
        let gradients = [dgates.clone(), dgates, dc, dh];
        for (parent, gradient) in ops.parents.into_iter().zip(gradients) {
            if let Some(parent) = parent {
                grads.register::<B>(parent.id, gradient);
            }
        }
    }
}

/// tanh's backward node; its parent is the input.
#[derive(Debug)]
struct TanhBackward;

impl<B: RnnCellOps> Backward<B, 1> for TanhBackward {
    /// The output: the gradient is a function of it.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, B::fused_tanh_backward(ops.state, grad));
        }
    }
}

impl<B: RnnCellOps, C: CheckpointStrategy> RnnCellOps for Autodiff<B, C> {
    fn fused_gru(
        projected: FloatTensor<Self>,
        from_state: FloatTensor<Self>,
        h: FloatTensor<Self>,
        keep: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // The keep-mask is data (a padding mask), not a parameter: no gradient flows to it.
        let keep = keep.into_primitive();
        match GruBackward
            .prepare::<C>([projected.node(), from_state.node(), h.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (s, h) = (from_state.into_primitive(), h.into_primitive());
                let (output, saved) = B::fused_gru_saving(
                    projected.into_primitive(),
                    s.clone(),
                    h.clone(),
                    keep.clone(),
                );
                prep.finish((saved, s, h, keep), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_gru(
                projected.into_primitive(),
                from_state.into_primitive(),
                h.into_primitive(),
                keep,
            )),
        }
    }

    fn fused_lstm(
        projected: FloatTensor<Self>,
        from_state: FloatTensor<Self>,
        c: FloatTensor<Self>,
        h: FloatTensor<Self>,
        keep: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let keep = keep.into_primitive();
        match LstmBackward
            .prepare::<C>([projected.node(), from_state.node(), c.node(), h.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let c = c.into_primitive();
                let (output, saved) = B::fused_lstm_saving(
                    projected.into_primitive(),
                    from_state.into_primitive(),
                    c.clone(),
                    h.into_primitive(),
                    keep.clone(),
                );
                prep.finish((saved, c, keep), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_lstm(
                projected.into_primitive(),
                from_state.into_primitive(),
                c.into_primitive(),
                h.into_primitive(),
                keep,
            )),
        }
    }

    fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match TanhBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::fused_tanh(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_tanh(x.into_primitive())),
        }
    }
}

/// Burn's operations, for every backend without a kernel of its own.
mod composed {
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, TensorMetadata};
    use burn::tensor::Slice;

    /// Columns `from..to` of a `[rows, n]` tensor.
    fn columns<B: Backend>(t: &FloatTensor<B>, from: usize, to: usize) -> FloatTensor<B> {
        let rows = t.shape()[0];
        B::float_slice(t.clone(), &[Slice::from(0..rows), Slice::from(from..to)])
    }

    fn one_minus<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
        B::float_add_scalar(B::float_neg(t), 1.0f64.into())
    }

    /// `σ'(x)` from `y = σ(x)`.
    fn sigmoid_slope<B: Backend>(y: FloatTensor<B>) -> FloatTensor<B> {
        B::float_mul(y.clone(), one_minus::<B>(y))
    }

    /// `tanh'(x)` from `y = tanh(x)`.
    fn tanh_slope<B: Backend>(y: FloatTensor<B>) -> FloatTensor<B> {
        one_minus::<B>(B::float_mul(y.clone(), y))
    }

    /// `old + keep·(new - old)`.
    fn blend<B: Backend>(
        old: FloatTensor<B>,
        new: FloatTensor<B>,
        keep: FloatTensor<B>,
    ) -> FloatTensor<B> {
        B::float_add(old.clone(), B::float_mul(keep, B::float_sub(new, old)))
    }

    pub fn tanh_backward<B: Backend>(y: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
        B::float_mul(grad, tanh_slope::<B>(y))
    }

    pub fn gru_forward<B: Backend>(
        p: FloatTensor<B>,
        s: FloatTensor<B>,
        h: FloatTensor<B>,
        keep: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let w = h.shape()[1];
        let gate = |g: usize| {
            (
                columns::<B>(&p, g * w, (g + 1) * w),
                columns::<B>(&s, g * w, (g + 1) * w),
            )
        };
        let ((pr, sr), (pz, sz), (pn, sn)) = (gate(0), gate(1), gate(2));
        let r = B::sigmoid(B::float_add(pr, sr));
        let z = B::sigmoid(B::float_add(pz, sz));
        let n = B::float_tanh(B::float_add(pn, B::float_mul(r.clone(), sn)));
        let new = B::float_add(
            n.clone(),
            B::float_mul(z.clone(), B::float_sub(h.clone(), n.clone())),
        );
        (blend::<B>(h, new, keep), B::float_cat(vec![r, z, n], 1))
    }

    /// With `dn_ = keep·grad` the gradient of the unblended state:
    /// `dh = (1 - keep)·grad + dn_·z`, `da_n = dn_·(1 - z)·tanh'`, `da_z = dn_·(h - n)·σ'(z)`,
    /// `da_r = da_n·s_n·σ'(r)`; `projected` gets `[da_r, da_z, da_n]`, `from_state`
    /// `[da_r, da_z, da_n·r]`.
    pub fn gru_backward<B: Backend>(
        saved: FloatTensor<B>,
        s: FloatTensor<B>,
        h: FloatTensor<B>,
        keep: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let w = h.shape()[1];
        let r = columns::<B>(&saved, 0, w);
        let z = columns::<B>(&saved, w, 2 * w);
        let n = columns::<B>(&saved, 2 * w, 3 * w);
        let sn = columns::<B>(&s, 2 * w, 3 * w);
        let dnew = B::float_mul(grad.clone(), keep);
        let dh = B::float_add(
            B::float_sub(grad, dnew.clone()),
            B::float_mul(dnew.clone(), z.clone()),
        );
        let dan = B::float_mul(
            B::float_mul(dnew.clone(), one_minus::<B>(z.clone())),
            tanh_slope::<B>(n.clone()),
        );
        let daz = B::float_mul(
            B::float_mul(dnew, B::float_sub(h, n)),
            sigmoid_slope::<B>(z),
        );
        let dar = B::float_mul(B::float_mul(dan.clone(), sn), sigmoid_slope::<B>(r.clone()));
        let ds_n = B::float_mul(dan.clone(), r);
        (
            B::float_cat(vec![dar.clone(), daz.clone(), dan], 1),
            B::float_cat(vec![dar, daz, ds_n], 1),
            dh,
        )
    }

    pub fn lstm_forward<B: Backend>(
        p: FloatTensor<B>,
        s: FloatTensor<B>,
        c: FloatTensor<B>,
        h: FloatTensor<B>,
        keep: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let w = h.shape()[1];
        let gates = B::float_add(p, s);
        let i = B::sigmoid(columns::<B>(&gates, 0, w));
        let f = B::sigmoid(columns::<B>(&gates, w, 2 * w));
        let g = B::float_tanh(columns::<B>(&gates, 2 * w, 3 * w));
        let o = B::sigmoid(columns::<B>(&gates, 3 * w, 4 * w));
        let c_new = B::float_add(
            B::float_mul(f.clone(), c.clone()),
            B::float_mul(i.clone(), g.clone()),
        );
        let tc = B::float_tanh(c_new.clone());
        let h_new = B::float_mul(o.clone(), tc.clone());
        let output = B::float_cat(
            vec![
                blend::<B>(h, h_new, keep.clone()),
                blend::<B>(c, c_new, keep),
            ],
            1,
        );
        (output, B::float_cat(vec![i, f, g, o, tc], 1))
    }

    /// With `dh_ = keep·grad_h` and `dc_ = keep·grad_c + dh_·o·tanh'(c_new)` the gradients of
    /// the unblended state and cell: `da_i = dc_·g·σ'(i)`, `da_f = dc_·c·σ'(f)`,
    /// `da_g = dc_·i·tanh'(g)`, `da_o = dh_·tanh(c_new)·σ'(o)`, `dc = (1 - keep)·grad_c + dc_·f`,
    /// `dh = (1 - keep)·grad_h`.
    pub fn lstm_backward<B: Backend>(
        saved: FloatTensor<B>,
        c: FloatTensor<B>,
        keep: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let w = c.shape()[1];
        let act = |k: usize| columns::<B>(&saved, k * w, (k + 1) * w);
        let (i, f, g, o, tc) = (act(0), act(1), act(2), act(3), act(4));
        let (grad_h, grad_c) = (columns::<B>(&grad, 0, w), columns::<B>(&grad, w, 2 * w));
        let dh_new = B::float_mul(grad_h.clone(), keep.clone());
        let kept_c = B::float_mul(grad_c.clone(), keep);
        let dc_new = B::float_add(
            kept_c.clone(),
            B::float_mul(
                B::float_mul(dh_new.clone(), o.clone()),
                tanh_slope::<B>(tc.clone()),
            ),
        );
        let dai = B::float_mul(
            B::float_mul(dc_new.clone(), g.clone()),
            sigmoid_slope::<B>(i.clone()),
        );
        let daf = B::float_mul(
            B::float_mul(dc_new.clone(), c),
            sigmoid_slope::<B>(f.clone()),
        );
        let dag = B::float_mul(B::float_mul(dc_new.clone(), i), tanh_slope::<B>(g));
        let dao = B::float_mul(B::float_mul(dh_new.clone(), tc), sigmoid_slope::<B>(o));
        let dc = B::float_add(B::float_sub(grad_c, kept_c), B::float_mul(dc_new, f));
        let dh = B::float_sub(grad_h, dh_new);
        (B::float_cat(vec![dai, daf, dag, dao], 1), dc, dh)
    }
}

#[cfg(feature = "flex")]
mod flex_kernel {
    use super::RnnCellOps;
    use crate::models::gelu::{contiguous, map_parallel};
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::{DType, TensorData};
    use rayon::prelude::*;
    use std::borrow::Cow;

    /// Elements per parallel task (whole rows): small enough that a batch of 64 rows of a
    /// 256-wide layer spreads over the cores.
    const CHUNK: usize = 8 * 1024;

    fn rows_per_task(elements_per_row: usize) -> usize {
        (CHUNK / elements_per_row.max(1)).max(1)
    }

    /// `(n, g)` with `x = n·ln 2 + g`, `n` an integer and `|g| ≤ ln 2 / 2`, for
    /// `-87 ≤ x ≤ 0`. Cody and Waite's two-part ln 2 (its high part has 9 significant bits,
    /// so `n·LN2_HI` and the first subtraction are exact) keeps `g` exact to f32 rounding even
    /// where `|x|` is large.
    #[inline(always)]
    fn reduce(x: f32) -> (i32, f32) {
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        // Round x·log2(e) to the nearest integer by adding 1.5·2^23 (the integer lands in the
        // low mantissa bits): plain arithmetic, so the loops vectorise.
        const SHIFT: f32 = 12_582_912.0;
        let shifted = x * std::f32::consts::LOG2_E + SHIFT;
        let n = shifted - SHIFT;
        let g = (x - n * LN2_HI) - n * LN2_LO;
        (shifted.to_bits() as i32 - SHIFT.to_bits() as i32, g)
    }

    /// `2^n` for `-126 ≤ n ≤ 127`.
    #[inline(always)]
    fn pow2(n: i32) -> f32 {
        f32::from_bits(((n + 127) as u32) << 23)
    }

    /// `(e^g - 1) / g` for `|g| ≤ 0.35`: its Taylor series to `g^7` (coefficients `1/(k+1)!`),
    /// error below 1e-8 relative.
    #[inline(always)]
    fn expm1_over(g: f32) -> f32 {
        const C: [f32; 8] = [
            1.0,
            1.0 / 2.0,
            1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 120.0,
            1.0 / 720.0,
            1.0 / 5040.0,
            1.0 / 40320.0,
        ];
        C.iter().rev().fold(0.0, |e, &c| e * g + c)
    }

    /// The argument clamped to exp's f32 range `[-87, 0]` by comparisons that let NaN through
    /// (`f32::max` would turn it into -87 and hide it).
    #[inline(always)]
    fn clamp_nonpositive(x: f32) -> f32 {
        if x < -87.0 { -87.0 } else { x }
    }

    /// `e^x - 1` for `x ≤ 0` (below -87 as at -87), relative error a few ulps: near 0 it is
    /// `g·(1 + g/2 + …)` itself, with no cancellation.
    #[inline(always)]
    fn expm1_nonpositive(x: f32) -> f32 {
        let (n, g) = reduce(clamp_nonpositive(x));
        let scale = pow2(n);
        scale * (g * expm1_over(g)) + (scale - 1.0)
    }

    /// `e^x` for `x ≤ 0` (below -87 as at -87).
    #[inline(always)]
    fn exp_nonpositive(x: f32) -> f32 {
        let (n, g) = reduce(clamp_nonpositive(x));
        pow2(n) * (1.0 + g * expm1_over(g))
    }

    /// The logistic function in plain arithmetic (libm's `expf` is a call per element, which
    /// keeps the loop scalar); relative error a few ulps.
    #[inline(always)]
    pub(super) fn sigmoid(x: f32) -> f32 {
        // e^-|x| ≤ 1: 1/(1+e) for x ≥ 0 and e/(1+e) below, neither overflowing nor cancelling.
        let e = exp_nonpositive(-x.abs());
        let s = 1.0 / (1.0 + e);
        if x >= 0.0 { s } else { e * s }
    }

    /// `tanh` in plain arithmetic: `tanh|x| = -m / (2 + m)` with `m = e^(-2|x|) - 1`, precise
    /// near 0 because `m` is; relative error a few ulps.
    #[inline(always)]
    pub(super) fn tanh(x: f32) -> f32 {
        let m = expm1_nonpositive(-2.0 * x.abs());
        (-m / (2.0 + m)).copysign(x)
    }

    /// A 2-D f32 tensor's rows: read in place when each row is contiguous (a time step's view
    /// of the whole sequence's projection, an LSTM cell cut from the last step's output),
    /// otherwise from a contiguous copy.
    struct Rows<'a> {
        values: Cow<'a, [f32]>,
        offset: usize,
        stride: usize,
        width: usize,
    }

    impl<'a> Rows<'a> {
        fn new(tensor: &'a FlexTensor) -> Self {
            let layout = tensor.layout();
            if let Some((rows, width, outer, inner)) = layout.as_2d_strides()
                && (inner == 1 || width <= 1)
                && (outer >= 0 || rows <= 1)
            {
                return Self {
                    values: Cow::Borrowed(tensor.storage::<f32>()),
                    offset: layout.start_offset(),
                    stride: if rows <= 1 { 0 } else { outer as usize },
                    width,
                };
            }
            let width = layout.shape().last().copied().unwrap_or(0);
            Self {
                values: contiguous(tensor),
                offset: 0,
                stride: width,
                width,
            }
        }

        #[inline]
        fn row(&self, i: usize) -> &[f32] {
            let start = self.offset + i * self.stride;
            &self.values[start..start + self.width]
        }
    }

    fn all_f32(tensors: &[&FlexTensor]) -> bool {
        tensors.iter().all(|t| t.dtype() == DType::F32)
    }

    fn tensor(values: Vec<f32>, rows: usize, width: usize) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, [rows, width]))
    }

    /// One GRU row: `gates` `[3w]` receives `r, z, n`, `out` `[w]` the new state.
    #[inline]
    fn gru_row(p: &[f32], s: &[f32], h: &[f32], keep: f32, out: &mut [f32], gates: &mut [f32]) {
        let w = h.len();
        let (p, s, out, gates) = (&p[..3 * w], &s[..3 * w], &mut out[..w], &mut gates[..3 * w]);
        for ((a, &p), &s) in gates[..2 * w].iter_mut().zip(&p[..2 * w]).zip(&s[..2 * w]) {
            *a = sigmoid(p + s);
        }
        let (rz, n) = gates.split_at_mut(2 * w);
        let (r, z) = rz.split_at(w);
        let (pn, sn) = (&p[2 * w..], &s[2 * w..]);
        for j in 0..w {
            let nj = tanh(pn[j] + r[j] * sn[j]);
            n[j] = nj;
            out[j] = nj + z[j] * (h[j] - nj);
        }
        blend(h, out, keep);
    }

    /// `out = old + keep·(out - old)`; a keep of 1 leaves `out` as computed.
    #[inline]
    fn blend(old: &[f32], out: &mut [f32], keep: f32) {
        if keep != 1.0 {
            for (y, &o) in out.iter_mut().zip(old) {
                *y = o + keep * (*y - o);
            }
        }
    }

    /// One GRU row's gradients (equations in `composed::gru_backward`).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn gru_row_backward(
        gates: &[f32],
        s: &[f32],
        h: &[f32],
        keep: f32,
        grad: &[f32],
        dp: &mut [f32],
        ds: &mut [f32],
        dh: &mut [f32],
    ) {
        let w = h.len();
        let (r, z, n) = (&gates[..w], &gates[w..2 * w], &gates[2 * w..3 * w]);
        let (sn, grad, dh) = (&s[2 * w..3 * w], &grad[..w], &mut dh[..w]);
        let (dp_r, rest) = dp[..3 * w].split_at_mut(w);
        let (dp_z, dp_n) = rest.split_at_mut(w);
        let (ds_r, rest) = ds[..3 * w].split_at_mut(w);
        let (ds_z, ds_n) = rest.split_at_mut(w);
        for j in 0..w {
            let (r, z, n) = (r[j], z[j], n[j]);
            let dnew = keep * grad[j];
            dh[j] = (grad[j] - dnew) + dnew * z;
            let dan = dnew * (1.0 - z) * (1.0 - n * n);
            let daz = dnew * (h[j] - n) * (z * (1.0 - z));
            let dar = dan * sn[j] * (r * (1.0 - r));
            (dp_r[j], dp_z[j], dp_n[j]) = (dar, daz, dan);
            (ds_r[j], ds_z[j], ds_n[j]) = (dar, daz, dan * r);
        }
    }

    /// One LSTM row: `saved` `[5w]` receives the activations and `tanh(c_new)`, `out` `[2w]`
    /// the blended `h'` and `c'`.
    #[inline]
    fn lstm_row(
        p: &[f32],
        s: &[f32],
        c: &[f32],
        h: &[f32],
        keep: f32,
        out: &mut [f32],
        saved: &mut [f32],
    ) {
        let w = h.len();
        let (acts, tc) = saved[..5 * w].split_at_mut(4 * w);
        for ((a, &p), &s) in acts.iter_mut().zip(&p[..4 * w]).zip(&s[..4 * w]) {
            *a = p + s;
        }
        for a in &mut acts[..2 * w] {
            *a = sigmoid(*a);
        }
        for a in &mut acts[2 * w..3 * w] {
            *a = tanh(*a);
        }
        for a in &mut acts[3 * w..] {
            *a = sigmoid(*a);
        }
        let (i, f, g, o) = (
            &acts[..w],
            &acts[w..2 * w],
            &acts[2 * w..3 * w],
            &acts[3 * w..],
        );
        let (out_h, out_c) = out[..2 * w].split_at_mut(w);
        let (c, tc) = (&c[..w], &mut tc[..w]);
        for j in 0..w {
            let c_new = f[j] * c[j] + i[j] * g[j];
            out_c[j] = c_new;
            tc[j] = tanh(c_new);
            out_h[j] = o[j] * tc[j];
        }
        blend(h, out_h, keep);
        blend(c, out_c, keep);
    }

    /// One LSTM row's gradients (equations in `composed::lstm_backward`).
    #[inline]
    fn lstm_row_backward(
        saved: &[f32],
        c: &[f32],
        keep: f32,
        grad: &[f32],
        dgates: &mut [f32],
        dc: &mut [f32],
        dh: &mut [f32],
    ) {
        let w = c.len();
        let act = |k: usize| &saved[k * w..(k + 1) * w];
        let (i, f, g, o, tc) = (act(0), act(1), act(2), act(3), act(4));
        let (grad_h, grad_c) = (&grad[..w], &grad[w..2 * w]);
        let (da_i, rest) = dgates[..4 * w].split_at_mut(w);
        let (da_f, rest) = rest.split_at_mut(w);
        let (da_g, da_o) = rest.split_at_mut(w);
        let (dc, dh) = (&mut dc[..w], &mut dh[..w]);
        for j in 0..w {
            let (i, f, g, o, t) = (i[j], f[j], g[j], o[j], tc[j]);
            let dh_new = keep * grad_h[j];
            let kept_c = keep * grad_c[j];
            let dc_new = kept_c + dh_new * o * (1.0 - t * t);
            da_i[j] = dc_new * g * (i * (1.0 - i));
            da_f[j] = dc_new * c[j] * (f * (1.0 - f));
            da_g[j] = dc_new * i * (1.0 - g * g);
            da_o[j] = dh_new * t * (o * (1.0 - o));
            dc[j] = (grad_c[j] - kept_c) + dc_new * f;
            dh[j] = grad_h[j] - dh_new;
        }
    }

    /// The GRU forward over all rows; `saved` `[rows, 3w]` when backward will need it.
    fn gru_forward(
        p: &FlexTensor,
        s: &FlexTensor,
        h: &FlexTensor,
        keep: &FlexTensor,
        save: bool,
    ) -> (FlexTensor, Option<FlexTensor>) {
        let [rows, w] = [h.layout().shape()[0], h.layout().shape()[1]];
        let (p, s, hr, k) = (Rows::new(p), Rows::new(s), Rows::new(h), Rows::new(keep));
        let per_task = rows_per_task(11 * w);
        let mut out = vec![0.0f32; rows * w];
        // Without backward, one row's gates at a time in a scratch buffer.
        let mut saved = vec![
            0.0f32;
            if save {
                rows * 3 * w
            } else {
                3 * w * out.len().div_ceil(per_task * w)
            }
        ];
        out.par_chunks_mut(per_task * w)
            .zip(saved.par_chunks_mut(if save { per_task * 3 * w } else { 3 * w }))
            .enumerate()
            .for_each(|(task, (out, gates))| {
                for (i, out) in out.chunks_exact_mut(w).enumerate() {
                    let row = task * per_task + i;
                    let gates = match save {
                        true => &mut gates[3 * w * i..3 * w * (i + 1)],
                        false => &mut *gates,
                    };
                    gru_row(
                        p.row(row),
                        s.row(row),
                        hr.row(row),
                        k.row(row)[0],
                        out,
                        gates,
                    );
                }
            });
        (
            tensor(out, rows, w),
            save.then(|| tensor(saved, rows, 3 * w)),
        )
    }

    /// The LSTM forward over all rows; `saved` `[rows, 5w]` when backward will need it.
    fn lstm_forward(
        p: &FlexTensor,
        s: &FlexTensor,
        c: &FlexTensor,
        h: &FlexTensor,
        keep: &FlexTensor,
        save: bool,
    ) -> (FlexTensor, Option<FlexTensor>) {
        let [rows, w] = [h.layout().shape()[0], h.layout().shape()[1]];
        let (p, s, cr, hr, k) = (
            Rows::new(p),
            Rows::new(s),
            Rows::new(c),
            Rows::new(h),
            Rows::new(keep),
        );
        let per_task = rows_per_task(15 * w);
        let mut out = vec![0.0f32; rows * 2 * w];
        let tasks = rows.div_ceil(per_task);
        let mut saved = vec![0.0f32; if save { rows * 5 * w } else { 5 * w * tasks }];
        out.par_chunks_mut(per_task * 2 * w)
            .zip(saved.par_chunks_mut(if save { per_task * 5 * w } else { 5 * w }))
            .enumerate()
            .for_each(|(task, (out, acts))| {
                for (i, out) in out.chunks_exact_mut(2 * w).enumerate() {
                    let row = task * per_task + i;
                    let acts = match save {
                        true => &mut acts[5 * w * i..5 * w * (i + 1)],
                        false => &mut *acts,
                    };
                    let (p, s, c, h) = (p.row(row), s.row(row), cr.row(row), hr.row(row));
                    lstm_row(p, s, c, h, k.row(row)[0], out, acts);
                }
            });
        (
            tensor(out, rows, 2 * w),
            save.then(|| tensor(saved, rows, 5 * w)),
        )
    }

    /// Flex's shapes the kernels take: f32 throughout and no empty dimension (the parallel
    /// chunks need a positive size).
    fn usable(tensors: &[&FlexTensor], h: &FlexTensor) -> bool {
        let shape = h.layout().shape();
        all_f32(tensors) && shape.num_dims() == 2 && shape[0] > 0 && shape[1] > 0
    }

    impl RnnCellOps for Flex {
        fn fused_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
            if x.dtype() != DType::F32 {
                return Self::float_tanh(x);
            }
            let input = contiguous(&x);
            map_parallel(x.layout().shape().clone(), |start, out| {
                for (y, &x) in out.iter_mut().zip(&input[start..]) {
                    y.write(tanh(x));
                }
            })
        }

        fn fused_tanh_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            if !all_f32(&[&y, &grad]) || y.layout().shape() != grad.layout().shape() {
                return super::composed::tanh_backward::<Self>(y, grad);
            }
            let (output, upstream) = (contiguous(&y), contiguous(&grad));
            map_parallel(y.layout().shape().clone(), |start, out| {
                let pairs = output[start..].iter().zip(&upstream[start..]);
                for (dx, (&y, &g)) in out.iter_mut().zip(pairs) {
                    dx.write(g * (1.0 - y * y));
                }
            })
        }

        fn fused_gru(
            p: FloatTensor<Self>,
            s: FloatTensor<Self>,
            h: FloatTensor<Self>,
            keep: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            if !usable(&[&p, &s, &h, &keep], &h) {
                return super::composed::gru_forward::<Self>(p, s, h, keep).0;
            }
            gru_forward(&p, &s, &h, &keep, false).0
        }

        fn fused_gru_saving(
            p: FloatTensor<Self>,
            s: FloatTensor<Self>,
            h: FloatTensor<Self>,
            keep: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            if !usable(&[&p, &s, &h, &keep], &h) {
                return super::composed::gru_forward::<Self>(p, s, h, keep);
            }
            let (out, saved) = gru_forward(&p, &s, &h, &keep, true);
            (out, saved.expect("asked to save"))
        }

        fn fused_gru_backward(
            saved: FloatTensor<Self>,
            s: FloatTensor<Self>,
            h: FloatTensor<Self>,
            keep: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            if !usable(&[&saved, &s, &h, &keep, &grad], &h) {
                return super::composed::gru_backward::<Self>(saved, s, h, keep, grad);
            }
            let [rows, w] = [h.layout().shape()[0], h.layout().shape()[1]];
            let (saved, s, hr, k, grad) = (
                Rows::new(&saved),
                Rows::new(&s),
                Rows::new(&h),
                Rows::new(&keep),
                Rows::new(&grad),
            );
            let per_task = rows_per_task(12 * w);
            let (mut dp, mut ds) = (vec![0.0f32; rows * 3 * w], vec![0.0f32; rows * 3 * w]);
            let mut dh = vec![0.0f32; rows * w];
            dp.par_chunks_mut(per_task * 3 * w)
                .zip(ds.par_chunks_mut(per_task * 3 * w))
                .zip(dh.par_chunks_mut(per_task * w))
                .enumerate()
                .for_each(|(task, ((dp, ds), dh))| {
                    let rows = dp
                        .chunks_exact_mut(3 * w)
                        .zip(ds.chunks_exact_mut(3 * w))
                        .zip(dh.chunks_exact_mut(w));
                    for (i, ((dp, ds), dh)) in rows.enumerate() {
                        let row = task * per_task + i;
                        gru_row_backward(
                            saved.row(row),
                            s.row(row),
                            hr.row(row),
                            k.row(row)[0],
                            grad.row(row),
                            dp,
                            ds,
                            dh,
                        );
                    }
                });
            (
                tensor(dp, rows, 3 * w),
                tensor(ds, rows, 3 * w),
                tensor(dh, rows, w),
            )
        }

        fn fused_lstm(
            p: FloatTensor<Self>,
            s: FloatTensor<Self>,
            c: FloatTensor<Self>,
            h: FloatTensor<Self>,
            keep: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            if !usable(&[&p, &s, &c, &h, &keep], &h) {
                return super::composed::lstm_forward::<Self>(p, s, c, h, keep).0;
            }
            lstm_forward(&p, &s, &c, &h, &keep, false).0
        }

        fn fused_lstm_saving(
            p: FloatTensor<Self>,
            s: FloatTensor<Self>,
            c: FloatTensor<Self>,
            h: FloatTensor<Self>,
            keep: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            if !usable(&[&p, &s, &c, &h, &keep], &h) {
                return super::composed::lstm_forward::<Self>(p, s, c, h, keep);
            }
            let (out, saved) = lstm_forward(&p, &s, &c, &h, &keep, true);
            (out, saved.expect("asked to save"))
        }

        fn fused_lstm_backward(
            saved: FloatTensor<Self>,
            c: FloatTensor<Self>,
            keep: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            if !usable(&[&saved, &c, &keep, &grad], &c) {
                return super::composed::lstm_backward::<Self>(saved, c, keep, grad);
            }
            let [rows, w] = [c.layout().shape()[0], c.layout().shape()[1]];
            let (saved, cr, k, grad) = (
                Rows::new(&saved),
                Rows::new(&c),
                Rows::new(&keep),
                Rows::new(&grad),
            );
            let per_task = rows_per_task(14 * w);
            let mut dgates = vec![0.0f32; rows * 4 * w];
            let (mut dc, mut dh) = (vec![0.0f32; rows * w], vec![0.0f32; rows * w]);
            dgates
                .par_chunks_mut(per_task * 4 * w)
                .zip(dc.par_chunks_mut(per_task * w))
                .zip(dh.par_chunks_mut(per_task * w))
                .enumerate()
                .for_each(|(task, ((dg, dc), dh))| {
                    let rows = dg
                        .chunks_exact_mut(4 * w)
                        .zip(dc.chunks_exact_mut(w))
                        .zip(dh.chunks_exact_mut(w));
                    for (i, ((dg, dc), dh)) in rows.enumerate() {
                        let row = task * per_task + i;
                        let (saved, c, keep) = (saved.row(row), cr.row(row), k.row(row)[0]);
                        lstm_row_backward(saved, c, keep, grad.row(row), dg, dc, dh);
                    }
                });
            (
                tensor(dgates, rows, 4 * w),
                tensor(dc, rows, w),
                tensor(dh, rows, w),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::sigmoid;
    use burn::tensor::{DType, Device, Distribution, TensorData};

    /// Within 1e-5 relative; elements near zero within 1e-5 of the tensor's largest, since the
    /// two evaluation orders round differently (`Tolerance::rel_abs`, naming the case).
    fn close(what: &str, ours: Tensor<2>, theirs: Tensor<2>) {
        assert_eq!(ours.dims(), theirs.dims(), "{what}: shapes");
        let values = |t: Tensor<2>| t.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
        let (ours, theirs) = (values(ours), values(theirs));
        let largest = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
            let bound = 1e-5 * b.abs() + 1e-5 * largest.max(1e-3);
            assert!(
                (a - b).abs() <= bound,
                "{what}: element {i} is {a}, Burn's {b} (largest {largest})"
            );
        }
    }

    /// The step as `Recurrent::step` composed it from Burn's operations before the fused cell.
    fn reference_gru(
        p: Tensor<2>,
        s: Tensor<2>,
        h: Tensor<2>,
        keep: Option<Tensor<2>>,
    ) -> Tensor<2> {
        let w = h.dims()[1];
        let r = sigmoid(p.clone().narrow(1, 0, w) + s.clone().narrow(1, 0, w));
        let z = sigmoid(p.clone().narrow(1, w, w) + s.clone().narrow(1, w, w));
        let n = (p.narrow(1, 2 * w, w) + r * s.narrow(1, 2 * w, w)).tanh();
        let new = n.clone() + z * (h.clone() - n);
        match keep {
            None => new,
            Some(keep) => h.clone() + keep * (new - h),
        }
    }

    fn reference_lstm(
        p: Tensor<2>,
        s: Tensor<2>,
        c: Tensor<2>,
        h: Tensor<2>,
        keep: Option<Tensor<2>>,
    ) -> (Tensor<2>, Tensor<2>) {
        let w = h.dims()[1];
        let gates = p + s;
        let i = sigmoid(gates.clone().narrow(1, 0, w));
        let f = sigmoid(gates.clone().narrow(1, w, w));
        let g = gates.clone().narrow(1, 2 * w, w).tanh();
        let o = sigmoid(gates.narrow(1, 3 * w, w));
        let c_new = f * c.clone() + i * g;
        let h_new = o * c_new.clone().tanh();
        match keep {
            None => (h_new, c_new),
            Some(keep) => (
                h.clone() + keep.clone() * (h_new - h),
                c.clone() + keep * (c_new - c),
            ),
        }
    }

    /// The inputs of a few chained steps, as leaves for gradients: projections `[rows, T, G]`
    /// (each step reads a strided view of them), a state matrix, the initial state and cell.
    /// Strided: the initial state a transposed view, the cell a narrowed one.
    struct Leaves {
        p: Tensor<3>,
        s: Tensor<3>,
        weight: Tensor<2>,
        h: Tensor<2>,
        c: Tensor<2>,
        strided: bool,
    }

    impl Leaves {
        fn new(
            rows: usize,
            w: usize,
            gates: usize,
            steps: usize,
            strided: bool,
            dtype: DType,
            device: &Device,
        ) -> Self {
            let normal = |shape: [usize; 3], sd: f64| {
                Tensor::<3>::random(shape, Distribution::Normal(0.0, sd), device).cast(dtype)
            };
            let (h, c) = if strided {
                (
                    normal([1, w, rows], 1.0).squeeze_dim::<2>(0),
                    normal([1, rows, w + 3], 1.5).squeeze_dim::<2>(0),
                )
            } else {
                (
                    normal([1, rows, w], 1.0).squeeze_dim::<2>(0),
                    normal([1, rows, w], 1.5).squeeze_dim::<2>(0),
                )
            };
            Self {
                // Wide enough that gates saturate on both sides.
                p: normal([rows, steps, gates * w], 2.5).require_grad(),
                s: normal([rows, steps, gates * w], 1.0).require_grad(),
                weight: normal([1, w, gates * w], 0.3)
                    .squeeze_dim::<2>(0)
                    .require_grad(),
                h: h.require_grad(),
                c: c.require_grad(),
                strided,
            }
        }

        fn inner(&self) -> Self {
            Self {
                p: self.p.clone().inner(),
                s: self.s.clone().inner(),
                weight: self.weight.clone().inner(),
                h: self.h.clone().inner(),
                c: self.c.clone().inner(),
                strided: self.strided,
            }
        }

        fn initial(&self) -> (Tensor<2>, Tensor<2>) {
            match self.strided {
                true => {
                    let w = self.h.dims()[0];
                    (
                        self.h.clone().swap_dims(0, 1),
                        self.c.clone().narrow(1, 3, w),
                    )
                }
                false => (self.h.clone(), self.c.clone()),
            }
        }

        /// Every step's state `[rows, T·w]` and the last cell (`lstm`), fused or composed.
        fn run(&self, lstm: bool, fused: bool, keep: Option<&Tensor<2>>) -> (Tensor<2>, Tensor<2>) {
            let (mut h, mut c) = self.initial();
            let mut states = vec![];
            for t in 0..self.p.dims()[1] {
                let at = |x: &Tensor<3>| x.clone().narrow(1, t, 1).squeeze_dim::<2>(1);
                // The first step reads a strided view directly; later ones the state's matmul.
                let s = match t {
                    0 => at(&self.s),
                    _ => h.clone().matmul(self.weight.clone()) + at(&self.s),
                };
                let (p, k) = (at(&self.p), keep.cloned());
                (h, c) = match (lstm, fused) {
                    (true, true) => lstm_cell(p, s, c, h, k),
                    (true, false) => reference_lstm(p, s, c, h, k),
                    (false, true) => (gru_cell(p, s, h, k), c),
                    (false, false) => (reference_gru(p, s, h, k), c),
                };
                states.push(h.clone());
            }
            (Tensor::cat(states, 1), c)
        }
    }

    /// A keep-mask with rows kept, rows held (0) and one half-blended row.
    fn keep_mask(rows: usize, dtype: DType, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = (0..rows)
            .map(|i| match i % 4 {
                1 => 0.0,
                3 if i == 3 => 0.5,
                _ => 1.0,
            })
            .collect();
        Tensor::<2>::from_data(TensorData::new(values, [rows, 1]), device).cast(dtype)
    }

    /// One case of the comparisons with Burn's composition.
    struct Case {
        rows: usize,
        w: usize,
        dtype: DType,
        lstm: bool,
        strided: bool,
        masked: bool,
    }

    impl Case {
        fn check(&self, device: &Device) {
            let Case {
                rows,
                w,
                dtype,
                lstm,
                strided,
                masked,
            } = *self;
            let name = format!(
                "{} rows {rows} w {w} {dtype:?} strided {strided} masked {masked}",
                if lstm { "LSTM" } else { "GRU" }
            );
            let (gates, steps) = (if lstm { 4 } else { 3 }, if strided { 3 } else { 1 });
            let leaves = Leaves::new(rows, w, gates, steps, strided, dtype, device);
            let keep = masked.then(|| keep_mask(rows, dtype, device));
            let (h_ours, c_ours) = leaves.run(lstm, true, keep.as_ref());
            let (h_theirs, c_theirs) = leaves.run(lstm, false, keep.as_ref());
            close(&format!("{name}: h"), h_ours.clone(), h_theirs.clone());
            close(&format!("{name}: c"), c_ours.clone(), c_theirs.clone());

            // Without autodiff.
            let keep_plain = keep.as_ref().map(|k| k.clone().inner());
            let (h_plain, c_plain) = leaves.inner().run(lstm, true, keep_plain.as_ref());
            close(
                &format!("{name}: plain h"),
                h_plain,
                h_theirs.clone().inner(),
            );
            close(
                &format!("{name}: plain c"),
                c_plain,
                c_theirs.clone().inner(),
            );

            // Weight each output differently so a gradient in the wrong place shows.
            let weights = |like: &Tensor<2>| {
                Tensor::<2>::random(like.dims(), Distribution::Normal(0.0, 1.0), device).cast(dtype)
            };
            let (wh, wc) = (weights(&h_ours), weights(&c_ours));
            let loss = |h: Tensor<2>, c: Tensor<2>| match lstm {
                true => (h * wh.clone()).sum() + (c * wc.clone()).sum(),
                false => (h * wh.clone()).sum(),
            };
            let ours = loss(h_ours, c_ours).backward();
            let theirs = loss(h_theirs, c_theirs).backward();
            // An input one side does not use (the first state of a one-step LSTM without a
            // mask) has no gradient there and zeros on the other.
            let pair = |leaf: &Tensor<2>, ours, theirs| {
                let zeros = || leaf.clone().inner().zeros_like();
                let grad = |g: Option<Tensor<2>>| g.map(|g| g.inner()).unwrap_or_else(zeros);
                (grad(ours), grad(theirs))
            };
            let flat =
                |leaf: &Tensor<3>, grads| leaf.grad(grads).map(|g: Tensor<3>| g.flatten::<2>(1, 2));
            let (p, s) = (
                leaves.p.clone().flatten::<2>(1, 2),
                leaves.s.clone().flatten::<2>(1, 2),
            );
            let gradients = [
                (
                    "p",
                    pair(&p, flat(&leaves.p, &ours), flat(&leaves.p, &theirs)),
                ),
                (
                    "s",
                    pair(&s, flat(&leaves.s, &ours), flat(&leaves.s, &theirs)),
                ),
                (
                    "W",
                    pair(
                        &leaves.weight,
                        leaves.weight.grad(&ours),
                        leaves.weight.grad(&theirs),
                    ),
                ),
                (
                    "h0",
                    pair(&leaves.h, leaves.h.grad(&ours), leaves.h.grad(&theirs)),
                ),
                (
                    "c0",
                    pair(&leaves.c, leaves.c.grad(&ours), leaves.c.grad(&theirs)),
                ),
            ];
            assert!(leaves.p.grad(&ours).is_some(), "{name}: no gradient");
            for (input, (ours, theirs)) in gradients {
                close(&format!("{name}: d{input}"), ours, theirs);
            }
        }
    }

    /// Every case of one cell in one float type: with and without a keep-mask, contiguous
    /// inputs over one step and strided ones over three chained steps; 150 rows of 37 spread
    /// over several parallel tasks, and odd widths leave loop remainders.
    fn check_cell(lstm: bool, dtype: DType) {
        let device = Device::flex().autodiff();
        for (rows, w) in [(5, 8), (150, 37)] {
            for strided in [false, true] {
                for masked in [false, true] {
                    let case = Case {
                        rows,
                        w,
                        dtype,
                        lstm,
                        strided,
                        masked,
                    };
                    case.check(&device);
                }
            }
        }
    }

    // Values and the gradients of every input equal Burn's composition, with autodiff (the
    // fused backward) and without: f32 runs the flex kernel, f64 the composition of Burn's
    // operations that other backends run.

    #[test]
    fn gru_matches_burns_composition_and_its_gradients() {
        check_cell(false, DType::F32);
    }

    #[test]
    fn lstm_matches_burns_composition_and_its_gradients() {
        check_cell(true, DType::F32);
    }

    #[test]
    fn composed_gru_matches_burns_composition_and_its_gradients() {
        check_cell(false, DType::F64);
    }

    #[test]
    fn composed_lstm_matches_burns_composition_and_its_gradients() {
        check_cell(true, DType::F64);
    }

    /// The differentiable tanh equals Burn's, values and gradient, in a transposed view too.
    #[test]
    fn tanh_matches_burns() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::random([7, 9, 33], Distribution::Normal(0.0, 2.0), &device);
        for x in [x.clone(), x.swap_dims(0, 2)] {
            let (ours, theirs) = (x.clone().require_grad(), x.require_grad());
            let (y_ours, y_theirs) = (tanh(ours.clone()), theirs.clone().tanh());
            let flat = |t: Tensor<3>| t.flatten::<2>(1, 2);
            close("tanh", flat(y_ours.clone()), flat(y_theirs.clone()));
            close(
                "plain tanh",
                flat(tanh(ours.clone().inner())),
                flat(y_theirs.clone().inner()),
            );
            let weights = y_ours.random_like(Distribution::Normal(0.0, 1.0));
            let g_ours = (y_ours * weights.clone()).sum().backward();
            let g_theirs = (y_theirs * weights).sum().backward();
            let grad = |t: &Tensor<3>, g| flat(t.grad(g).unwrap());
            close("d tanh", grad(&ours, &g_ours), grad(&theirs, &g_theirs));
        }
    }

    /// The kernel's sigmoid and tanh against f64 over their whole range, within 1e-6 relative
    /// (about 8 f32 ulps) wherever the result is a normal f32.
    #[cfg(feature = "flex")]
    #[test]
    fn fast_sigmoid_and_tanh_are_accurate() {
        use super::flex_kernel::{sigmoid, tanh};
        let mut worst = (0.0f64, 0.0f64);
        let mut x = -80.0f32;
        let mut check = |x: f32| {
            let exact_sigmoid = 1.0 / (1.0 + (-(x as f64)).exp());
            let exact_tanh = (x as f64).tanh();
            let rel = |ours: f32, exact: f64| {
                if exact == 0.0 {
                    ours.abs() as f64
                } else {
                    ((ours as f64 - exact) / exact).abs()
                }
            };
            worst.0 = worst.0.max(rel(sigmoid(x), exact_sigmoid));
            worst.1 = worst.1.max(rel(tanh(x), exact_tanh));
        };
        while x < 80.0 {
            check(x);
            x += 1.3e-3;
        }
        for x in [
            0.0, 1e-30, -1e-30, 1e-7, -1e-7, 1e-4, -3e-3, 0.34, 0.35, 0.5, 0.69, 9.0, 20.0,
        ] {
            check(x);
        }
        assert!(worst.0 < 1e-6, "sigmoid: worst relative error {}", worst.0);
        assert!(worst.1 < 1e-6, "tanh: worst relative error {}", worst.1);
        assert!(sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!((tanh(f32::INFINITY), tanh(f32::NEG_INFINITY)), (1.0, -1.0));
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert!(sigmoid(-200.0) < 1e-37);
    }
}
