//! Adding up the losses of a task that has several (BERT pretraining: masked LM and
//! next-sentence/sentence-order prediction), as `loss.weighting` says:
//!
//! - `static`: fixed weights `w_i`, total `sum(w_i * L_i)`.
//! - `uncertainty` (Kendall, Gal & Cipolla 2018): one learned log-variance `s_i` per loss,
//!   total `sum(exp(-s_i) * L_i + s_i)`; the `s_i` live in the model and train with it.
//! - `dwa` (Liu, Johns & Davison 2019): `w_i = K * softmax_i(r_i / T)` with
//!   `r_i = L_i(window - 1) / L_i(window - 2)`, the mean losses of the last two complete
//!   windows (the paper's epochs); 1 each until two windows are complete.
//! - `dtp` (Guo et al. 2018): `w_i = -(1 - k_i)^gamma * log(k_i)` from each loss's KPI `k_i`
//!   (its accuracy), smoothed over steps; 1 each before the first KPI.
//!
//! The dynamic weights depend only on what the training loop observed (averaged over ranks), and
//! their state is saved in every checkpoint, so a resumed run weights exactly as one that never
//! stopped.

use crate::error::{Error, Result};
use crate::recipe::{LossSection, WeightingKind};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub struct LossWeighting {
    kind: WeightingKind,
    names: Vec<&'static str>,
    static_weights: Vec<f64>,
    temperature: f64,
    window_steps: usize,
    focal_gamma: f64,
    kpi_momentum: f64,
    state: WeightingState,
}

/// What the dynamic schemes remember between steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightingState {
    /// DWA: summed losses of the window in progress and the steps in it.
    window_sum: Vec<f64>,
    window_seen: usize,
    /// DWA: mean losses of the last two complete windows, older first.
    window_means: Vec<Vec<f64>>,
    /// DTP: the smoothed KPIs.
    kpis: Option<Vec<f64>>,
}

/// DWA's weights from the mean losses of the last window and the one before it.
pub fn dwa_weights(last: &[f64], before: &[f64], temperature: f64) -> Vec<f64> {
    let rates: Vec<f64> = last
        .iter()
        .zip(before)
        .map(|(l, b)| l / b.max(f64::MIN_POSITIVE) / temperature)
        .collect();
    let max = rates.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = rates.iter().map(|r| (r - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| last.len() as f64 * e / sum).collect()
}

/// DTP's focal weight of a task whose KPI is `kpi` (in (0, 1]; clamped away from 0).
pub fn dtp_weight(kpi: f64, gamma: f64) -> f64 {
    let k = kpi.clamp(1e-6, 1.0);
    -(1.0 - k).powf(gamma) * k.ln()
}

impl LossWeighting {
    /// The weighting of a task whose losses are `names`; `steps_per_epoch` is DWA's default
    /// window.
    pub fn new(
        section: &LossSection,
        names: &[&'static str],
        steps_per_epoch: usize,
    ) -> Result<Self> {
        if section.weighting != WeightingKind::Static && names.len() < 2 {
            return Err(Error::Recipe(format!(
                "`loss.weighting: {}` needs a task with several losses (BERT pretraining with \
                 `next_sentence: nsp` or `sop`); this one has a single loss",
                section.weighting.name()
            )));
        }
        if let Some(unknown) = section
            .task_weights
            .keys()
            .find(|k| !names.contains(&k.as_str()))
        {
            return Err(Error::Recipe(format!(
                "`loss.task_weights.{unknown}`: this task's losses are {}",
                if names.is_empty() {
                    "(a single loss)".into()
                } else {
                    names.join(", ")
                }
            )));
        }
        let static_weights = names
            .iter()
            .map(|n| section.task_weights.get(*n).copied().unwrap_or(1.0))
            .collect();
        Ok(Self {
            kind: section.weighting,
            names: names.to_vec(),
            static_weights,
            temperature: section.temperature,
            window_steps: section.window_steps.unwrap_or(steps_per_epoch).max(1),
            focal_gamma: section.focal_gamma,
            kpi_momentum: section.kpi_momentum,
            state: WeightingState::default(),
        })
    }

    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    pub fn kind(&self) -> WeightingKind {
        self.kind
    }

    /// The weights the next step applies; for `uncertainty`, `exp(-s_i)` of the model's s_i.
    pub fn weights(&self, log_variances: Option<&Tensor<1>>) -> Vec<f64> {
        let ones = || vec![1.0; self.names.len()];
        match self.kind {
            WeightingKind::Static => self.static_weights.clone(),
            WeightingKind::Uncertainty => log_variances
                .map(|s| {
                    let s: Vec<f64> = s.clone().try_into_vec_as::<f64>().expect("f64");
                    s.iter().map(|s| (-s).exp()).collect()
                })
                .unwrap_or_else(ones),
            WeightingKind::Dwa => match self.state.window_means.as_slice() {
                [before, last] => dwa_weights(last, before, self.temperature),
                _ => ones(),
            },
            WeightingKind::Dtp => match &self.state.kpis {
                Some(kpis) => kpis
                    .iter()
                    .map(|&k| dtp_weight(k, self.focal_gamma))
                    .collect(),
                None => ones(),
            },
        }
    }

    /// The loss to optimise. A single loss is returned as it is.
    pub fn combine(
        &self,
        losses: &[Tensor<1>],
        weights: &[f64],
        log_variances: Option<Tensor<1>>,
    ) -> Tensor<1> {
        if losses.len() == 1 {
            return losses[0].clone();
        }
        match (self.kind, log_variances) {
            (WeightingKind::Uncertainty, Some(s)) => uncertainty_total(losses, s),
            _ => losses
                .iter()
                .zip(weights)
                .map(|(l, &w)| l.clone().mul_scalar(w))
                .reduce(|a, b| a + b)
                .expect("at least one loss"),
        }
    }

    /// Record one step's (rank-averaged) losses and KPIs.
    pub fn observe(&mut self, losses: &[f64], kpis: &[f64]) {
        match self.kind {
            WeightingKind::Dwa => {
                let state = &mut self.state;
                state.window_sum.resize(losses.len(), 0.0);
                for (sum, l) in state.window_sum.iter_mut().zip(losses) {
                    *sum += l;
                }
                state.window_seen += 1;
                if state.window_seen == self.window_steps {
                    let means = state
                        .window_sum
                        .iter()
                        .map(|s| s / self.window_steps as f64)
                        .collect();
                    state.window_means.push(means);
                    if state.window_means.len() > 2 {
                        state.window_means.remove(0);
                    }
                    state.window_sum.iter_mut().for_each(|s| *s = 0.0);
                    state.window_seen = 0;
                }
            }
            WeightingKind::Dtp => {
                let m = self.kpi_momentum;
                self.state.kpis = Some(match self.state.kpis.take() {
                    None => kpis.to_vec(),
                    Some(old) => old
                        .iter()
                        .zip(kpis)
                        .map(|(o, k)| m * o + (1.0 - m) * k)
                        .collect(),
                });
            }
            WeightingKind::Static | WeightingKind::Uncertainty => {}
        }
    }

    pub fn state(&self) -> &WeightingState {
        &self.state
    }

    pub fn restore(&mut self, state: WeightingState) {
        self.state = state;
    }
}

/// Kendall et al.'s total `sum(exp(-s_i) * L_i + s_i)`.
pub fn uncertainty_total(losses: &[Tensor<1>], log_variances: Tensor<1>) -> Tensor<1> {
    let stacked = Tensor::cat(losses.to_vec(), 0);
    ((log_variances.clone().neg().exp() * stacked) + log_variances).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    fn section(kind: WeightingKind) -> LossSection {
        LossSection {
            weighting: kind,
            window_steps: Some(2),
            ..LossSection::default()
        }
    }

    /// d/ds_i of exp(-s_i) L_i + s_i is 1 - exp(-s_i) L_i.
    #[test]
    fn uncertainty_gradient_matches_the_closed_form() {
        let device = Device::flex().autodiff();
        let s_values = [0.3f32, -0.7];
        let loss_values = [2.5f32, 0.4];
        let s = Param::from_tensor(Tensor::<1>::from_floats(s_values, &device));
        let losses: Vec<Tensor<1>> = loss_values
            .iter()
            .map(|&l| Tensor::<1>::from_floats([l], &device))
            .collect();
        let total = uncertainty_total(&losses, s.val());
        let expected_total: f32 = s_values
            .iter()
            .zip(loss_values)
            .map(|(s, l)| (-s).exp() * l + s)
            .sum();
        let got: f32 = total.clone().into_scalar();
        assert!((got - expected_total).abs() < 1e-5);
        let grads = total.backward();
        let grad: Vec<f32> = s
            .val()
            .grad(&grads)
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap();
        for i in 0..2 {
            let closed = 1.0 - (-s_values[i]).exp() * loss_values[i];
            assert!(
                (grad[i] - closed).abs() < 1e-5,
                "{i}: {} vs {closed}",
                grad[i]
            );
        }
    }

    #[test]
    fn dwa_weights_equal_hand_computed_values() {
        let mut w = LossWeighting::new(&section(WeightingKind::Dwa), &["mlm", "nsp"], 100).unwrap();
        assert_eq!(w.weights(None), vec![1.0, 1.0]);
        // Window 1: means (4, 0.8); window 2: means (3, 0.6).
        for losses in [[5.0, 1.0], [3.0, 0.6], [3.5, 0.7], [2.5, 0.5]] {
            w.observe(&losses, &[]);
        }
        // Rates 0.75 and 0.75: equal weights.
        let weights = w.weights(None);
        assert!((weights[0] - 1.0).abs() < 1e-12 && (weights[1] - 1.0).abs() < 1e-12);
        // Window 3: means (3, 0.3): rates 1.0 and 0.5, T = 2:
        // w = 2 e^{0.5} / (e^{0.5} + e^{0.25}), 2 e^{0.25} / (...).
        w.observe(&[3.0, 0.3], &[]);
        w.observe(&[3.0, 0.3], &[]);
        let weights = w.weights(None);
        let (a, b) = (0.5f64.exp(), 0.25f64.exp());
        assert!(
            (weights[0] - 2.0 * a / (a + b)).abs() < 1e-12,
            "{weights:?}"
        );
        assert!((weights[1] - 2.0 * b / (a + b)).abs() < 1e-12);
        assert!((weights[0] - 1.1244).abs() < 1e-4);
    }

    #[test]
    fn dtp_weights_equal_hand_computed_values() {
        let mut w = LossWeighting::new(&section(WeightingKind::Dtp), &["mlm", "nsp"], 100).unwrap();
        assert_eq!(w.weights(None), vec![1.0, 1.0]);
        w.observe(&[0.0, 0.0], &[0.2, 0.9]);
        // gamma 1: -(1 - k) ln k.
        let weights = w.weights(None);
        assert!(
            (weights[0] - 0.8 * 1.609_437_912).abs() < 1e-6,
            "{weights:?}"
        );
        assert!((weights[1] - 0.1 * 0.105_360_516).abs() < 1e-6);
        // Smoothed with momentum 0.9: k = 0.9 * 0.2 + 0.1 * 0.4 = 0.22.
        w.observe(&[0.0, 0.0], &[0.4, 0.9]);
        let weights = w.weights(None);
        assert!((weights[0] - 0.78 * -(0.22f64.ln())).abs() < 1e-9);
        // The harder task (lower KPI) gets the larger weight.
        assert!(weights[0] > weights[1]);
    }

    #[test]
    fn static_weights_and_bad_names() {
        let mut s = section(WeightingKind::Static);
        s.task_weights.insert("nsp".into(), 0.5);
        let w = LossWeighting::new(&s, &["mlm", "nsp"], 10).unwrap();
        assert_eq!(w.weights(None), vec![1.0, 0.5]);
        s.task_weights.insert("sop".into(), 0.5);
        assert!(LossWeighting::new(&s, &["mlm", "nsp"], 10).is_err());
        assert!(LossWeighting::new(&section(WeightingKind::Dwa), &[], 10).is_err());
    }
}
