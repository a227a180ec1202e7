//! Early stopping on the validation loss, with HF Trainer's `EarlyStoppingCallback` and fairseq's
//! `--patience` semantics: an evaluation that does not improve on the best by more than
//! `min_delta` is a bad one; `patience` bad ones in a row stop the run. The best moves only on an
//! improvement that counts (as Keras's `EarlyStopping`), so slow creep below `min_delta` cannot
//! keep a run alive.
//!
//! Its state is saved in every checkpoint's `trainer_state.json`: a resumed run counts on from
//! where the interrupted one was and stops at the same step as a straight run.

use crate::recipe::{EarlyStoppingMetric, EarlyStoppingSection};
use serde::{Deserialize, Serialize};

/// What early stopping has seen so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EarlyStoppingState {
    /// The best value of the metric and the step it was measured at (none before the first
    /// evaluation).
    pub best: Option<(f64, usize)>,
    /// Evaluations in a row, up to now, that did not improve on `best` by more than `min_delta`.
    pub bad_evaluations: usize,
}

/// The recipe's `train.early_stopping` with its state.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    config: EarlyStoppingSection,
    state: EarlyStoppingState,
}

impl EarlyStopping {
    pub fn new(config: &EarlyStoppingSection) -> Self {
        Self {
            config: config.clone(),
            state: EarlyStoppingState::default(),
        }
    }

    pub fn state(&self) -> &EarlyStoppingState {
        &self.state
    }

    pub fn restore(&mut self, state: EarlyStoppingState) {
        self.state = state;
    }

    /// Record the metric measured at `step`. Lower is better for every metric there is (losses);
    /// a NaN is never an improvement.
    pub fn observe(&mut self, step: usize, value: f64) {
        let improved = match self.state.best {
            None => !value.is_nan(),
            Some((best, _)) => value < best - self.config.min_delta,
        };
        if improved {
            self.state.best = Some((value, step));
            self.state.bad_evaluations = 0;
        } else {
            self.state.bad_evaluations += 1;
        }
    }

    /// Whether the run should stop now: `patience` bad evaluations in a row. Compared with the
    /// recipe's patience, so a stopped run resumed with a larger patience goes on.
    pub fn should_stop(&self) -> bool {
        self.state.bad_evaluations >= self.config.patience
    }

    /// Why the run stopped, for the user.
    pub fn reason(&self) -> String {
        let best = match self.state.best {
            Some((value, step)) => format!("best {value:.4} at step {step}"),
            None => "no finite value yet".into(),
        };
        format!(
            "early stopping: {} has not improved by more than {} for {} evaluations ({best})",
            metric_words(self.config.metric),
            self.config.min_delta,
            self.state.bad_evaluations,
        )
    }
}

fn metric_words(metric: EarlyStoppingMetric) -> &'static str {
    match metric {
        EarlyStoppingMetric::ValidLoss => "valid loss",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 1-based evaluation after which `curve` stops, if it does.
    fn stops_after(curve: &[f64], patience: usize, min_delta: f64) -> Option<usize> {
        let mut early = EarlyStopping::new(&EarlyStoppingSection {
            patience,
            min_delta,
            metric: EarlyStoppingMetric::ValidLoss,
        });
        for (i, &loss) in curve.iter().enumerate() {
            early.observe(10 * (i + 1), loss);
            if early.should_stop() {
                return Some(i + 1);
            }
        }
        None
    }

    #[test]
    fn stops_after_patience_bad_evaluations_in_a_row() {
        let curve = [1.0, 0.9, 0.95, 0.91, 0.92];
        // 0.95 and 0.91 are both above the best 0.9: two bad evaluations in a row.
        assert_eq!(stops_after(&curve, 2, 0.0), Some(4));
        assert_eq!(stops_after(&curve, 3, 0.0), Some(5));
        assert_eq!(stops_after(&curve, 4, 0.0), None);
        // An improvement resets the count.
        assert_eq!(stops_after(&[1.0, 1.1, 0.8, 0.9, 0.85], 2, 0.0), Some(5));
        assert_eq!(stops_after(&[1.0, 1.1, 0.8, 0.9], 2, 0.0), None);
    }

    #[test]
    fn an_improvement_of_min_delta_or_less_is_a_bad_evaluation_and_keeps_the_best() {
        // 0.95 improves by 0.05, not by more than 0.05: bad; the best stays 1.0 (step 10), so
        // 0.92 is measured against 1.0 and improves by more than 0.05.
        let mut early = EarlyStopping::new(&EarlyStoppingSection {
            patience: 2,
            min_delta: 0.05,
            metric: EarlyStoppingMetric::ValidLoss,
        });
        early.observe(10, 1.0);
        early.observe(20, 0.95);
        assert_eq!(early.state().bad_evaluations, 1);
        assert_eq!(early.state().best, Some((1.0, 10)));
        early.observe(30, 0.92);
        assert_eq!(early.state().bad_evaluations, 0);
        assert_eq!(early.state().best, Some((0.92, 30)));
        early.observe(40, f64::NAN);
        early.observe(50, 0.9);
        assert!(early.should_stop());
        assert_eq!(
            early.reason(),
            "early stopping: valid loss has not improved by more than 0.05 for 2 evaluations \
             (best 0.9200 at step 30)"
        );
    }

    #[test]
    fn the_state_survives_a_checkpoint() {
        let config = EarlyStoppingSection {
            patience: 3,
            min_delta: 0.0,
            metric: EarlyStoppingMetric::ValidLoss,
        };
        let mut early = EarlyStopping::new(&config);
        for (step, loss) in [(10, 1.0), (20, 1.2)] {
            early.observe(step, loss);
        }
        let json = serde_json::to_string(early.state()).unwrap();
        let mut resumed = EarlyStopping::new(&config);
        resumed.restore(serde_json::from_str(&json).unwrap());
        for (step, loss) in [(30, 1.1), (40, 1.05)] {
            early.observe(step, loss);
            resumed.observe(step, loss);
        }
        assert_eq!(early.state(), resumed.state());
        assert!(resumed.should_stop());
    }
}
