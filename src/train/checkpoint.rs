//! Checkpoints: `EXP_DIR/checkpoints/step_00001000/` holding `model.safetensors`,
//! `optimizer.bpk` (Burn's optimiser record) and `trainer_state.json`, and with Lookahead or EMA
//! on, the slow weights (`lookahead.safetensors`) and the averaged ones (`ema.safetensors`); a
//! task that carries state between steps adds it (`carried_state.safetensors`).
//!
//! A checkpoint is written into a hidden temporary folder that is renamed into place only when
//! complete, so a crash leaves the previous checkpoints intact and never a half-written one.
//! Its last file, `manifest.json`, records every other file's size and SHA-256: a checkpoint
//! damaged later (a truncated copy, a bad disk) is found before it is loaded, and `--resume`
//! falls back to the newest sound one.

use crate::error::{Error, IoContext, Result, sync_dir};
use crate::experiment::Experiment;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "trainer_state.json";
const MANIFEST_FILE: &str = "manifest.json";
/// Lookahead's slow weights (optimiser state: `--reset-optimizer` drops them).
pub const LOOKAHEAD_FILE: &str = "lookahead.safetensors";
/// The exponential moving average of the weights; `--checkpoint step_*/ema.safetensors` picks it.
pub const EMA_FILE: &str = "ema.safetensors";
/// What a task carries from step to step besides the weights (truncated BPTT's hidden state,
/// `Task::carried_state`), as f32 safetensors.
pub const CARRIED_STATE_FILE: &str = "carried_state.safetensors";

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
    /// The best validation loss so far, its step and the bad evaluations since, when the recipe
    /// stops early: a resumed run stops where a straight one would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<super::early_stopping::EarlyStoppingState>,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    /// The weights a command reads: `model.safetensors`, unless the command line named the
    /// checkpoint's `ema.safetensors` or `lookahead.safetensors`.
    pub weights_file: &'static str,
}

impl Checkpoint {
    /// The weights a command uses (see `weights_file`).
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(self.weights_file)
    }

    /// The weight set a command uses when it is not the model's own (`ema`, `lookahead`), for
    /// the names of what it writes.
    pub fn weights_label(&self) -> Option<&'static str> {
        (self.weights_file != MODEL_FILE).then(|| {
            self.weights_file
                .strip_suffix(".safetensors")
                .unwrap_or(self.weights_file)
        })
    }

    pub fn optimizer_path(&self) -> PathBuf {
        self.dir.join(OPTIMIZER_FILE)
    }
}

fn step_dir_name(step: usize) -> String {
    format!("step_{step:08}")
}

/// Write a checkpoint for `state.step` under `root` and return it; `extras` are further weight
/// sets of the model's shape, by file name ([`LOOKAHEAD_FILE`], [`EMA_FILE`]), and `files`
/// further files' bytes, by name ([`CARRIED_STATE_FILE`]).
pub fn save<M: ModuleSnapshot>(
    root: &Path,
    model: &M,
    extras: &[(&'static str, &M)],
    files: &[(&'static str, Vec<u8>)],
    optimizer: &ModuleOptimizer,
    state: &TrainerState,
) -> Result<Checkpoint> {
    std::fs::create_dir_all(root).with_path("create", root)?;
    let name = step_dir_name(state.step);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_path("remove", &tmp)?;
    }
    if let Err(e) = write_files(&tmp, model, extras, files, optimizer, state) {
        // A full disk, say: free what the failed save took; the checkpoints before it stand.
        let _ = std::fs::remove_dir_all(&tmp);
        let last = match latest(root) {
            Ok(Some(last)) => format!("the last complete checkpoint is {}", last.dir.display()),
            _ => "no checkpoint was written before it".to_string(),
        };
        return Err(Error::Run(format!(
            "cannot save the checkpoint of step {} ({e}); {last}. Free disk space (or fix the \
             error), then continue with --resume",
            state.step
        )));
    }
    let dir = root.join(&name);
    put_in_place(&tmp, &dir)?;
    sync_dir(root);
    Ok(Checkpoint {
        dir,
        state: state.clone(),
        weights_file: MODEL_FILE,
    })
}

/// The files of a checkpoint, written into the folder `tmp`, the manifest last.
fn write_files<M: ModuleSnapshot>(
    tmp: &Path,
    model: &M,
    extras: &[(&'static str, &M)],
    others: &[(&'static str, Vec<u8>)],
    optimizer: &ModuleOptimizer,
    state: &TrainerState,
) -> Result<()> {
    std::fs::create_dir_all(tmp).with_path("create", tmp)?;
    let mut files = vec![MODEL_FILE];
    for (name, weights) in std::iter::once((MODEL_FILE, model)).chain(extras.iter().copied()) {
        let mut store = SafetensorsStore::from_file(tmp.join(name))
            .metadata("nlpkit_step", state.step.to_string())
            .overwrite(true);
        // The running statistics of the step just taken, not of the one before it.
        crate::train::params::sync_running_statistics(weights);
        weights
            .save_into(&mut store)
            .map_err(|e| Error::Run(format!("cannot write {name}: {e}")))?;
        canonical_safetensors_header(&tmp.join(name))?;
        if name != MODEL_FILE {
            files.push(name);
        }
    }
    for (name, bytes) in others {
        crate::error::write_atomic(&tmp.join(name), bytes)?;
        files.push(name);
    }
    save_optimizer(optimizer, &tmp.join(OPTIMIZER_FILE))?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    crate::error::write_atomic(&tmp.join(STATE_FILE), json.as_bytes())?;
    files.extend([OPTIMIZER_FILE, STATE_FILE]);
    write_manifest(tmp, &files)?;
    sync_dir(tmp);
    Ok(())
}

/// Rename the finished folder `tmp` to `dir`. Re-saving a step that exists (a resumed run that
/// ends where it started) swaps the two folders in one atomic rename where the OS can
/// (Linux's `RENAME_EXCHANGE`), so the step is never missing, then removes the old one.
fn put_in_place(tmp: &Path, dir: &Path) -> Result<()> {
    if !dir.exists() {
        return std::fs::rename(tmp, dir).with_path("rename into place", dir);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if exchange(tmp, dir).is_ok() {
        return std::fs::remove_dir_all(tmp).with_path("remove", tmp);
    }
    std::fs::remove_dir_all(dir).with_path("remove", dir)?;
    std::fs::rename(tmp, dir).with_path("rename into place", dir)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Write the optimiser's state with its tensors in name order. Burn lays them out in the order
/// of a hash map of parameters, which changes from run to run; sorted, equal states are equal
/// files.
fn save_optimizer(optimizer: &ModuleOptimizer, path: &Path) -> Result<()> {
    let failed =
        |e: &dyn std::fmt::Display| Error::Run(format!("cannot write optimiser state: {e}"));
    let bytes = optimizer.into_bytes().map_err(|e| failed(&e))?;
    let pack = burn_pack::Reader::from_bytes(bytes).map_err(|e| failed(&e))?;
    let (metadata, scalars) = (pack.metadata().clone(), pack.scalars().clone());
    let mut tensors = pack.into_tensors().map_err(|e| failed(&e))?;
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut writer = burn_pack::Writer::new(tensors);
    for (key, value) in &metadata {
        writer = writer.with_metadata(key, value);
    }
    for (key, value) in &scalars {
        writer = writer.with_scalar(key, *value);
    }
    writer.write_to_file(path).map_err(|e| failed(&e))
}

/// Burn writes the safetensors header's `__metadata__` from a hash map, in an order that changes
/// from run to run. Sort it in place (the header keeps its length), so that equal weights give
/// byte-equal files and equal checksums.
fn canonical_safetensors_header(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let damaged =
        |why: &str| Error::Run(format!("{} as written is damaged: {why}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_path("open", path)?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).with_path("read", path)?;
    let length = usize::try_from(u64::from_le_bytes(length)).map_err(|_| damaged("header size"))?;
    let mut header = vec![0u8; length];
    file.read_exact(&mut header).with_path("read", path)?;
    sort_safetensors_header(&mut header).map_err(|e| damaged(&e))?;
    file.seek(SeekFrom::Start(8)).with_path("write", path)?;
    file.write_all(&header).with_path("write", path)
}

/// Sort a safetensors header (the JSON after the 8-byte length) in place: tensors by name,
/// metadata by key, padded with spaces to its length as safetensors pads it.
pub fn sort_safetensors_header(header: &mut [u8]) -> std::result::Result<(), String> {
    use std::collections::BTreeMap;
    // Typed maps sort the tensors' names and the metadata's keys whatever order serde_json's
    // own map keeps.
    let mut parsed: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| e.to_string())?;
    if let Some(metadata) = parsed.remove("__metadata__") {
        let metadata: BTreeMap<String, String> =
            serde_json::from_value(metadata).map_err(|e| e.to_string())?;
        let metadata = serde_json::to_value(metadata).map_err(|e| e.to_string())?;
        parsed.insert("__metadata__".into(), metadata);
    }
    let sorted = serde_json::to_vec(&parsed).map_err(|e| e.to_string())?;
    if sorted.len() > header.len() {
        return Err("its header grew when sorted".into());
    }
    header[..sorted.len()].copy_from_slice(&sorted);
    header[sorted.len()..].fill(b' ');
    Ok(())
}

/// What the manifest records of one file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileRecord {
    bytes: u64,
    sha256: String,
}

/// Size and SHA-256 of a file.
fn record_file(path: &Path) -> Result<FileRecord> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).with_path("open", path)?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher).with_path("read", path)?;
    Ok(FileRecord {
        bytes,
        sha256: format!("{:x}", hasher.finalize()),
    })
}

/// `manifest.json` in `dir`: each named file's size and SHA-256, by name. The files are flushed
/// to disk first: the manifest vouches for what is on it.
pub fn write_manifest(dir: &Path, names: &[&str]) -> Result<()> {
    let mut files = std::collections::BTreeMap::new();
    for name in names {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).with_path("open", &path)?;
        file.sync_all().with_path("sync", &path)?;
        files.insert(name.to_string(), record_file(&path)?);
    }
    let json = serde_json::to_string_pretty(&serde_json::json!({ "files": files }))
        .expect("the manifest serialises");
    crate::error::write_atomic(&dir.join(MANIFEST_FILE), json.as_bytes())
}

/// Check every file a checkpoint's manifest lists against its recorded size and SHA-256; the
/// error names the first file that differs. Checkpoints written before manifests existed have
/// none and are taken as they are.
pub fn verify(checkpoint: &Checkpoint) -> Result<()> {
    let manifest_path = checkpoint.dir.join(MANIFEST_FILE);
    let Ok(text) = std::fs::read_to_string(&manifest_path) else {
        return Ok(());
    };
    #[derive(Deserialize)]
    struct Manifest {
        files: std::collections::BTreeMap<String, FileRecord>,
    }
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        Error::Data(format!(
            "checkpoint manifest {} is damaged: {e}",
            manifest_path.display()
        ))
    })?;
    for (name, recorded) in &manifest.files {
        let path = checkpoint.dir.join(name);
        let bad = |what: String| {
            Error::Data(format!(
                "checkpoint file {} {what}; the checkpoint is damaged (a truncated copy, a bad \
                 disk?): use another one",
                path.display()
            ))
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| bad(format!("cannot be read ({e})")))?
            .len();
        if size != recorded.bytes {
            return Err(bad(format!(
                "has {size} bytes where {} were written",
                recorded.bytes
            )));
        }
        if record_file(&path)?.sha256 != recorded.sha256 {
            return Err(bad("does not have the SHA-256 it was written with".into()));
        }
    }
    Ok(())
}

/// The first of `candidates` that passes [`verify`], with a warning for each one before it that
/// does not.
fn first_sound(candidates: impl IntoIterator<Item = Checkpoint>) -> Option<Checkpoint> {
    candidates
        .into_iter()
        .find(|candidate| match verify(candidate) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "warning: {}skipping {}: {e}",
                    crate::distributed::message_prefix(),
                    candidate.dir.display()
                );
                false
            }
        })
}

/// The checkpoints of `candidates` that pass [`verify`], with a warning for each one that does not.
pub fn sound(candidates: Vec<Checkpoint>) -> Vec<Checkpoint> {
    let mut rest = candidates.into_iter();
    std::iter::from_fn(|| first_sound(&mut rest)).collect()
}

/// Checkpoints under `root`, oldest first, whether sound or not. Temporary folders of an
/// interrupted save are ignored; a folder whose trainer state cannot be read is left out with
/// a warning.
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
        match read_state(&dir) {
            Ok(state) => out.push(Checkpoint {
                dir,
                state,
                weights_file: MODEL_FILE,
            }),
            Err(e) => eprintln!(
                "warning: {}skipping {}: {e}",
                crate::distributed::message_prefix(),
                dir.display()
            ),
        }
    }
    out.sort_by_key(|c| c.state.step);
    Ok(out)
}

/// The trainer state of a checkpoint folder.
fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Data(format!(
            "{} cannot be read ({e}); the checkpoint is incomplete",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Data(format!("{} is damaged: {e}", path.display())))
}

/// The newest sound checkpoint (damaged newer ones are skipped with a warning).
pub fn latest(root: &Path) -> Result<Option<Checkpoint>> {
    Ok(first_sound(list(root)?.into_iter().rev()))
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

/// The sound checkpoint with the lowest validation loss (ties: the later one).
pub fn best(root: &Path) -> Result<Option<Checkpoint>> {
    Ok(first_sound(ranked_by_validation_loss(list(root)?)))
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
        let checkpoint = resolve_user_checkpoint(path)?;
        verify(&checkpoint)?;
        return Ok(checkpoint);
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

/// Where checkpoints of an abandoned continuation go (not a `step_*` name: never listed).
pub const SUPERSEDED_DIR: &str = "superseded";

/// Move the checkpoints under `root` past `step` into `root/superseded/`: a run restarted from
/// an earlier point (`--resume-from`, `--reset-schedule`) re-saves those steps, and pruning by
/// step must not mistake the abandoned ones for its newest. Returns the folders moved.
pub fn set_aside_after(root: &Path, step: usize) -> Result<Vec<PathBuf>> {
    let newer: Vec<Checkpoint> = list(root)?
        .into_iter()
        .filter(|c| c.state.step > step)
        .collect();
    let aside = root.join(SUPERSEDED_DIR);
    let mut moved = Vec::new();
    for c in newer {
        std::fs::create_dir_all(&aside).with_path("create", &aside)?;
        let to = aside.join(c.dir.file_name().expect("a step folder"));
        if to.exists() {
            std::fs::remove_dir_all(&to).with_path("remove", &to)?;
        }
        std::fs::rename(&c.dir, &to).with_path("move aside", &c.dir)?;
        moved.push(to);
    }
    if !moved.is_empty() {
        sync_dir(root);
    }
    Ok(moved)
}

/// Load weights into `model` (whose shapes come from the recipe); every tensor must match.
pub fn load_model<M: ModuleSnapshot + Module>(mut model: M, path: &Path) -> Result<M> {
    if !path.exists() {
        return Err(Error::Usage(format!(
            "checkpoint weights {} do not exist",
            path.display()
        )));
    }
    // Differences come back in the result (not as one long error) to be summarised.
    let mut store = SafetensorsStore::from_file(path)
        .validate(false)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::Data(format!("cannot read {}: {e}", path.display())))?;
    // A file whose LoRA adapters were merged into the weights has none: the model's stay at
    // their start, B = 0, which adds nothing.
    let merged = crate::train::lora::file_is_merged(path)?;
    let differences: Vec<String> = result
        .errors
        .iter()
        .map(|e| e.to_string())
        .chain(
            (result.missing.iter())
                .filter(|(p, _)| !(merged && crate::train::lora::is_adapter(p)))
                .map(|(p, _)| format!("`{p}` is not in the checkpoint")),
        )
        .chain(
            result
                .unused
                .iter()
                .map(|p| format!("`{p}` is not in the model")),
        )
        .collect();
    if let Some(first) = differences.first() {
        let more = match differences.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more differences)"),
        };
        return Err(Error::Data(format!(
            "{} does not match this model: {first}{more}; was the recipe's model section \
             changed, or is it another experiment's checkpoint?",
            path.display()
        )));
    }
    Ok(model)
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
    if !path.exists() {
        return Err(Error::Usage(format!(
            "{} does not exist: the checkpoint has no optimiser state (an averaged one?); add \
             --reset-optimizer to start with a fresh optimiser",
            path.display()
        )));
    }
    optimizer.load(path).map_err(|e| {
        Error::Data(format!(
            "cannot read optimiser state {}: {e}",
            path.display()
        ))
    })
}

/// A checkpoint named on the command line: a `step_*` folder, or the `model.safetensors` in one;
/// its `ema.safetensors` or `lookahead.safetensors` picks those weights instead.
pub fn resolve_user_checkpoint(path: &Path) -> Result<Checkpoint> {
    let name = path.file_name().and_then(|n| n.to_str());
    let weights_file = match name {
        Some(EMA_FILE) => EMA_FILE,
        Some(LOOKAHEAD_FILE) => LOOKAHEAD_FILE,
        _ => MODEL_FILE,
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    if weights_file != MODEL_FILE && !path.is_file() && parent.join(STATE_FILE).is_file() {
        let what = match weights_file {
            EMA_FILE => "`train.ema_decay`",
            _ => "`optim.lookahead`",
        };
        return Err(Error::Usage(format!(
            "{} does not exist: the run that wrote this checkpoint had no {what}",
            path.display()
        )));
    }
    let dir = if path.is_file() {
        parent.to_path_buf()
    } else {
        path.to_path_buf()
    };
    if !dir.join(STATE_FILE).is_file() {
        return Err(Error::Usage(format!(
            "{} is not a checkpoint (no {STATE_FILE}); give a folder like EXP_DIR/checkpoints/step_00002000",
            path.display()
        )));
    }
    let state = read_state(&dir)?;
    Ok(Checkpoint {
        dir,
        state,
        weights_file,
    })
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
            early_stopping: None,
        };
        std::fs::write(dir.join(STATE_FILE), serde_json::to_string(&state).unwrap()).unwrap();
    }

    #[test]
    fn a_resaved_step_replaces_the_old_one_and_leaves_no_temporary_folder() {
        let root = tempfile::tempdir().unwrap();
        let (tmp, dir) = (root.path().join(".step.tmp"), root.path().join("step"));
        for contents in ["old", "new"] {
            std::fs::create_dir(&tmp).unwrap();
            std::fs::write(tmp.join("model.safetensors"), contents).unwrap();
            super::put_in_place(&tmp, &dir).unwrap();
            assert!(!tmp.exists());
            let saved = std::fs::read_to_string(dir.join("model.safetensors")).unwrap();
            assert_eq!(saved, contents);
        }
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
