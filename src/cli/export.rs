use crate::error::Result;
use std::path::PathBuf;

/// Write a trained bert or gpt2 model as an HF model folder (config.json, model.safetensors,
/// tokenizer files) that transformers' `from_pretrained` reads; a CRF's transitions go in
/// crf.safetensors beside them. Word embeddings (word2vec, glove): the vectors as one file in
/// word2vec's text format, which gensim's `KeyedVectors.load_word2vec_format` reads.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment folder (the recipe's output_dir).
    exp_dir: PathBuf,
    /// A checkpoint folder of the experiment (default: the best by validation loss).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The folder to write (word embeddings: the vectors file).
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    crate::commands::export::export(&args.exp_dir, args.checkpoint.as_deref(), &args.output)
}
