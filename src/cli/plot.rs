use crate::error::Result;
use std::path::PathBuf;

/// Draw the training curves of experiments side by side: training and validation loss, and the
/// learning rate, against the step, one colour per experiment (from each `metrics.jsonl`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment folders (each with the metrics.jsonl of a `nlpkit train` run).
    #[arg(required = true)]
    exp_dirs: Vec<PathBuf>,
    /// The picture to write: an .svg or .png file (by its extension).
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let written = crate::commands::plot::plot(&args.exp_dirs, &args.output)?;
    println!("{written}");
    Ok(())
}
