use crate::backend::device_for;
use crate::data::prepare::{load_meta, prepare, tokenizer_path};
use crate::distributed::{Ranks, expand_device};
use crate::error::{IoContext, Result, write_atomic};
use crate::experiment::Experiment;
use crate::recipe::ModelSection;
use crate::tasks::lm::LmTask;
use crate::train::{TrainOptions, refuse_to_overwrite, total_steps, train};
use std::time::Duration;

/// Train the recipe's model. Prepares the data first if needed (as `prepare-data` would), writes
/// the resolved recipe, tokenizer, metrics and checkpoints into the recipe's `output_dir`.
///
/// Under `mpirun -np N` (built with the `mpi` feature) the N processes train one model
/// data-parallel; rank 0 prepares the data and writes everything.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    recipe: super::RecipeArgs,
    /// Continue from the latest checkpoint in the output folder; the run ends with the same
    /// weights as one that was never interrupted.
    #[arg(long)]
    resume: bool,
    /// No progress bar or log lines; metrics.jsonl is still written.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut recipe = args.recipe.load()?;
    let ranks = Ranks::join(Duration::from_secs_f64(recipe.distributed.timeout_s))?;
    if let Some(template) = &recipe.distributed.device {
        recipe.backend.device = expand_device(template, &ranks);
    }
    let device = device_for(&recipe.backend)?;
    let exp = Experiment::new(recipe.output_dir());
    // Refuse to overwrite an experiment before touching anything in it.
    refuse_to_overwrite(&exp, args.resume)?;
    let quiet = args.quiet || !ranks.is_main();

    // Rank 0 prepares the data (once, into the shared folder) while the others wait.
    let started = std::time::Instant::now();
    let (meta, prepared_dir) = if ranks.is_main() {
        let prepared = prepare(&recipe, false)?;
        if !quiet {
            super::prepare_data::report(&prepared, started.elapsed().as_secs_f64());
        }
        ranks.wait_for_main();
        (prepared.meta, prepared.dir)
    } else {
        ranks.wait_for_main();
        let dir = recipe.prepared_dir();
        (load_meta(&dir)?, dir)
    };
    let task = LmTask::new(&recipe, &meta, &prepared_dir, ranks.shard())?;
    // The resolved recipe states the model completely, vocabulary included.
    match &mut recipe.model {
        ModelSection::Gpt2(options) => options.vocab_size = Some(task.config.vocab_size),
    }

    if ranks.is_main() {
        write_experiment_files(&recipe.to_yaml(), &exp, &prepared_dir, args.resume)?;
    }
    let steps = total_steps(&recipe, &task);
    if !quiet {
        let (per_rank, global) = crate::distributed::batch_sizes(&recipe, ranks.world)?;
        let ranks_note = if ranks.world > 1 {
            format!(", {} ranks of {per_rank} sequences", ranks.world)
        } else {
            String::new()
        };
        println!(
            "model: gpt2, {:.2}M parameters; backend {} ({}); {steps} steps of {} tokens{ranks_note}",
            task.config.num_params() as f64 / 1e6,
            recipe.backend.kind.name(),
            recipe.backend.device,
            global * recipe.train.accum_grad * task.config.block_size,
        );
        println!("experiment: {}", exp.dir.display());
    }
    let options = TrainOptions {
        resume: args.resume,
        quiet: args.quiet,
    };
    let summary = train(&recipe, &task, &exp, &device, &ranks, &options)?;
    if !quiet {
        if let Some(loss) = summary.final_valid_loss {
            println!("final valid loss {loss:.4} (ppl {:.2})", loss.exp());
        }
        if let Some((step, loss)) = summary.best {
            println!("best checkpoint: step {step}, valid loss {loss:.4}");
        }
        println!(
            "trained {} steps in {:.1}s total, {:.0} tokens/s in this run",
            summary.steps, summary.elapsed_s, summary.tokens_per_s
        );
    }
    Ok(())
}

/// The resolved recipe and the tokenizer, so the experiment folder stands on its own.
fn write_experiment_files(
    resolved: &str,
    exp: &Experiment,
    prepared_dir: &std::path::Path,
    resume: bool,
) -> Result<()> {
    std::fs::create_dir_all(&exp.dir).with_path("create", &exp.dir)?;
    if resume
        && let Ok(previous) = std::fs::read_to_string(exp.recipe_path())
        && previous != resolved
    {
        eprintln!(
            "warning: the recipe differs from the one this experiment started with ({}); \
             resuming with the new one",
            exp.recipe_path().display()
        );
    }
    write_atomic(&exp.recipe_path(), resolved.as_bytes())?;
    let tokenizer = std::fs::read(tokenizer_path(prepared_dir)).with_path("read", prepared_dir)?;
    write_atomic(&exp.tokenizer_path(), &tokenizer)
}
