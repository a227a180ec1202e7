use super::decode_args::DecodeArgs;
use crate::backend::device_for;
use crate::data::parallel::SpecialIds;
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Error, IoContext, Result};
use crate::eval::translate::{DecodeOptions, translate_all};
use crate::experiment::Experiment;
use crate::models::seq2seq::Seq2Seq;
use crate::recipe::{BackendKind, DataFormat};
use crate::tasks::translation::{WithTranslationModel, with_trained_model};
use burn::prelude::Device;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// Translate sentences with a trained translation model: one sentence a line from a file or
/// stdin, one translation a line to stdout or a file (an empty line stays empty).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment folder (the recipe's output_dir).
    exp_dir: PathBuf,
    /// Read sentences from this file instead of stdin.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Write translations to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// A checkpoint folder (`EXP_DIR/checkpoints/step_*`, or one written by `nlpkit average`);
    /// default: the one with the best validation loss.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Run on another backend than the recipe's (flex, ndarray, wgpu, tch, cuda).
    #[arg(long)]
    backend: Option<BackendKind>,
}

/// The experiment's two tokenizers and their special ids.
pub struct Tokenizers {
    pub source: TextTokenizer,
    pub target: TextTokenizer,
    pub ids: (SpecialIds, SpecialIds),
}

impl Tokenizers {
    pub fn load(exp: &Experiment) -> Result<Self> {
        let source = TextTokenizer::load(&exp.source_tokenizer_path())?;
        let target = TextTokenizer::load(&exp.target_tokenizer_path())?;
        let ids = (SpecialIds::of(&source)?, SpecialIds::of(&target)?);
        Ok(Self {
            source,
            target,
            ids,
        })
    }
}

/// Open a translation experiment, with `--backend` applied.
pub fn open_translation(
    exp_dir: &std::path::Path,
    backend: Option<BackendKind>,
) -> Result<(Experiment, crate::recipe::Recipe, Device)> {
    let (exp, mut recipe) = Experiment::open(exp_dir)?;
    if recipe.data.format != DataFormat::Parallel {
        return Err(Error::Usage(format!(
            "{} holds a `{}` model, not a translation model; use `nlpkit generate` for language \
             models",
            exp_dir.display(),
            recipe.model.name()
        )));
    }
    if let Some(kind) = backend {
        recipe.backend.kind = kind;
        recipe.backend.device = "default".into();
    }
    let device = device_for(&recipe.backend)?;
    Ok((exp, recipe, device))
}

struct Translate {
    sources: Vec<Vec<u32>>,
    ids: (SpecialIds, SpecialIds),
    options: DecodeOptions,
    device: Device,
}

impl WithTranslationModel for Translate {
    type Output = Vec<Vec<u32>>;
    fn run<M: Seq2Seq>(self, model: M) -> Result<Vec<Vec<u32>>> {
        let (s, t) = self.ids;
        Ok(translate_all(
            &model,
            &self.sources,
            s,
            t,
            &self.options,
            &self.device,
        ))
    }
}

pub fn run(args: Args) -> Result<()> {
    let options = args.decode.options()?;
    let (exp, recipe, device) = open_translation(&args.exp_dir, args.backend)?;
    let tokenizers = Tokenizers::load(&exp)?;
    let chosen = super::eval::choose_checkpoint(&exp, args.checkpoint.as_deref())?;

    let lines: Vec<String> = match &args.input {
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
    let refs: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    let sources = tokenizers.source.encode_lines(&refs)?;
    let started = std::time::Instant::now();
    let job = Translate {
        sources: sources.clone(),
        ids: tokenizers.ids,
        options,
        device: device.clone(),
    };
    let outputs = with_trained_model(&recipe, &chosen.model_path(), &device, job)?;
    let mut text = String::new();
    for (ids, line) in outputs.iter().zip(&refs) {
        if !line.is_empty() {
            text.push_str(&tokenizers.target.decode_text(ids)?);
        }
        text.push('\n');
    }
    match &args.output {
        Some(path) => crate::error::write_atomic(path, text.as_bytes())?,
        None => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
    eprintln!(
        "translated {} sentence(s) in {:.2}s (beam {}, checkpoint {})",
        lines.len(),
        started.elapsed().as_secs_f64(),
        args.decode.beam,
        chosen.dir.display()
    );
    Ok(())
}
