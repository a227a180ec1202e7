//! `nlpkit export`: a trained model as an HF model folder.

use crate::error::Result;
use std::path::Path;

/// Write the HF folder `output` from the experiment's checkpoint (default: the best by
/// validation loss).
pub fn export(exp_dir: &Path, checkpoint: Option<&Path>, output: &Path) -> Result<()> {
    let said = crate::hf::export::export(exp_dir, checkpoint, output)?;
    println!("{said}");
    Ok(())
}
