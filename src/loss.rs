//! Losses shared by every task.
//!
//! The cross-entropy is a custom Burn operation with its own gradient: on the default CPU
//! backend one pass over each row of logits gives the smoothed loss and the NLL (max,
//! log-sum-exp, target logit, mean logit), and one pass gives the logits' gradient
//! (`softmax - smoothed target`, times the row's upstream gradients), the rows spread over the
//! CPU pool. Burn's autodiff recorded about a dozen full-size operations for it (log-softmax,
//! gather, mean, their backward). Every other backend composes Burn's operations.

// NdArray is deprecated by Burn but stays selectable (src/backend.rs); the extension names it.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::prelude::*;

/// Cross-entropy of `logits` `[n, classes]` against `targets` `[n]`, with label smoothing;
/// positions whose target is `ignore` (padding) count for nothing.
///
/// Returns `(loss, nll)`, means over the counted positions: the smoothed loss that is optimised,
/// and the plain negative log-likelihood that perplexity and comparisons use (equal when
/// `smoothing` is 0). With smoothing ε the target distribution is `(1 - ε)` on the label plus
/// `ε / classes` on every class, as in `torch.nn.CrossEntropyLoss(label_smoothing=ε,
/// ignore_index=ignore)`.
pub fn cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    smoothing: f64,
    ignore: Option<u32>,
) -> (Tensor<1>, Tensor<1>) {
    let keep = ignore.map(|pad| targets.clone().not_equal_elem(pad as i64).float());
    cross_entropy_kept(logits, targets, smoothing, keep)
}

/// [`cross_entropy`] counting only the positions where `keep` `[n]` is 1 (all when `None`).
pub fn cross_entropy_kept(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    smoothing: f64,
    keep: Option<Tensor<1>>,
) -> (Tensor<1>, Tensor<1>) {
    let n = targets.dims()[0];
    // Backend extensions take no optional tensors: no mask keeps every row.
    let weights = keep
        .clone()
        .unwrap_or_else(|| Tensor::ones([n], &logits.device()));
    // Columns: each row's smoothed loss and NLL, times its keep weight.
    let each = Tensor::<2>::from_dispatch(<Dispatch as CrossEntropyOps>::fused_cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
        weights.into_dispatch(),
        smoothing,
    ));
    let column = |c: usize| each.clone().slice([0..n, c..c + 1]).squeeze_dim::<1>(1);
    let mean = |weighted: Tensor<1>| match &keep {
        None => weighted.mean(),
        // Clamped so a batch of padding only gives 0, not NaN.
        Some(keep) => weighted.sum() / keep.clone().sum().clamp_min(1.0),
    };
    let nll = mean(column(1));
    if smoothing == 0.0 {
        return (nll.clone(), nll);
    }
    (mean(column(0)), nll)
}

/// The operation and its gradient, per backend. The default bodies are Burn's operations.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait CrossEntropyOps: Backend {
    /// `[n, 2]`: row `i`'s smoothed loss and NLL against `targets[i]`, each times `keep[i]`.
    /// Rows whose `keep` is 0 may have any target.
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        keep: FloatTensor<Self>,
        smoothing: f64,
    ) -> FloatTensor<Self> {
        Self::fused_cross_entropy_saving(logits, targets, keep, smoothing).0
    }

    /// The output and each row's log-sum-exp of the logits (for backward), in a layout of the
    /// backend's choosing.
    fn fused_cross_entropy_saving(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        keep: FloatTensor<Self>,
        smoothing: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed::forward::<Self>(logits, targets, keep, smoothing)
    }

    /// The logits' gradient for the upstream gradient `grad` `[n, 2]` of the output.
    fn fused_cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        keep: FloatTensor<Self>,
        log_sum_exp: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        smoothing: f64,
    ) -> FloatTensor<Self> {
        composed::backward::<Self>(logits, targets, keep, log_sum_exp, grad, smoothing)
    }
}

#[cfg(feature = "ndarray")]
impl CrossEntropyOps for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl CrossEntropyOps for burn::backend::LibTorch {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl CrossEntropyOps for burn::backend::Cube {}

impl<B: CrossEntropyOps, C: CheckpointStrategy> CrossEntropyOps for Autodiff<B, C> {
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        keep: FloatTensor<Self>,
        smoothing: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct CrossEntropyBackward;

        impl<B: CrossEntropyOps> Backward<B, 1> for CrossEntropyBackward {
            /// Logits, targets, keep weights, log-sum-exps, smoothing.
            type State = (
                FloatTensor<B>,
                IntTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                f64,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (logits, targets, keep, lse, smoothing) = ops.state;
                if let Some(parent) = parent {
                    let d = B::fused_cross_entropy_backward(
                        logits, targets, keep, lse, grad, smoothing,
                    );
                    grads.register::<B>(parent.id, d);
                }
            }
        }

        // The keep weights are a mask, not a parameter: no gradient flows to them.
        let keep = keep.into_primitive();
        match CrossEntropyBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let logits = logits.into_primitive();
                let (output, lse) = B::fused_cross_entropy_saving(
                    logits.clone(),
                    targets.clone(),
                    keep.clone(),
                    smoothing,
                );
                prep.finish((logits, targets, keep, lse, smoothing), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_cross_entropy(
                logits.into_primitive(),
                targets,
                keep,
                smoothing,
            )),
        }
    }
}

/// Burn's operations, for every backend without a kernel of its own.
mod composed {
    use super::*;
    use burn::tensor::{IndexingUpdateOp, Shape, Slice};

    /// `log_softmax` and `gather` as in Burn's cross-entropy; statistics `[n, 1]`.
    pub fn forward<B: Backend>(
        logits: FloatTensor<B>,
        targets: IntTensor<B>,
        keep: FloatTensor<B>,
        smoothing: f64,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let n = logits.shape()[0];
        let max = B::float_max_dim(logits.clone(), 1);
        let shifted = B::float_sub(logits.clone(), max.clone());
        let sum = B::float_sum_dim(B::float_exp(shifted), 1);
        let lse = B::float_add(B::float_log(sum), max);
        let target = B::float_gather(
            1,
            logits.clone(),
            B::int_reshape(targets, Shape::from([n, 1])),
        );
        let nll = B::float_sub(lse.clone(), target);
        let loss = if smoothing == 0.0 {
            nll.clone()
        } else {
            let uniform = B::float_sub(lse.clone(), B::float_mean_dim(logits, 1));
            B::float_add(
                B::float_mul_scalar(nll.clone(), (1.0 - smoothing).into()),
                B::float_mul_scalar(uniform, smoothing.into()),
            )
        };
        let keep = B::float_reshape(keep, Shape::from([n, 1]));
        (B::float_mul(B::float_cat(vec![loss, nll], 1), keep), lse)
    }

    /// `(g₀ + g₁)·softmax - g₀·ε/classes - (g₀·(1 - ε) + g₁)·onehot(target)`, with `g₀, g₁`
    /// the row's upstream gradients of loss and NLL times its keep weight.
    pub fn backward<B: Backend>(
        logits: FloatTensor<B>,
        targets: IntTensor<B>,
        keep: FloatTensor<B>,
        lse: FloatTensor<B>,
        grad: FloatTensor<B>,
        smoothing: f64,
    ) -> FloatTensor<B> {
        let [n, classes] = logits.shape().dims();
        let probs = B::float_exp(B::float_sub(logits, lse));
        let grad = B::float_mul(grad, B::float_reshape(keep, Shape::from([n, 1])));
        let column = |c: isize| {
            let rows = Slice::new(0, Some(n as isize), 1);
            B::float_slice(grad.clone(), &[rows, Slice::new(c, Some(c + 1), 1)])
        };
        let (g_loss, g_nll) = (column(0), column(1));
        let both = B::float_add(g_loss.clone(), g_nll.clone());
        let spread = B::float_mul_scalar(g_loss.clone(), (smoothing / classes as f64).into());
        let d = B::float_sub(B::float_mul(probs, both), spread);
        let on_target = B::float_neg(B::float_add(
            B::float_mul_scalar(g_loss, (1.0 - smoothing).into()),
            g_nll,
        ));
        let indices = B::int_reshape(targets, Shape::from([n, 1]));
        B::float_scatter(1, d, indices, on_target, IndexingUpdateOp::Add)
    }
}

#[cfg(feature = "flex")]
mod flex_kernel {
    use super::CrossEntropyOps;
    use crate::models::gelu::{contiguous, exp_nonpositive, fully_written};
    use crate::models::layer_norm::lane_sum;
    use crate::models::vectorised::vectorised;
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::{FloatTensor, IntTensor};
    use burn::tensor::{DType, TensorData};
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    /// Elements per parallel task (whole rows).
    const CHUNK: usize = 8 * 1024;

    /// The row's maximum in 8 running maxima, so that the loop vectorises (NaN is caught by
    /// the caller's mean).
    fn lane_max(row: &[f32]) -> f32 {
        const LANES: usize = 8;
        let chunks = row.chunks_exact(LANES);
        let tail = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut maxima = [f32::NEG_INFINITY; LANES];
        for chunk in chunks {
            for lane in 0..LANES {
                maxima[lane] = if chunk[lane] > maxima[lane] {
                    chunk[lane]
                } else {
                    maxima[lane]
                };
            }
        }
        maxima.iter().fold(tail, |m, &v| m.max(v))
    }

    /// The targets as indices, or `None` for an integer type the kernel does not read.
    fn indices(targets: &FlexTensor) -> Option<Vec<i64>> {
        let targets = targets.to_contiguous();
        match targets.dtype() {
            DType::I64 => Some(targets.storage::<i64>().to_vec()),
            DType::I32 => Some(targets.storage::<i32>().iter().map(|&t| t as i64).collect()),
            _ => None,
        }
    }

    /// Row `row`'s target as a class index; a kept row's target must be a class.
    fn class(target: i64, row: usize, classes: usize) -> usize {
        assert!(
            (0..classes as i64).contains(&target),
            "cross-entropy: target {target} of row {row} is not a class id (0..{classes}); \
             check the vocabulary or label set the batch was built with"
        );
        target as usize
    }

    /// The shape `[rows, classes]` with f32 logits and keep weights, or `None`.
    fn f32_rows(logits: &FlexTensor, keep: &FlexTensor) -> Option<(usize, usize)> {
        let shape = logits.layout().shape();
        let f32s = logits.dtype() == DType::F32 && keep.dtype() == DType::F32;
        (f32s && shape.num_dims() == 2 && shape[1] > 0).then(|| (shape[0], shape[1]))
    }

    impl CrossEntropyOps for Flex {
        fn fused_cross_entropy_saving(
            logits: FloatTensor<Self>,
            targets: IntTensor<Self>,
            keep: FloatTensor<Self>,
            smoothing: f64,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let (Some((rows, classes)), Some(target_ids)) =
                (f32_rows(&logits, &keep), indices(&targets))
            else {
                return super::composed::forward::<Self>(logits, targets, keep, smoothing);
            };
            let (values, weights) = (contiguous(&logits), contiguous(&keep));
            let (eps, per_task) = (smoothing as f32, (CHUNK / classes).max(1));
            let (mut output, mut lse) = (vec![0.0f32; rows * 2], vec![0.0f32; rows]);
            output
                .par_chunks_mut(per_task * 2)
                .zip(lse.par_chunks_mut(per_task))
                .enumerate()
                .for_each(|(task, (out, lse))| {
                    vectorised(
                        #[inline(always)]
                        || {
                            for (i, (out, lse)) in out.chunks_exact_mut(2).zip(lse).enumerate() {
                                let row = task * per_task + i;
                                let weight = weights[row];
                                if weight == 0.0 {
                                    continue; // ignored: no target read, zeros out
                                }
                                let x = &values[row * classes..(row + 1) * classes];
                                let max = lane_max(x);
                                let sum = lane_sum(x, x, x, |v, _, _| exp_nonpositive(v - max));
                                let mean = lane_sum(x, x, x, |v, _, _| v) / classes as f32;
                                // A NaN logit shows in the loss (the fast exp would hide it).
                                *lse = if mean.is_nan() {
                                    f32::NAN
                                } else {
                                    max + sum.ln()
                                };
                                let nll = *lse - x[class(target_ids[row], row, classes)];
                                let loss = (1.0 - eps) * nll + eps * (*lse - mean);
                                out.copy_from_slice(&[weight * loss, weight * nll]);
                            }
                        },
                    )
                });
            (
                FlexTensor::from_data(TensorData::new(output, [rows, 2])),
                FlexTensor::from_data(TensorData::new(lse, [rows])),
            )
        }

        fn fused_cross_entropy_backward(
            logits: FloatTensor<Self>,
            targets: IntTensor<Self>,
            keep: FloatTensor<Self>,
            log_sum_exp: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            smoothing: f64,
        ) -> FloatTensor<Self> {
            // The statistics are flat `[rows]` only when the forward above made them.
            let flat = log_sum_exp.layout().shape().num_dims() == 1;
            let (Some((rows, classes)), Some(target_ids), true, DType::F32) = (
                f32_rows(&logits, &keep),
                indices(&targets),
                flat,
                grad.dtype(),
            ) else {
                return super::composed::backward::<Self>(
                    logits,
                    targets,
                    keep,
                    log_sum_exp,
                    grad,
                    smoothing,
                );
            };
            let (values, weights) = (contiguous(&logits), contiguous(&keep));
            let (lse, upstream) = (contiguous(&log_sum_exp), contiguous(&grad));
            let eps = smoothing as f32;
            let per_task = (CHUNK / classes).max(1);
            let fill = |d: &mut [MaybeUninit<f32>]| {
                d.par_chunks_mut(per_task * classes)
                    .enumerate()
                    .for_each(|(task, d)| {
                        vectorised(
                            #[inline(always)]
                            || {
                                for (i, d) in d.chunks_exact_mut(classes).enumerate() {
                                    let row = task * per_task + i;
                                    let weight = weights[row];
                                    if weight == 0.0 {
                                        d.fill(MaybeUninit::new(0.0)); // ignored: a zero row
                                        continue;
                                    }
                                    let (g_loss, g_nll) = (
                                        weight * upstream[2 * row],
                                        weight * upstream[2 * row + 1],
                                    );
                                    let (both, spread) =
                                        (g_loss + g_nll, g_loss * eps / classes as f32);
                                    let x = &values[row * classes..(row + 1) * classes];
                                    let lse_row = lse[row];
                                    for (d, &v) in d.iter_mut().zip(x) {
                                        d.write(both * exp_nonpositive(v - lse_row) - spread);
                                    }
                                    let target = &mut d[class(target_ids[row], row, classes)];
                                    // SAFETY: the loop above wrote the whole row.
                                    let value = unsafe { target.assume_init() };
                                    target.write(value - (g_loss * (1.0 - eps) + g_nll));
                                }
                            },
                        )
                    })
            };
            // SAFETY: the tasks' chunks cover the buffer, and each writes all its rows.
            let d = unsafe { fully_written(rows * classes, fill) };
            FlexTensor::from_data(TensorData::new(d, [rows, classes]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Distribution, Tolerance};

    /// Burn's composition, as `cross_entropy_kept` computed it before the fused operation.
    fn reference(
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
        smoothing: f64,
        keep: Option<Tensor<1>>,
    ) -> (Tensor<1>, Tensor<1>) {
        let log_probs = log_softmax(logits, 1);
        let nll_each = log_probs
            .clone()
            .gather(1, targets.unsqueeze_dim(1))
            .squeeze_dim::<1>(1)
            .neg();
        let mean = |each: Tensor<1>| match &keep {
            None => each.mean(),
            Some(keep) => (each * keep.clone()).sum() / keep.clone().sum().clamp_min(1.0),
        };
        let nll = mean(nll_each.clone());
        let uniform_each = log_probs.mean_dim(1).squeeze_dim::<1>(1).neg();
        let loss = mean(nll_each.mul_scalar(1.0 - smoothing) + uniform_each.mul_scalar(smoothing));
        (loss, nll)
    }

    fn close(ours: Tensor<2>, theirs: Tensor<2>) {
        ours.into_data()
            .assert_approx_eq::<f32>(&theirs.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
    }

    /// Loss, NLL and the logits' gradient (of a mix of both, so each upstream path shows) equal
    /// Burn's composition on flex: contiguous and swapped (strided) logits, with and without
    /// smoothing and ignored rows.
    #[test]
    fn fused_matches_burns_composition_and_gradient() {
        let device = Device::flex().autodiff();
        let (rows, classes, pad) = (37, 29, 3);
        let contiguous =
            Tensor::<2>::random([rows, classes], Distribution::Normal(0.0, 4.0), &device);
        let swapped = Tensor::<2>::random([classes, rows], Distribution::Normal(1.0, 2.0), &device)
            .swap_dims(0, 1);
        let targets =
            Tensor::<1>::random([rows], Distribution::Uniform(0.0, classes as f64), &device).int();
        for logits in [contiguous, swapped] {
            for smoothing in [0.0, 0.1] {
                for keep in [None, Some(targets.clone().not_equal_elem(pad).float())] {
                    let ours_x = logits.clone().require_grad();
                    let theirs_x = logits.clone().require_grad();
                    let (loss, nll) = cross_entropy_kept(
                        ours_x.clone(),
                        targets.clone(),
                        smoothing,
                        keep.clone(),
                    );
                    let (loss_r, nll_r) =
                        reference(theirs_x.clone(), targets.clone(), smoothing, keep);
                    close(loss.clone().unsqueeze(), loss_r.clone().unsqueeze());
                    close(nll.clone().unsqueeze(), nll_r.clone().unsqueeze());
                    let grads = (loss + nll.mul_scalar(0.3)).backward();
                    let grads_r = (loss_r + nll_r.mul_scalar(0.3)).backward();
                    close(
                        ours_x.grad(&grads).unwrap(),
                        theirs_x.grad(&grads_r).unwrap(),
                    );
                }
            }
        }
    }

    /// A NaN logit gives a NaN loss, as Burn's composition does (divergence stays visible).
    #[test]
    fn a_nan_logit_shows_in_the_loss() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data([[0.0f32, f32::NAN, 1.0], [0.0, 1.0, 2.0]], &device);
        let targets = Tensor::<1, Int>::from_data([0i64, 1], &device);
        let (loss, nll) = cross_entropy(logits, targets, 0.0, None);
        assert!(loss.into_scalar::<f32>().is_nan() && nll.into_scalar::<f32>().is_nan());
    }

    /// Ignored rows get a zero gradient and their targets are never read (here not classes).
    #[test]
    fn ignored_rows_have_zero_gradient() {
        let device = Device::flex().autodiff();
        let logits =
            Tensor::<2>::random([4, 5], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let targets = Tensor::<1, Int>::from_data([1i64, 99, 4, -1], &device);
        let keep = Tensor::<1>::from_data([1.0f32, 0.0, 1.0, 0.0], &device);
        let (loss, _) = cross_entropy_kept(logits.clone(), targets, 0.1, Some(keep));
        assert!(loss.clone().into_scalar::<f32>().is_finite());
        let grad = logits.grad(&loss.backward()).unwrap();
        let row_sums = grad.abs().sum_dim(1).into_data().to_vec::<f32>().unwrap();
        assert!(row_sums[0] > 0.0 && row_sums[2] > 0.0, "{row_sums:?}");
        assert_eq!((row_sums[1], row_sums[3]), (0.0, 0.0));
    }

    #[test]
    fn matches_hand_computed_values() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data([[2.0f32, 0.0, -1.0], [0.5, 0.5, 0.5]], &device);
        let targets = Tensor::<1, Int>::from_data([0i64, 2], &device);
        // Row 0: log-sum-exp = ln(e^2 + 1 + e^-1); row 1: ln 3.
        let lse0 = (2f64.exp() + 1.0 + (-1f64).exp()).ln();
        let nll_expected = ((lse0 - 2.0) + 3f64.ln()) / 2.0;
        let (loss, nll) = cross_entropy(logits.clone(), targets.clone(), 0.0, None);
        let nll: f32 = nll.into_scalar();
        assert!((nll as f64 - nll_expected).abs() < 1e-5);
        assert_eq!(loss.into_scalar::<f32>(), nll);
        // Smoothing 0.1 over 3 classes: 0.9 * nll + 0.1 * mean over classes of -log p.
        let uniform0 = ((lse0 - 2.0) + lse0 + (lse0 + 1.0)) / 3.0;
        let expected = 0.9 * nll_expected + 0.1 * (uniform0 + 3f64.ln()) / 2.0;
        let (smoothed, _) = cross_entropy(logits.clone(), targets.clone(), 0.1, None);
        assert!((smoothed.into_scalar::<f32>() as f64 - expected).abs() < 1e-5);

        // Padding (class 2 as the pad id) is ignored: only row 0 counts.
        let row0 = 0.9 * (lse0 - 2.0) + 0.1 * uniform0;
        let (smoothed, nll) = cross_entropy(logits, targets, 0.1, Some(2));
        assert!((smoothed.into_scalar::<f32>() as f64 - row0).abs() < 1e-5);
        assert!((nll.into_scalar::<f32>() as f64 - (lse0 - 2.0)).abs() < 1e-5);
    }
}
