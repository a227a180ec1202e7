use crate::backend::device_for;
use crate::data::Split;
use crate::data::lm_batches::TokenStream;
use crate::data::prepare::{load_meta, load_split};
use crate::error::{Error, Result, write_atomic};
use crate::experiment::Experiment;
use crate::recipe::BackendKind;
use crate::tasks::lm::{mean_nll, model_config};
use crate::train::checkpoint::{self, Checkpoint};
use std::path::{Path, PathBuf};

/// Evaluate a trained model on a whole split: loss (mean negative log-likelihood per token) and
/// perplexity, printed and written as JSON to `EXP_DIR/eval_<split>_step_<N>.json`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment folder (the recipe's output_dir).
    exp_dir: PathBuf,
    /// A checkpoint folder (`EXP_DIR/checkpoints/step_*`); default: the one with the best
    /// validation loss.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Which split to score: train, valid or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Sequences per forward pass (default: the recipe's train.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Run on another backend than the recipe's (flex, ndarray, wgpu, tch, cuda).
    #[arg(long)]
    backend: Option<BackendKind>,
}

/// The checkpoint a command should use: the one named, else the best, else the latest.
pub fn choose_checkpoint(exp: &Experiment, named: Option<&Path>) -> Result<Checkpoint> {
    if let Some(path) = named {
        return checkpoint::resolve_user_checkpoint(path);
    }
    let root = exp.checkpoints_dir();
    match checkpoint::best(&root)? {
        Some(best) => Ok(best),
        None => checkpoint::latest(&root)?.ok_or_else(|| {
            Error::Usage(format!(
                "{} has no checkpoint yet; train first (`nlpkit train RECIPE`)",
                exp.dir.display()
            ))
        }),
    }
}

pub fn run(args: Args) -> Result<()> {
    let split = Split::parse(&args.split).ok_or_else(|| {
        Error::Usage(format!(
            "--split {}: expected train, valid or test",
            args.split
        ))
    })?;
    let (exp, mut recipe) = Experiment::open(&args.exp_dir)?;
    if let Some(kind) = args.backend {
        recipe.backend.kind = kind;
        recipe.backend.device = "default".into();
    }
    let device = device_for(&recipe.backend)?;
    let dir = recipe.prepared_dir();
    let meta = load_meta(&dir)?;
    let config = model_config(&recipe, meta.vocab_size)?;
    let chosen = choose_checkpoint(&exp, args.checkpoint.as_deref())?;
    let model = checkpoint::load_model(config.init(&device), &chosen.model_path())?;

    let stream = TokenStream::new(split.name(), load_split(&dir, &meta, split)?);
    stream.check_fits(config.block_size)?;
    let starts = stream.sequential_starts(config.block_size);
    let batch = args.batch_size.unwrap_or(recipe.train.batch_size).max(1);
    let started = std::time::Instant::now();
    let (loss, tokens) = mean_nll(&model, &stream, &starts, batch, &device);
    let report = serde_json::json!({
        "split": split.name(),
        "checkpoint": chosen.dir,
        "step": chosen.state.step,
        "loss": loss,
        "perplexity": loss.exp(),
        "bits_per_token": loss / std::f64::consts::LN_2,
        "tokens": tokens,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    let path = exp.report_path(&format!(
        "eval_{}_step_{:08}.json",
        split.name(),
        chosen.state.step
    ));
    write_atomic(&path, text.as_bytes())?;
    println!("{text}");
    eprintln!("written to {}", path.display());
    Ok(())
}
