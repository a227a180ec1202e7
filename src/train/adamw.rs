//! AdamW with each parameter's update as one operation: on flex one parallel pass that reads the
//! parameter, its gradient and both moments and writes them back in place; elsewhere Burn's own
//! composition. Same numbers as `burn::optim::AdamW` to the bit, same state (so checkpoints of
//! either load in the other).
//!
//! Why: Burn's AdamW takes about fifteen elementwise tensor operations per parameter (scale and
//! add each moment, bias-correct both, square root, divide, decay, step), each one thread on flex
//! and most a fresh buffer: memory traffic that grows with the parameter count. On BERT-base
//! pretraining the fused update took 4% off the training step (bench/README.md).

// NdArray is deprecated by Burn but stays selectable (src/backend.rs); the extension names it.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

/// AdamW (decoupled weight decay, bias-corrected moments, no AMSGrad) with Burn's defaults for
/// what the recipe does not set.
#[derive(Clone, Debug)]
pub struct FusedAdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Default for FusedAdamW {
    /// `burn::optim::AdamWConfig::new()`'s values.
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay: 1e-4,
        }
    }
}

/// The factors of one update, each rounded to f32 where Burn's AdamW rounds it, so that the fused
/// kernel and the composition compute the same numbers.
#[derive(Clone, Copy, Debug)]
pub struct AdamWFactors {
    pub beta_1: f32,
    pub beta_2: f32,
    /// `1 - beta_1` and `1 - beta_2`: the new gradient's weights in the moments.
    pub one_minus_beta_1: f32,
    pub one_minus_beta_2: f32,
    /// `1 - beta^t`: the bias corrections at step `t`.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    /// `1 - lr·weight_decay`, or `None` where there is no decay (the parameter is not rescaled).
    /// This and `lr` stay f64 as Burn passes them; each backend rounds them as its scalars.
    pub keep: Option<f64>,
    pub lr: f64,
}

impl FusedAdamW {
    /// Burn's AdamW with the same settings: the reference this one equals.
    pub fn burns(&self) -> burn::optim::AdamW {
        burn::optim::AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
            .build()
    }

    fn factors(&self, lr: LearningRate, time: usize) -> AdamWFactors {
        let time = time as i32;
        let decay_rate = lr * self.weight_decay as f64;
        AdamWFactors {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            one_minus_beta_1: 1.0 - self.beta_1,
            one_minus_beta_2: 1.0 - self.beta_2,
            correction_1: 1.0 - self.beta_1.powi(time),
            correction_2: 1.0 - self.beta_2.powi(time),
            epsilon: self.epsilon,
            keep: (decay_rate != 0.0).then_some(1.0 - decay_rate),
            lr,
        }
    }
}

impl Optimizer for FusedAdamW {
    /// Burn's AdamW state: the moments and the step count.
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // A first step is a step from zero moments: `0·beta + g·(1 - beta)` is `g·(1 - beta)`
        // exactly, which is what Burn's AdamW starts from.
        let (time, moment_1, moment_2) = match state {
            Some(state) => (
                state.momentum.time,
                state.momentum.moment_1,
                state.momentum.moment_2,
            ),
            None => (0, grad.zeros_like(), grad.zeros_like()),
        };
        let time = time + 1;
        let (tensor, moment_1, moment_2) = <Dispatch as AdamWOps>::adamw_update(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            moment_1.into_dispatch(),
            moment_2.into_dispatch(),
            self.factors(lr, time),
        );
        let momentum = AdaptiveMomentumState::new(
            time,
            Tensor::from_dispatch(moment_1),
            Tensor::from_dispatch(moment_2),
        );
        (
            Tensor::from_dispatch(tensor),
            Some(AdamWState::new(momentum)),
        )
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// The update, per backend. The default body is Burn's AdamW's operations in its order.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait AdamWOps: Backend {
    /// `(parameter, moment_1, moment_2)` after one step with `grad`.
    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        factors: AdamWFactors,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::<Self>(param, grad, moment_1, moment_2, factors)
    }
}

#[cfg(feature = "ndarray")]
impl AdamWOps for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl AdamWOps for burn::backend::LibTorch {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl AdamWOps for burn::backend::Cube {}
/// Optimisers step on the inner backend's tensors; this is for completeness.
impl<B: AdamWOps, C: CheckpointStrategy> AdamWOps for Autodiff<B, C> {}

/// `burn::optim::AdamW::step`'s operations on primitives.
fn composed<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moment_1: FloatTensor<B>,
    moment_2: FloatTensor<B>,
    f: AdamWFactors,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let scaled = |x, s: f64| B::float_mul_scalar(x, s.into());
    let moment_1 = B::float_add(
        scaled(moment_1, f.beta_1.into()),
        scaled(grad.clone(), f.one_minus_beta_1.into()),
    );
    let squared = B::float_mul(grad.clone(), grad);
    let moment_2 = B::float_add(
        scaled(moment_2, f.beta_2.into()),
        scaled(squared, f.one_minus_beta_2.into()),
    );
    let corrected_1 = B::float_div_scalar(moment_1.clone(), f.correction_1.into());
    let corrected_2 = B::float_div_scalar(moment_2.clone(), f.correction_2.into());
    let denominator = B::float_add_scalar(B::float_sqrt(corrected_2), f.epsilon.into());
    let delta = B::float_div(corrected_1, denominator);
    let decayed = match f.keep {
        Some(keep) => scaled(param, keep),
        None => param,
    };
    let param = B::float_sub(decayed, scaled(delta, f.lr));
    (param, moment_1, moment_2)
}

#[cfg(feature = "flex")]
mod flex_kernel {
    use super::{AdamWFactors, AdamWOps, composed};
    use crate::models::gelu::contiguous;
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::DType;
    use rayon::prelude::*;

    /// Elements per parallel task (as the GELU kernel's).
    const CHUNK: usize = 8 * 1024;

    /// A dense tensor's elements to write in place: its own buffer when nothing else holds it (a
    /// parameter or moment between steps), a copy otherwise.
    fn writable(tensor: &mut FlexTensor, len: usize) -> &mut [f32] {
        &mut tensor.storage_mut::<f32>()[..len]
    }

    impl AdamWOps for Flex {
        fn adamw_update(
            mut param: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            mut moment_1: FloatTensor<Self>,
            mut moment_2: FloatTensor<Self>,
            f: AdamWFactors,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            let len = param.layout().shape().num_elements();
            let f32_of_one_size = [&param, &grad, &moment_1, &moment_2]
                .iter()
                .all(|t| t.dtype() == DType::F32 && t.layout().shape().num_elements() == len);
            let all_dense = [&param, &moment_1, &moment_2]
                .iter()
                .all(|t| t.layout().contiguous_offsets() == Some((0, len)));
            if !f32_of_one_size || !all_dense {
                return composed::<Self>(param, grad, moment_1, moment_2, f);
            }
            let grad = contiguous(&grad);
            let (p, m, v) = (
                writable(&mut param, len),
                writable(&mut moment_1, len),
                writable(&mut moment_2, len),
            );
            p.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(grad.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| update(p, m, v, g, f));
            (param, moment_1, moment_2)
        }
    }

    /// One chunk of the update, each expression as the composition rounds it on flex (scalars
    /// to f32, no fused multiply-adds), so the result is Burn's to the bit.
    fn update(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], f: AdamWFactors) {
        let (keep, lr) = (f.keep.unwrap_or(1.0) as f32, f.lr as f32);
        for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
            *m = *m * f.beta_1 + g * f.one_minus_beta_1;
            *v = *v * f.beta_2 + (g * g) * f.one_minus_beta_2;
            let delta = (*m / f.correction_1) / ((*v / f.correction_2).sqrt() + f.epsilon);
            // `x·1` is `x` exactly: no decay and Burn's skipped rescaling agree.
            *p = *p * keep - delta * lr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn random(shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// Six steps of ours and of Burn's AdamW from the same start, with the learning rate
    /// changing between steps: the parameters and both moments after each step.
    fn both_runs(
        ours: &FusedAdamW,
        start: Tensor<2>,
        grads: &[Tensor<2>],
    ) -> Vec<[(TensorData, TensorData); 3]> {
        let theirs = ours.burns();
        let (mut p_ours, mut p_theirs) = (start.clone(), start);
        let (mut s_ours, mut s_theirs) = (None, None);
        let mut states = Vec::new();
        for (step, grad) in grads.iter().enumerate() {
            let lr = 1e-3 * (step + 1) as f64;
            (p_ours, s_ours) = Optimizer::step(ours, lr, p_ours, grad.clone(), s_ours);
            (p_theirs, s_theirs) = theirs.step(lr, p_theirs, grad.clone(), s_theirs);
            let (a, b) = (s_ours.clone().unwrap(), s_theirs.clone().unwrap());
            assert_eq!(a.momentum.time, b.momentum.time);
            states.push([
                (p_ours.to_data(), p_theirs.to_data()),
                (a.momentum.moment_1.to_data(), b.momentum.moment_1.to_data()),
                (a.momentum.moment_2.to_data(), b.momentum.moment_2.to_data()),
            ]);
        }
        states
    }

    /// The fused update is Burn's AdamW to the bit, with and without weight decay, on dense
    /// parameters (the fused kernel) and on a transposed view (the composition).
    #[test]
    fn steps_equal_burns_adamw_exactly() {
        let mut devices = vec![Device::flex()];
        #[cfg(feature = "ndarray")]
        devices.push(Device::ndarray());
        for device in devices {
            for weight_decay in [0.0, 0.1] {
                let ours = FusedAdamW {
                    weight_decay,
                    epsilon: 1e-8,
                    ..FusedAdamW::default()
                };
                // 24_000 elements: several parallel chunks, the last one partial.
                let grads: Vec<_> = (0..6).map(|_| random([120, 200], &device)).collect();
                for start in [
                    random([120, 200], &device),
                    random([200, 120], &device).transpose(),
                ] {
                    for (step, pairs) in both_runs(&ours, start, &grads).into_iter().enumerate() {
                        for (what, (a, b)) in
                            ["parameter", "moment 1", "moment 2"].iter().zip(pairs)
                        {
                            assert_eq!(a, b, "{what} after step {step}, decay {weight_decay}");
                        }
                    }
                }
            }
        }
    }

    /// A parameter whose buffer something else still holds (an EMA copy, a snapshot) is updated
    /// in a copy: the other holder keeps the old values.
    #[test]
    fn a_shared_parameter_is_not_changed_under_its_other_holder() {
        let device = Device::flex();
        let param = random([64, 64], &device);
        let snapshot = param.clone();
        let before = snapshot.to_data();
        let optimizer = FusedAdamW::default();
        let (updated, state) =
            Optimizer::step(&optimizer, 0.1, param, random([64, 64], &device), None);
        assert_eq!(snapshot.to_data(), before);
        let first = updated.to_data();
        assert_ne!(first, before);
        let grad = random([64, 64], &device);
        let (second, _) = Optimizer::step(&optimizer, 0.1, updated.clone(), grad, state);
        assert_eq!(updated.to_data(), first);
        assert_ne!(second.to_data(), first);
    }

    /// An optimiser state saved by Burn's AdamW (every experiment from before this optimiser)
    /// loads into ours, and training goes on to the same bits as under Burn's.
    #[test]
    fn a_state_saved_by_burns_adamw_resumes_to_the_same_bits() {
        use crate::train::params::tests::{Two, two};
        use burn::optim::{GradientsParams, ModuleOptimizer};
        let device = Device::flex().autodiff();
        let settings = FusedAdamW {
            weight_decay: 0.1,
            ..FusedAdamW::default()
        };
        let x = Tensor::<2>::random([5, 3], Distribution::Normal(0.0, 1.0), &device);
        let grads_of = |model: &Two| {
            let loss = model.b.forward(model.a.forward(x.clone())).square().sum();
            GradientsParams::from_grads(loss.backward(), model)
        };
        let mut model = two(&device, 4);
        let mut burns = ModuleOptimizer::from(settings.burns());
        for _ in 0..2 {
            let grads = grads_of(&model);
            model = burns.step(1e-2, model, grads);
        }
        let saved = burns.into_bytes().unwrap();
        let mut ours = ModuleOptimizer::from(settings).from_bytes(saved).unwrap();
        let (mut theirs_model, mut ours_model) = (model.clone(), model);
        for _ in 0..2 {
            let grads = grads_of(&theirs_model);
            theirs_model = burns.step(1e-2, theirs_model, grads);
            let grads = grads_of(&ours_model);
            ours_model = ours.step(1e-2, ours_model, grads);
        }
        let weights = |m: &Two| {
            [m.a.weight.val(), m.b.weight.val()]
                .map(|w| w.to_data())
                .to_vec()
        };
        assert_eq!(weights(&ours_model), weights(&theirs_model));
    }
}
