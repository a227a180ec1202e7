//! Lookahead (Zhang et al. 2019, "k steps forward, 1 step back") around any inner optimiser: the
//! inner optimiser moves the fast weights; after every k-th of its steps the slow weights move
//! `alpha` of the way towards them and the fast weights restart from the slow ones. The inner
//! optimiser's state is kept across synchronisations (the paper's default).

use super::params::{combine_params, flat_values};
use crate::recipe::LookaheadSection;
use burn::module::Module;

/// The slow weights, a copy of the model's shape, and when to synchronise.
pub struct Lookahead<M> {
    k: usize,
    alpha: f64,
    slow: M,
}

impl<M: Module + Clone> Lookahead<M> {
    /// Slow weights starting as `model`'s weights (a copy of handles: tensors are immutable).
    pub fn new(section: &LookaheadSection, model: &M) -> Self {
        Self {
            k: section.k,
            alpha: section.alpha,
            slow: model.clone(),
        }
    }

    /// The fast weights after the run's optimiser step number `step` (1 for the first): on
    /// every k-th, `slow += alpha * (fast - slow)` and the fast weights become the slow ones.
    /// The steps are counted by the run's step, so a resumed run synchronises where a straight
    /// one does.
    pub fn after_step(&mut self, step: usize, fast: M) -> M {
        if !step.is_multiple_of(self.k) {
            return fast;
        }
        let alpha = self.alpha;
        let moved = combine_params(self.slow.clone(), &flat_values(&fast), |slow, fast| {
            slow.clone().add(fast.sub(slow).mul_scalar(alpha))
        });
        self.slow = moved;
        combine_params(fast, &flat_values(&self.slow), |_, slow| slow)
    }

    pub fn slow(&self) -> &M {
        &self.slow
    }

    /// Take slow weights saved in a checkpoint.
    pub fn restore(&mut self, slow: M) {
        self.slow = slow;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{OptimKind, OptimSection};
    use crate::train::optim;
    use burn::nn::{Initializer, Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::prelude::*;

    /// One weight w (a 1 -> 1 linear layer without bias).
    #[derive(Module, Debug)]
    struct One {
        w: Linear,
    }

    fn weight(model: &One) -> f32 {
        model.w.weight.val().into_scalar::<f32>()
    }

    #[test]
    fn fast_and_slow_weights_after_2k_steps_equal_a_hand_computation() {
        let device = Device::flex().autodiff();
        let model = crate::train::params::with_stable_ids(One {
            w: LinearConfig::new(1, 1)
                .with_bias(false)
                .with_initializer(Initializer::Constant { value: 1.0 })
                .init(&device),
        });
        assert_eq!(weight(&model), 1.0);
        // Plain SGD (no momentum, no decay), lr 0.1, and the loss w²/2 * x² with x = 2, so the
        // gradient is 4w: each inner step multiplies w by 1 - 0.1 * 4 = 0.6.
        let section = OptimSection {
            kind: OptimKind::Sgd,
            weight_decay: 0.0,
            ..OptimSection::default()
        };
        let (k, alpha, lr) = (3, 0.5, 0.1);
        let mut optimizer = optim::build(&section, &model);
        let mut lookahead = Lookahead::new(&LookaheadSection { k, alpha }, &model);
        let mut model = model;
        let (mut fast, mut slow) = (1.0f64, 1.0f64);
        for step in 1..=2 * k {
            let x = Tensor::<2>::from_data([[2.0f32]], &device);
            let y = model.w.forward(x);
            let loss = y.square().sum().div_scalar(2.0);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(lr, model, grads);
            model = lookahead.after_step(step, model);
            // By hand.
            fast -= lr * 4.0 * fast;
            if step % k == 0 {
                slow += alpha * (fast - slow);
                fast = slow;
            }
            assert!(
                (weight(&model) as f64 - fast).abs() < 1e-6,
                "step {step}: fast {} vs {fast}",
                weight(&model)
            );
            assert!(
                (weight(lookahead.slow()) as f64 - slow).abs() < 1e-6,
                "step {step}: slow {} vs {slow}",
                weight(lookahead.slow())
            );
        }
        // 0.6³ = 0.216: slow 1 -> 0.608 -> 0.608 * (1 + 0.216) / 2 = 0.369664.
        assert!((slow - 0.369664).abs() < 1e-12, "{slow}");
        // The fast weights still train after a synchronisation (a leaf parameter).
        assert!(model.w.weight.val().is_require_grad());
    }
}
