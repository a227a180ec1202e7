use crate::commands::average::average_checkpoints;
use crate::error::{Error, Result};
use crate::train::average::Selection;
use std::path::PathBuf;

/// Average the weights of several checkpoints (wenet's average_model): the best N by validation
/// loss, or the last N. The result is a checkpoint folder for `eval`/`translate`/`generate`
/// `--checkpoint`. A LoRA experiment's adapters are merged into the weights first.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["best", "last"])))]
pub struct Args {
    /// The experiment folder (the recipe's output_dir).
    exp_dir: PathBuf,
    /// Average the N checkpoints with the lowest validation loss.
    #[arg(long, value_name = "N")]
    best: Option<usize>,
    /// Average the N most recent checkpoints.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// The folder to write (e.g. EXP_DIR/average_best5).
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let selection = match (args.best, args.last) {
        (Some(n), None) => Selection::Best(n),
        (None, Some(n)) => Selection::Last(n),
        _ => return Err(Error::Usage("give one of --best N or --last N".into())),
    };
    average_checkpoints(&args.exp_dir, selection, &args.output)
}
