use crate::error::{Error, Result};
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
    #[arg(long, conflicts_with = "resume_from")]
    resume: bool,
    /// Continue from this checkpoint folder (`EXP_DIR/checkpoints/step_N`, of this experiment or
    /// another, like fairseq's --restore-file) instead of the latest: weights, optimiser state,
    /// step and schedule, loss-weighting and early-stopping state. Metrics past its step are
    /// dropped and this experiment's checkpoints past it moved to `checkpoints/superseded/`.
    #[arg(long, value_name = "CHECKPOINT")]
    resume_from: Option<std::path::PathBuf>,
    /// With --resume or --resume-from: start with a fresh optimiser (no moments), keeping the
    /// weights, the step and the schedule's position.
    #[arg(long)]
    reset_optimizer: bool,
    /// With --resume or --resume-from: a new run from the checkpoint's weights: the step count
    /// starts at 0, and with it the recipe's schedule (warm-up included), data order and
    /// `max_steps`; loss-weighting and early-stopping state start fresh. The optimiser state is
    /// kept unless --reset-optimizer is given too.
    #[arg(long)]
    reset_schedule: bool,
    /// No progress bar or log lines; metrics.jsonl is still written.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    if (args.reset_optimizer || args.reset_schedule) && !args.resume && args.resume_from.is_none() {
        let flag = match args.reset_optimizer {
            true => "--reset-optimizer",
            false => "--reset-schedule",
        };
        return Err(Error::Usage(format!(
            "{flag} resets what a checkpoint would bring; give it with --resume or \
             --resume-from CHECKPOINT (a fresh run has nothing to reset)"
        )));
    }
    let options = TrainOptions {
        resume: args.resume,
        resume_from: args.resume_from,
        reset_optimizer: args.reset_optimizer,
        reset_schedule: args.reset_schedule,
        quiet: args.quiet,
    };
    crate::commands::train::train_recipe(args.recipe.load()?, &options)
}
