//! `nlpkit average`: the element-wise mean of several checkpoints' weights.

use crate::error::Result;
use crate::experiment::Experiment;
use crate::train::average::{Selection, average, select};
use std::path::Path;

/// Average the checkpoints `selection` picks into the checkpoint folder `output`.
pub fn average_checkpoints(exp_dir: &Path, selection: Selection, output: &Path) -> Result<()> {
    let (exp, recipe) = Experiment::open(exp_dir)?;
    let chosen = select(&exp.checkpoints_dir(), selection)?;
    let lora_scale = crate::train::lora::scale_of(&recipe.model);
    let path = average(&chosen, output, lora_scale)?;
    for c in &chosen {
        let loss = c
            .state
            .valid_loss
            .map_or("-".to_string(), |l| format!("{l:.4}"));
        println!("  step {:>8}  valid loss {loss}", c.state.step);
    }
    println!(
        "averaged {} checkpoints into {}{}",
        chosen.len(),
        path.display(),
        match lora_scale {
            Some(_) => " (LoRA adapters merged into the weights)",
            None => "",
        }
    );
    Ok(())
}
