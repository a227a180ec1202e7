//! The glue per task: which data, model, loss and metrics. The training loop sees a task only
//! through [`Task`], so it never names a concrete model.

pub mod classify;
pub mod lm;
pub mod pretrain;
pub mod tagging;
pub mod translation;

use crate::distributed::Shard;
use crate::error::Result;
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;

pub trait Task {
    type Model: Module + ModuleSnapshot;

    /// A freshly initialised model on `device` (seeded by the caller); a fine-tuning task loads
    /// the pretrained encoder into it.
    fn init_model(&self, device: &Device) -> Result<Self::Model>;

    /// The losses of micro-batch `micro` of optimiser step `step`. The batch must be a pure
    /// function of `(step, micro)` so a resumed run sees the same data.
    fn train_loss(
        &self,
        model: &Self::Model,
        step: usize,
        micro: usize,
        device: &Device,
    ) -> StepLoss;

    /// The names of the losses when there are several (the training loop weights them as
    /// `loss.weighting` says); empty for a task with one loss.
    fn loss_names(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The learned log-variances of uncertainty weighting, when the model has them.
    fn log_variances(&self, _model: &Self::Model) -> Option<Tensor<1>> {
        None
    }

    /// The summed loss over `shard`'s part of a fixed validation sample (fixed so evaluations
    /// are comparable); the parts of all shards add up to the whole sample's.
    fn validation_sum(&self, model: &Self::Model, device: &Device, shard: Shard)
    -> Result<LossSum>;

    /// Is the validation loss a per-token negative log-likelihood (so perplexity means
    /// something)? Classification and the CRF's per-sentence loss are not.
    fn loss_is_token_nll(&self) -> bool {
        true
    }

    /// Tokens in one micro-batch of this rank, for throughput.
    fn tokens_per_micro_batch(&self) -> usize;

    /// Micro-batches in one pass over the training data, for `max_epochs`.
    fn micro_batches_per_epoch(&self) -> usize;

    /// The model width, for schedules that scale by it (noam).
    fn model_width(&self) -> usize;

    /// What one step trains on, for the start-up line.
    fn step_description(&self, ranks: usize, accum_grad: usize) -> String;
}

/// What one micro-batch costs.
pub struct StepLoss {
    /// One loss, or one per name of [`Task::loss_names`] (label-smoothed where the recipe asks).
    pub losses: Vec<Tensor<1>>,
    /// The plain negative log-likelihood reported beside the optimised loss.
    pub nll: Tensor<1>,
    /// With several losses, one KPI per loss (an accuracy in [0, 1]) for dynamic task
    /// prioritisation; empty for a single loss.
    pub kpis: Vec<Tensor<1>>,
}

impl StepLoss {
    pub fn single(loss: Tensor<1>, nll: Tensor<1>) -> Self {
        Self {
            losses: vec![loss],
            nll,
            kpis: Vec::new(),
        }
    }
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
