//! The command line: one file per verb; parsing and exit codes only.

mod average;
mod completions;
mod decode_args;
mod eval;
mod eval_labelled;
mod generate;
mod prepare_data;
mod recipe;
mod train;
mod translate;

use crate::error::Result;
use crate::recipe::{Recipe, load_recipe};
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

#[derive(Parser, Debug)]
#[command(
    name = "nlpkit",
    version,
    about = "Train NLP models from YAML recipes (Burn, one static binary)",
    long_about = "Train NLP models from YAML recipes.\n\nA recipe says which backend, data, tokenizer, \
                  model, loss, optimiser, schedule and training budget to use. Typical use:\n  \
                  nlpkit prepare-data conf/train.yaml\n  nlpkit train conf/train.yaml\n  \
                  nlpkit eval exp/my_run\n  nlpkit generate exp/my_run --prompt 'ROMEO:'\n  \
                  nlpkit translate exp/my_mt < sentences.txt\n  nlpkit average exp/my_mt --best 5 -o exp/my_mt/avg"
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
        Command::Recipe(args) => recipe::run(args),
        Command::Completions(args) => completions::run(args),
    }
}

/// The command's definition, for completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
