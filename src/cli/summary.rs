use crate::error::Result;
use std::path::PathBuf;

/// Summarise experiments side by side: one line per `nlpkit eval` report of the split (its
/// checkpoint, decoding and main scores) with the training run's steps, wall time and
/// throughput.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment folders.
    #[arg(required = true)]
    exp_dirs: Vec<PathBuf>,
    /// Which split's reports: train, valid or test.
    #[arg(long, default_value = "test")]
    split: String,
}

pub fn run(args: Args) -> Result<()> {
    print!(
        "{}",
        crate::commands::summary::summary(&args.exp_dirs, &args.split)?
    );
    Ok(())
}
