//! A fine-tuning recipe's starting weights (`init_from`): an nlpkit pretraining experiment's
//! checkpoint (its `bert.*` encoder), or an HF model folder read for the recipe's model. What
//! the model has beyond them (a new head) and what they have beyond the model (their own head)
//! are listed at start-up, as transformers does.

use crate::error::{Error, Result};
use crate::hf::{HfTensor, Imported};
use crate::recipe::{ModelSection, Recipe};
use crate::train::lora::is_adapter;
use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a fine-tuning model's weights come from, and the model they are read for.
#[derive(Debug, Clone)]
pub struct Pretrained {
    source: Source,
    model: ModelSection,
}

#[derive(Debug, Clone)]
enum Source {
    /// An nlpkit experiment's checkpoint file.
    Checkpoint(PathBuf),
    /// An HF model folder.
    HfFolder(PathBuf),
}

impl Pretrained {
    /// The recipe's `init_from`, when it has one. The recipe's model is resolved, with its sizes
    /// recorded.
    pub fn of(recipe: &Recipe) -> Result<Option<Self>> {
        let Some(dir) = recipe.init_from.as_deref() else {
            return Ok(None);
        };
        let source = if crate::hf::is_model_folder(dir) {
            Source::HfFolder(dir.to_path_buf())
        } else {
            Source::Checkpoint(super::checkpoint::pretrained_weights(dir)?)
        };
        Ok(Some(Self {
            source,
            model: recipe.model.clone(),
        }))
    }

    /// An HF model folder's weights for `model` (a resolved section with its sizes).
    pub fn hf_folder(dir: &Path, model: ModelSection) -> Self {
        Self {
            source: Source::HfFolder(dir.to_path_buf()),
            model,
        }
    }

    /// `model` with the pretrained weights loaded.
    pub fn load_into<M: ModuleSnapshot + Module>(&self, model: M) -> Result<M> {
        match &self.source {
            Source::Checkpoint(path) => load_encoder(model, path, &self.model),
            Source::HfFolder(dir) => {
                let imported = match &self.model {
                    ModelSection::Bert(options) => crate::hf::bert::import(dir, options)?,
                    ModelSection::Gpt2(options) => crate::hf::gpt2::import(dir, options)?,
                    other => {
                        return Err(Error::Recipe(format!(
                            "`init_from: {}` is an HF folder; a {} model cannot start from one",
                            dir.display(),
                            other.name()
                        )));
                    }
                };
                load_imported(model, dir, imported)
            }
        }
    }
}

/// `model` (optionally) with the pretrained weights loaded.
pub fn with_pretrained<M: ModuleSnapshot + Module>(
    model: M,
    pretrained: Option<&Pretrained>,
) -> Result<M> {
    match pretrained {
        Some(p) => p.load_into(model),
        None => Ok(model),
    }
}

/// The `bert.*` tensors of an nlpkit pretraining checkpoint, every one required; the position
/// table cut to the model's (possibly shorter) maximum length.
fn load_encoder<M: ModuleSnapshot + Module>(
    mut model: M,
    path: &Path,
    section: &ModelSection,
) -> Result<M> {
    let mut tensors: BTreeMap<String, HfTensor> = crate::hf::read_safetensors(path)?
        .into_iter()
        .filter(|(name, _)| name.starts_with("bert."))
        .collect();
    if tensors.keys().any(|n| is_adapter(n)) {
        // A LoRA experiment's encoder: its adapters go into the weights they adapt (its
        // recipe, two folders above `step_N/`, gives their scale).
        let experiment = path.ancestors().nth(3).unwrap_or(path);
        let (_, recipe) = crate::experiment::Experiment::open(experiment)?;
        let scale = crate::train::lora::scale_of(&recipe.model).ok_or_else(|| {
            Error::Data(format!(
                "{} has LoRA adapters, but {} has no `model.lora`",
                path.display(),
                experiment.display()
            ))
        })?;
        crate::train::lora::merge_adapters(&mut tensors, scale)?;
    }
    if let ModelSection::Bert(options) = section {
        let rows = options.max_len.expect("resolved");
        crate::hf::keep_rows(&mut tensors, "bert.positions.weight", rows);
    }
    let mut store =
        SafetensorsStore::from_bytes(Some(crate::hf::to_safetensors(&tensors))).allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::Data(format!("cannot read {}: {e}", path.display())))?;
    // LoRA adapters start new on a pretrained encoder.
    let missing = (result.missing.iter()).any(|(p, _)| p.starts_with("bert.") && !is_adapter(p));
    if !result.errors.is_empty() || missing || result.applied.is_empty() {
        return Err(Error::Data(format!(
            "{} does not fit this model's `bert.*` tensors (was it pretrained with another \
             shape?): {result}",
            path.display()
        )));
    }
    Ok(model)
}

/// The tensors an HF folder gave, loaded; the model's tensors it did not give must be ones
/// that may start new (a head), and are listed with the checkpoint's unused ones.
fn load_imported<M: ModuleSnapshot + Module>(
    mut model: M,
    dir: &Path,
    imported: Imported,
) -> Result<M> {
    let mut store =
        SafetensorsStore::from_bytes(Some(crate::hf::to_safetensors(&imported.tensors)))
            .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::Data(format!("cannot load {}: {e}", dir.display())))?;
    // LoRA adapters start new, always: counted rather than listed.
    let adapters = (result.missing.iter())
        .filter(|(p, _)| is_adapter(p))
        .count();
    let mut missing: Vec<&str> = (result.missing.iter())
        .map(|(p, _)| p.as_str())
        .filter(|p| !is_adapter(p))
        .collect();
    missing.sort_unstable();
    let required: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| (imported.required)(p))
        .collect();
    if !result.errors.is_empty() || !required.is_empty() {
        return Err(Error::Data(format!(
            "{} does not fit this model: {}{result}",
            dir.display(),
            if required.is_empty() {
                String::new()
            } else {
                format!("the checkpoint lacks {}; ", required.join(", "))
            }
        )));
    }
    log::warn!(
        "initialised the model from {} ({} tensors); newly initialised: {}",
        dir.display(),
        result.applied.len(),
        match (missing.is_empty(), adapters) {
            (true, 0) => "none".to_string(),
            (_, 0) => missing.join(", "),
            (true, n) => format!("{n} LoRA adapters"),
            (false, n) => format!("{}, {n} LoRA adapters", missing.join(", ")),
        }
    );
    for note in &imported.notes {
        log::warn!("{note}");
    }
    if !imported.unused.is_empty() {
        log::warn!(
            "left unused from the checkpoint: {}",
            imported.unused.join(", ")
        );
    }
    Ok(model)
}
