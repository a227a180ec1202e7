//! LayerNorm over the last dimension as a custom Burn operation with its own gradient, so that
//! training on the default CPU backend runs one pass per row forward and one backward.
//!
//! Why: burn-autodiff records Burn's LayerNorm as about nine primitive operations (mean,
//! centring, square, mean, add, sqrt, divide, scale, shift), each a fresh tensor and, on flex,
//! mostly one thread; their backward is about twice that. The flex kernel here computes each
//! row's mean and reciprocal standard deviation (two passes over the row while it is in
//! cache, so the variance does not cancel), saves them, and in backward gives the input's
//! gradient row by row and the scale's and shift's gradients as per-task partial sums, all on
//! the CPU pool. Every other backend composes Burn's own operations.
//!
//! Models keep Burn's `LayerNorm` module (its `gamma`/`beta` paths are the checkpoints' and the
//! Hugging Face import's) and call [`ForwardFused::forward_fused`] instead of its `forward`.

// NdArray is deprecated by Burn but stays selectable (src/backend.rs); the extension names it.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::module::{Content, DisplaySettings, ModuleDisplay};
use burn::nn::LayerNorm;
use burn::tensor::{Shape, Tensor};

/// Burn's `LayerNorm` applied through the fused operation: `norm.forward_fused(x)` in place of
/// `norm.forward(x)`, the same values.
pub trait ForwardFused {
    fn forward_fused<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl ForwardFused for LayerNorm {
    /// Burn keeps LayerNorm's epsilon private; its display (`epsilon: 0.00001`, Rust's
    /// round-trip float format) is the one public view of it. Should that view ever change,
    /// Burn's own forward runs: same values, unfused.
    fn forward_fused<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let content = self.custom_content(Content::new(DisplaySettings::new()));
        let epsilon = content.and_then(|content| {
            let attribute = content.attributes.iter().find(|a| a.name == "epsilon")?;
            attribute.value.trim().parse::<f64>().ok()
        });
        match epsilon {
            Some(eps) => layer_norm(
                x,
                self.gamma.val(),
                self.beta.as_ref().map(|b| b.val()),
                eps,
            ),
            None => self.forward(x),
        }
    }
}

/// `(x - mean) / sqrt(var + epsilon) · gamma + beta` over the last dimension (biased variance),
/// differentiable; the function `burn::nn::LayerNorm::forward` computes.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Tensor<D> {
    // Backend extensions take no optional tensors: no shift is a shift of zeros (untracked, so
    // it gets no gradient).
    let beta = beta.unwrap_or_else(|| gamma.zeros_like());
    Tensor::from_dispatch(<Dispatch as LayerNormOps>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
}

/// The operation and its gradient, per backend. The default bodies are Burn's operations.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait LayerNormOps: Backend {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, Some(beta), epsilon)
    }

    /// The output and what backward needs: each row's mean and `1 / sqrt(var + epsilon)`, in a
    /// layout of the backend's choosing.
    fn fused_layer_norm_saving(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::forward::<Self>(x, gamma, beta, epsilon)
    }

    /// `(dx, dgamma, dbeta)` for the upstream gradient `grad`.
    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::backward::<Self>(x, gamma, mean, rstd, grad)
    }
}

#[cfg(feature = "ndarray")]
impl LayerNormOps for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl LayerNormOps for burn::backend::LibTorch {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl LayerNormOps for burn::backend::Cube {}

/// The backward node; its parents are the input, the scale and the shift.
#[derive(Debug)]
struct LayerNormBackward;

impl<B: LayerNormOps> Backward<B, 3> for LayerNormBackward {
    /// The input, the scale, and the rows' means and reciprocal standard deviations.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, mean, rstd) = ops.state;
        let (dx, dgamma, dbeta) = B::fused_layer_norm_backward(x, gamma, mean, rstd, grad);
        for (parent, gradient) in ops.parents.into_iter().zip([dx, dgamma, dbeta]) {
            if let Some(parent) = parent {
                grads.register::<B>(parent.id, gradient);
            }
        }
    }
}

impl<B: LayerNormOps, C: CheckpointStrategy> LayerNormOps for Autodiff<B, C> {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma) = (x.into_primitive(), gamma.into_primitive());
                let (y, mean, rstd) = B::fused_layer_norm_saving(
                    x.clone(),
                    gamma.clone(),
                    beta.into_primitive(),
                    epsilon,
                );
                prep.finish((x, gamma, mean, rstd), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_layer_norm(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
            )),
        }
    }
}

/// Burn's operations, for every backend without a kernel of its own.
mod composed {
    use super::*;

    /// `shape` with the last dimension 1 except where it keeps `gamma`'s length: the shape the
    /// scale and shift broadcast from.
    fn broadcast_shape(rank: usize, width: usize) -> Shape {
        Shape::from(
            (0..rank)
                .map(|i| if i + 1 == rank { width } else { 1 })
                .collect::<Vec<_>>(),
        )
    }

    /// Burn's `layer_norm` (the same operations in the same order), keeping the statistics.
    pub fn forward<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        beta: FloatTensor<B>,
        epsilon: f64,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let shape = x.shape();
        let (rank, width) = (shape.num_dims(), shape[shape.num_dims() - 1]);
        let mean = B::float_mean_dim(x.clone(), rank - 1);
        let centered = B::float_sub(x, mean.clone());
        let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), rank - 1);
        let denom = B::float_sqrt(B::float_add_scalar(var, epsilon.into()));
        let normalized = B::float_div(centered, denom.clone());
        let scaled = B::float_mul(
            normalized,
            B::float_reshape(gamma, broadcast_shape(rank, width)),
        );
        let y = B::float_add(scaled, B::float_reshape(beta, broadcast_shape(rank, width)));
        (y, mean, B::float_recip(denom))
    }

    /// With `x̂ = (x - mean)·rstd` and `g = grad·gamma`:
    /// `dx = rstd·(g - mean(g) - x̂·mean(g·x̂))`, `dgamma = Σ grad·x̂`, `dbeta = Σ grad` over rows.
    pub fn backward<B: Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        mean: FloatTensor<B>,
        rstd: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let shape = x.shape();
        let (rank, width) = (shape.num_dims(), shape[shape.num_dims() - 1]);
        let rows = shape.num_elements() / width.max(1);
        let x_hat = B::float_mul(B::float_sub(x, mean), rstd.clone());
        let g = B::float_mul(
            grad.clone(),
            B::float_reshape(gamma, broadcast_shape(rank, width)),
        );
        let mean_g = B::float_mean_dim(g.clone(), rank - 1);
        let mean_gx = B::float_mean_dim(B::float_mul(g.clone(), x_hat.clone()), rank - 1);
        let dx = B::float_sub(
            B::float_sub(g, mean_g),
            B::float_mul(x_hat.clone(), mean_gx),
        );
        let dx = B::float_mul(dx, rstd);
        let over_rows = |t: FloatTensor<B>| {
            let summed = B::float_sum_dim(B::float_reshape(t, Shape::from([rows, width])), 0);
            B::float_reshape(summed, Shape::from([width]))
        };
        let dgamma = over_rows(B::float_mul(grad.clone(), x_hat));
        (dx, dgamma, over_rows(grad))
    }
}

/// Shared with the cross-entropy's flex kernel (`loss.rs`).
#[cfg(feature = "flex")]
pub(crate) use flex_kernel::lane_sum;

#[cfg(feature = "flex")]
mod flex_kernel {
    use super::LayerNormOps;
    use crate::models::gelu::{contiguous, fully_written};
    use crate::models::vectorised::vectorised;
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::{DType, TensorData};
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    /// Elements per parallel task (whole rows): splitting costs little at this size, and the
    /// activations of a small model still spread over the cores.
    const CHUNK: usize = 8 * 1024;

    fn rows_per_task(width: usize) -> usize {
        (CHUNK / width.max(1)).max(1)
    }

    fn is_f32(tensors: &[&FlexTensor]) -> bool {
        tensors.iter().all(|t| t.dtype() == DType::F32)
    }

    /// `Σ f(a_j, b_j, c_j)` in 8 running sums: the loop vectorises (one f32 sum would not, its
    /// order being fixed), and each sum is a short one, so rounding stays small.
    #[inline(always)]
    pub(crate) fn lane_sum(
        a: &[f32],
        b: &[f32],
        c: &[f32],
        f: impl Fn(f32, f32, f32) -> f32,
    ) -> f32 {
        const LANES: usize = 8;
        let (a, b, c) = (
            a.chunks_exact(LANES),
            b.chunks_exact(LANES),
            c.chunks_exact(LANES),
        );
        let tail = (a.remainder().iter().zip(b.remainder()).zip(c.remainder()))
            .map(|((&a, &b), &c)| f(a, b, c))
            .sum::<f32>();
        let mut sums = [0.0f32; LANES];
        for ((a, b), c) in a.zip(b).zip(c) {
            for lane in 0..LANES {
                sums[lane] += f(a[lane], b[lane], c[lane]);
            }
        }
        sums.iter().sum::<f32>() + tail
    }

    /// Mean and `1 / sqrt(var + epsilon)` of one row, by the corrected two-pass algorithm
    /// while the row is in cache: the variance sums squares of centred values (no
    /// cancellation), and the second pass also corrects the first pass's mean.
    #[inline(always)]
    fn row_statistics(row: &[f32], epsilon: f32) -> (f32, f32) {
        let n = row.len() as f32;
        let rough = lane_sum(row, row, row, |v, _, _| v) / n;
        let deviation = lane_sum(row, row, row, |v, _, _| v - rough);
        let squares = lane_sum(row, row, row, |v, _, _| (v - rough) * (v - rough));
        let var = ((squares - deviation * deviation / n) / n).max(0.0);
        (rough + deviation / n, 1.0 / (var + epsilon).sqrt())
    }

    // `fused_layer_norm` (no gradient wanted) keeps its default: flex's own `layer_norm` is
    // already one pass per row.
    impl LayerNormOps for Flex {
        fn fused_layer_norm_saving(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            let width = x.layout().shape().last().copied().unwrap_or(0);
            if !is_f32(&[&x, &gamma, &beta]) || width == 0 {
                return super::composed::forward::<Self>(x, gamma, beta, epsilon);
            }
            let shape = x.layout().shape().clone();
            let rows = shape.num_elements() / width;
            let (input, gamma, beta) = (contiguous(&x), contiguous(&gamma), contiguous(&beta));
            let (epsilon, per_task) = (epsilon as f32, rows_per_task(width));
            let (mut mean, mut rstd) = (vec![0.0f32; rows], vec![0.0f32; rows]);
            let fill = |output: &mut [MaybeUninit<f32>]| {
                output
                    .par_chunks_mut(per_task * width)
                    .zip(mean.par_chunks_mut(per_task))
                    .zip(rstd.par_chunks_mut(per_task))
                    .enumerate()
                    .for_each(|(task, ((out, means), rstds))| {
                        vectorised(
                            #[inline(always)]
                            || {
                                let first = task * per_task * width;
                                let rows_in = input[first..first + out.len()].chunks_exact(width);
                                let stats = means.iter_mut().zip(rstds.iter_mut());
                                for ((row, out), (m, r)) in
                                    rows_in.zip(out.chunks_exact_mut(width)).zip(stats)
                                {
                                    (*m, *r) = row_statistics(row, epsilon);
                                    let affine = gamma.iter().zip(&*beta);
                                    for ((y, &v), (&g, &b)) in out.iter_mut().zip(row).zip(affine) {
                                        y.write((v - *m) * *r * g + b);
                                    }
                                }
                            },
                        )
                    });
            };
            // SAFETY: the tasks' chunks cover the output, each row written whole.
            let output = unsafe { fully_written(rows * width, fill) };
            let vector = |values: Vec<f32>| FlexTensor::from_data(TensorData::new(values, [rows]));
            (
                FlexTensor::from_data(TensorData::new(output, shape)),
                vector(mean),
                vector(rstd),
            )
        }

        fn fused_layer_norm_backward(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            mean: FloatTensor<Self>,
            rstd: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            let width = x.layout().shape().last().copied().unwrap_or(0);
            // The statistics are flat `[rows]` only when the forward above made them.
            let flat = mean.layout().shape().num_dims() == 1 && x.layout().shape().num_dims() != 1;
            if !is_f32(&[&x, &gamma, &grad]) || !flat || width == 0 {
                return super::composed::backward::<Self>(x, gamma, mean, rstd, grad);
            }
            let shape = x.layout().shape().clone();
            let (input, gamma, upstream) = (contiguous(&x), contiguous(&gamma), contiguous(&grad));
            let (mean, rstd) = (contiguous(&mean), contiguous(&rstd));
            let per_task = rows_per_task(width);
            // Each task sums dgamma and dbeta over its rows; the partial sums are added after, in
            // task order, so that the result does not depend on how the pool split the work
            // (exact resume compares weights bit for bit).
            let mut partials: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
            let fill = |dx: &mut [MaybeUninit<f32>]| {
                partials = dx
                    .par_chunks_mut(per_task * width)
                    .enumerate()
                    .map(|(task, dx)| {
                        vectorised(
                            #[inline(always)]
                            || {
                                let (first_row, first) = (task * per_task, task * per_task * width);
                                let (mut dgamma, mut dbeta) =
                                    (vec![0.0f32; width], vec![0.0f32; width]);
                                let rows = input[first..first + dx.len()]
                                    .chunks_exact(width)
                                    .zip(upstream[first..first + dx.len()].chunks_exact(width))
                                    .zip(dx.chunks_exact_mut(width))
                                    .enumerate();
                                for (i, ((row, up), dx)) in rows {
                                    let (m, r) = (mean[first_row + i], rstd[first_row + i]);
                                    for ((&v, &u), (dg, db)) in row
                                        .iter()
                                        .zip(up)
                                        .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
                                    {
                                        *dg += u * (v - m) * r;
                                        *db += u;
                                    }
                                    // mean(g) and mean(g·x̂), g = grad·gamma.
                                    let n = width as f32;
                                    let mean_g = lane_sum(up, &gamma, row, |u, g, _| u * g) / n;
                                    let mean_gx =
                                        lane_sum(up, &gamma, row, |u, g, v| u * g * (v - m) * r)
                                            / n;
                                    for (((d, &v), &u), &g) in
                                        dx.iter_mut().zip(row).zip(up).zip(&*gamma)
                                    {
                                        d.write(r * (u * g - mean_g - (v - m) * r * mean_gx));
                                    }
                                }
                                (dgamma, dbeta)
                            },
                        )
                    })
                    .collect();
            };
            // SAFETY: the tasks' chunks cover the buffer, each row written whole.
            let dx = unsafe { fully_written(shape.num_elements(), fill) };
            let (dgamma, dbeta) = partials.into_iter().fold(
                (vec![0.0f32; width], vec![0.0f32; width]),
                |(mut ga, mut ba), (gb, bb)| {
                    ga.iter_mut().zip(gb).for_each(|(a, b)| *a += b);
                    ba.iter_mut().zip(bb).for_each(|(a, b)| *a += b);
                    (ga, ba)
                },
            );
            let vector = |v: Vec<f32>| FlexTensor::from_data(TensorData::new(v, [width]));
            (
                FlexTensor::from_data(TensorData::new(dx, shape)),
                vector(dgamma),
                vector(dbeta),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::linear::tests::close as close_to;
    use burn::module::Module;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, Distribution};

    /// Rows with an offset far from zero (where a one-pass variance would cancel), in a
    /// swapped (strided) view as well.
    fn inputs(device: &Device) -> Vec<Tensor<3>> {
        let x = Tensor::<3>::random([5, 7, 48], Distribution::Normal(0.0, 2.0), device);
        let offset = Tensor::<3>::random([5, 7, 1], Distribution::Uniform(-50.0, 50.0), device);
        let x = x + offset;
        let swapped =
            Tensor::<3>::random([7, 5, 48], Distribution::Normal(1.0, 3.0), device).swap_dims(0, 1);
        vec![x, swapped]
    }

    /// The shared tolerance (1e-5 relative, 1e-5 of the largest element) on flattened tensors.
    fn close(ours: Tensor<1>, theirs: Tensor<1>) {
        close_to(ours, theirs)
    }

    /// Values and the gradients of input, scale and shift equal Burn's LayerNorm's, with and
    /// without a shift, on flex through autodiff (the fused kernels) and without it.
    #[test]
    fn matches_burns_layer_norm_and_its_gradients() {
        let device = Device::flex().autodiff();
        for bias in [true, false] {
            for x in inputs(&device) {
                let mut module = LayerNormConfig::new(48)
                    .with_epsilon(1e-5)
                    .with_bias(bias)
                    .init(&device);
                // A scale and shift other than 1 and 0, so that their use shows.
                module.gamma = module
                    .gamma
                    .map(|g| g.random_like(Distribution::Normal(1.0, 0.5)).require_grad());
                module.beta = module.beta.map(|b| {
                    b.map(|b| b.random_like(Distribution::Normal(0.0, 0.5)).require_grad())
                });
                let ours_x = x.clone().require_grad();
                let theirs_x = x.clone().require_grad();
                let (y_ours, y_theirs) = (
                    module.forward_fused(ours_x.clone()),
                    module.forward(theirs_x.clone()),
                );
                close(y_ours.clone().flatten(0, 2), y_theirs.clone().flatten(0, 2));
                // Without autodiff: flex's own layer_norm.
                let plain = module.valid().forward_fused(x.clone().inner());
                close(plain.flatten(0, 2), y_theirs.clone().inner().flatten(0, 2));

                // Weight each output differently so a gradient in the wrong place shows.
                let weights =
                    Tensor::random(y_ours.dims(), Distribution::Normal(0.0, 1.0), &device);
                let grads_ours = (y_ours * weights.clone()).sum().backward();
                let grads_theirs = (y_theirs * weights).sum().backward();
                let grad = |t: &Tensor<3>, grads| t.grad(grads).unwrap().flatten(0, 2);
                close(grad(&ours_x, &grads_ours), grad(&theirs_x, &grads_theirs));
                let gamma = module.gamma.val();
                close(
                    gamma.grad(&grads_ours).unwrap(),
                    gamma.grad(&grads_theirs).unwrap(),
                );
                if let Some(beta) = &module.beta {
                    let beta = beta.val();
                    close(
                        beta.grad(&grads_ours).unwrap(),
                        beta.grad(&grads_theirs).unwrap(),
                    );
                }
            }
        }
    }

    /// The epsilon `forward_fused` reads is the module's: a large one changes the values.
    #[test]
    fn norm_uses_the_modules_epsilon() {
        let device = Device::flex();
        let x = Tensor::<2>::random([3, 16], Distribution::Normal(0.0, 0.3), &device);
        for epsilon in [1e-12, 1e-5, 0.5] {
            let module = LayerNormConfig::new(16).with_epsilon(epsilon).init(&device);
            let theirs = module.forward(x.clone());
            let ours = layer_norm(x.clone(), module.gamma.val(), None, epsilon);
            close(
                module.forward_fused(x.clone()).flatten(0, 1),
                theirs.clone().flatten(0, 1),
            );
            close(ours.flatten(0, 1), theirs.flatten(0, 1));
        }
    }
}
