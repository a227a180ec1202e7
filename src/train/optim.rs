//! The optimisers (Burn's SGD, our fused AdamW), configured from the recipe, with weight decay
//! only where it belongs.

use super::adamw::FusedAdamW;
use super::params::no_decay_ids;
use crate::recipe::{OptimKind, OptimSection};
use burn::module::{Module, ParamGroup};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};

/// The optimiser for `model`: one group with the recipe's weight decay and one without it for
/// biases, norms and embeddings. Clipping is not configured here: Burn's clips each tensor on its
/// own, while we clip by the global norm in the training loop.
pub fn build<M: Module>(section: &OptimSection, model: &M) -> ModuleOptimizer {
    let no_decay = ParamGroup::from_ids(no_decay_ids(model));
    match section.kind {
        OptimKind::Adamw => {
            let adamw = |decay: f64| FusedAdamW {
                beta_1: section.betas[0] as f32,
                beta_2: section.betas[1] as f32,
                epsilon: section.eps as f32,
                weight_decay: decay as f32,
            };
            ModuleOptimizer::from(adamw(section.weight_decay)).with_group(
                no_decay,
                adamw(0.0),
                None,
            )
        }
        OptimKind::Sgd => {
            let sgd = |decay: f64| {
                let momentum = (section.momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(section.momentum)
                        .with_dampening(0.0)
                        .with_nesterov(section.nesterov)
                });
                let decay = (decay > 0.0).then(|| WeightDecayConfig::new(decay as f32));
                SgdConfig::new()
                    .with_momentum(momentum)
                    .with_weight_decay(decay)
                    .build()
            };
            ModuleOptimizer::from(sgd(section.weight_decay)).with_group(no_decay, sgd(0.0), None)
        }
    }
}
