use crate::error::Result;
use crate::recipe::load_recipe;
use std::path::PathBuf;

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
        /// The recipe YAML file.
        recipe: PathBuf,
        /// Override a recipe key, e.g. `--set train.batch_size=32` (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        overrides: Vec<String>,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::Check { recipe, overrides } => {
            let resolved = load_recipe(&recipe, &overrides)?;
            crate::backend::device_for(&resolved.backend)?;
            print!("{}", resolved.to_yaml());
            Ok(())
        }
    }
}
