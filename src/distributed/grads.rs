//! Gradient averaging across ranks, and a checksum that shows the weights agree.
//!
//! All gradients of a step travel as one flat buffer (one device read-back, one all-reduce, one
//! upload), not one collective per tensor: with small tensors the per-call latency would
//! dominate.

use super::Ranks;
use crate::train::params::{running_statistics, set_running_statistics};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Average `grads` over the ranks, with the model's running statistics and `scalars` (e.g. this
/// rank's loss) in the same buffer; returns the model with the averaged statistics. Every rank
/// must hold gradients for the same parameters.
///
/// Running statistics (BatchNorm's running mean and variance) are updated by each rank from its
/// own slice of the batch; averaged at every step they stay equal across ranks, and the running
/// mean is then the one a single process would keep over the whole batch.
pub fn average_step<M: Module>(
    model: M,
    mut grads: GradientsParams,
    scalars: &mut [f32],
    ranks: &Ranks,
    step: usize,
) -> (M, GradientsParams) {
    if ranks.world == 1 {
        return (model, grads);
    }
    let (flat, layout) = flatten(&model, &mut grads);
    let device = flat.as_ref().map(|flat| flat.device());
    let mut buffer: Vec<f32> = flat.map_or_else(Vec::new, read_back);
    let grads_len = buffer.len();
    // The statistics too travel as one tensor: one read-back, one upload.
    let statistics = running_statistics(&model);
    if !statistics.is_empty() {
        let values = statistics
            .iter()
            .map(|(_, values)| values.clone())
            .collect();
        buffer.extend(read_back(Tensor::cat(values, 0)));
    }
    let statistics_end = buffer.len();
    buffer.extend_from_slice(scalars);
    ranks.sum(
        &mut buffer,
        &format!("the gradient all-reduce of step {step}"),
    );
    let scale = 1.0 / ranks.world as f32;
    for (out, summed) in scalars.iter_mut().zip(&buffer[statistics_end..]) {
        *out = summed * scale;
    }
    let model = with_statistics(model, statistics, &buffer[grads_len..statistics_end], scale);
    let Some(device) = device else {
        return (model, grads);
    };
    buffer.truncate(grads_len);
    let averaged =
        Tensor::<1>::from_data(TensorData::new(buffer, [grads_len]), &device).mul_scalar(scale);
    let grads = unflatten(&model, averaged, &layout);
    (model, grads)
}

/// `model` with its running `statistics` set to `summed` (their sums across ranks, in order)
/// times `scale`, uploaded as one tensor.
fn with_statistics<M: Module>(
    model: M,
    statistics: Vec<(ParamId, Tensor<1>)>,
    summed: &[f32],
    scale: f32,
) -> M {
    let Some(device) = statistics.first().map(|(_, values)| values.device()) else {
        return model;
    };
    let means: Vec<f32> = summed.iter().map(|v| v * scale).collect();
    let all = Tensor::<1>::from_data(TensorData::new(means, [summed.len()]), &device);
    let mut offset = 0;
    let averaged = (statistics.into_iter())
        .map(|(id, values)| {
            let len = values.shape().num_elements();
            offset += len;
            (id, all.clone().slice(offset - len..offset))
        })
        .collect();
    set_running_statistics(model, averaged)
}

fn read_back(values: Tensor<1>) -> Vec<f32> {
    values
        .try_into_vec_as::<f32>()
        .expect("a float tensor reads back as f32")
}

/// Ids of the flattened gradients, in order, with their element counts.
type Layout = Vec<(ParamId, usize)>;

/// All gradients as one 1-D tensor (model visiting order), taking them out of `grads`.
fn flatten<M: Module>(model: &M, grads: &mut GradientsParams) -> (Option<Tensor<1>>, Layout) {
    struct Flatten<'a> {
        grads: &'a mut GradientsParams,
        parts: Vec<Tensor<1>>,
        layout: Layout,
    }
    impl ModuleVisitor for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                let len = grad.shape().num_elements();
                self.parts.push(grad.reshape([len]));
                self.layout.push((param.id, len));
            }
        }
    }
    let mut visitor = Flatten {
        grads,
        parts: Vec::new(),
        layout: Vec::new(),
    };
    model.visit(&mut visitor);
    let flat = (!visitor.parts.is_empty()).then(|| Tensor::cat(visitor.parts, 0));
    (flat, visitor.layout)
}

/// The gradients of `layout` cut back out of `flat`, shaped like their parameters.
fn unflatten<M: Module>(model: &M, flat: Tensor<1>, layout: &Layout) -> GradientsParams {
    struct Unflatten<'a> {
        flat: Tensor<1>,
        layout: std::slice::Iter<'a, (ParamId, usize)>,
        next: Option<&'a (ParamId, usize)>,
        offset: usize,
        grads: GradientsParams,
    }
    impl ModuleVisitor for Unflatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some(&(id, len)) = self.next else { return };
            if id != param.id {
                return;
            }
            let piece = self.flat.clone().slice(self.offset..self.offset + len);
            self.grads
                .register(id, piece.reshape(param.val().shape().dims::<D>()));
            self.offset += len;
            self.next = self.layout.next();
        }
    }
    let mut iter = layout.iter();
    let next = iter.next();
    let mut visitor = Unflatten {
        flat,
        layout: iter,
        next,
        offset: 0,
        grads: GradientsParams::new(),
    };
    model.visit(&mut visitor);
    visitor.grads
}

/// A 64-bit checksum of every weight's exact bits (FNV-1a over the f32 words, in visiting
/// order): equal checksums on all ranks mean identical weights.
pub fn weights_checksum<M: Module>(model: &M) -> u64 {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            let len = value.shape().num_elements();
            self.0.push(value.reshape([len]));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    if collect.0.is_empty() {
        return 0;
    }
    let values: Vec<f32> = Tensor::cat(collect.0, 0)
        .try_into_vec_as::<f32>()
        .expect("a float tensor reads back as f32");
    values.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, v| {
        (hash ^ v.to_bits() as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::params::tests::two;

    #[test]
    fn flattening_round_trips_every_gradient() {
        let device = Device::flex().autodiff();
        let model = two(&device, 4);
        let x = Tensor::<2>::from_data([[1.0f32, -2.0, 3.0]], &device);
        let loss = model.b.forward(model.a.forward(x)).powi_scalar(2).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let before: Vec<Vec<f32>> = [model.a.weight.id, model.b.weight.id]
            .iter()
            .map(|id| {
                grads
                    .get::<2>(*id)
                    .unwrap()
                    .try_into_vec_as::<f32>()
                    .unwrap()
            })
            .collect();
        let (flat, layout) = flatten(&model, &mut grads);
        assert_eq!(layout.len(), 4);
        assert_eq!(flat.as_ref().unwrap().dims(), [3 * 2 + 2 + 2 * 4 + 4]);
        let back = unflatten(&model, flat.unwrap(), &layout);
        for (id, expected) in [model.a.weight.id, model.b.weight.id].iter().zip(before) {
            let grad = back.get::<2>(*id).unwrap();
            assert_eq!(grad.try_into_vec_as::<f32>().unwrap(), expected);
        }
        assert_eq!(back.get::<2>(model.b.weight.id).unwrap().dims(), [2, 4]);
        assert!(back.get::<1>(model.b.bias.as_ref().unwrap().id).is_some());
    }

    #[test]
    fn checksum_sees_a_single_bit() {
        let device = Device::flex();
        let model = two(&device, 4);
        let same = model.clone();
        assert_eq!(weights_checksum(&model), weights_checksum(&same));
        let mut changed = model.clone();
        changed.b.weight = changed.b.weight.map(|w| {
            let mut values = w.clone().try_into_vec_as::<f32>().unwrap();
            values[3] = f32::from_bits(values[3].to_bits() ^ 1);
            Tensor::from_data(TensorData::new(values, [2, 4]), &w.device())
        });
        assert_ne!(weights_checksum(&model), weights_checksum(&changed));
    }
}
