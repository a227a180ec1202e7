use super::decode_args::DecodeArgs;
use crate::commands::eval::{EvalOptions, eval};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::bleu::BleuTokenizer;

/// Evaluate a trained model on a whole split and write the report to
/// `EXP_DIR/eval_<split>_<checkpoint>[_beam<N>].json` (predictions beside it): the loss and
/// perplexity of a language model; BLEU and chrF (as sacrebleu computes them) of a translation
/// model's translations; accuracy, macro-F1 and the confusion matrix of a classifier;
/// entity-level precision, recall and F1 of a tagger; masked-LM loss and accuracy of BERT
/// pretraining.
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
}

pub fn run(args: Args) -> Result<()> {
    let split = Split::parse(&args.split).ok_or_else(|| {
        Error::Usage(format!(
            "--split {}: expected train, valid or test",
            args.split
        ))
    })?;
    let options = EvalOptions {
        split,
        batch_size: args.batch_size,
        decode: args.decode.options()?,
        bleu_tokenizer: args.tokenize,
    };
    eval(&args.model.choice(), options)
}
