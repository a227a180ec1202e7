//! GELU in its exact form, `x·Φ(x)` with Φ the standard normal CDF (as `torch.nn.GELU()`,
//! nanoGPT and BERT use it), as a custom Burn operation so that the default CPU backend gets a
//! fast kernel for it and its gradient.
//!
//! Why: burn-flex evaluates GELU and its gradient on one thread, calling libm's `erff` per
//! element; in the shakespeare_char recipe that was 15-20% of a training step (bench/README.md).
//! The flex kernel here spreads the elements over the CPU pool and evaluates Φ with the
//! Abramowitz & Stegun 7.1.26 approximation of erf (absolute error below 1.5e-7, about f32's
//! resolution near 1), sharing one `exp` between Φ and the density the gradient needs.
//! Every other backend runs Burn's own GELU, so results agree across backends to f32 rounding.

// NdArray is deprecated by Burn but stays selectable (src/backend.rs); the extension names it.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::tensor::Tensor;

/// `gelu(x) = x·Φ(x)`, differentiable; the same function as `burn::tensor::activation::gelu`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as GeluOps>::exact_gelu(x.into_dispatch()))
}

/// The operation and its gradient, per backend. The default bodies are Burn's own.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait GeluOps: Backend {
    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// `grad · gelu'(x)`.
    fn exact_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }
}

#[cfg(feature = "ndarray")]
impl GeluOps for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl GeluOps for burn::backend::LibTorch {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl GeluOps for burn::backend::Cube {}

impl<B: GeluOps, C: CheckpointStrategy> GeluOps for Autodiff<B, C> {
    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GeluBackward;

        impl<B: GeluOps> Backward<B, 1> for GeluBackward {
            /// The input: the gradient is a function of it.
            type State = FloatTensor<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(parent) = parent {
                    grads.register::<B>(parent.id, B::exact_gelu_backward(ops.state, grad));
                }
            }
        }

        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let input = x.into_primitive();
                let output = B::exact_gelu(input.clone());
                prep.finish(input, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::exact_gelu(x.into_primitive())),
        }
    }
}

/// Shared with the other flex kernels (`layer_norm.rs`, `loss.rs`, `rnn_cell.rs`, `adamw.rs`).
#[cfg(feature = "flex")]
pub(crate) use flex_kernel::{contiguous, exp_nonpositive, fully_written, map_parallel};

#[cfg(feature = "flex")]
pub(super) mod flex_kernel {
    use super::GeluOps;
    use crate::models::vectorised::vectorised;
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::backend::ops::ActivationOps;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::{DType, TensorData};
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    /// Elements per parallel task: large enough that splitting costs little, small enough that
    /// a feed-forward activation of a small model still spreads over the cores.
    const CHUNK: usize = 8 * 1024;
    const INV_SQRT_2PI: f32 = 0.398_942_3;

    /// `Φ(x)` and the density `φ(x)`, from one exponential.
    #[inline(always)]
    pub(super) fn cdf_and_density(x: f32) -> (f32, f32) {
        // A&S 7.1.26: erf(z) = 1 - t·P(t)·exp(-z²), t = 1 / (1 + p·z), z = |x|/√2 ≥ 0.
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [
            0.254_829_6,
            -0.284_496_74,
            1.421_413_8,
            -1.453_152,
            1.061_405_4,
        ];
        let gauss = exp_nonpositive(-0.5 * x * x);
        let t = 1.0 / (1.0 + P * std::f32::consts::FRAC_1_SQRT_2 * x.abs());
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        // Half the tail mass beyond |x|: Φ(x) for negative x, 1 - Φ(x) for positive x.
        let tail = 0.5 * poly * gauss;
        let cdf = if x >= 0.0 { 1.0 - tail } else { tail };
        (cdf, INV_SQRT_2PI * gauss)
    }

    /// `e^x` for `x ≤ 0`, within a few f32 ulps. Plain arithmetic, unlike libm's `expf`, so
    /// the loops vectorise; as a libm call it was about 5% of a GPT step's CPU time.
    #[inline(always)]
    pub(crate) fn exp_nonpositive(x: f32) -> f32 {
        // Below -87 the result leaves f32's normal range: GELU needs nothing that small.
        let y = x.max(-87.0) * std::f32::consts::LOG2_E;
        // Round y to the nearest integer n by adding 1.5·2^23 (n lands in the low mantissa
        // bits), so that e^x = 2^n · e^g with g = (y - n)·ln 2 in [-0.35, 0.35].
        const SHIFT: f32 = 12_582_912.0;
        let shifted = y + SHIFT;
        let n = shifted.to_bits() as i32 - SHIFT.to_bits() as i32;
        let g = (y - (shifted - SHIFT)) * std::f32::consts::LN_2;
        // Taylor series of e^g to g^7 (coefficients 1/k!): error below 1e-8 relative there.
        const TAYLOR: [f32; 8] = [
            1.0,
            1.0,
            0.5,
            1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 120.0,
            1.0 / 720.0,
            1.0 / 5040.0,
        ];
        let e = TAYLOR.iter().rev().fold(0.0, |e, &c| e * g + c);
        e * f32::from_bits(((n + 127) as u32) << 23)
    }

    /// The tensor's f32 elements in row-major order (copied only if it is a strided view).
    pub(crate) fn contiguous(tensor: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
        match tensor.as_slice::<f32>() {
            Some(values) => values.into(),
            None => tensor.to_contiguous().storage::<f32>().to_vec().into(),
        }
    }

    /// A buffer of `len` floats that `fill` writes whole, not zeroed first: the allocator
    /// hands back reused memory, which `vec![0.0; len]` clears in a pass of its own (`memset`
    /// was about 1.5% of a training step's CPU time).
    ///
    /// # Safety
    /// `fill` must write every element of the slice it is given.
    pub(crate) unsafe fn fully_written(
        len: usize,
        fill: impl FnOnce(&mut [MaybeUninit<f32>]),
    ) -> Vec<f32> {
        let mut values = Vec::with_capacity(len);
        fill(&mut values.spare_capacity_mut()[..len]);
        // SAFETY: the caller's `fill` initialised all `len` elements.
        unsafe { values.set_len(len) };
        values
    }

    /// A new tensor of `shape`, its chunks filled in parallel by `fill(first index, chunk)`,
    /// which writes every element of its chunk.
    pub(crate) fn map_parallel(
        shape: burn::tensor::Shape,
        fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
    ) -> FlexTensor {
        // SAFETY: the chunks cover the buffer, and each `fill` writes its chunk whole.
        let output = unsafe {
            fully_written(shape.num_elements(), |output| {
                output
                    .par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(chunk, out)| {
                        vectorised(
                            #[inline(always)]
                            || fill(chunk * CHUNK, out),
                        )
                    })
            })
        };
        FlexTensor::from_data(TensorData::new(output, shape))
    }

    impl GeluOps for Flex {
        fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
            if x.dtype() != DType::F32 {
                return Self::gelu(x);
            }
            let input = contiguous(&x);
            map_parallel(
                x.layout().shape().clone(),
                #[inline(always)]
                |start, out| {
                    for (y, &x) in out.iter_mut().zip(&input[start..]) {
                        y.write(x * cdf_and_density(x).0);
                    }
                },
            )
        }

        fn exact_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
                return Self::gelu_backward(x, grad);
            }
            let (input, upstream) = (contiguous(&x), contiguous(&grad));
            map_parallel(
                x.layout().shape().clone(),
                #[inline(always)]
                |start, out| {
                    let pairs = input[start..].iter().zip(&upstream[start..]);
                    for (dx, (&x, &g)) in out.iter_mut().zip(pairs) {
                        let (cdf, density) = cdf_and_density(x);
                        dx.write(g * (cdf + x * density));
                    }
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// Values over GELU's whole interesting range, in a transposed (strided) view as well.
    fn inputs(device: &Device) -> Tensor<2> {
        let line = Tensor::<1>::from_floats(
            [
                -12.0, -6.0, -3.5, -1.0, -0.3, -1e-4, 0.0, 1e-4, 0.3, 1.0, 3.5, 6.0, 12.0,
            ],
            device,
        );
        let random = Tensor::<1>::random([73 * 45 - 13], Distribution::Normal(0.0, 3.0), device);
        Tensor::cat(vec![line, random], 0).reshape([73, 45])
    }

    /// Forward values and gradients equal Burn's own GELU, on every CPU backend compiled in.
    #[test]
    fn matches_burns_gelu_and_its_gradient() {
        let mut devices = vec![];
        #[cfg(feature = "flex")]
        devices.push(Device::flex());
        #[cfg(feature = "ndarray")]
        devices.push(Device::ndarray());
        for device in devices {
            let device = device.autodiff();
            for x in [inputs(&device), inputs(&device).transpose()] {
                let ours = x.clone().require_grad();
                let theirs = x.require_grad();
                let (y_ours, y_theirs) = (gelu(ours.clone()), activation::gelu(theirs.clone()));
                y_ours.clone().into_data().assert_approx_eq::<f32>(
                    &y_theirs.clone().into_data(),
                    Tolerance::absolute(2e-6),
                );
                // Weight each output differently so a gradient in the wrong place shows.
                let weights = Tensor::random(y_ours.dims(), Distribution::Default, &device);
                let grads_ours = (y_ours * weights.clone()).sum().backward();
                let grads_theirs = (y_theirs * weights).sum().backward();
                ours.grad(&grads_ours)
                    .unwrap()
                    .into_data()
                    .assert_approx_eq::<f32>(
                        &theirs.grad(&grads_theirs).unwrap().into_data(),
                        Tolerance::absolute(2e-6),
                    );
            }
        }
    }

    /// The kernel, run wide on the pool (AVX2 where the CPU has it, `models/vectorised.rs`),
    /// gives the bits of the same formula evaluated one element at a time in baseline x86-64
    /// code: a checkpoint resumes to the same numbers on a CPU with or without AVX2.
    #[cfg(feature = "flex")]
    #[test]
    fn the_wide_kernel_gives_the_per_element_bits() {
        use super::flex_kernel::cdf_and_density;
        let device = Device::flex();
        let x = inputs(&device).reshape([73 * 45]);
        let values: Vec<f32> = x.to_data().to_vec().unwrap();
        let upstream: Vec<f32> = (0..values.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let grad = Tensor::<1>::from_floats(upstream.as_slice(), &device);
        let bits = |t: Tensor<1>| -> Vec<u32> {
            let v: Vec<f32> = t.into_data().to_vec().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        // One element per call, through a function pointer: never inlined into the wide code.
        let per_element: fn(f32) -> (f32, f32) = std::hint::black_box(cdf_and_density);
        let forward: Vec<u32> = values
            .iter()
            .map(|&x| (x * per_element(x).0).to_bits())
            .collect();
        let backward: Vec<u32> = (values.iter().zip(&upstream))
            .map(|(&x, &g)| {
                let (cdf, density) = per_element(x);
                (g * (cdf + x * density)).to_bits()
            })
            .collect();
        let run = |x: Tensor<1>| {
            Tensor::from_dispatch(<Dispatch as GeluOps>::exact_gelu(x.into_dispatch()))
        };
        assert_eq!(bits(run(x.clone())), forward);
        let backward_of = |x: Tensor<1>, g: Tensor<1>| {
            Tensor::from_dispatch(<Dispatch as GeluOps>::exact_gelu_backward(
                x.into_dispatch(),
                g.into_dispatch(),
            ))
        };
        assert_eq!(bits(backward_of(x, grad)), backward);
    }
}
