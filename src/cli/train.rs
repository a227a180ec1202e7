use crate::error::Result;
use crate::train::TrainOptions;

/// Train the recipe's model. Prepares the data first if needed (as `prepare-data` would), writes
/// the resolved recipe, tokenizer, metrics and checkpoints into the recipe's `output_dir`.
///
/// Under `mpirun -np N` (built with the `mpi` feature) the N processes train one model
/// data-parallel; rank 0 prepares the data and writes everything.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    recipe: super::RecipeArgs,
    /// Continue from the latest checkpoint in the output folder (or start, when it has none);
    /// the run ends with the same weights as one that was never interrupted.
    #[arg(long)]
    resume: bool,
    /// No progress bar or log lines; metrics.jsonl is still written.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let options = TrainOptions {
        resume: args.resume,
        quiet: args.quiet,
    };
    crate::commands::train::train_recipe(args.recipe.load()?, &options)
}
