//! The glue per task: which data, model, loss and metrics. The training loop sees a task only
//! through [`Task`], so it never names a concrete model.

pub mod lm;
pub mod translation;

use crate::distributed::Shard;
use crate::error::Result;
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;

pub trait Task {
    type Model: Module + ModuleSnapshot;

    /// A freshly initialised model on `device` (seeded by the caller).
    fn init_model(&self, device: &Device) -> Self::Model;

    /// `(loss, nll)` of micro-batch `micro` of optimiser step `step`: the loss that is
    /// optimised (label-smoothed, weighted) and the plain negative log-likelihood that is
    /// reported beside it. The batch must be a pure function of `(step, micro)` so a resumed run
    /// sees the same data.
    fn train_loss(
        &self,
        model: &Self::Model,
        step: usize,
        micro: usize,
        device: &Device,
    ) -> (Tensor<1>, Tensor<1>);

    /// The summed loss over `shard`'s part of a fixed validation sample (fixed so evaluations
    /// are comparable); the parts of all shards add up to the whole sample's.
    fn validation_sum(&self, model: &Self::Model, device: &Device, shard: Shard)
    -> Result<LossSum>;

    /// Tokens in one micro-batch of this rank, for throughput.
    fn tokens_per_micro_batch(&self) -> usize;

    /// Micro-batches in one pass over the training data, for `max_epochs`.
    fn micro_batches_per_epoch(&self) -> usize;

    /// The model width, for schedules that scale by it (noam).
    fn model_width(&self) -> usize;

    /// What one step trains on, for the start-up line.
    fn step_description(&self, ranks: usize, accum_grad: usize) -> String;
}

/// A loss summed over items (tokens, sentences) with their count, so that parts computed on
/// several ranks add up before the mean is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossSum {
    pub total: f64,
    pub count: f64,
}

impl LossSum {
    pub fn mean(&self) -> f64 {
        self.total / self.count.max(1.0)
    }
}
