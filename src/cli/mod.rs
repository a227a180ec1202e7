//! The command line: one file per verb, each parsing its arguments and calling one function of
//! [`crate::commands`]; exit codes come from the error.

mod average;
mod completions;
mod decode_args;
mod eval;
mod explain;
mod export;
mod generate;
mod plot;
mod prepare_data;
mod recipe;
mod summary;
mod train;
mod translate;

use crate::commands::ModelChoice;
use crate::error::Result;
use crate::recipe::{BackendKind, Recipe, load_recipe};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The recipe file and its overrides, shared by every verb that reads a recipe.
#[derive(clap::Args, Debug)]
pub struct RecipeArgs {
    /// The recipe YAML file.
    recipe: PathBuf,
    /// Override a recipe key with a typed value, e.g. `--set optim.lr=3e-4` or
    /// `--set backend.type=ndarray` (repeatable; the value is read as YAML).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    overrides: Vec<String>,
}

impl RecipeArgs {
    /// The resolved recipe.
    pub fn load(&self) -> Result<Recipe> {
        load_recipe(&self.recipe, &self.overrides)
    }
}

/// A trained model: shared by every verb that uses one.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// The experiment folder (the recipe's output_dir).
    exp_dir: PathBuf,
    /// A checkpoint folder (`EXP_DIR/checkpoints/step_*`, or one written by `nlpkit average`);
    /// default: the one with the best validation loss.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Run on another backend than the recipe's (flex, ndarray, wgpu, tch, cuda).
    #[arg(long)]
    backend: Option<BackendKind>,
}

impl ModelArgs {
    pub fn choice(&self) -> ModelChoice<'_> {
        ModelChoice {
            exp_dir: &self.exp_dir,
            checkpoint: self.checkpoint.as_deref(),
            backend: self.backend,
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "nlpkit",
    about = "Train NLP models from YAML recipes (Burn, one static binary)",
    long_about = "Train NLP models from YAML recipes.\n\nA recipe says which backend, data, tokenizer, \
                  model, loss, optimiser, schedule and training budget to use. Typical use:\n  \
                  nlpkit prepare-data conf/train.yaml\n  nlpkit train conf/train.yaml\n  \
                  nlpkit eval exp/my_run\n  nlpkit generate exp/my_run --prompt 'ROMEO:'\n  \
                  nlpkit translate exp/my_mt < sentences.txt\n  nlpkit average exp/my_mt --best 5 -o exp/my_mt/avg\n  \
                  nlpkit export exp/my_bert -o my_bert_hf\n  \
                  nlpkit summary exp/run_a exp/run_b\n  \
                  nlpkit plot exp/run_a exp/run_b -o curves.svg\n  \
                  nlpkit explain exp/my_cls -i texts.txt -o saliency"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    PrepareData(prepare_data::Args),
    Train(train::Args),
    Eval(eval::Args),
    Generate(generate::Args),
    Translate(translate::Args),
    Average(average::Args),
    Export(export::Args),
    Summary(summary::Args),
    Plot(plot::Args),
    Explain(explain::Args),
    Recipe(recipe::Args),
    Completions(completions::Args),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::PrepareData(args) => prepare_data::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Translate(args) => translate::run(args),
        Command::Average(args) => average::run(args),
        Command::Export(args) => export::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Recipe(args) => recipe::run(args),
        Command::Completions(args) => completions::run(args),
    }
}

/// The command's definition, with the version text only known at run time.
pub fn command() -> clap::Command {
    // `--version` is asked once per process: leaking the text is what clap's `&'static str` takes.
    let version: &'static str = Box::leak(crate::backend::version_text().into_boxed_str());
    <Cli as clap::CommandFactory>::command().version(version)
}

/// Parse the process's arguments (exits with clap's message and code on bad arguments).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}
