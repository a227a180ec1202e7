//! Per-parameter learning rates for fine-tuning: layer-wise decay (`optim.layer_lr_decay`,
//! ELECTRA/BEiT) and a multiplier for the task head (`optim.head_lr_scale`), placed by the same
//! rule as freezing ([`Anatomy`]).
//!
//! Each group of parameters with one factor gets its own copy of the recipe's schedule, stepped
//! in lock-step with the base one and multiplied by the factor ([`Scaled`]): exactly the base
//! schedule times a constant whatever its shape (warm-up, cosine, noam), with no appeal to the
//! schedules being linear in their peak. A resumed run replays every copy, so resume stays exact;
//! the logged `lr` is the base schedule's.

use super::freeze::{Anatomy, Place};
use super::schedule::Schedule;
use crate::error::{Error, Result};
use crate::recipe::OptimSection;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::module::{ParamGroup, ParamId};
use std::collections::BTreeMap;

/// The learning-rate factor of every parameter whose factor is not 1, grouped by factor
/// (ascending). Empty when the recipe asks for neither option.
pub fn factors(optim: &OptimSection, anatomy: &Anatomy) -> Result<Vec<(f64, Vec<ParamId>)>> {
    let model = &anatomy.model;
    if optim.layer_lr_decay.is_some() && anatomy.layers == 0 {
        return Err(Error::Recipe(format!(
            "`optim.layer_lr_decay`: a {model} model has no stack of layers to decay the learning \
             rate over; remove it (or use `optim.head_lr_scale`)"
        )));
    }
    let has_head = anatomy.params.iter().any(|(_, _, p)| *p == Place::Head);
    if optim.head_lr_scale.is_some() && !has_head {
        return Err(Error::Recipe(format!(
            "`optim.head_lr_scale`: a {model} model has no task head of its own (its output layer \
             is tied to its embeddings); remove it"
        )));
    }
    let decay = optim.layer_lr_decay.unwrap_or(1.0);
    let head = optim.head_lr_scale.unwrap_or(1.0);
    let mut groups: BTreeMap<u64, (f64, Vec<ParamId>)> = BTreeMap::new();
    for (_, id, place) in &anatomy.params {
        // The depth below the top layer: 0 for the top layer and what sits above the stacks.
        let factor = match place {
            Place::Embeddings => decay.powi(anatomy.layers as i32),
            Place::Layer { index, of } => decay.powi((of - 1 - index) as i32),
            Place::Head => head,
            Place::Body => 1.0,
        };
        if factor != 1.0 {
            // Positive floats order as their bits do.
            groups
                .entry(factor.to_bits())
                .or_insert_with(|| (factor, Vec::new()))
                .1
                .push(*id);
        }
    }
    Ok(groups.into_values().collect())
}

/// A schedule multiplied by a constant.
#[derive(Clone)]
pub struct Scaled {
    base: ModuleLrScheduler,
    factor: f64,
}

impl LrScheduler for Scaled {
    fn step(&mut self) -> f64 {
        self.base.step().base() * self.factor
    }

    fn to_record(&self) -> LrSchedulerRecord {
        self.base.to_record()
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        self.base = self.base.clone().load_record(record);
    }
}

/// `schedule` (not yet stepped) with each group of `factors` on a copy of it scaled by the
/// group's factor.
pub fn with_factors(schedule: Schedule, factors: Vec<(f64, Vec<ParamId>)>) -> Schedule {
    let base = schedule.clone();
    factors
        .into_iter()
        .fold(schedule, |schedule, (factor, ids)| {
            let scaled = Scaled {
                base: base.clone(),
                factor,
            };
            schedule.with_group(ParamGroup::from_ids(ids), scaled)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{OptimKind, SchedulerKind, SchedulerSection};
    use crate::train::freeze::{freeze_paths, trainable_params};
    use crate::train::params::with_stable_ids;
    use crate::train::{optim, schedule};
    use burn::module::Module;
    use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::prelude::*;

    /// BERT's parameter paths in miniature: `bert.{tokens, encoder.layers.i, pooler}` and a
    /// classifier, so that the BERT rule places them.
    #[derive(Module, Debug)]
    struct Mini {
        bert: MiniBert,
        classifier: Linear,
    }
    #[derive(Module, Debug)]
    struct MiniBert {
        tokens: Embedding,
        encoder: MiniEncoder,
        pooler: Linear,
    }
    #[derive(Module, Debug)]
    struct MiniEncoder {
        layers: Vec<Linear>,
    }

    fn mini(device: &Device) -> Mini {
        let linear = || LinearConfig::new(4, 4).init(device);
        with_stable_ids(Mini {
            bert: MiniBert {
                tokens: EmbeddingConfig::new(5, 4).init(device),
                encoder: MiniEncoder {
                    layers: (0..3).map(|_| linear()).collect(),
                },
                pooler: linear(),
            },
            classifier: LinearConfig::new(4, 2).init(device),
        })
    }

    fn forward(model: &Mini, device: &Device) -> Tensor<1> {
        let ids = Tensor::<2, Int>::from_data([[1, 2, 3], [4, 0, 2]], device);
        let mut x = model.bert.tokens.forward(ids);
        for layer in &model.bert.encoder.layers {
            x = layer.forward(x).tanh();
        }
        let x = model.bert.pooler.forward(x).tanh();
        model.classifier.forward(x).powi_scalar(2).sum()
    }

    fn bert_section() -> crate::recipe::ModelSection {
        crate::recipe::ModelSection::Bert(crate::models::bert::BertOptions {
            n_layer: Some(3),
            ..Default::default()
        })
    }

    fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.try_into_vec_as::<f32>().unwrap()
    }

    /// One plain SGD step (no momentum, no decay): each parameter moves by its group's lr times
    /// its gradient, lr * decay^depth for the layers, lr * head_lr_scale for the head.
    #[test]
    fn one_sgd_step_moves_each_group_by_its_own_learning_rate() {
        let device = Device::flex().autodiff();
        let model = mini(&device);
        let anatomy = Anatomy::of(&bert_section(), &model);
        let section = OptimSection {
            kind: OptimKind::Sgd,
            weight_decay: 0.0,
            layer_lr_decay: Some(0.5),
            head_lr_scale: Some(10.0),
            ..OptimSection::default()
        };
        let lr = 0.1;
        let schedule = schedule::build(&SchedulerSection::default(), lr, 10, 4).unwrap();
        let mut schedule = with_factors(schedule, factors(&section, &anatomy).unwrap());
        let mut optimizer = optim::build(&section, &model);
        let grads = GradientsParams::from_grads(forward(&model, &device).backward(), &model);
        let weight = |m: &Mini, path: &str| -> Tensor<2> {
            match path {
                "bert.tokens.weight" => m.bert.tokens.weight.val(),
                "bert.encoder.layers.0.weight" => m.bert.encoder.layers[0].weight.val(),
                "bert.encoder.layers.1.weight" => m.bert.encoder.layers[1].weight.val(),
                "bert.encoder.layers.2.weight" => m.bert.encoder.layers[2].weight.val(),
                "bert.pooler.weight" => m.bert.pooler.weight.val(),
                "classifier.weight" => m.classifier.weight.val(),
                _ => unreachable!(),
            }
        };
        let expected = [
            ("bert.tokens.weight", 0.125), // decay^3: below all three layers
            ("bert.encoder.layers.0.weight", 0.25),
            ("bert.encoder.layers.1.weight", 0.5),
            ("bert.encoder.layers.2.weight", 1.0),
            ("bert.pooler.weight", 1.0),
            ("classifier.weight", 10.0),
        ];
        let before: Vec<Vec<f32>> = expected
            .iter()
            .map(|(p, _)| flat(weight(&model, p)))
            .collect();
        let by_id: Vec<ParamId> = expected
            .iter()
            .map(|(p, _)| anatomy.params.iter().find(|(q, _, _)| q == p).unwrap().1)
            .collect();
        let gradients: Vec<Vec<f32>> = by_id
            .iter()
            .map(|id| flat(grads.get::<2>(*id).unwrap()))
            .collect();
        let lrs = schedule.step();
        assert_eq!(lrs.base(), lr, "the logged lr is the base one");
        let model = optimizer.step(lrs, model, grads);
        for (i, (path, factor)) in expected.iter().enumerate() {
            let after = flat(weight(&model, path));
            let (num, den) = (before[i].iter().zip(&after).zip(&gradients[i]))
                .filter(|(_, g)| g.abs() > 1e-6)
                .fold((0.0, 0.0), |(n, d), ((b, a), g)| {
                    (n + ((b - a) * g) as f64, d + (g * g) as f64)
                });
            assert!(den > 0.0, "{path} has a gradient");
            let effective = num / den;
            // f32 rounding of the small updates (b - a) limits the estimate to about 1e-3.
            assert!(
                (effective - lr * factor).abs() < 1e-3 * lr * factor,
                "{path}: lr {effective}, expected {}",
                lr * factor
            );
        }
    }

    /// The scaled copies follow the base schedule's shape (warm-up, cosine) step by step.
    #[test]
    fn each_group_follows_the_base_schedule_times_its_factor() {
        let device = Device::flex();
        let model = mini(&device);
        let anatomy = Anatomy::of(&bert_section(), &model);
        let section = OptimSection {
            layer_lr_decay: Some(0.8),
            ..OptimSection::default()
        };
        let scheduler = SchedulerSection {
            kind: SchedulerKind::WarmupCosine,
            warmup_steps: 3,
            min_lr: 1e-5,
            decay_steps: None,
        };
        let groups = factors(&section, &anatomy).unwrap();
        let embeddings = anatomy.params[0].1;
        let (factor, _) = groups
            .iter()
            .find(|(_, ids)| ids.contains(&embeddings))
            .unwrap();
        assert!((factor - 0.8f64.powi(3)).abs() < 1e-12);
        let mut schedule = with_factors(schedule::build(&scheduler, 1e-3, 12, 4).unwrap(), groups);
        for _ in 0..12 {
            let lrs = schedule.step();
            let got = lrs.lr_from_param(embeddings, None);
            assert!((got - lrs.base() * 0.8f64.powi(3)).abs() < 1e-15, "{got}");
        }
        // Freezing uses the same places: bottom two layers and the embeddings.
        let frozen = anatomy
            .frozen_paths(&crate::recipe::FreezeSection {
                embeddings: true,
                bottom_layers: 2,
                modules: vec![],
            })
            .unwrap();
        assert_eq!(
            frozen.into_iter().collect::<Vec<_>>(),
            [
                "bert.encoder.layers.0.bias",
                "bert.encoder.layers.0.weight",
                "bert.encoder.layers.1.bias",
                "bert.encoder.layers.1.weight",
                "bert.tokens.weight"
            ]
        );
        let frozen_model = freeze_paths(
            mini(&Device::flex().autodiff()),
            &["bert.tokens.weight".to_string()].into(),
        );
        assert_eq!(trainable_params(&frozen_model), model.num_params() - 20);
    }
}
