//! An exponential moving average of the weights (Polyak averaging as timm's `ModelEma` and
//! fairseq's `--ema-decay` keep it): after every optimiser step `ema = d * ema + (1 - d) * w`.
//! Validation measures it when it is on, and each checkpoint saves it as `ema.safetensors`.

use super::params::{combine_params, flat_values};
use burn::module::Module;

/// The averaged weights, a copy of the model's shape, and the decay.
pub struct Ema<M> {
    decay: f64,
    weights: M,
}

impl<M: Module + Clone> Ema<M> {
    /// An average starting as `model`'s weights.
    pub fn new(decay: f64, model: &M) -> Self {
        Self {
            decay,
            weights: model.clone(),
        }
    }

    /// Fold in the weights of `model` after an optimiser step. Running statistics are the
    /// model's own (shared with the copy), not averaged.
    pub fn update(&mut self, model: &M) {
        let d = self.decay;
        self.weights = combine_params(self.weights.clone(), &flat_values(model), |ema, w| {
            ema.mul_scalar(d).add(w.mul_scalar(1.0 - d))
        });
    }

    pub fn weights(&self) -> &M {
        &self.weights
    }

    /// Take averaged weights saved in a checkpoint.
    pub fn restore(&mut self, weights: M) {
        self.weights = weights;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::tests::two;
    use burn::prelude::*;

    fn values(model: &impl Module) -> Vec<f64> {
        let mut out = Vec::new();
        let mut ids: Vec<_> = flat_values(model).into_iter().collect();
        ids.sort_by_key(|(id, _)| id.val());
        for (_, v) in ids {
            out.extend(v.try_into_vec_as::<f64>().unwrap());
        }
        out
    }

    #[test]
    fn the_average_follows_its_recurrence() {
        let device = Device::flex().autodiff();
        let model = two(&device, 2);
        let d = 0.75;
        let mut ema = Ema::new(d, &model);
        let mut by_hand = values(&model);
        let mut model = model;
        for step in 1..=5 {
            // Some new weights: w <- w * (1 + step/10) + step/100.
            let moved = combine_params(model.clone(), &flat_values(&model), |w, _| {
                w.mul_scalar(1.0 + step as f64 / 10.0)
                    .add_scalar(step as f64 / 100.0)
            });
            model = moved;
            ema.update(&model);
            for (e, w) in by_hand.iter_mut().zip(values(&model)) {
                *e = d * *e + (1.0 - d) * w;
            }
            let got = values(ema.weights());
            assert_eq!(got.len(), by_hand.len());
            for (g, e) in got.iter().zip(&by_hand) {
                assert!(
                    (g - e).abs() < 1e-5 * (1.0 + e.abs()),
                    "step {step}: {g} vs {e}"
                );
            }
        }
        // Five steps of growth moved the weights well away from their average.
        let w = values(&model);
        assert!(w.iter().zip(&by_hand).any(|(w, e)| (w - e).abs() > 0.1));
    }
}
