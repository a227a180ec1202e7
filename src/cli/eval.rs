use super::decode_args::DecodeArgs;
use crate::commands::eval::{EvalOptions, eval};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::bleu::BleuTokenizer;
use crate::eval::embeddings::{EmbeddingQueries, read_query_words};
use std::path::PathBuf;

/// Evaluate a trained model on a whole split and write the report to
/// `EXP_DIR/eval_<split>_<checkpoint>[_beam<N>].json` (predictions beside it): the loss and
/// perplexity of a language model; BLEU and chrF (as sacrebleu computes them) of a translation
/// model's translations; accuracy, macro-F1 and the confusion matrix of a classifier;
/// entity-level precision, recall and F1 of a tagger; masked-LM loss and accuracy of BERT
/// pretraining; nearest neighbours, analogy accuracy and similarity of word embeddings (whose
/// scores come from the files given, not from a split).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Which split to score: train, valid or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Examples per forward pass (default: the recipe's train.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Translation: BLEU's tokenizer (default: `zh` for a Chinese target, else `13a`).
    #[arg(long, value_enum)]
    tokenize: Option<BleuTokenizer>,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Word embeddings: list the nearest neighbours (by cosine) of this word; repeatable.
    #[arg(long = "query", value_name = "WORD")]
    queries: Vec<String>,
    /// Word embeddings: the nearest neighbours of each word of this file (one a line).
    #[arg(long = "queries", value_name = "FILE")]
    queries_file: Option<PathBuf>,
    /// Word embeddings: neighbours listed per query word.
    #[arg(long, default_value_t = 10)]
    neighbours: usize,
    /// Word embeddings: analogy questions in the Google analogy set's format (`: section`
    /// lines, then `a b c d` lines), answered by 3CosAdd; accuracy per section and overall.
    #[arg(long, value_name = "FILE")]
    analogies: Option<PathBuf>,
    /// Word embeddings: `word1 word2 score` lines (WordSim-353, SimLex-999), scored by
    /// Spearman's rho against the cosines.
    #[arg(long, value_name = "FILE")]
    similarity: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let split = Split::parse(&args.split).ok_or_else(|| {
        Error::Usage(format!(
            "--split {}: expected train, valid or test",
            args.split
        ))
    })?;
    let mut words = args.queries;
    if let Some(file) = &args.queries_file {
        words.extend(read_query_words(file)?);
    }
    let embeddings = EmbeddingQueries {
        words,
        neighbours: args.neighbours,
        analogies: args.analogies,
        similarity: args.similarity,
    };
    let options = EvalOptions {
        split,
        batch_size: args.batch_size,
        decode: args.decode.options()?,
        bleu_tokenizer: args.tokenize,
        embeddings,
    };
    eval(&args.model.choice(), options)
}
