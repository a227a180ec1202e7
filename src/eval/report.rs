//! The eval report: one type for every task (split, checkpoint, step, seconds, the files written
//! beside it, and the task's scores), one writer and one naming rule:
//!
//! ```text
//! EXP_DIR/eval_<split>_<checkpoint>[_<variant>].json
//! EXP_DIR/<predictions kind>_<split>_<checkpoint>[_<variant>].<ext>
//! ```
//!
//! where `<checkpoint>` is the checkpoint's folder name (`step_00002000`, `average_best5`) and
//! `<variant>` names decoding choices that make another report of the same checkpoint
//! (translation: `beam5`).

use crate::error::{Error, Result, write_atomic};
use crate::experiment::Experiment;
use crate::train::checkpoint::Checkpoint;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A task's scores on one split.
pub trait Scores: Serialize + DeserializeOwned {
    /// Lines for a person, which `eval` prints; `None`: `eval` prints the report's JSON.
    fn summary(&self) -> Option<String> {
        None
    }

    /// The main figures, for one row of `nlpkit summary`.
    fn headline(&self) -> String;
}

/// What a task's evaluation produced.
pub struct Evaluation<S> {
    pub scores: S,
    pub variant: Option<String>,
    pub predictions: Option<Predictions>,
}

impl<S> Evaluation<S> {
    /// Scores alone: no variant, no predictions file.
    pub fn of(scores: S) -> Self {
        Self {
            scores,
            variant: None,
            predictions: None,
        }
    }
}

/// A file of per-example predictions written beside the report.
pub struct Predictions {
    /// What the file holds: the start of its name, and its key in the report.
    pub kind: &'static str,
    pub extension: &'static str,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EvalReport<S> {
    pub split: String,
    pub checkpoint: PathBuf,
    pub step: usize,
    /// The model's parameter count (frozen ones included), for comparing models by their size
    /// (`recipes/shakespeare_char` stage 4); 0 in reports written before it was recorded.
    #[serde(default)]
    pub parameters: usize,
    /// Wall time of the evaluation.
    pub seconds: f64,
    /// The files written beside the report, by kind (`predictions`, `translations`).
    #[serde(flatten, skip_deserializing)]
    pub files: BTreeMap<String, PathBuf>,
    #[serde(flatten)]
    pub scores: S,
}

/// The folder name of a checkpoint: `step_00002000`, or an averaged checkpoint's own name;
/// `step_00002000_ema` for its EMA weights.
fn checkpoint_name(checkpoint: &Checkpoint) -> String {
    let name = checkpoint
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .unwrap_or_else(|| format!("step_{:08}", checkpoint.state.step));
    // The EMA weights' report does not replace the model's.
    match checkpoint.weights_label() {
        Some(label) => format!("{name}_{label}"),
        None => name,
    }
}

/// Write the report of `evaluation` of a model of `parameters` parameters (and its predictions)
/// into the experiment folder, print it, and return it.
pub fn write_report<S: Scores>(
    exp: &Experiment,
    split: &str,
    checkpoint: &Checkpoint,
    parameters: usize,
    seconds: f64,
    evaluation: Evaluation<S>,
) -> Result<EvalReport<S>> {
    let mut stem = format!("{split}_{}", checkpoint_name(checkpoint));
    if let Some(variant) = &evaluation.variant {
        stem = format!("{stem}_{variant}");
    }
    let mut files = BTreeMap::new();
    if let Some(p) = &evaluation.predictions {
        let path = exp.file(&format!("{}_{stem}.{}", p.kind, p.extension));
        write_atomic(&path, p.text.as_bytes())?;
        files.insert(p.kind.to_string(), path);
    }
    let report = EvalReport {
        split: split.to_string(),
        checkpoint: match checkpoint.weights_label() {
            Some(_) => checkpoint.model_path(),
            None => checkpoint.dir.clone(),
        },
        step: checkpoint.state.step,
        parameters,
        seconds,
        files,
        scores: evaluation.scores,
    };
    let json = serde_json::to_string_pretty(&report).expect("a report serialises");
    let path = exp.file(&format!("eval_{stem}.json"));
    write_atomic(&path, json.as_bytes())?;
    match report.scores.summary() {
        Some(summary) => print!("{summary}"),
        None => println!("{json}"),
    }
    for (kind, file) in &report.files {
        eprintln!("{kind} written to {}", file.display());
    }
    eprintln!("report written to {} ({seconds:.1}s)", path.display());
    Ok(report)
}

/// The reports of `split` in an experiment folder, by file name, each with the name's label
/// (the checkpoint and variant).
pub fn read_reports<S: Scores>(
    exp: &Experiment,
    split: &str,
) -> Result<Vec<(String, EvalReport<S>)>> {
    let prefix = format!("eval_{split}_");
    let mut names: Vec<String> = std::fs::read_dir(&exp.dir)
        .map_err(|e| Error::io(format!("cannot list {}", exp.dir.display()), e))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix) && name.ends_with(".json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = exp.file(&name);
            let label = name[prefix.len()..name.len() - ".json".len()].to_string();
            Ok((label, read_report(&path)?))
        })
        .collect()
}

fn read_report<S: Scores>(path: &Path) -> Result<EvalReport<S>> {
    let text = crate::error::read_file(path, "report")?;
    serde_json::from_slice(&text).map_err(|e| {
        Error::Data(format!(
            "{} is not an eval report of this experiment's task ({e}); run `nlpkit eval` again",
            path.display()
        ))
    })
}
