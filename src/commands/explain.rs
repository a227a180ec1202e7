//! `nlpkit explain`: per-token attributions of a classifier's or tagger's outputs, as TSV and as
//! an HTML heat map.

use super::{ModelChoice, Opened, trained_model};
use crate::error::{Error, IoContext, Result, write_atomic};
use crate::eval::explain::{ExplainOptions, Explained, html, tsv};
use crate::tasks::{self, ExplainRequest, Pipeline, PipelineJob};
use burn::module::Module;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// The texts: one a line from `input` (default: stdin), with their 1-based line numbers; blank
/// lines are left out with a warning (the numbers keep pointing at the input).
pub fn read_texts(input: Option<&Path>) -> Result<Vec<(usize, String)>> {
    let lines: Vec<String> = match input {
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
    let mut texts = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            log::warn!("line {}: empty, skipped", i + 1);
        } else {
            texts.push((i + 1, line.trim_end_matches('\r').to_string()));
        }
    }
    if texts.is_empty() {
        return Err(Error::Usage(
            "no text to explain: give one text a line (--input FILE, or on stdin)".into(),
        ));
    }
    Ok(texts)
}

/// Explain the texts of `input` and write `OUT.tsv` and `OUT.html` (`out_prefix`), or the TSV
/// to stdout.
pub fn explain(
    choice: &ModelChoice,
    input: Option<&Path>,
    out_prefix: Option<&Path>,
    options: ExplainOptions,
) -> Result<()> {
    if options.steps == 0 {
        return Err(Error::Usage("--steps must be at least 1".into()));
    }
    let opened = choice.open()?;
    let texts = read_texts(input)?;
    let job = ExplainJob {
        opened: &opened,
        texts: &texts,
        options: &options,
    };
    let explained = tasks::with_pipeline(&opened.recipe, job)?;
    for e in &explained {
        let gap = e
            .completeness_gap
            .map(|g| format!(", integrated gradients' completeness gap {g:.2e}"))
            .unwrap_or_default();
        eprintln!(
            "line {}: {} (p = {:.4}){gap}",
            e.line, e.label, e.probability
        );
    }
    let table = tsv(&explained);
    match out_prefix {
        Some(prefix) => {
            let tsv_path = with_suffix(prefix, "tsv");
            let html_path = with_suffix(prefix, "html");
            write_atomic(&tsv_path, table.as_bytes())?;
            let title = format!("nlpkit explain {}", opened.exp.dir.display());
            write_atomic(&html_path, html(&explained, &title).as_bytes())?;
            println!("{}\n{}", tsv_path.display(), html_path.display());
        }
        None => {
            let _ = std::io::stdout().lock().write_all(table.as_bytes());
        }
    }
    Ok(())
}

/// `prefix` + `.ext` (a prefix `out/run` gives `out/run.tsv`, keeping any dots it has).
fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!(".{ext}"));
    PathBuf::from(name)
}

struct ExplainJob<'a> {
    opened: &'a Opened,
    texts: &'a [(usize, String)],
    options: &'a ExplainOptions,
}

impl PipelineJob for ExplainJob<'_> {
    type Output = Vec<Explained>;

    fn run<P: Pipeline>(self, pipeline: P) -> Result<Vec<Explained>> {
        let Opened {
            exp,
            recipe,
            device,
            checkpoint,
        } = self.opened;
        // Gradients w.r.t. the inputs need an autodiff device; frozen, the model computes no
        // parameter gradients and its dropout and BatchNorm behave as in evaluation.
        let device = device.clone().autodiff();
        let model = trained_model(&pipeline, checkpoint, &device)?.freeze();
        let request = ExplainRequest {
            exp,
            recipe,
            texts: self.texts,
            options: self.options,
            device: &device,
        };
        pipeline.explain(&model, &request)
    }
}
