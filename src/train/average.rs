//! Checkpoint averaging (wenet's `average_model.py`, fairseq's `average_checkpoints.py`): the
//! element-wise mean of the weights of the best N checkpoints by validation loss, or of the last
//! N, written as a checkpoint folder that `eval`, `translate` and `generate` take with
//! `--checkpoint`.

use super::checkpoint::{self, Checkpoint, TrainerState};
use crate::error::{Error, IoContext, Result, write_atomic};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The N checkpoints with the lowest validation loss.
    Best(usize),
    /// The N most recent checkpoints.
    Last(usize),
}

/// The checkpoints under `root` that `selection` names, or an error saying how many there are.
pub fn select(root: &Path, selection: Selection) -> Result<Vec<Checkpoint>> {
    let all = checkpoint::sound(checkpoint::list(root)?);
    let (chosen, wanted, what): (Vec<Checkpoint>, usize, &str) = match selection {
        Selection::Last(n) => (
            all.iter().rev().take(n).cloned().collect(),
            n,
            "checkpoints",
        ),
        Selection::Best(n) => {
            let ranked = checkpoint::ranked_by_validation_loss(all);
            (
                ranked.into_iter().take(n).collect(),
                n,
                "checkpoints with a validation loss",
            )
        }
    };
    if wanted == 0 || chosen.len() < wanted {
        return Err(Error::Usage(format!(
            "asked to average {wanted} checkpoints but {} has {} {what}; keep more with \
             `train.keep_best`/`train.keep_last` (and `save_interval`), or average fewer",
            root.display(),
            chosen.len()
        )));
    }
    Ok(chosen)
}

/// Average the weights of `checkpoints` into the folder `out` (model.safetensors,
/// trainer_state.json of the newest, averaged_from.json). Float tensors are averaged in f64;
/// any other tensor must be equal in all of them. With `lora_scale` (a LoRA experiment's
/// alpha / r) each checkpoint's adapters are first merged into its weights: the mean of the
/// models `W + s A_i B_i` is then exact, where averaging A and B apart would not be.
pub fn average(checkpoints: &[Checkpoint], out: &Path, lora_scale: Option<f64>) -> Result<PathBuf> {
    let Some(newest) = checkpoints.iter().max_by_key(|c| c.state.step) else {
        return Err(Error::Usage("no checkpoints to average".into()));
    };
    if out
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("step_"))
    {
        return Err(Error::Usage(format!(
            "-o {}: a folder named step_* would be taken for a training checkpoint; choose \
             another name, e.g. EXP_DIR/average_best5",
            out.display()
        )));
    }
    let buffers: Vec<Vec<u8>> = checkpoints
        .iter()
        .map(|c| {
            let bytes = std::fs::read(c.model_path()).with_path("read", &c.model_path())?;
            match lora_scale {
                Some(scale) => {
                    super::lora::merged_file(&bytes, scale, &c.model_path().display().to_string())
                }
                None => Ok(bytes),
            }
        })
        .collect::<Result<_>>()?;
    let files: Vec<SafeTensors> = buffers
        .iter()
        .zip(checkpoints)
        .map(|(b, c)| {
            SafeTensors::deserialize(b)
                .map_err(|e| Error::Run(format!("cannot read {}: {e}", c.model_path().display())))
        })
        .collect::<Result<_>>()?;
    let first = &files[0];
    let mut averaged: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in first.tensors() {
        let views: Vec<TensorView> = files
            .iter()
            .zip(checkpoints)
            .map(|(f, c)| {
                f.tensor(&name)
                    .ok()
                    .filter(|v| v.shape() == view.shape() && v.dtype() == view.dtype())
                    .ok_or_else(|| {
                        Error::Run(format!(
                            "{} has no tensor {name} of shape {:?}: its checkpoints come from \
                             different models and cannot be averaged",
                            c.model_path().display(),
                            view.shape()
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        let data = match view.dtype() {
            Dtype::F32 => {
                let mut sum = vec![0f64; view.data().len() / 4];
                for v in &views {
                    for (s, bytes) in sum.iter_mut().zip(v.data().chunks_exact(4)) {
                        *s += f32::from_le_bytes(bytes.try_into().expect("4 bytes")) as f64;
                    }
                }
                let n = views.len() as f64;
                sum.iter()
                    .flat_map(|s| ((s / n) as f32).to_le_bytes())
                    .collect()
            }
            _ => {
                if views.iter().any(|v| v.data() != view.data()) {
                    return Err(Error::Run(format!(
                        "tensor {name} ({:?}) differs between the checkpoints and only float \
                         tensors can be averaged",
                        view.dtype()
                    )));
                }
                view.data().to_vec()
            }
        };
        averaged.push((name, view.dtype(), view.shape().to_vec(), data));
    }
    let views = averaged
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Run(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let (_, header) = SafeTensors::read_metadata(&buffers[0]).map_err(|e| {
        Error::Run(format!(
            "cannot read {}: {e}",
            checkpoints[0].model_path().display()
        ))
    })?;
    let mut metadata: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    let steps: Vec<usize> = checkpoints.iter().map(|c| c.state.step).collect();
    metadata.insert("nlpkit_averaged_steps".into(), format!("{steps:?}"));
    let mut bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::Run(format!("cannot serialise the averaged weights: {e}")))?;
    // The metadata came from a hash map: sort it, so equal averages are equal files.
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    checkpoint::sort_safetensors_header(&mut bytes[8..header_end])
        .map_err(|e| Error::Run(format!("cannot serialise the averaged weights: {e}")))?;

    std::fs::create_dir_all(out).with_path("create", out)?;
    let model_path = out.join("model.safetensors");
    write_atomic(&model_path, &bytes)?;
    let state = TrainerState {
        valid_loss: None,
        ..newest.state.clone()
    };
    let text = serde_json::to_string_pretty(&state).expect("state serialises");
    write_atomic(&out.join("trainer_state.json"), text.as_bytes())?;
    let sources: Vec<_> = checkpoints
        .iter()
        .map(|c| json!({"dir": c.dir, "step": c.state.step, "valid_loss": c.state.valid_loss}))
        .collect();
    let text = serde_json::to_string_pretty(&json!({ "averaged_from": sources })).expect("json");
    write_atomic(&out.join("averaged_from.json"), text.as_bytes())?;
    checkpoint::write_manifest(
        out,
        &[
            "model.safetensors",
            "trainer_state.json",
            "averaged_from.json",
        ],
    )?;
    Ok(model_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_checkpoint(root: &Path, step: usize, loss: f64, values: &[f32]) {
        let dir = root.join(format!("step_{step:08}"));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap();
        let bytes = safetensors::serialize([("layer.weight", view)], None).unwrap();
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        let state = TrainerState {
            step,
            valid_loss: Some(loss),
            train_loss: 0.0,
            lr: 0.0,
            tokens_seen: 0,
            elapsed_s: 0.0,
            loss_weighting: None,
            early_stopping: None,
        };
        std::fs::write(
            dir.join("trainer_state.json"),
            serde_json::to_string(&state).unwrap(),
        )
        .unwrap();
    }

    fn read(path: &Path) -> Vec<f32> {
        let bytes = std::fs::read(path).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let data = file.tensor("layer.weight").unwrap().data().to_vec();
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn averaging_gives_the_element_wise_mean_of_the_chosen_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        write_checkpoint(&root, 100, 2.0, &[1.0, 2.0, 3.0, 4.0]);
        write_checkpoint(&root, 200, 1.5, &[3.0, 6.0, -3.0, 0.5]);
        write_checkpoint(&root, 300, 1.8, &[100.0, 100.0, 100.0, 100.0]);

        let best = select(&root, Selection::Best(2)).unwrap();
        let steps: Vec<usize> = best.iter().map(|c| c.state.step).collect();
        assert_eq!(steps, vec![200, 300]);
        let last = select(&root, Selection::Last(2)).unwrap();
        assert_eq!(
            last.iter().map(|c| c.state.step).collect::<Vec<_>>(),
            vec![300, 200]
        );

        let chosen = select(&root, Selection::Best(3)).unwrap();
        let two: Vec<Checkpoint> = chosen.into_iter().filter(|c| c.state.step != 300).collect();
        let out = dir.path().join("avg");
        let model = average(&two, &out, None).unwrap();
        assert_eq!(read(&model), vec![2.0, 4.0, 0.0, 2.25]);
        let state = checkpoint::resolve_user_checkpoint(&out).unwrap().state;
        assert_eq!(state.step, 200);

        assert!(select(&root, Selection::Best(4)).is_err());
        assert!(average(&two, &root.join("step_9"), None).is_err());
    }
}
