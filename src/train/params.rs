//! Walks over a model's parameters: stable ids, which ones to decay, the global gradient norm.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use std::collections::HashMap;

/// Give every parameter the id of its position in the module's visiting order.
///
/// Burn draws `ParamId`s at random per process, while optimiser state is keyed by them; stable
/// ids make a checkpoint's optimiser state match the model of a resumed (or another rank's)
/// process. Mapping also materialises lazily initialised parameters in a fixed order, so the same
/// seed gives the same weights.
pub fn with_stable_ids<M: Module>(model: M) -> M {
    struct Renumber(u64);
    impl ModuleMapper for Renumber {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (_, value, mapper) = param.consume();
            self.0 += 1;
            Param::from_mapped_value(ParamId::from(self.0), value, mapper)
        }
    }
    model.map(&mut Renumber(0))
}

/// `(dotted path, id, rank)` of every float parameter, in visiting order.
pub fn named_params<M: Module>(model: &M) -> Vec<(String, ParamId, usize)> {
    #[derive(Default)]
    struct Names {
        path: Vec<String>,
        out: Vec<(String, ParamId, usize)>,
    }
    impl ModuleVisitor for Names {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push((self.path.join("."), param.id, D));
        }
    }
    let mut names = Names::default();
    model.visit(&mut names);
    names.out
}

/// The tensors a model keeps up to date without training them (BatchNorm's running mean and
/// variance), current as of the last forward pass, in visiting order.
///
/// Burn shows them to a visitor as parameters that take no gradient, as it shows frozen
/// parameters (`train::freeze`, LoRA's base weights): Burn's one module holding running state, BatchNorm, names them
/// `running_mean` and `running_var`, which tells the two apart. Frozen weights must not count:
/// they would travel in every step's all-reduce for nothing.
pub fn running_statistics<M: Module>(model: &M) -> Vec<(ParamId, Tensor<1>)> {
    struct Untrained(Vec<String>, Vec<(ParamId, Tensor<1>)>);
    impl ModuleVisitor for Untrained {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let running = self
                .0
                .last()
                .is_some_and(|name| name.starts_with("running_"));
            if running && !value.is_require_grad() {
                let len = value.shape().num_elements();
                self.1.push((param.id, value.reshape([len])));
            }
        }
    }
    let mut untrained = Untrained(Vec::new(), Vec::new());
    model.visit(&mut untrained);
    if untrained.1.is_empty() {
        return untrained.1;
    }
    // Burn holds a forward pass's update of a running statistic aside until the next update or
    // a `valid()` copy, so a visit sees the value before it; taking a copy folds the update in.
    sync_running_statistics(model);
    untrained.1.clear();
    model.visit(&mut untrained);
    untrained.1
}

/// Fold the pending updates of the model's running statistics in, so that what visits the model
/// (a checkpoint, a checksum) sees their current values.
pub fn sync_running_statistics<M: Module>(model: &M) {
    let _ = model.valid();
}

/// The model with the running statistics of `values` (ids and values as
/// [`running_statistics`] gives them) set.
pub fn set_running_statistics<M: Module>(model: M, values: Vec<(ParamId, Tensor<1>)>) -> M {
    struct Set(std::collections::HashMap<ParamId, Tensor<1>>);
    impl ModuleMapper for Set {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match self.0.remove(&param.id) {
                Some(value) => param.map(|old| value.reshape(old.shape().dims::<D>())),
                None => param,
            }
        }
    }
    model.map(&mut Set(values.into_iter().collect()))
}

/// Every float parameter's current value (running statistics included), flattened and detached
/// from autodiff, by id: the other side of [`combine_params`].
pub fn flat_values<M: Module>(model: &M) -> HashMap<ParamId, Tensor<1>> {
    struct Values(HashMap<ParamId, Tensor<1>>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val().inner();
            let len = value.shape().num_elements();
            self.0.insert(param.id, value.reshape([len]));
        }
    }
    sync_running_statistics(model);
    let mut values = Values(HashMap::new());
    model.visit(&mut values);
    values.0
}

/// `model` with each trained parameter `p` (one that requires gradients) replaced by
/// `combine(p, q)`, `q` being the value of the same id in `others` ([`flat_values`] of a model of
/// the same shape), both flat and without autodiff. The result is put back with `p`'s autodiff
/// settings, so the optimiser and the next forward pass see an ordinary leaf parameter. What does
/// not train (running statistics, frozen weights) is not averaged: it takes `q` as it is.
/// Weight averaging (Lookahead, EMA) is this, parameter by parameter.
pub fn combine_params<M, F>(model: M, others: &HashMap<ParamId, Tensor<1>>, combine: F) -> M
where
    M: Module,
    F: FnMut(Tensor<1>, Tensor<1>) -> Tensor<1>,
{
    struct Combine<'a, F> {
        others: &'a HashMap<ParamId, Tensor<1>>,
        combine: F,
    }
    impl<F: FnMut(Tensor<1>, Tensor<1>) -> Tensor<1>> ModuleMapper for Combine<'_, F> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some(other) = self.others.get(&param.id) else {
                return param;
            };
            let other = other.clone();
            let combine = &mut self.combine;
            param.map(|old| {
                let dims = old.shape().dims::<D>();
                if !old.is_require_grad() {
                    return other.reshape(dims);
                }
                let len = old.shape().num_elements();
                let new = combine(old.clone().inner().reshape([len]), other).reshape(dims);
                // As Burn's optimisers put an updated parameter back (a parameter that requires
                // gradients is on autodiff).
                let new = match old.gradient_checkpointing_strategy() {
                    Some(strategy) => {
                        Tensor::from_inner(new).with_gradient_checkpointing_strategy(strategy)
                    }
                    None => Tensor::from_inner(new),
                };
                new.require_grad()
            })
        }
    }
    model.map(&mut Combine { others, combine })
}

/// Parameters that weight decay must leave alone: rank-1 tensors (biases, norm gains and shifts)
/// and embedding tables, told by their module (Burn's `Embedding`), whatever the field's name
/// (`wte`, BERT's `tokens`/`positions`/`segments`, `source_embed`).
pub fn no_decay_ids<M: Module>(model: &M) -> Vec<ParamId> {
    struct NoDecay {
        containers: Vec<String>,
        out: Vec<ParamId>,
    }
    impl ModuleVisitor for NoDecay {
        fn enter_module(&mut self, _name: &str, container: &str) {
            self.containers.push(container.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.containers.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let in_embedding = self
                .containers
                .last()
                .is_some_and(|c| c == "Struct:Embedding");
            if D < 2 || in_embedding {
                self.out.push(param.id);
            }
        }
    }
    let mut no_decay = NoDecay {
        containers: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut no_decay);
    no_decay.out
}

/// The L2 norm of all gradients taken together, as `torch.nn.utils.clip_grad_norm_` computes it.
pub fn global_grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    struct SquaredSums<'a> {
        grads: &'a GradientsParams,
        sums: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for SquaredSums<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                self.sums.push(grad.square().sum());
            }
        }
    }
    let mut visitor = SquaredSums {
        grads,
        sums: Vec::new(),
    };
    model.visit(&mut visitor);
    if visitor.sums.is_empty() {
        return 0.0;
    }
    // One read-back for the whole model rather than one per tensor.
    let total: f64 = Tensor::cat(visitor.sums, 0).sum().into_scalar::<f64>();
    total.sqrt()
}

/// Multiply every gradient by `factor`.
pub fn scale_grads<M: Module>(model: &M, grads: &mut GradientsParams, factor: f64) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, grad.mul_scalar(self.factor));
            }
        }
    }
    model.visit(&mut Scale { grads, factor });
}

/// Clip gradients to `max_norm` by their global norm (no-op when `max_norm` is 0); returns the
/// norm before clipping.
pub fn clip_grad_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_grad_norm(model, grads);
    if max_norm > 0.0 && norm > max_norm {
        scale_grads(model, grads, max_norm / (norm + 1e-6));
    }
    norm
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    /// Two stacked linear layers, 3 -> 2 -> `out`, with stable ids: the smallest model with
    /// weights, biases and a chain rule.
    #[derive(Module, Debug)]
    pub(crate) struct Two {
        pub a: Linear,
        pub b: Linear,
    }

    pub(crate) fn two(device: &Device, out: usize) -> Two {
        with_stable_ids(Two {
            a: LinearConfig::new(3, 2).init(device),
            b: LinearConfig::new(2, out).init(device),
        })
    }

    #[derive(Module, Debug)]
    struct Normed {
        norm: burn::nn::BatchNorm,
    }

    fn values(tensor: &Tensor<1>) -> Vec<f32> {
        tensor.clone().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn running_statistics_are_those_of_the_last_forward_pass_and_can_be_set() {
        let device = Device::flex().autodiff();
        let model = Normed {
            norm: burn::nn::BatchNormConfig::new(2).init(&device),
        };
        // Two sequences of one position, two channels: batch means 2 and 15.
        let x = Tensor::<3>::from_data([[[1.0f32], [10.0]], [[3.0], [20.0]]], &device);
        let _ = model.norm.forward(x);
        let statistics = running_statistics(&model);
        assert_eq!(
            statistics.len(),
            2,
            "running mean and variance, not gamma and beta"
        );
        // Momentum 0.1 from a running mean of 0.
        let mean = values(&statistics[0].1);
        assert!(
            (mean[0] - 0.2).abs() < 1e-6 && (mean[1] - 1.5).abs() < 1e-6,
            "{mean:?}"
        );

        let set = Tensor::<1>::from_data([5.0f32, 6.0], &device);
        let model = set_running_statistics(model, vec![(statistics[0].0, set)]);
        assert_eq!(values(&running_statistics(&model)[0].1), [5.0, 6.0]);
    }

    /// Frozen parameters (LoRA's base) have no gradient either, but are not statistics: the
    /// ranks' all-reduce must not carry them.
    #[test]
    fn frozen_parameters_are_not_running_statistics() {
        let device = Device::flex().autodiff();
        let model = Normed {
            norm: burn::nn::BatchNormConfig::new(2).init(&device),
        }
        .set_require_grad(false);
        assert_eq!(running_statistics(&model).len(), 2, "gamma and beta taken");
    }

    #[test]
    fn global_norm_clipping_matches_torch_semantics() {
        let device = Device::flex().autodiff();
        let model = two(&device, 1);
        let x = Tensor::<2>::from_data([[1.0f32, -2.0, 3.0]], &device);
        let loss = model.b.forward(model.a.forward(x)).sum().mul_scalar(10.0);
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        // The norm by hand, from each gradient tensor.
        let mut by_hand = 0.0f64;
        for (_, id, rank) in named_params(&model) {
            let values: Vec<f32> = match rank {
                1 => grads
                    .get::<1>(id)
                    .unwrap()
                    .try_into_vec_as::<f32>()
                    .unwrap(),
                _ => grads
                    .get::<2>(id)
                    .unwrap()
                    .try_into_vec_as::<f32>()
                    .unwrap(),
            };
            by_hand += values.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        }
        let norm = clip_grad_norm(&model, &mut grads, 1.0);
        assert!(
            (norm - by_hand.sqrt()).abs() < 1e-3 * norm,
            "{norm} vs {}",
            by_hand.sqrt()
        );
        assert!(norm > 1.0, "the test needs a norm above the limit");
        let clipped = global_grad_norm(&model, &grads);
        assert!((clipped - 1.0).abs() < 1e-4, "clipped norm {clipped}");
    }

    #[test]
    fn stable_ids_follow_visiting_order_and_decay_skips_biases() {
        let device = Device::flex();
        let model = two(&device, 1);
        let names = named_params(&model);
        let ids: Vec<u64> = names.iter().map(|(_, id, _)| id.val()).collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
        assert_eq!(names[0].0, "a.weight");
        let no_decay: Vec<u64> = no_decay_ids(&model).iter().map(|id| id.val()).collect();
        assert_eq!(no_decay, vec![2, 4]);
    }

    #[derive(Module, Debug)]
    struct Embedded {
        tokens: burn::nn::Embedding,
        projection: Linear,
    }

    /// An embedding table takes no weight decay whatever its field is called (BERT's `tokens`);
    /// a matrix beside it does.
    #[test]
    fn decay_skips_embedding_tables_by_their_module() {
        let device = Device::flex();
        let model = with_stable_ids(Embedded {
            tokens: burn::nn::EmbeddingConfig::new(10, 4).init(&device),
            projection: LinearConfig::new(4, 3).init(&device),
        });
        let no_decay: Vec<String> = (named_params(&model).into_iter())
            .filter(|(_, id, _)| no_decay_ids(&model).contains(id))
            .map(|(path, _, _)| path)
            .collect();
        assert_eq!(no_decay, ["tokens.weight", "projection.bias"]);
    }
}
