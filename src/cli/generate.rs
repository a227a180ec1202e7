use crate::commands::generate::{GenerateOptions, generate};
use crate::error::Result;
use crate::eval::sampling::Sampler;

/// Sample text from a trained language model. Reproducible for a fixed --seed; uses a KV cache
/// so each new token costs one position.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
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
    /// Recompute the whole context for every token instead of using the KV cache (slower; for
    /// comparisons).
    #[arg(long)]
    no_kv_cache: bool,
}

pub fn run(args: Args) -> Result<()> {
    let options = GenerateOptions {
        prompt: args.prompt,
        max_new_tokens: args.max_new_tokens,
        sampler: Sampler {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
        },
        seed: args.seed,
        kv_cache: !args.no_kv_cache,
    };
    generate(&args.model.choice(), options)
}
