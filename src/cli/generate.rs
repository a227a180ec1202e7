use crate::backend::device_for;
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Error, Result};
use crate::eval::generate::generate;
use crate::eval::sampling::Sampler;
use crate::experiment::Experiment;
use crate::recipe::BackendKind;
use crate::tasks::lm::model_config;
use crate::train::checkpoint;
use std::io::Write;
use std::path::PathBuf;

/// Sample text from a trained model. Reproducible for a fixed --seed; uses a KV cache so each new
/// token costs one position.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment folder (the recipe's output_dir).
    exp_dir: PathBuf,
    /// The text to continue.
    #[arg(long, default_value = "\n")]
    prompt: String,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token every time.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample only among the K most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities sum to P (nucleus).
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// A checkpoint folder; default: the one with the best validation loss.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Recompute the whole context for every token instead of using the KV cache (slower; for
    /// comparisons).
    #[arg(long)]
    no_kv_cache: bool,
    /// Run on another backend than the recipe's (flex, ndarray, wgpu, tch, cuda).
    #[arg(long)]
    backend: Option<BackendKind>,
}

pub fn run(args: Args) -> Result<()> {
    if args.temperature < 0.0 || !args.temperature.is_finite() {
        return Err(Error::Usage("--temperature must be 0 or positive".into()));
    }
    if let Some(p) = args.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(Error::Usage("--top-p must be in (0, 1]".into()));
    }
    if args.top_k == Some(0) {
        return Err(Error::Usage("--top-k must be at least 1".into()));
    }
    if args.prompt.is_empty() {
        return Err(Error::Usage("--prompt must not be empty".into()));
    }
    let (exp, mut recipe) = Experiment::open(&args.exp_dir)?;
    if let Some(kind) = args.backend {
        recipe.backend.kind = kind;
        recipe.backend.device = "default".into();
    }
    let device = device_for(&recipe.backend)?;
    let tokenizer = TextTokenizer::load(&exp.tokenizer_path())?;
    let config = model_config(&recipe, tokenizer.vocab_size())?;
    let chosen = super::eval::choose_checkpoint(&exp, args.checkpoint.as_deref())?;
    let model = checkpoint::load_model(config.init(&device), &chosen.model_path())?;

    let prompt = tokenizer.encode_prompt(&args.prompt)?;
    if prompt.is_empty() {
        return Err(Error::Usage("the prompt encodes to no tokens".into()));
    }
    let sampler = Sampler {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
    };
    let started = std::time::Instant::now();
    let new_tokens = generate(
        &model,
        &prompt,
        args.max_new_tokens,
        &sampler,
        args.seed,
        !args.no_kv_cache,
        &device,
    );
    let seconds = started.elapsed().as_secs_f64();
    let text = tokenizer.decode(&new_tokens)?;
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}{}", args.prompt, text);
    let _ = writeln!(out);
    eprintln!(
        "{} tokens in {seconds:.2}s ({:.1} tokens/s, {}, checkpoint step {})",
        new_tokens.len(),
        new_tokens.len() as f64 / seconds,
        if args.no_kv_cache {
            "full recompute"
        } else {
            "KV cache"
        },
        chosen.state.step
    );
    Ok(())
}
