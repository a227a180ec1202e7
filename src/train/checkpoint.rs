//! Checkpoints: `EXP_DIR/checkpoints/step_00001000/` holding `model.safetensors`,
//! `optimizer.bpk` (Burn's optimiser record) and `trainer_state.json`.
//!
//! A checkpoint is written into a hidden temporary folder that is renamed into place only when
//! complete, so a crash leaves the previous checkpoints intact and never a half-written one.

use crate::error::{Error, IoContext, Result};
use crate::experiment::Experiment;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "trainer_state.json";

/// Everything besides tensors that a resumed run needs. The data position and the dropout seed
/// are functions of `step`, so the step is the whole position.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimiser steps completed.
    pub step: usize,
    /// Validation loss measured at this step.
    pub valid_loss: Option<f64>,
    pub train_loss: f64,
    pub lr: f64,
    pub tokens_seen: u64,
    /// Wall time spent training before this checkpoint, summed over resumed runs.
    pub elapsed_s: f64,
    /// What the dynamic loss weighting (DWA, DTP) has observed, for an exact resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_weighting: Option<super::weighting::WeightingState>,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
}

impl Checkpoint {
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    pub fn optimizer_path(&self) -> PathBuf {
        self.dir.join(OPTIMIZER_FILE)
    }
}

fn step_dir_name(step: usize) -> String {
    format!("step_{step:08}")
}

/// Write a checkpoint for `state.step` under `root` and return it.
pub fn save<M: ModuleSnapshot>(
    root: &Path,
    model: &M,
    optimizer: &ModuleOptimizer,
    state: &TrainerState,
) -> Result<Checkpoint> {
    std::fs::create_dir_all(root).with_path("create", root)?;
    let name = step_dir_name(state.step);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_path("remove", &tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_path("create", &tmp)?;

    let mut store = SafetensorsStore::from_file(tmp.join(MODEL_FILE))
        .metadata("nlpkit_step", state.step.to_string())
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| Error::Run(format!("cannot write model weights: {e}")))?;
    optimizer
        .save(tmp.join(OPTIMIZER_FILE))
        .map_err(|e| Error::Run(format!("cannot write optimiser state: {e}")))?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    crate::error::write_atomic(&tmp.join(STATE_FILE), json.as_bytes())?;
    sync_dir(&tmp);

    let dir = root.join(&name);
    if dir.exists() {
        // Re-saving the same step (a resumed run that ends where it started): replace it.
        std::fs::remove_dir_all(&dir).with_path("remove", &dir)?;
    }
    std::fs::rename(&tmp, &dir).with_path("rename into place", &dir)?;
    sync_dir(root);
    Ok(Checkpoint {
        dir,
        state: state.clone(),
    })
}

/// Flush a folder's entries so a rename survives a power cut (best effort: not every file
/// system lets a folder be opened for syncing).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Complete checkpoints under `root`, oldest first. Temporary folders of an interrupted save
/// are ignored.
pub fn list(root: &Path) -> Result<Vec<Checkpoint>> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let dir = entry.with_path("list", root)?.path();
        let is_step = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("step_"));
        if !is_step {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(dir.join(STATE_FILE)) else {
            continue;
        };
        let state: TrainerState = serde_json::from_str(&text).map_err(|e| {
            Error::Run(format!(
                "{} is damaged: {e}",
                dir.join(STATE_FILE).display()
            ))
        })?;
        out.push(Checkpoint { dir, state });
    }
    out.sort_by_key(|c| c.state.step);
    Ok(out)
}

pub fn latest(root: &Path) -> Result<Option<Checkpoint>> {
    Ok(list(root)?.pop())
}

/// Checkpoints with a finite validation loss, lowest first (ties: the later one first).
pub fn ranked_by_validation_loss(checkpoints: Vec<Checkpoint>) -> Vec<Checkpoint> {
    let mut scored: Vec<(f64, Checkpoint)> = checkpoints
        .into_iter()
        .filter_map(|c| c.state.valid_loss.filter(|l| l.is_finite()).map(|l| (l, c)))
        .collect();
    scored.sort_by(|(la, a), (lb, b)| la.total_cmp(lb).then(b.state.step.cmp(&a.state.step)));
    scored.into_iter().map(|(_, c)| c).collect()
}

/// The checkpoint with the lowest validation loss (ties: the later one).
pub fn best(root: &Path) -> Result<Option<Checkpoint>> {
    Ok(ranked_by_validation_loss(list(root)?).into_iter().next())
}

/// The checkpoint a trained model is read from by default: the best by validation loss, else
/// the latest.
pub fn best_or_latest(root: &Path) -> Result<Option<Checkpoint>> {
    match best(root)? {
        Some(best) => Ok(Some(best)),
        None => latest(root),
    }
}

/// The checkpoint a command uses: the one named on its command line, else
/// [`best_or_latest`].
pub fn choose(exp: &Experiment, named: Option<&Path>) -> Result<Checkpoint> {
    if let Some(path) = named {
        return resolve_user_checkpoint(path);
    }
    best_or_latest(&exp.checkpoints_dir())?.ok_or_else(|| {
        Error::Usage(format!(
            "{} has no checkpoint yet; train first (`nlpkit train RECIPE`)",
            exp.dir.display()
        ))
    })
}

/// Delete checkpoints that are neither among the last `keep_last` nor the best `keep_best`.
pub fn prune(root: &Path, keep_last: usize, keep_best: usize) -> Result<()> {
    let all = list(root)?;
    let mut keep: Vec<usize> = all
        .iter()
        .rev()
        .take(keep_last)
        .map(|c| c.state.step)
        .collect();
    let by_loss = ranked_by_validation_loss(all.clone());
    keep.extend(by_loss.iter().take(keep_best).map(|c| c.state.step));
    for c in all.iter().filter(|c| !keep.contains(&c.state.step)) {
        std::fs::remove_dir_all(&c.dir).with_path("remove old checkpoint", &c.dir)?;
    }
    Ok(())
}

/// Load weights into `model` (whose shapes come from the recipe); every tensor must match.
pub fn load_model<M: ModuleSnapshot + Module>(mut model: M, path: &Path) -> Result<M> {
    if !path.exists() {
        return Err(Error::Usage(format!(
            "checkpoint weights {} do not exist",
            path.display()
        )));
    }
    let mut store = SafetensorsStore::from_file(path);
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::Run(format!("cannot read {}: {e}", path.display())))?;
    if !result.is_success() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(Error::Run(format!(
            "{} does not match this model (was the recipe's model section changed?): {result}",
            path.display()
        )));
    }
    Ok(model)
}

/// Load the tensors under `prefix` (e.g. `bert.`) from a checkpoint of another model into
/// `model`, leaving the rest (a new head) as initialised. Every tensor under `prefix` must be
/// found with its shape.
pub fn load_part<M: ModuleSnapshot + Module>(mut model: M, path: &Path, prefix: &str) -> Result<M> {
    if !path.exists() {
        return Err(Error::Usage(format!(
            "pretrained weights {} do not exist",
            path.display()
        )));
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_regex(format!("^{}", regex_escape(prefix)))
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::Run(format!("cannot read {}: {e}", path.display())))?;
    let missing: Vec<&str> = result
        .missing
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| p.starts_with(prefix))
        .collect();
    if !result.errors.is_empty() || !missing.is_empty() || result.applied.is_empty() {
        return Err(Error::Run(format!(
            "{} does not fit this model's `{prefix}*` tensors (was it pretrained with another \
             shape?): {result}",
            path.display()
        )));
    }
    Ok(model)
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = ".^$|?*+()[]{}\\".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The pretrained weights of a fine-tuning recipe (`init_from`), when it has one.
pub fn init_from_weights(recipe: &crate::recipe::Recipe) -> Result<Option<PathBuf>> {
    recipe
        .init_from
        .as_deref()
        .map(pretrained_weights)
        .transpose()
}

/// `model` with the `bert.*` tensors of `pretrained` loaded, when given.
pub fn with_pretrained_encoder<M: ModuleSnapshot + Module>(
    model: M,
    pretrained: Option<&Path>,
) -> Result<M> {
    match pretrained {
        Some(path) => load_part(model, path, "bert."),
        None => Ok(model),
    }
}

/// The weights a fine-tuning run starts from: the pretraining experiment's best checkpoint by
/// validation loss, else its latest.
pub fn pretrained_weights(experiment_dir: &Path) -> Result<PathBuf> {
    let root = Experiment::new(experiment_dir).checkpoints_dir();
    best_or_latest(&root)?
        .map(|c| c.model_path())
        .ok_or_else(|| {
            Error::Usage(format!(
                "`init_from: {}` has no checkpoints; train the pretraining recipe first",
                experiment_dir.display()
            ))
        })
}

pub fn load_optimizer(optimizer: ModuleOptimizer, path: &Path) -> Result<ModuleOptimizer> {
    optimizer.load(path).map_err(|e| {
        Error::Run(format!(
            "cannot read optimiser state {}: {e}",
            path.display()
        ))
    })
}

/// A checkpoint named on the command line: a `step_*` folder, or the `model.safetensors` in one.
pub fn resolve_user_checkpoint(path: &Path) -> Result<Checkpoint> {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).map_err(|_| {
        Error::Usage(format!(
            "{} is not a checkpoint (no {STATE_FILE}); give a folder like EXP_DIR/checkpoints/step_00002000",
            path.display()
        ))
    })?;
    let state = serde_json::from_str(&text).map_err(|e| {
        Error::Run(format!(
            "{} is damaged: {e}",
            dir.join(STATE_FILE).display()
        ))
    })?;
    Ok(Checkpoint { dir, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(root: &Path, step: usize, loss: Option<f64>) {
        let dir = root.join(step_dir_name(step));
        std::fs::create_dir_all(&dir).unwrap();
        let state = TrainerState {
            step,
            valid_loss: loss,
            train_loss: 0.0,
            lr: 0.0,
            tokens_seen: 0,
            elapsed_s: 0.0,
            loss_weighting: None,
        };
        std::fs::write(dir.join(STATE_FILE), serde_json::to_string(&state).unwrap()).unwrap();
    }

    #[test]
    fn prune_keeps_last_and_best_and_ignores_unfinished_saves() {
        let root = tempfile::tempdir().unwrap();
        for (step, loss) in [(100, 3.0), (200, 1.0), (300, 2.0), (400, 2.5), (500, 2.4)] {
            fake(root.path(), step, Some(loss));
        }
        std::fs::create_dir_all(root.path().join(".step_00000600.tmp")).unwrap();
        prune(root.path(), 2, 1).unwrap();
        let steps: Vec<usize> = list(root.path())
            .unwrap()
            .iter()
            .map(|c| c.state.step)
            .collect();
        assert_eq!(steps, vec![200, 400, 500]);
        assert_eq!(best(root.path()).unwrap().unwrap().state.step, 200);
        assert_eq!(latest(root.path()).unwrap().unwrap().state.step, 500);
    }
}
