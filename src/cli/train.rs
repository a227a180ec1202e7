use crate::backend::device_for;
use crate::data::prepare::{prepare, tokenizer_path};
use crate::error::{IoContext, Result, write_atomic};
use crate::experiment::Experiment;
use crate::recipe::ModelSection;
use crate::tasks::lm::LmTask;
use crate::train::{TrainOptions, refuse_to_overwrite, total_steps, train};

/// Train the recipe's model. Prepares the data first if needed (as `prepare-data` would), writes
/// the resolved recipe, tokenizer, metrics and checkpoints into the recipe's `output_dir`.
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
    let device = device_for(&recipe.backend)?;
    let exp = Experiment::new(recipe.output_dir());
    // Refuse to overwrite an experiment before touching anything in it.
    refuse_to_overwrite(&exp, args.resume)?;

    let started = std::time::Instant::now();
    let prepared = prepare(&recipe, false)?;
    if !args.quiet {
        super::prepare_data::report(&prepared, started.elapsed().as_secs_f64());
    }
    let task = LmTask::new(&recipe, &prepared.meta, &prepared.dir)?;
    // The resolved recipe states the model completely, vocabulary included.
    match &mut recipe.model {
        ModelSection::Gpt2(options) => options.vocab_size = Some(task.config.vocab_size),
    }

    std::fs::create_dir_all(&exp.dir).with_path("create", &exp.dir)?;
    let resolved = recipe.to_yaml();
    if args.resume
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
    let tokenizer =
        std::fs::read(tokenizer_path(&prepared.dir)).with_path("read", &prepared.dir)?;
    write_atomic(&exp.tokenizer_path(), &tokenizer)?;

    let steps = total_steps(&recipe, &task);
    if !args.quiet {
        println!(
            "model: gpt2, {:.2}M parameters; backend {} ({}); {steps} steps of {} tokens",
            task.config.num_params() as f64 / 1e6,
            recipe.backend.kind.name(),
            recipe.backend.device,
            recipe.train.batch_size * recipe.train.accum_grad * task.config.block_size,
        );
        println!("experiment: {}", exp.dir.display());
    }
    let options = TrainOptions {
        resume: args.resume,
        quiet: args.quiet,
    };
    let summary = train(&recipe, &task, &exp, &device, &options)?;
    if !args.quiet {
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
