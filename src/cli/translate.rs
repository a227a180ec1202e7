use super::decode_args::DecodeArgs;
use crate::commands::translate::{TranslateOptions, translate};
use crate::error::Result;
use std::path::PathBuf;

/// Translate sentences with a trained translation model: one sentence a line from a file or
/// stdin, one translation a line to stdout or a file (an empty line stays empty).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Read sentences from this file instead of stdin.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Write translations to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    decode: DecodeArgs,
}

pub fn run(args: Args) -> Result<()> {
    let options = TranslateOptions {
        input: args.input,
        output: args.output,
        decode: args.decode.options()?,
    };
    translate(&args.model.choice(), options)
}
