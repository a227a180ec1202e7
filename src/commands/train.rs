//! `nlpkit train`: prepare the data (rank 0), record the sizes the model takes from it in the
//! resolved recipe, write the experiment folder, and run the training loop on the task.

use crate::backend::device_for;
use crate::data::prepared::Preparation;
use crate::distributed::{Ranks, expand_device};
use crate::error::{IoContext, Result, write_atomic};
use crate::experiment::Experiment;
use crate::recipe::Recipe;
use crate::tasks::{self, Pipeline, PipelineJob, PreparedData, Task};
use crate::train::progress::perplexity_note;
use crate::train::{TrainOptions, TrainSummary, refuse_to_overwrite, total_steps, train};
use burn::prelude::Device;
use std::path::Path;
use std::time::{Duration, Instant};

/// Train the recipe's model into its `output_dir`. Under `mpirun -np N` (built with the `mpi`
/// feature) the N processes train one model data-parallel; rank 0 prepares the data and writes
/// everything.
pub fn train_recipe(mut recipe: Recipe, options: &TrainOptions) -> Result<()> {
    let ranks = Ranks::join(Duration::from_secs_f64(recipe.distributed.timeout_s))?;
    if let Some(template) = &recipe.distributed.device {
        recipe.backend.device = expand_device(template, &ranks);
    }
    let device = device_for(&recipe.backend)?;
    let exp = Experiment::new(recipe.output_dir());
    // Refuse to overwrite an experiment before touching anything in it.
    refuse_to_overwrite(&exp, options.continues())?;
    let quiet = options.quiet || !ranks.is_main();
    if !ranks.is_main() {
        // Only rank 0 speaks: the others' warnings (what a pretrained model left new or unused)
        // would repeat its own. Errors still name their rank's trouble.
        log::set_max_level(log::LevelFilter::Error);
    }
    // Rank 0 prepares the data (once, into the shared folder) while the others wait, then they
    // read what it wrote.
    let data = if ranks.is_main() {
        let started = Instant::now();
        let data = tasks::prepare(&recipe, Preparation::IfChanged)?;
        if !quiet {
            super::prepare::print_report(&data, started.elapsed().as_secs_f64());
        }
        ranks.wait_for_main();
        data
    } else {
        ranks.wait_for_main();
        tasks::prepare(&recipe, Preparation::Reuse)?
    };
    // Keep any other run out of the folder from its first write on (rank 0 alone writes there);
    // a bad recipe or bad data has been reported by now without creating it.
    let _lock = if ranks.is_main() {
        Some(exp.lock_for_training()?)
    } else {
        None
    };
    // The resolved recipe states the model completely, so the experiment folder rebuilds it.
    recipe.model.options_mut().record_sizes(&data.sizes)?;
    let job = TrainJob {
        recipe: &recipe,
        data: &data,
        exp: &exp,
        device: &device,
        ranks: &ranks,
        options,
    };
    tasks::with_pipeline(&recipe, job)
}

struct TrainJob<'a> {
    recipe: &'a Recipe,
    data: &'a PreparedData,
    exp: &'a Experiment,
    device: &'a Device,
    ranks: &'a Ranks,
    options: &'a TrainOptions,
}

impl PipelineJob for TrainJob<'_> {
    type Output = ();

    fn run<P: Pipeline>(self, pipeline: P) -> Result<()> {
        let (recipe, exp, ranks) = (self.recipe, self.exp, self.ranks);
        let task = pipeline.training(recipe, ranks.shard())?;
        if ranks.is_main() {
            write_experiment(recipe, self.data, exp, self.options.continues())?;
        }
        let quiet = self.options.quiet || !ranks.is_main();
        if !quiet {
            let ranks_note = match ranks.world {
                1 => String::new(),
                n => format!(" on {n} ranks"),
            };
            println!(
                "model: {}; backend {}; {} steps of {}{ranks_note}",
                recipe.model.name(),
                crate::backend::describe(&recipe.backend),
                total_steps(recipe, &task),
                task.step_description(ranks.world, recipe.train.accum_grad),
            );
            println!("experiment: {}", exp.dir.display());
        }
        let summary = train(recipe, &task, exp, self.device, ranks, self.options)?;
        if !quiet {
            print_summary(&summary, task.loss_is_token_nll());
        }
        // Word vectors are the product: written into the folder from the checkpoint `eval`
        // and `export` use.
        if ranks.is_main() && recipe.task() == crate::recipe::TaskKind::WordEmbeddings {
            let choice = super::ModelChoice {
                exp_dir: &exp.dir,
                checkpoint: None,
                backend: None,
            };
            let said =
                super::export::export_vectors(&choice, &exp.file(crate::experiment::VECTORS))?;
            if !quiet {
                println!("{said}");
            }
        }
        Ok(())
    }
}

fn print_summary(summary: &TrainSummary, per_token: bool) {
    if let Some(loss) = summary.final_valid_loss {
        println!(
            "final valid loss {loss:.4}{}",
            perplexity_note(loss, per_token)
        );
    }
    if let Some((step, loss)) = summary.best {
        println!("best checkpoint: step {step}, valid loss {loss:.4}");
    }
    if !summary.log_variances.is_empty() {
        let learned: Vec<String> = summary
            .log_variances
            .iter()
            .map(|(name, s)| format!("{name}: s = {s:.4}, weight exp(-s) = {:.4}", (-s).exp()))
            .collect();
        println!("learned uncertainty weights: {}", learned.join("; "));
    }
    println!(
        "trained {} steps in {:.1}s total, {:.0} tokens/s in this run",
        summary.steps, summary.elapsed_s, summary.tokens_per_s
    );
}

/// The resolved recipe and the data's artefacts (tokenizers, labels), so the experiment folder
/// stands on its own.
fn write_experiment(
    recipe: &Recipe,
    data: &PreparedData,
    exp: &Experiment,
    resume: bool,
) -> Result<()> {
    std::fs::create_dir_all(&exp.dir).with_path("create", &exp.dir)?;
    let resolved = recipe.to_yaml();
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
    for (prepared, name) in &data.artefacts {
        copy_into(prepared, &exp.file(name))?;
    }
    Ok(())
}

fn copy_into(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_path("read", from)?;
    write_atomic(to, &bytes)
}
