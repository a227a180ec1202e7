use crate::data::Split;
use crate::data::labelled::{PreparedLabelled, handles as prepare_labelled_data, prepare_labelled};
use crate::data::parallel::{PreparedPairs, prepare_pairs};
use crate::data::prepare::{Prepared, prepare};
use crate::error::Result;
use crate::recipe::DataFormat;

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
    if prepare_labelled_data(&recipe) {
        let prepared = prepare_labelled(&recipe, args.force)?;
        report_labelled(&prepared, started.elapsed().as_secs_f64());
        return Ok(());
    }
    match recipe.data.format {
        DataFormat::Csv | DataFormat::Tagging => unreachable!("labelled data"),
        DataFormat::Text => {
            let prepared = prepare(&recipe, args.force)?;
            report(&prepared, started.elapsed().as_secs_f64());
        }
        DataFormat::Parallel => {
            let prepared = prepare_pairs(&recipe, args.force)?;
            report_pairs(&prepared, started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

pub fn report_labelled(prepared: &PreparedLabelled, seconds: f64) {
    let meta = &prepared.meta;
    report_header(&prepared.dir, prepared.up_to_date, seconds);
    let [train, valid, test] = meta.counts;
    println!(
        "vocabulary: {} tokens; {} examples: train {train}, valid {valid}, test {test}",
        meta.vocab_size,
        meta.format.name()
    );
    if !meta.labels.is_empty() {
        println!("labels ({}): {}", meta.labels.len(), meta.labels.join(" "));
    }
}

pub fn report_pairs(prepared: &PreparedPairs, seconds: f64) {
    let meta = &prepared.meta;
    report_header(&prepared.dir, prepared.up_to_date, seconds);
    println!(
        "vocabulary: source {} tokens, target {} tokens{}",
        meta.source_vocab_size,
        meta.target_vocab_size,
        if meta.joint_vocabulary {
            " (joint)"
        } else {
            ""
        }
    );
    if meta.skipped_lines > 0 {
        println!("skipped {} malformed line(s):", meta.skipped_lines);
        for line in &prepared.skipped_examples {
            println!("  {line}");
        }
    }
    println!(
        "{:<6} {:>8} {:>9} {:>7} {:>8} {:>11} {:>11}",
        "split", "read", "too long", "ratio", "pairs", "src tokens", "tgt tokens"
    );
    for split in Split::ALL {
        let c = meta.counts(split);
        println!(
            "{:<6} {:>8} {:>9} {:>7} {:>8} {:>11} {:>11}",
            split.name(),
            c.read,
            c.too_long,
            c.ratio,
            c.pairs,
            c.source_tokens,
            c.target_tokens
        );
    }
}

pub fn report(prepared: &Prepared, seconds: f64) {
    let meta = &prepared.meta;
    report_header(&prepared.dir, prepared.up_to_date, seconds);
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

fn report_header(dir: &std::path::Path, up_to_date: bool, seconds: f64) {
    if up_to_date {
        println!(
            "data in {} is up to date (inputs unchanged; --force redoes it)",
            dir.display()
        );
    } else {
        println!("prepared {} in {seconds:.1}s", dir.display());
    }
}
