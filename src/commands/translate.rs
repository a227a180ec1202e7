//! `nlpkit translate`: one sentence a line in, one translation a line out.

use super::{ModelChoice, Opened, trained_model};
use crate::error::{Error, IoContext, Result, write_atomic};
use crate::eval::translate::DecodeOptions;
use crate::tasks::{self, Pipeline, PipelineJob, TranslateRequest};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

pub struct TranslateOptions {
    /// A file of sentences (default: stdin).
    pub input: Option<PathBuf>,
    /// The file to write (default: stdout).
    pub output: Option<PathBuf>,
    pub decode: DecodeOptions,
}

pub fn translate(choice: &ModelChoice, options: TranslateOptions) -> Result<()> {
    let opened = choice.open()?;
    let lines: Vec<String> = match &options.input {
        Some(path) => std::fs::read_to_string(path)
            .with_path("read", path)?
            .lines()
            .map(String::from)
            .collect(),
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("cannot read stdin", e))?,
    };
    let job = TranslateJob {
        opened: &opened,
        lines: &lines,
        decode: &options.decode,
    };
    let (translations, seconds) = tasks::with_pipeline(&opened.recipe, job)?;
    let text: String = translations.iter().map(|t| format!("{t}\n")).collect();
    match &options.output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
    eprintln!(
        "translated {} sentence(s) in {:.2}s (beam {}, checkpoint {})",
        lines.len(),
        seconds,
        options.decode.beam,
        opened.checkpoint.dir.display()
    );
    Ok(())
}

struct TranslateJob<'a> {
    opened: &'a Opened,
    lines: &'a [String],
    decode: &'a DecodeOptions,
}

impl PipelineJob for TranslateJob<'_> {
    /// The translations, and the seconds translating took.
    type Output = (Vec<String>, f64);

    fn run<P: Pipeline>(self, pipeline: P) -> Result<(Vec<String>, f64)> {
        let opened = self.opened;
        let model = trained_model(&pipeline, &opened.checkpoint, &opened.device)?;
        let request = TranslateRequest {
            exp: &opened.exp,
            lines: self.lines,
            decode: self.decode.clone(),
            device: &opened.device,
        };
        let started = Instant::now();
        let translations = pipeline.translate(&model, &request)?;
        Ok((translations, started.elapsed().as_secs_f64()))
    }
}
