//! `nlpkit prepare-data`: raw text -> splits -> tokenizer -> token files, idempotently.
//!
//! The prepared folder holds `tokenizer.json`, `{train,valid,test}.bin` and `meta.json`;
//! `meta.json` is written last and records a fingerprint of the inputs (file contents and the
//! data section), so an unchanged recipe skips the work and a crash mid-way redoes it.

use super::Split;
use super::split::split_text;
use super::text::read_text;
use super::token_file::{TokenWidth, read_tokens, write_tokens};
use super::tokenizer::TextTokenizer;
use crate::error::{Error, IoContext, Result, write_atomic};
use crate::recipe::Recipe;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitCounts {
    pub lines: usize,
    pub chars: usize,
    pub tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PreparedMeta {
    pub fingerprint: String,
    pub vocab_size: usize,
    pub token_width: TokenWidth,
    pub train: SplitCounts,
    pub valid: SplitCounts,
    pub test: SplitCounts,
}

impl PreparedMeta {
    pub fn counts(&self, split: Split) -> &SplitCounts {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }
}

pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.json")
}

pub fn split_path(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("{}.bin", split.name()))
}

fn meta_path(dir: &Path) -> PathBuf {
    dir.join("meta.json")
}

pub struct Prepared {
    pub meta: PreparedMeta,
    pub dir: PathBuf,
    /// True when the inputs were unchanged and nothing was redone.
    pub up_to_date: bool,
}

/// Prepare the recipe's data unless it is already prepared from the same inputs.
pub fn prepare(recipe: &Recipe, force: bool) -> Result<Prepared> {
    let dir = recipe.prepared_dir();
    let fingerprint = fingerprint(recipe, &text_inputs(recipe))?;
    if !force
        && let Ok(meta) = load_meta(&dir)
        && meta.fingerprint == fingerprint
        && Split::ALL.iter().all(|&s| split_path(&dir, s).exists())
        && tokenizer_path(&dir).exists()
    {
        return Ok(Prepared {
            meta,
            dir,
            up_to_date: true,
        });
    }

    let data = &recipe.data;
    let train_raw = read_text(&data.train, "data.train")?;
    let texts: [String; 3] = match (&data.valid, &data.test) {
        (None, None) => split_text(&train_raw, &data.split, recipe.seed),
        (Some(valid), Some(test)) => [
            train_raw,
            read_text(valid, "data.valid")?,
            read_text(test, "data.test")?,
        ],
        _ => {
            return Err(Error::Recipe(
                "give both `data.valid` and `data.test`, or neither (then `data.train` is split by \
                 `data.split`)"
                    .into(),
            ));
        }
    };
    let all_text = texts.concat();
    let tokenizer = TextTokenizer::build(&data.tokenizer, &texts[0], &all_text)?;
    let vocab_size = tokenizer.vocab_size();
    let width = TokenWidth::for_vocab(vocab_size);

    std::fs::create_dir_all(&dir).with_path("create", &dir)?;
    // A stale meta.json must not vouch for half-written new files.
    let _ = std::fs::remove_file(meta_path(&dir));
    tokenizer.save(&tokenizer_path(&dir))?;
    let mut counts = Vec::new();
    for (split, text) in Split::ALL.into_iter().zip(&texts) {
        let tokens = tokenizer.encode(text)?;
        write_tokens(&split_path(&dir, split), &tokens, width)?;
        counts.push(SplitCounts {
            lines: text.lines().count(),
            chars: text.chars().count(),
            tokens: tokens.len(),
        });
    }
    let [train, valid, test]: [SplitCounts; 3] = counts.try_into().expect("three splits");
    let meta = PreparedMeta {
        fingerprint,
        vocab_size,
        token_width: width,
        train,
        valid,
        test,
    };
    let json = serde_json::to_string_pretty(&meta).expect("meta serialises");
    write_atomic(&meta_path(&dir), json.as_bytes())?;
    Ok(Prepared {
        meta,
        dir,
        up_to_date: false,
    })
}

pub fn load_meta(dir: &Path) -> Result<PreparedMeta> {
    let path = meta_path(dir);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Error::Data(format!(
            "no prepared data in {} (missing meta.json); run `nlpkit prepare-data RECIPE` first",
            dir.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Data(format!(
            "{} is damaged ({e}); rerun `nlpkit prepare-data --force`",
            path.display()
        ))
    })
}

pub fn load_split(dir: &Path, meta: &PreparedMeta, split: Split) -> Result<Vec<u32>> {
    read_tokens(&split_path(dir, split), meta.token_width)
}

/// The files plain-text preparation reads, with the recipe keys that name them.
fn text_inputs(recipe: &Recipe) -> Vec<(PathBuf, String)> {
    let data = &recipe.data;
    [
        Some((data.train.clone(), "data.train")),
        data.valid.clone().map(|p| (p, "data.valid")),
        data.test.clone().map(|p| (p, "data.test")),
        data.tokenizer
            .path
            .clone()
            .map(|p| (p, "data.tokenizer.path")),
    ]
    .into_iter()
    .flatten()
    .map(|(p, k)| (p, k.to_string()))
    .collect()
}

/// What the prepared data depends on: the data section and the bytes of every input file.
pub(super) fn fingerprint(recipe: &Recipe, inputs: &[(PathBuf, String)]) -> Result<String> {
    let mut data = recipe.data.clone();
    data.prepared_dir = None;
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_string(&data).expect("serialises"));
    if data.split.shuffle {
        hasher.update(recipe.seed.to_le_bytes());
    }
    for (path, key) in inputs {
        hasher.update(crate::error::read_file(path, key)?);
    }
    Ok(format!("{:x}", hasher.finalize()))
}
