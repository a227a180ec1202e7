//! `nlpkit generate`: sample text from a trained language model.

use super::{ModelChoice, Opened, trained_model};
use crate::error::{Error, Result};
use crate::eval::sampling::Sampler;
use crate::tasks::{self, GenerateRequest, Generated, Pipeline, PipelineJob};
use std::io::Write;
use std::time::Instant;

pub struct GenerateOptions {
    pub prompt: String,
    pub max_new_tokens: usize,
    pub sampler: Sampler,
    pub seed: u64,
    pub kv_cache: bool,
}

/// Print the prompt and its continuation on stdout, and the speed on stderr.
pub fn generate(choice: &ModelChoice, options: GenerateOptions) -> Result<()> {
    let sampler = &options.sampler;
    if sampler.temperature < 0.0 || !sampler.temperature.is_finite() {
        return Err(Error::Usage("--temperature must be 0 or positive".into()));
    }
    if let Some(p) = sampler.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(Error::Usage("--top-p must be in (0, 1]".into()));
    }
    if sampler.top_k == Some(0) {
        return Err(Error::Usage("--top-k must be at least 1".into()));
    }
    if options.prompt.is_empty() {
        return Err(Error::Usage("--prompt must not be empty".into()));
    }
    let opened = choice.open()?;
    let job = GenerateJob {
        opened: &opened,
        options: &options,
    };
    let (generated, seconds) = tasks::with_pipeline(&opened.recipe, job)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}{}", options.prompt, generated.text);
    eprintln!(
        "{} tokens in {seconds:.2}s ({:.1} tokens/s, {}, checkpoint step {})",
        generated.tokens,
        generated.tokens as f64 / seconds,
        if options.kv_cache {
            "KV cache"
        } else {
            "full recompute"
        },
        opened.checkpoint.state.step
    );
    Ok(())
}

struct GenerateJob<'a> {
    opened: &'a Opened,
    options: &'a GenerateOptions,
}

impl PipelineJob for GenerateJob<'_> {
    /// What was generated, and the seconds generating it took.
    type Output = (Generated, f64);

    fn run<P: Pipeline>(self, pipeline: P) -> Result<(Generated, f64)> {
        let (opened, options) = (self.opened, self.options);
        let model = trained_model(&pipeline, &opened.checkpoint, &opened.device)?;
        let request = GenerateRequest {
            exp: &opened.exp,
            prompt: &options.prompt,
            max_new_tokens: options.max_new_tokens,
            sampler: options.sampler.clone(),
            seed: options.seed,
            kv_cache: options.kv_cache,
            device: &opened.device,
        };
        let started = Instant::now();
        let generated = pipeline.generate(&model, &request)?;
        Ok((generated, started.elapsed().as_secs_f64()))
    }
}
