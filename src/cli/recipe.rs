use crate::error::Result;

/// Work with recipes.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Validate a recipe and print it fully resolved (defaults filled, overrides applied, paths
    /// made absolute). Exits with 2 and says what is wrong, where, if it is not valid.
    Check {
        #[command(flatten)]
        recipe: super::RecipeArgs,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::Check { recipe } => {
            let resolved = recipe.load()?;
            crate::backend::device_for(&resolved.backend)?;
            print!("{}", resolved.to_yaml());
            Ok(())
        }
    }
}
