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
    let mean_speed = speeds.iter().sum::<f64>() / speeds.len().max(1) as f64;
    format!("{steps} steps in {elapsed:.0} s, {mean_speed:.0} tokens/s")
}
