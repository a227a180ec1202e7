//! Linear layers (`x·W + b`) as a custom Burn operation, so that flex multiplies straight into
//! the output buffer and adds the bias there.
//!
//! Why: burn-flex allocates each matmul's output as bytes, and the byte buffer's alignment
//! (1) is below what Burn's storage asks for (16), so every output is allocated twice and copied
//! once, after being zeroed; the bias is then a second pass over it. In a profile of the
//! seq2seq Transformer's step that copying and zeroing was 13% of the time (bench/README.md).
//! Here the output starts as the bias rows (or zeros) and GEMM accumulates into it; the
//! backward's three products (`dY·Wᵀ`, `xᵀ·dY`, the bias's column sums) read the operands in
//! place, transposes included. Every other backend runs Burn's own linear and its backward.

// NdArray is deprecated by Burn but stays selectable (src/backend.rs); the extension names it.
#![allow(deprecated)]

use crate::models::layer_norm::ForwardFused;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::nn::Linear;
use burn::tensor::Tensor;

impl ForwardFused for Linear {
    /// `linear.forward_fused(x)` in place of `linear.forward(x)`: the same values.
    fn forward_fused<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// `x·weight (+ bias)` over the last dimension of `x` `[..., d_in]`, `weight` `[d_in, d_out]`
/// (any strides: a transposed view is read in place), differentiable; the function
/// `burn::tensor::module::linear` computes.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let [rows_in, d_out] = weight.dims();
    assert_eq!(
        d_in, rows_in,
        "linear: input width {d_in} against weight {rows_in}"
    );
    let rows = x.shape().num_elements() / d_in.max(1);
    // A 2-D input goes in as it is: reshaping a strided view (`xᵀ`), even to its own shape,
    // copies it on one thread first.
    let x = if D == 2 {
        x.into_dispatch()
    } else {
        x.reshape([rows, d_in]).into_dispatch()
    };
    let weight = weight.into_dispatch();
    let y = match bias {
        Some(bias) => <Dispatch as LinearOps>::fused_linear(x, weight, bias.into_dispatch()),
        None => <Dispatch as LinearOps>::fused_matmul(x, weight),
    };
    dims[D - 1] = d_out;
    Tensor::<2>::from_dispatch(y).reshape(dims)
}

/// The operation and its gradients on `[rows, d_in]` inputs, per backend. The default bodies
/// are Burn's own.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait LinearOps: Backend {
    /// `x·weight`.
    fn fused_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear(x, weight, None)
    }

    /// `x·weight + bias`.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear(x, weight, Some(bias))
    }

    /// The input's gradient `grad·weightᵀ`.
    fn fused_linear_x_backward(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear_x_backward(weight, grad)
    }

    /// The weight's gradient `xᵀ·grad`.
    fn fused_linear_weight_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear_weight_backward(x, grad)
    }

    /// The bias's gradient: `grad`'s column sums.
    fn fused_linear_bias_backward(grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear_bias_backward(grad)
    }
}

#[cfg(feature = "ndarray")]
impl LinearOps for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl LinearOps for burn::backend::LibTorch {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl LinearOps for burn::backend::Cube {}

/// The backward node; its parents are the input, the weight and (when `N` is 3) the bias. It
/// keeps the input only if the weight needs a gradient, and the weight only if the input does.
#[derive(Debug)]
struct LinearBackward<const N: usize>;

impl<B: LinearOps, const N: usize> Backward<B, N> for LinearBackward<N> {
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        let parents = ops.parents;
        if let (Some(node), Some(x)) = (&parents[1], x) {
            grads.register::<B>(node.id, B::fused_linear_weight_backward(x, grad.clone()));
        }
        if let Some(Some(node)) = parents.get(2) {
            grads.register::<B>(node.id, B::fused_linear_bias_backward(grad.clone()));
        }
        if let (Some(node), Some(weight)) = (&parents[0], weight) {
            grads.register::<B>(node.id, B::fused_linear_x_backward(weight, grad));
        }
    }
}

impl<B: LinearOps, C: CheckpointStrategy> LinearOps for Autodiff<B, C> {
    fn fused_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        match LinearBackward::<2>
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let state = (
                    weight_tracked.then(|| x.clone()),
                    x_tracked.then(|| weight.clone()),
                );
                prep.finish(state, B::fused_matmul(x, weight))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::fused_matmul(x.into_primitive(), weight.into_primitive()))
            }
        }
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        match LinearBackward::<3>
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let state = (
                    weight_tracked.then(|| x.clone()),
                    x_tracked.then(|| weight.clone()),
                );
                prep.finish(state, B::fused_linear(x, weight, bias.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_linear(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }
}

#[cfg(feature = "flex")]
mod flex_kernel {
    use super::LinearOps;
    use crate::models::attention::flex_kernel::{Mat, in_place_or_contiguous, product_on};
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::backend::ops::{FloatTensorOps, ModuleOps};
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::{DType, TensorData};
    use rayon::prelude::*;

    /// Burn's threshold for threading a product (`m·n·k`): below it, one thread is faster.
    const THREADED_WORK: usize = 192 * 192 * 192;

    /// A 2-D f32 tensor as a GEMM operand, read in place when its strides are positive (the
    /// returned tensor owns the memory the matrix points into).
    fn matrix(tensor: &FlexTensor) -> Option<(FlexTensor, Mat, [usize; 2])> {
        let layout = tensor.layout();
        if tensor.dtype() != DType::F32 || layout.num_dims() != 2 {
            return None;
        }
        let tensor = in_place_or_contiguous(tensor);
        let layout = tensor.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        let ptr = tensor.storage::<f32>().as_ptr();
        let mat = Mat {
            ptr: ptr.wrapping_add(layout.start_offset()),
            rs: strides[0],
            cs: strides[1],
        };
        let dims = [shape[0], shape[1]];
        Some((tensor, mat, dims))
    }

    /// `lhs·rhs` as a new `[m, n]` tensor, added to `start` (row-major `m×n`: the bias rows)
    /// when given; `None` for operands flex's kernel does not take (another dtype, not 2-D,
    /// shapes that do not chain).
    fn product_into(
        start: Option<Vec<f32>>,
        lhs: &FlexTensor,
        rhs: &FlexTensor,
    ) -> Option<FlexTensor> {
        let (_lhs_owner, lhs, [m, k]) = matrix(lhs)?;
        let (_rhs_owner, rhs, [inner, n]) = matrix(rhs)?;
        // The products below read and write by these dims: anything inconsistent goes to Burn.
        if inner != k || start.as_ref().is_some_and(|s| s.len() != m * n) {
            return None;
        }
        let accumulate = start.is_some();
        // Without a start the product writes every element without reading it, so the buffer
        // is not zeroed first (a pass over the output that BLAS's beta = 0 repeats).
        let mut out = start.unwrap_or_else(|| Vec::with_capacity(m * n));
        let parallelism = if m * n * k >= THREADED_WORK {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: both operands point into tensors kept alive above, over their own dims;
        // `out` holds (or has room for) m·n elements, all written by the product.
        unsafe {
            let shape = (m, n, k);
            product_on(
                shape,
                out.as_mut_ptr(),
                n,
                accumulate,
                lhs,
                rhs,
                1.0,
                parallelism,
            );
            out.set_len(m * n);
        }
        Some(FlexTensor::from_data(TensorData::new(out, [m, n])))
    }

    /// `bias` repeated over `rows` rows: the start the product adds onto. Row by row, as
    /// copies: collecting a cycled iterator went element by element, 3% of the seq2seq
    /// Transformer's step.
    fn bias_rows(bias: &[f32], rows: usize) -> Vec<f32> {
        let mut start = Vec::with_capacity(rows * bias.len());
        for _ in 0..rows {
            start.extend_from_slice(bias);
        }
        start
    }

    fn dims(tensor: &FlexTensor) -> Vec<usize> {
        tensor.layout().shape().to_vec()
    }

    impl LinearOps for Flex {
        fn fused_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
            product_into(None, &x, &weight).unwrap_or_else(|| Self::linear(x, weight, None))
        }

        fn fused_linear(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let (x_dims, w_dims) = (dims(&x), dims(&weight));
            let bias_values =
                (bias.dtype() == DType::F32).then(|| crate::models::gelu::contiguous(&bias));
            let fused = match (bias_values, x_dims.first(), w_dims.get(1)) {
                (Some(b), Some(&m), Some(&n)) if b.len() == n => {
                    product_into(Some(bias_rows(&b, m)), &x, &weight)
                }
                _ => None,
            };
            fused.unwrap_or_else(|| Self::linear(x, weight, Some(bias)))
        }

        fn fused_linear_x_backward(
            weight: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            Self::fused_matmul(grad, Self::float_swap_dims(weight, 0, 1))
        }

        fn fused_linear_weight_backward(
            x: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            Self::fused_matmul(Self::float_swap_dims(x, 0, 1), grad)
        }

        fn fused_linear_bias_backward(grad: FloatTensor<Self>) -> FloatTensor<Self> {
            let grad_dims = dims(&grad);
            if grad.dtype() != DType::F32 || grad_dims.len() != 2 || grad_dims[1] == 0 {
                return Self::linear_bias_backward(grad);
            }
            let n = grad_dims[1];
            let values = crate::models::gelu::contiguous(&grad);
            // Column sums over blocks of rows, the blocks' partial sums added after in block order
            // (not by rayon's reduce, whose grouping follows the pool's splits: exact resume
            // compares weights bit for bit).
            let partials: Vec<Vec<f32>> = values
                .par_chunks(n * ROWS_PER_TASK)
                .map(|block| {
                    let mut sums = vec![0.0f32; n];
                    for row in block.chunks_exact(n) {
                        sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                    }
                    sums
                })
                .collect();
            let sums = partials.into_iter().fold(vec![0.0f32; n], |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            });
            FlexTensor::from_data(TensorData::new(sums, [n]))
        }
    }

    /// Rows per task of the bias's column sums.
    const ROWS_PER_TASK: usize = 64;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// Within 1e-5 relative; elements near zero within 1e-5 of the tensor's largest (sums in
    /// another order round differently, and a gradient that cancels terms of that size keeps
    /// their rounding).
    pub(crate) fn close<const D: usize>(ours: Tensor<D>, theirs: Tensor<D>) {
        let largest: f32 = theirs.clone().abs().max().into_scalar();
        let tolerance = Tolerance::rel_abs(1e-5, 1e-5 * largest.max(1.0));
        ours.into_data()
            .assert_approx_eq::<f32>(&theirs.into_data(), tolerance);
    }

    /// Values and the gradients of input, weight and bias equal Burn's linear on flex, through
    /// autodiff (the fused kernels) and without it: 3-D and 2-D inputs, a plain and a transposed
    /// weight, with and without a bias, sizes above and below the threading threshold.
    #[test]
    fn matches_burns_linear_and_its_gradients() {
        let device = Device::flex().autodiff();
        let normal = |dims: Vec<usize>| {
            Tensor::<3>::random(
                [dims[0], dims[1], dims[2]],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
        };
        for (batch, time, d_in, d_out) in [(2, 3, 5, 7), (4, 64, 96, 200)] {
            for (transposed, bias) in [(false, true), (true, false), (false, false), (true, true)] {
                let x = normal(vec![batch, time, d_in]);
                let weight = if transposed {
                    normal(vec![1, d_out, d_in])
                        .squeeze_dim::<2>(0)
                        .require_grad()
                } else {
                    normal(vec![1, d_in, d_out])
                        .squeeze_dim::<2>(0)
                        .require_grad()
                };
                let used = |w: &Tensor<2>| {
                    if transposed {
                        w.clone().transpose()
                    } else {
                        w.clone()
                    }
                };
                let b = bias.then(|| normal(vec![1, 1, d_out]).reshape([d_out]).require_grad());
                let (xo, xt) = (x.clone().require_grad(), x.clone().require_grad());
                let ours = linear(xo.clone(), used(&weight), b.clone());
                let theirs = burn::tensor::module::linear(xt.clone(), used(&weight), b.clone());
                close(ours.clone(), theirs.clone());
                let plain = linear(
                    x.clone().inner(),
                    used(&weight).inner(),
                    b.clone().map(|b| b.inner()),
                );
                close(plain, theirs.clone().inner());

                let upstream = normal(vec![batch, time, d_out]);
                let g_ours = (ours * upstream.clone()).sum().backward();
                let g_theirs = (theirs * upstream).sum().backward();
                close(xo.grad(&g_ours).unwrap(), xt.grad(&g_theirs).unwrap());
                close(
                    weight.grad(&g_ours).unwrap(),
                    weight.grad(&g_theirs).unwrap(),
                );
                if let Some(b) = &b {
                    close(b.grad(&g_ours).unwrap(), b.grad(&g_theirs).unwrap());
                }
            }
        }
    }

    /// A 2-D input that is a transposed view (`xᵀ`, as a weight gradient reads it) goes to the
    /// kernel as it is, and gives Burn's values and gradients.
    #[test]
    fn a_transposed_2d_input_matches_burns_linear() {
        let device = Device::flex().autodiff();
        let (rows, d_in, d_out) = (70, 96, 200);
        let stored = Tensor::<2>::random([d_in, rows], Distribution::Normal(0.0, 1.0), &device);
        let weight = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 1.0), &device);
        let (so, st) = (stored.clone().require_grad(), stored.require_grad());
        let ours = linear(so.clone().transpose(), weight.clone(), None);
        let theirs = burn::tensor::module::linear(st.clone().transpose(), weight.clone(), None);
        close(ours.clone(), theirs.clone());
        let plain = linear(so.clone().inner().transpose(), weight.clone().inner(), None);
        close(plain, theirs.clone().inner());
        let upstream = Tensor::<2>::random([rows, d_out], Distribution::Normal(0.0, 1.0), &device);
        let g_ours = (ours * upstream.clone()).sum().backward();
        let g_theirs = (theirs * upstream).sum().backward();
        close(so.grad(&g_ours).unwrap(), st.grad(&g_theirs).unwrap());
    }
}
