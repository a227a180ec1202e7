use crate::commands::explain::explain;
use crate::error::Result;
use crate::eval::explain::{ExplainOptions, Method};
use std::path::PathBuf;

/// Which input tokens drove a classifier's label or a tagger's tags: per-token importance by
/// gradient x input, integrated gradients (from the zero embedding) and leave-one-out
/// (classifiers; a recurrent classifier's pooled-state change too), of the log-probability of
/// the predicted label (or --target) or tag sequence. One text a line from a file or stdin;
/// TSV to stdout, or OUT.tsv and an HTML heat map OUT.html with -o OUT.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Read texts from this file instead of stdin (one a line; blank lines are skipped).
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Attribution methods (repeatable, or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    method: Vec<Method>,
    /// Integrated gradients' steps (trapezoid intervals from the baseline to the text).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// A classifier's label to explain (default: the predicted one).
    #[arg(long)]
    target: Option<String>,
    /// Write OUT.tsv and OUT.html instead of the TSV to stdout.
    #[arg(long, short, value_name = "OUT_PREFIX")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let options = ExplainOptions {
        methods: args.method,
        steps: args.steps,
        target: args.target,
    };
    explain(
        &args.model.choice(),
        args.input.as_deref(),
        args.output.as_deref(),
        options,
    )
}
