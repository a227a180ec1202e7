//! `nlpkit summary`: one line per eval report of a split, for several experiments side by side,
//! with the training run's wall time and throughput from `metrics.jsonl`.

use crate::error::Result;
use crate::eval::report::{Scores, read_reports};
use crate::experiment::Experiment;
use crate::tasks::{self, Pipeline, PipelineJob};
use std::path::{Path, PathBuf};

/// The lines for the reports of `split` in each experiment, in order.
pub fn summary(exp_dirs: &[PathBuf], split: &str) -> Result<String> {
    let mut out = String::new();
    for dir in exp_dirs {
        let (exp, recipe) = Experiment::open(dir)?;
        let rows = tasks::with_pipeline(&recipe, Rows { exp: &exp, split })?;
        if rows.is_empty() {
            out += &format!(
                "{:<20} no eval_{split}_*.json; run `nlpkit eval {} --split {split}`\n",
                name(dir),
                dir.display()
            );
        }
        let training = training_figures(&exp);
        for (label, headline) in rows {
            out += &format!("{:<20} {label:<26} {headline}  | {training}\n", name(dir));
        }
    }
    Ok(out)
}

/// The experiment's folder name.
fn name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into())
}

/// Each report's label (its checkpoint and variant) and headline figures.
struct Rows<'a> {
    exp: &'a Experiment,
    split: &'a str,
}

impl PipelineJob for Rows<'_> {
    type Output = Vec<(String, String)>;

    fn run<P: Pipeline>(self, _pipeline: P) -> Result<Self::Output> {
        let reports = read_reports::<P::Scores>(self.exp, self.split)?;
        Ok(reports
            .into_iter()
            .map(|(label, report)| (label, report.scores.headline()))
            .collect())
    }
}

/// Steps, wall time and mean throughput of the training run, from its metrics.
fn training_figures(exp: &Experiment) -> String {
    let Ok(text) = std::fs::read_to_string(exp.metrics_path()) else {
        return "no metrics.jsonl".into();
    };
    let (mut steps, mut elapsed, mut speeds) = (0, 0.0f64, Vec::new());
    let records = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    for r in records.filter(|r| r["split"] == "train") {
        steps = r["step"].as_u64().unwrap_or(0);
        elapsed = elapsed.max(r["elapsed_s"].as_f64().unwrap_or(0.0));
        speeds.extend(r["tokens_per_s"].as_f64());
    }
    let speed = overall_speed(&speeds);
    format!("{steps} steps in {elapsed:.0} s, {speed:.0} tokens/s")
}

/// The run's tokens over its time, from the logged windows' speeds: the windows hold the same
/// number of steps (`log_interval`), so this is their harmonic mean. The arithmetic mean would
/// overstate it, weighting the fast windows by more than the time they took.
fn overall_speed(window_speeds: &[f64]) -> f64 {
    let seconds_per_token: f64 = window_speeds.iter().map(|s| 1.0 / s).sum();
    if window_speeds.is_empty() || !seconds_per_token.is_finite() {
        return 0.0;
    }
    window_speeds.len() as f64 / seconds_per_token
}

#[cfg(test)]
mod tests {
    use super::overall_speed;

    #[test]
    fn throughput_is_tokens_over_time() {
        // Two windows of 1000 tokens: 1 s at 1000 tokens/s, 2 s at 500: 2000 tokens in 3 s.
        assert!((overall_speed(&[1000.0, 500.0]) - 2000.0 / 3.0).abs() < 1e-9);
        assert_eq!(overall_speed(&[]), 0.0);
    }
}
