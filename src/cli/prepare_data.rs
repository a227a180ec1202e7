use crate::error::Result;

/// Read the recipe's raw data, split it into train/valid/test, train (or load) the tokenizer and
/// encode every split. Skips the work when the inputs are unchanged.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    recipe: super::RecipeArgs,
    /// Redo everything even if the inputs did not change.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    crate::commands::prepare::prepare_data(&args.recipe.load()?, args.force)
}
