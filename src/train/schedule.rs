//! Learning-rate schedules from Burn's schedulers, composed into the shapes users know.
//!
//! Burn's schedulers are stateful iterators; the loop calls `step()` once per optimiser step and a
//! resumed run replays the first steps (cheap, exact), so no scheduler state needs saving.

use crate::error::{Error, Result};
use crate::recipe::{SchedulerKind, SchedulerSection};
use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::constant::ConstantLr;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::noam::NoamLrSchedulerConfig;
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;

pub type Schedule = ModuleLrScheduler;

/// `lr` is the peak (or, for noam, the factor); `total_steps` the run's length; `model_size`
/// the width noam scales by.
pub fn build(
    section: &SchedulerSection,
    lr: f64,
    total_steps: usize,
    model_size: usize,
) -> Result<Schedule> {
    let warmup = section.warmup_steps;
    let decay_end = section.decay_steps.unwrap_or(total_steps).max(warmup + 1);
    let bad = |e: String| Error::Recipe(format!("scheduler: {e}"));
    // Linear warm-up from lr/warmup to lr over `warmup` steps (step 0 is never at lr 0).
    let warmup_config =
        || LinearLrSchedulerConfig::new(lr / warmup as f64, lr, warmup.saturating_sub(1).max(1));
    let with_warmup = |decay: LrSchedulerConfig| -> Result<Schedule> {
        if warmup == 0 {
            return SequentialLrSchedulerConfig::new(vec![decay], vec![])
                .init()
                .map_err(bad);
        }
        SequentialLrSchedulerConfig::new(vec![warmup_config().into(), decay], vec![warmup])
            .init()
            .map_err(bad)
    };
    match section.kind {
        SchedulerKind::Constant => Ok(ModuleLrScheduler::new(ConstantLr::new(lr))),
        SchedulerKind::WarmupCosine => with_warmup(
            CosineAnnealingLrSchedulerConfig::new(lr, decay_end - warmup)
                .with_min_lr(section.min_lr)
                .into(),
        ),
        SchedulerKind::WarmupLinear => with_warmup(
            LinearLrSchedulerConfig::new(lr, section.min_lr.max(lr * 1e-9), decay_end - warmup)
                .into(),
        ),
        SchedulerKind::Noam => NoamLrSchedulerConfig::new(lr)
            .with_warmup_steps(warmup)
            .with_model_size(model_size)
            .init()
            .map_err(bad),
        // fairseq's inverse_sqrt is Noam with the factor chosen so the peak, at the end of
        // warm-up, is exactly `lr`: factor * (d * warmup)^-0.5 = lr.
        SchedulerKind::InverseSqrt => {
            NoamLrSchedulerConfig::new(lr * ((model_size * warmup) as f64).sqrt())
                .with_warmup_steps(warmup)
                .with_model_size(model_size)
                .init()
                .map_err(bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrs(kind: SchedulerKind, warmup: usize, total: usize) -> Vec<f64> {
        let section = SchedulerSection {
            kind,
            warmup_steps: warmup,
            min_lr: 1e-4,
            decay_steps: None,
        };
        let mut s = build(&section, 1e-3, total, 64).unwrap();
        (0..total).map(|_| s.step().base()).collect()
    }

    #[test]
    fn warmup_cosine_rises_then_decays_to_min() {
        let v = lrs(SchedulerKind::WarmupCosine, 10, 110);
        assert!(v[0] > 0.0 && v[0] < 2e-4, "{}", v[0]);
        assert!(v[..10].windows(2).all(|w| w[1] > w[0]), "warm-up rises");
        assert!(
            (v[10] - 1e-3).abs() < 1e-12,
            "peak right after warm-up: {}",
            v[10]
        );
        assert!(v[10..].windows(2).all(|w| w[1] <= w[0]), "decays");
        assert!((v[109] - 1e-4).abs() < 1e-6, "reaches min_lr: {}", v[109]);
    }

    #[test]
    fn inverse_sqrt_peaks_at_lr_after_warmup() {
        let v = lrs(SchedulerKind::InverseSqrt, 16, 64);
        assert!((v[15] - 1e-3).abs() < 1e-9, "{}", v[15]);
        assert!((v[63] - 1e-3 * (16f64 / 64.0).sqrt()).abs() < 1e-9);
    }
}
