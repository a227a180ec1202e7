use crate::data::Split;
use crate::data::prepare::{Prepared, prepare};
use crate::error::Result;

/// Read the recipe's raw data, split it into train/valid/test, train (or load) the tokenizer and
/// encode every split into a compact token file. Skips the work when the inputs are unchanged.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    recipe: super::RecipeArgs,
    /// Redo everything even if the inputs did not change.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let recipe = args.recipe.load()?;
    let started = std::time::Instant::now();
    let prepared = prepare(&recipe, args.force)?;
    report(&prepared, started.elapsed().as_secs_f64());
    Ok(())
}

pub fn report(prepared: &Prepared, seconds: f64) {
    let meta = &prepared.meta;
    if prepared.up_to_date {
        println!(
            "data in {} is up to date (inputs unchanged; --force redoes it)",
            prepared.dir.display()
        );
    } else {
        println!("prepared {} in {seconds:.1}s", prepared.dir.display());
    }
    println!(
        "vocabulary: {} tokens, stored as {:?}",
        meta.vocab_size, meta.token_width
    );
    println!(
        "{:<6} {:>10} {:>12} {:>12}",
        "split", "lines", "characters", "tokens"
    );
    for split in Split::ALL {
        let c = meta.counts(split);
        println!(
            "{:<6} {:>10} {:>12} {:>12}",
            split.name(),
            c.lines,
            c.chars,
            c.tokens
        );
    }
}
