use crate::backend::device_for;
use crate::data::labelled::{self, load_labelled_meta, prepare_labelled};
use crate::data::parallel::{
    load_pair_meta, prepare_pairs, source_tokenizer_path, target_tokenizer_path,
};
use crate::data::prepare::{load_meta, prepare, tokenizer_path};
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::{Ranks, expand_device};
use crate::error::{IoContext, Result, write_atomic};
use crate::experiment::Experiment;
use crate::models::bert::BertHead;
use crate::recipe::{DataFormat, ModelSection, Recipe};
use crate::tasks::Task;
use crate::tasks::classify::ClassifyTask;
use crate::tasks::lm::LmTask;
use crate::tasks::pretrain::PretrainTask;
use crate::tasks::tagging::TaggingTask;
use crate::tasks::translation::{self, TranslationConfig, TranslationTask};
use crate::train::{TrainOptions, refuse_to_overwrite, total_steps, train};
use burn::prelude::Device;
use std::path::Path;
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
    if labelled::handles(&recipe) {
        return train_labelled(recipe, &args, &exp, &device, &ranks);
    }
    match recipe.data.format {
        DataFormat::Text => train_language_model(recipe, &args, &exp, &device, &ranks),
        DataFormat::Parallel => train_translation(recipe, &args, &exp, &device, &ranks),
        DataFormat::Csv | DataFormat::Tagging => unreachable!("labelled data"),
    }
}

/// Classification, tagging and BERT pretraining: labelled texts, tagged sentences or documents.
fn train_labelled(
    mut recipe: Recipe,
    args: &Args,
    exp: &Experiment,
    device: &Device,
    ranks: &Ranks,
) -> Result<()> {
    let quiet = args.quiet || !ranks.is_main();
    let started = std::time::Instant::now();
    let (meta, prepared_dir) = prepared_by_main(
        ranks,
        || {
            let prepared = prepare_labelled(&recipe, false)?;
            if !quiet {
                super::prepare_data::report_labelled(&prepared, started.elapsed().as_secs_f64());
            }
            Ok((prepared.meta, prepared.dir))
        },
        || {
            Ok((
                load_labelled_meta(&recipe.prepared_dir())?,
                recipe.prepared_dir(),
            ))
        },
    )?;
    let tokenizer = TextTokenizer::load(&labelled::tokenizer_path(&prepared_dir))?;
    crate::tasks::classify::record_sizes(&mut recipe, &meta, &tokenizer)?;
    if ranks.is_main() {
        write_experiment_files(&recipe.to_yaml(), exp, args.resume)?;
        copy_into(
            &labelled::tokenizer_path(&prepared_dir),
            &exp.tokenizer_path(),
        )?;
        write_atomic(
            &exp.labels_path(),
            serde_json::to_string_pretty(&meta.labels)
                .expect("labels serialise")
                .as_bytes(),
        )?;
    }
    let shard = ranks.shard();
    let dir = prepared_dir.as_path();
    match &recipe.model {
        ModelSection::Cnn(o) => {
            let task = ClassifyTask::new(&recipe, o.config()?, &meta, dir, &tokenizer, shard)?;
            run_task(&recipe, &task, args, exp, device, ranks)
        }
        ModelSection::Bert(o) => {
            let config = o.config()?;
            match o.head {
                BertHead::SequenceClassification => {
                    let task = ClassifyTask::new(&recipe, config, &meta, dir, &tokenizer, shard)?;
                    run_task(&recipe, &task, args, exp, device, ranks)
                }
                BertHead::TokenClassification => {
                    let task = TaggingTask::new(&recipe, config, &meta, dir, &tokenizer, shard)?;
                    run_task(&recipe, &task, args, exp, device, ranks)
                }
                BertHead::Pretraining => {
                    let task = PretrainTask::new(&recipe, config, dir, &tokenizer, shard)?;
                    let summary = run_task(&recipe, &task, args, exp, device, ranks);
                    if !quiet && summary.is_ok() {
                        super::eval_labelled::report_log_variances(exp)?;
                    }
                    summary
                }
            }
        }
        _ => unreachable!("validated: labelled data trains cnn or bert"),
    }
}

fn train_language_model(
    mut recipe: Recipe,
    args: &Args,
    exp: &Experiment,
    device: &Device,
    ranks: &Ranks,
) -> Result<()> {
    let quiet = args.quiet || !ranks.is_main();
    let started = std::time::Instant::now();
    let (meta, prepared_dir) = prepared_by_main(
        ranks,
        || {
            let prepared = prepare(&recipe, false)?;
            if !quiet {
                super::prepare_data::report(&prepared, started.elapsed().as_secs_f64());
            }
            Ok((prepared.meta, prepared.dir))
        },
        || Ok((load_meta(&recipe.prepared_dir())?, recipe.prepared_dir())),
    )?;
    let task = LmTask::new(&recipe, &meta, &prepared_dir, ranks.shard())?;
    // The resolved recipe states the model completely, vocabulary included.
    if let ModelSection::Gpt2(options) = &mut recipe.model {
        options.vocab_size = Some(task.config.vocab_size);
    }
    if ranks.is_main() {
        write_experiment_files(&recipe.to_yaml(), exp, args.resume)?;
        copy_into(&tokenizer_path(&prepared_dir), &exp.tokenizer_path())?;
    }
    run_task(&recipe, &task, args, exp, device, ranks)
}

fn train_translation(
    mut recipe: Recipe,
    args: &Args,
    exp: &Experiment,
    device: &Device,
    ranks: &Ranks,
) -> Result<()> {
    let quiet = args.quiet || !ranks.is_main();
    let started = std::time::Instant::now();
    let (meta, prepared_dir) = prepared_by_main(
        ranks,
        || {
            let prepared = prepare_pairs(&recipe, false)?;
            if !quiet {
                super::prepare_data::report_pairs(&prepared, started.elapsed().as_secs_f64());
            }
            Ok((prepared.meta, prepared.dir))
        },
        || {
            Ok((
                load_pair_meta(&recipe.prepared_dir())?,
                recipe.prepared_dir(),
            ))
        },
    )?;
    let config = translation::model_config(&recipe, &meta)?;
    translation::record_vocab_sizes(&mut recipe, &meta);
    if ranks.is_main() {
        write_experiment_files(&recipe.to_yaml(), exp, args.resume)?;
        copy_into(
            &source_tokenizer_path(&prepared_dir),
            &exp.source_tokenizer_path(),
        )?;
        copy_into(
            &target_tokenizer_path(&prepared_dir),
            &exp.target_tokenizer_path(),
        )?;
    }
    let shard = ranks.shard();
    match config {
        TranslationConfig::Rnn(c) => {
            let task = TranslationTask::new(&recipe, c, &meta, &prepared_dir, shard)?;
            run_task(&recipe, &task, args, exp, device, ranks)
        }
        TranslationConfig::Transformer(c) => {
            let task = TranslationTask::new(&recipe, c, &meta, &prepared_dir, shard)?;
            run_task(&recipe, &task, args, exp, device, ranks)
        }
    }
}

/// Train `task` and report how it went.
fn run_task<T: Task>(
    recipe: &Recipe,
    task: &T,
    args: &Args,
    exp: &Experiment,
    device: &Device,
    ranks: &Ranks,
) -> Result<()> {
    let quiet = args.quiet || !ranks.is_main();
    let steps = total_steps(recipe, task);
    if !quiet {
        let ranks_note = if ranks.world > 1 {
            format!(" on {} ranks", ranks.world)
        } else {
            String::new()
        };
        println!(
            "model: {}; backend {} ({}); {steps} steps of {}{ranks_note}",
            recipe.model.name(),
            recipe.backend.kind.name(),
            recipe.backend.device,
            task.step_description(ranks.world, recipe.train.accum_grad),
        );
        println!("experiment: {}", exp.dir.display());
    }
    let options = TrainOptions {
        resume: args.resume,
        quiet: args.quiet,
    };
    let summary = train(recipe, task, exp, device, ranks, &options)?;
    if !quiet {
        if let Some(loss) = summary.final_valid_loss {
            let ppl = crate::train::progress::perplexity_note(loss, task.loss_is_token_nll());
            println!("final valid loss {loss:.4}{ppl}");
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

/// Rank 0 prepares the data (once, into the shared folder) while the others wait, then read
/// what it wrote.
fn prepared_by_main<P>(
    ranks: &Ranks,
    prepare: impl FnOnce() -> Result<P>,
    load: impl FnOnce() -> Result<P>,
) -> Result<P> {
    if ranks.is_main() {
        let prepared = prepare()?;
        ranks.wait_for_main();
        Ok(prepared)
    } else {
        ranks.wait_for_main();
        load()
    }
}

fn copy_into(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_path("read", from)?;
    write_atomic(to, &bytes)
}

/// The resolved recipe, so the experiment folder stands on its own.
fn write_experiment_files(resolved: &str, exp: &Experiment, resume: bool) -> Result<()> {
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
    write_atomic(&exp.recipe_path(), resolved.as_bytes())
}
