//! Fine-tuning's freezing (`train.freeze`) and the rule it shares with the per-layer learning
//! rates (`train::layer_lr`): where each parameter of a model sits, as embeddings, layer `i` of
//! a layer stack, the task head, or the rest of the body.
//!
//! A frozen parameter is set not to require a gradient (`Param::set_require_grad(false)`), so
//! backward gives it none: the optimiser then creates no state for it and applies no weight
//! decay to it, clipping and the gradient all-reduce never see it, and its weights stay
//! bit-identical. The setting is not saved, so the loop applies the freeze after every load (the
//! pretrained weights, a checkpoint).

use super::params::named_params;
use crate::error::{Error, Result};
use crate::recipe::{FreezeSection, ModelSection};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use std::collections::BTreeSet;

/// `model` with every float parameter whose dotted path (as [`named_params`] prints it)
/// satisfies `frozen` set not to require a gradient; the others are left as they are.
pub fn freeze_where<M: Module>(model: M, frozen: impl Fn(&str) -> bool) -> M {
    struct Freeze<F> {
        path: Vec<String>,
        frozen: F,
    }
    impl<F: Fn(&str) -> bool> ModuleMapper for Freeze<F> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match (self.frozen)(&self.path.join(".")) {
                true => param.set_require_grad(false),
                false => param,
            }
        }
    }
    model.map(&mut Freeze {
        path: Vec::new(),
        frozen,
    })
}

/// The number of parameter elements that take a gradient.
pub fn trainable_params<M: Module>(model: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if value.is_require_grad() {
                self.0 += value.shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

/// Where a parameter sits in its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Token, position and segment embeddings, with their norm and projection.
    Embeddings,
    /// Layer `index` (0 the lowest) of a stack of `of` layers.
    Layer { index: usize, of: usize },
    /// The task's own layers on top of the body (classifier, CRF, MLM and NSP heads).
    Head,
    /// The rest of the body (final norms, BERT's pooler, RNN layers, attention).
    Body,
}

/// Every parameter of a model with its [`Place`].
#[derive(Debug, Clone)]
pub struct Anatomy {
    /// The model, for messages (`bert with `head: ...``).
    pub model: String,
    /// `(dotted path, id, place)` in visiting order.
    pub params: Vec<(String, ParamId, Place)>,
    /// The most layers in one stack (0: the model has no layer stack).
    pub layers: usize,
    /// ALBERT: one layer's weights serve every layer of the stack.
    pub shared_layers: bool,
}

/// `path` is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl Anatomy {
    /// The places of `model`'s parameters, by the rule of the recipe's model type: a small table
    /// of the path prefixes each family gives its embeddings, layer stacks and head.
    pub fn of<M: Module>(section: &ModelSection, model: &M) -> Self {
        // (embeddings, layer stacks, head) prefixes; BERT's head is everything outside `bert`.
        let (embeddings, stacks, head): (&[&str], &[&str], &[&str]) = match section {
            ModelSection::Bert(_) => (
                &[
                    "bert.tokens",
                    "bert.segments",
                    "bert.positions",
                    "bert.embedding_norm",
                    "bert.embedding_projection",
                ],
                &["bert.encoder.layers"],
                &[],
            ),
            // GPT-2's output layer is its token embedding (tied): it has no head of its own.
            ModelSection::Gpt2(_) => (&["wte", "wpe"], &["blocks"], &[]),
            // The decoder's output projection is tied to the target embedding.
            ModelSection::TransformerSeq2seq(_) => (
                &["source_embed", "target_embed"],
                &["encoder.layers", "decoder"],
                &[],
            ),
            ModelSection::RnnSeq2seq(_) => (&["source_embed", "target_embed"], &[], &[]),
            ModelSection::Cnn(_) => (&["embedding"], &[], &["classifier"]),
            ModelSection::Rnn(_) => (&["embedding"], &[], &["output"]),
            ModelSection::RnnLm(_) => (&["embedding"], &["layers"], &["output", "output_bias"]),
            ModelSection::Nnlm(_) => (&["embedding"], &[], &["output", "direct"]),
            // Transformer-XL's output layer is its token embedding (tied), as GPT-2's.
            ModelSection::TransformerXl(_) => (&["wte"], &["layers"], &[]),
            // Word vectors are the whole model: nothing sits beside them to freeze them apart.
            ModelSection::Word2vec(_) | ModelSection::Glove(_) => (&[], &[], &[]),
        };
        let is_head = |path: &str| match section {
            ModelSection::Bert(_) => !under(path, "bert"),
            _ => head.iter().any(|h| under(path, h)),
        };
        let named = named_params(model);
        // Each stack's layer indices, to know how many layers it has.
        let layer_of = |path: &str| -> Option<(usize, usize)> {
            stacks.iter().enumerate().find_map(|(stack, prefix)| {
                let rest = path.strip_prefix(prefix)?.strip_prefix('.')?;
                let index = rest.split('.').next()?.parse().ok()?;
                Some((stack, index))
            })
        };
        let mut counts = vec![0usize; stacks.len()];
        for (path, _, _) in &named {
            if let Some((stack, index)) = layer_of(path) {
                counts[stack] = counts[stack].max(index + 1);
            }
        }
        let params = named
            .into_iter()
            .map(|(path, id, _)| {
                let place = if embeddings.iter().any(|e| under(&path, e)) {
                    Place::Embeddings
                } else if let Some((stack, index)) = layer_of(&path) {
                    Place::Layer {
                        index,
                        of: counts[stack],
                    }
                } else if is_head(&path) {
                    Place::Head
                } else {
                    Place::Body
                };
                (path, id, place)
            })
            .collect();
        let layers = counts.iter().copied().max().unwrap_or(0);
        let shared_layers = match section {
            ModelSection::Bert(o) => {
                o.share_layers == Some(true) || o.n_layer.is_some_and(|n| n > layers)
            }
            _ => false,
        };
        Self {
            model: section.options().title(),
            params,
            layers,
            shared_layers,
        }
    }

    /// The paths of the parameters `section` freezes; an entry of it that this model cannot
    /// honour is a recipe error naming the key.
    pub fn frozen_paths(&self, section: &FreezeSection) -> Result<BTreeSet<String>> {
        let model = &self.model;
        if section.bottom_layers > 0 {
            let key = "`train.freeze.bottom_layers`";
            if self.layers == 0 {
                return Err(Error::Recipe(format!(
                    "{key}: a {model} model has no stack of layers to freeze from the bottom; \
                     freeze its embeddings (`train.freeze.embeddings: true`) or name modules \
                     (`train.freeze.modules`)"
                )));
            }
            // One set of weights serves every layer: freezing "the bottom N" would freeze all.
            if self.shared_layers {
                return Err(Error::Recipe(format!(
                    "{key}: this {model} model shares one layer's weights across all its layers \
                     (ALBERT), so there are no bottom layers to freeze apart; freeze the shared \
                     layer with `train.freeze.modules: [bert.encoder.layers.0]`"
                )));
            }
            let fewest = self
                .params
                .iter()
                .filter_map(|(_, _, place)| match place {
                    Place::Layer { of, .. } => Some(*of),
                    _ => None,
                })
                .min()
                .unwrap_or(0);
            if section.bottom_layers > fewest {
                let smallest = if fewest < self.layers {
                    " in its smallest stack"
                } else {
                    ""
                };
                return Err(Error::Recipe(format!(
                    "{key} is {}, more than the {fewest} layers of this {model} model{smallest}",
                    section.bottom_layers
                )));
            }
        }
        for (i, prefix) in section.modules.iter().enumerate() {
            let prefix = prefix.trim_end_matches('.');
            if prefix.is_empty() || !self.params.iter().any(|(p, _, _)| under(p, prefix)) {
                return Err(Error::Recipe(format!(
                    "`train.freeze.modules[{i}]`: `{prefix}` is no parameter path or prefix of \
                     this {model} model; valid prefixes include {}",
                    self.prefixes_like(prefix)
                )));
            }
        }
        let frozen: BTreeSet<String> = self
            .params
            .iter()
            .filter(|(path, _, place)| {
                (section.embeddings && *place == Place::Embeddings)
                    || matches!(place, Place::Layer { index, .. } if *index < section.bottom_layers)
                    || (section.modules.iter()).any(|m| under(path, m.trim_end_matches('.')))
            })
            .map(|(path, _, _)| path.clone())
            .collect();
        if frozen.len() == self.params.len() {
            return Err(Error::Recipe(format!(
                "`train.freeze` freezes every parameter of this {model} model: nothing would \
                 train; leave some out"
            )));
        }
        Ok(frozen)
    }

    /// Up to eight module prefixes near `wanted` (sharing its longest leading part), for a
    /// message.
    fn prefixes_like(&self, wanted: &str) -> String {
        let mut prefixes = BTreeSet::new();
        for (path, _, _) in &self.params {
            let parts: Vec<&str> = path.split('.').collect();
            for end in 1..parts.len() {
                prefixes.insert(parts[..end].join("."));
            }
        }
        // The longest leading part of `wanted` that some prefix starts with.
        let wanted: Vec<&str> = wanted.split('.').collect();
        let near = (0..wanted.len())
            .rev()
            .map(|n| wanted[..n].join("."))
            .find(|stem| stem.is_empty() || prefixes.iter().any(|p| under(p, stem)))
            .unwrap_or_default();
        let depth = near.split('.').filter(|s| !s.is_empty()).count();
        let listed: Vec<String> = prefixes
            .iter()
            .filter(|p| (near.is_empty() || under(p, &near)) && p.split('.').count() == depth + 1)
            .take(8)
            .map(|p| format!("`{p}`"))
            .collect();
        listed.join(", ")
    }
}

/// `model` with the parameters of `paths` frozen.
pub fn freeze_paths<M: Module>(model: M, paths: &BTreeSet<String>) -> M {
    freeze_where(model, |path| paths.contains(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::tests::two;
    use crate::train::params::{
        global_grad_norm, no_decay_ids, running_statistics, with_stable_ids,
    };
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor.try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn a_frozen_parameter_gets_no_gradient_no_update_and_is_no_running_statistic() {
        let device = Device::flex().autodiff();
        let model = freeze_where(two(&device, 1), |path| path.starts_with("a."));
        assert_eq!(trainable_params(&model), 2 + 1, "b's weight and bias");
        let before = values(model.a.weight.val());
        let x = Tensor::<2>::from_data([[1.0f32, -2.0, 3.0]], &device);
        let loss = model.b.forward(model.a.forward(x)).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert!(grads.get::<2>(model.a.weight.id).is_none());
        assert!(grads.get::<2>(model.b.weight.id).is_some());
        // Clipping's norm takes the gradients there are.
        assert!(global_grad_norm(&model, &grads) > 0.0);
        // Frozen weights are not BatchNorm statistics: nothing to average across ranks.
        assert!(running_statistics(&model).is_empty());
        let mut optimizer = ModuleOptimizer::from(SgdConfig::new().build());
        let b_before = values(model.b.weight.val());
        let model = optimizer.step(0.5, model, grads);
        assert_eq!(values(model.a.weight.val()), before, "bit-identical");
        assert_ne!(values(model.b.weight.val()), b_before);
        // Still frozen after the step, and decay groups are unchanged by it.
        assert!(!model.a.weight.val().is_require_grad());
        assert_eq!(no_decay_ids(&model).len(), 2);
    }

    #[derive(Module, Debug)]
    struct Normed {
        embedding: Linear,
        norm: BatchNorm,
    }

    #[test]
    fn batch_norm_statistics_stay_running_statistics_beside_frozen_weights() {
        let device = Device::flex().autodiff();
        let model = with_stable_ids(Normed {
            embedding: LinearConfig::new(2, 2).init(&device),
            norm: BatchNormConfig::new(2).init(&device),
        });
        // Frozen by hand, so that this tests `running_statistics` alone.
        let mut model = model;
        model.embedding.weight = model.embedding.weight.set_require_grad(false);
        model.embedding.bias = model.embedding.bias.map(|b| b.set_require_grad(false));
        let statistics: Vec<ParamId> = running_statistics(&model)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        // The running mean and variance, not the frozen weight and bias.
        assert_eq!(statistics.len(), 2);
        let frozen = [
            model.embedding.weight.id,
            model.embedding.bias.as_ref().unwrap().id,
        ];
        assert!(frozen.iter().all(|id| !statistics.contains(id)));
    }

    /// A real BERT tagger with a CRF, ALBERT-shaped (one shared layer) or not, and a real GPT-2:
    /// the places their parameters get.
    #[test]
    fn real_models_place_their_parameters() {
        use crate::models::bert::{BertHead, BertOptions};
        use crate::recipe::ModelOptions;
        let device = Device::flex();
        let bert = |share: bool| {
            let mut options = BertOptions {
                head: BertHead::TokenClassification,
                n_layer: Some(3),
                n_head: Some(2),
                width: Some(8),
                share_layers: Some(share),
                max_len: Some(16),
                crf: true,
                vocab_size: Some(20),
                labels: Some(vec!["O".into(), "B-X".into(), "I-X".into()]),
                ..Default::default()
            };
            options.resolve().unwrap();
            let model = options.config().unwrap().init_tagger(&device);
            Anatomy::of(&ModelSection::Bert(options), &model)
        };
        let place = |anatomy: &Anatomy, path: &str| {
            let found = anatomy.params.iter().find(|(p, _, _)| p == path);
            found
                .unwrap_or_else(|| panic!("{path} in {:?}", anatomy.params))
                .2
        };
        let tagger = bert(false);
        assert_eq!((tagger.layers, tagger.shared_layers), (3, false));
        assert_eq!(place(&tagger, "bert.tokens.weight"), Place::Embeddings);
        assert_eq!(
            place(&tagger, "bert.embedding_norm.gamma"),
            Place::Embeddings
        );
        assert_eq!(
            place(&tagger, "bert.encoder.layers.1.qkv.weight"),
            Place::Layer { index: 1, of: 3 }
        );
        assert_eq!(place(&tagger, "bert.pooler.weight"), Place::Body);
        assert_eq!(place(&tagger, "classifier.weight"), Place::Head);
        assert_eq!(place(&tagger, "crf.transitions"), Place::Head);
        let frozen = tagger
            .frozen_paths(&FreezeSection {
                bottom_layers: 3,
                ..Default::default()
            })
            .unwrap();
        assert!(frozen.iter().all(|p| p.starts_with("bert.encoder.layers.")));
        let error = tagger
            .frozen_paths(&FreezeSection {
                modules: vec!["bert.encoder.layer.0".into()],
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("`bert.encoder.layers`"), "{error}");

        let albert = bert(true);
        assert_eq!((albert.layers, albert.shared_layers), (1, true));
        let error = albert
            .frozen_paths(&FreezeSection {
                bottom_layers: 1,
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("shares one layer"), "{error}");

        let gpt2 = crate::models::gpt2::Gpt2Config {
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            block_size: 8,
            vocab_size: 11,
            dropout: 0.0,
            bias: true,
            activation: Default::default(),
            lora: None,
        }
        .init(&device);
        let section = ModelSection::Gpt2(Default::default());
        let anatomy = Anatomy::of(&section, &gpt2);
        assert_eq!(anatomy.layers, 2);
        assert_eq!(place(&anatomy, "wpe.weight"), Place::Embeddings);
        assert!(anatomy.params.iter().all(|(_, _, p)| *p != Place::Head));
        assert_eq!(
            anatomy
                .params
                .iter()
                .filter(|(p, _, _)| p.starts_with("blocks.1."))
                .count(),
            anatomy
                .params
                .iter()
                .filter(|(_, _, p)| *p == Place::Layer { index: 1, of: 2 })
                .count()
        );
    }
}
