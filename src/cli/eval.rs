use super::decode_args::DecodeArgs;
use super::translate::{Tokenizers, open_translation};
use crate::backend::device_for;
use crate::data::Split;
use crate::data::lm_batches::TokenStream;
use crate::data::pair_batches::bucket_batches;
use crate::data::parallel::{PairSet, SpecialIds, load_pair_meta, load_pair_split, load_pair_text};
use crate::data::prepare::{load_meta, load_split};
use crate::distributed::Shard;
use crate::error::{Error, Result, write_atomic};
use crate::eval::bleu::{BleuTokenizer, corpus_bleu, corpus_chrf};
use crate::eval::translate::{DecodeOptions, translate_all};
use crate::experiment::Experiment;
use crate::models::seq2seq::Seq2Seq;
use crate::recipe::{BackendKind, DataFormat};
use crate::tasks::lm::{mean_nll, model_config};
use crate::tasks::translation::{WithTranslationModel, nll_sum, with_trained_model};
use crate::train::checkpoint::{self, Checkpoint};
use burn::prelude::Device;
use std::path::{Path, PathBuf};

/// Evaluate a trained model on a whole split: loss (mean negative log-likelihood per token) and
/// perplexity, printed and written as JSON to `EXP_DIR/eval_<split>_step_<N>.json`. For a
/// translation model also BLEU and chrF (as sacrebleu computes them) of its translations
/// (greedy or beam search), written beside the report as `translations_<split>_*.txt`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment folder (the recipe's output_dir).
    exp_dir: PathBuf,
    /// A checkpoint folder (`EXP_DIR/checkpoints/step_*`); default: the one with the best
    /// validation loss.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Which split to score: train, valid or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Sequences per forward pass (default: the recipe's train.batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Run on another backend than the recipe's (flex, ndarray, wgpu, tch, cuda).
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Translation: BLEU's tokenizer (default: `zh` for a Chinese target, else `13a`).
    #[arg(long, value_enum)]
    tokenize: Option<BleuTokenizer>,
    #[command(flatten)]
    decode: DecodeArgs,
}

/// The checkpoint a command should use: the one named, else the best, else the latest.
pub fn choose_checkpoint(exp: &Experiment, named: Option<&Path>) -> Result<Checkpoint> {
    if let Some(path) = named {
        return checkpoint::resolve_user_checkpoint(path);
    }
    let root = exp.checkpoints_dir();
    match checkpoint::best(&root)? {
        Some(best) => Ok(best),
        None => checkpoint::latest(&root)?.ok_or_else(|| {
            Error::Usage(format!(
                "{} has no checkpoint yet; train first (`nlpkit train RECIPE`)",
                exp.dir.display()
            ))
        }),
    }
}

pub fn run(args: Args) -> Result<()> {
    let split = Split::parse(&args.split).ok_or_else(|| {
        Error::Usage(format!(
            "--split {}: expected train, valid or test",
            args.split
        ))
    })?;
    let (exp, mut recipe) = Experiment::open(&args.exp_dir)?;
    if recipe.data.format == DataFormat::Parallel {
        return eval_translation(&args, split);
    }
    if let Some(kind) = args.backend {
        recipe.backend.kind = kind;
        recipe.backend.device = "default".into();
    }
    let device = device_for(&recipe.backend)?;
    if crate::data::labelled::handles(&recipe) {
        let chosen = choose_checkpoint(&exp, args.checkpoint.as_deref())?;
        return super::eval_labelled::run(super::eval_labelled::EvalRequest {
            exp: &exp,
            recipe: &recipe,
            checkpoint: &chosen,
            split,
            batch_size: args.batch_size.unwrap_or(recipe.train.batch_size).max(1),
            device: &device,
        });
    }
    let dir = recipe.prepared_dir();
    let meta = load_meta(&dir)?;
    let config = model_config(&recipe, meta.vocab_size)?;
    let chosen = choose_checkpoint(&exp, args.checkpoint.as_deref())?;
    let model = checkpoint::load_model(config.init(&device), &chosen.model_path())?;

    let stream = TokenStream::new(split.name(), load_split(&dir, &meta, split)?);
    stream.check_fits(config.block_size)?;
    let starts = stream.sequential_starts(config.block_size);
    let batch = args.batch_size.unwrap_or(recipe.train.batch_size).max(1);
    let started = std::time::Instant::now();
    let (loss, tokens) = mean_nll(&model, &stream, &starts, batch, &device);
    let report = serde_json::json!({
        "split": split.name(),
        "checkpoint": chosen.dir,
        "step": chosen.state.step,
        "loss": loss,
        "perplexity": loss.exp(),
        "bits_per_token": loss / std::f64::consts::LN_2,
        "tokens": tokens,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    let path = exp.report_path(&format!(
        "eval_{}_step_{:08}.json",
        split.name(),
        chosen.state.step
    ));
    write_atomic(&path, text.as_bytes())?;
    println!("{text}");
    eprintln!("written to {}", path.display());
    Ok(())
}

/// Score a split with a translation model: the loss, and the translations.
struct ScoreSplit {
    set: PairSet,
    batches: Vec<Vec<usize>>,
    ids: (SpecialIds, SpecialIds),
    options: DecodeOptions,
    device: Device,
}

impl WithTranslationModel for ScoreSplit {
    type Output = (f64, usize, Vec<Vec<u32>>, f64);
    fn run<M: Seq2Seq>(self, model: M) -> Result<Self::Output> {
        let sum = nll_sum(
            &model,
            &self.set,
            &self.batches,
            self.ids,
            &self.device,
            Shard::WHOLE,
        );
        let started = std::time::Instant::now();
        let (s, t) = self.ids;
        let outputs = translate_all(&model, &self.set.sources, s, t, &self.options, &self.device);
        Ok((
            sum.mean(),
            sum.count as usize,
            outputs,
            started.elapsed().as_secs_f64(),
        ))
    }
}

fn eval_translation(args: &Args, split: Split) -> Result<()> {
    let options = args.decode.options()?;
    let (exp, recipe, device) = open_translation(&args.exp_dir, args.backend)?;
    let tokenizers = Tokenizers::load(&exp)?;
    let dir = recipe.prepared_dir();
    let meta = load_pair_meta(&dir)?;
    let set = load_pair_split(&dir, &meta, split)?;
    let texts = load_pair_text(&dir, split)?;
    let chosen = choose_checkpoint(&exp, args.checkpoint.as_deref())?;
    let sentences = args.batch_size.unwrap_or(recipe.train.batch_size).max(1);
    let batches = bucket_batches(&set, recipe.train.max_tokens, sentences, recipe.seed);
    let job = ScoreSplit {
        set,
        batches,
        ids: tokenizers.ids,
        options,
        device: device.clone(),
    };
    let (loss, tokens, outputs, decode_s) =
        with_trained_model(&recipe, &chosen.model_path(), &device, job)?;
    let hypotheses: Vec<String> = outputs
        .iter()
        .map(|ids| tokenizers.target.decode_text(ids))
        .collect::<Result<_>>()?;
    let references: Vec<String> = texts.iter().map(|(_, t)| t.clone()).collect();
    let target_lang = recipe
        .data
        .parallel
        .as_ref()
        .map_or("", |p| p.target_lang.as_str());
    let tokenizer = args
        .tokenize
        .unwrap_or_else(|| BleuTokenizer::for_language(target_lang));
    let bleu = corpus_bleu(&hypotheses, &references, tokenizer);
    let chrf = corpus_chrf(&hypotheses, &references);
    let tag = format!(
        "{}_{}_beam{}",
        split.name(),
        checkpoint_tag(&chosen),
        args.decode.beam
    );
    let translations = exp.report_path(&format!("translations_{tag}.txt"));
    write_atomic(&translations, (hypotheses.join("\n") + "\n").as_bytes())?;
    let report = serde_json::json!({
        "split": split.name(),
        "checkpoint": chosen.dir,
        "step": chosen.state.step,
        "loss": loss,
        "perplexity": loss.exp(),
        "target_tokens": tokens,
        "sentences": hypotheses.len(),
        "bleu": bleu.score,
        "bleu_precisions": bleu.precisions,
        "bleu_brevity_penalty": bleu.brevity_penalty,
        "bleu_sys_len": bleu.sys_len,
        "bleu_ref_len": bleu.ref_len,
        "bleu_signature": format!("nrefs:1|case:mixed|eff:no|tok:{}|smooth:exp|version:2.5.1", tokenizer.name()),
        "chrf": chrf,
        "beam": args.decode.beam,
        "lenpen": args.decode.lenpen,
        "length_penalty": format!("{:?}", args.decode.length_penalty).to_lowercase(),
        "decode_seconds": decode_s,
        "sentences_per_second": hypotheses.len() as f64 / decode_s,
        "translations": translations,
    });
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    let path = exp.report_path(&format!("eval_{tag}.json"));
    write_atomic(&path, text.as_bytes())?;
    println!("{text}");
    eprintln!("written to {}", path.display());
    Ok(())
}

/// `step_00001000`, or the averaged checkpoint's folder name.
fn checkpoint_tag(chosen: &Checkpoint) -> String {
    chosen
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .unwrap_or_else(|| format!("step_{:08}", chosen.state.step))
}
