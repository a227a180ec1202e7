//! `nlpkit prepare-data`.

use crate::data::prepared::Preparation;
use crate::error::Result;
use crate::recipe::Recipe;
use crate::tasks::{self, PreparedData};
use std::time::Instant;

/// Prepare the recipe's data (unless it is up to date, or with `force`) and say what it holds.
pub fn prepare_data(recipe: &Recipe, force: bool) -> Result<()> {
    let started = Instant::now();
    let how = match force {
        true => Preparation::Force,
        false => Preparation::IfChanged,
    };
    let data = tasks::prepare(recipe, how)?;
    print_report(&data, started.elapsed().as_secs_f64());
    Ok(())
}

/// What was prepared (or found up to date) and what it holds.
pub fn print_report(data: &PreparedData, seconds: f64) {
    if data.up_to_date {
        println!(
            "data in {} is up to date (inputs unchanged; --force redoes it)",
            data.dir.display()
        );
    } else {
        println!("prepared {} in {seconds:.1}s", data.dir.display());
    }
    print!("{}", data.description);
}
