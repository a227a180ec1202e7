//! Plain text for language modelling: one raw file cut into train/valid/test at line boundaries
//! (or one file per split), a tokenizer trained on the training split (or loaded), and every
//! split encoded into a compact token file.
//!
//! The prepared folder holds `tokenizer.json`, `{train,valid,test}.bin` and `meta.json`.

use super::Split;
use super::prepared::{self, Meta, Prepared};
use super::split::split_text;
use super::text::read_text;
use super::token_file::{TokenWidth, read_tokens, write_tokens};
use super::tokenizer::TextTokenizer;
use crate::error::Result;
use crate::hf::tokenizer::TokenizerFiles;
use crate::recipe::Recipe;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitCounts {
    pub lines: usize,
    pub chars: usize,
    pub tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextMeta {
    pub fingerprint: String,
    pub vocab_size: usize,
    pub token_width: TokenWidth,
    pub train: SplitCounts,
    pub valid: SplitCounts,
    pub test: SplitCounts,
}

impl Meta for TextMeta {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl TextMeta {
    pub fn counts(&self, split: Split) -> &SplitCounts {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// What `prepare-data` prints about it.
    pub fn describe(&self) -> String {
        let table = prepared::split_table(["lines", "characters", "tokens"], |split| {
            let c = self.counts(split);
            [c.lines, c.chars, c.tokens]
        });
        format!(
            "vocabulary: {} tokens, stored as {:?}\n{table}",
            self.vocab_size, self.token_width
        )
    }
}

pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.json")
}

pub fn split_path(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("{}.bin", split.name()))
}

/// The tokenizer of the HF model a fine-tuning recipe starts from (`init_from`).
fn pretrained_tokenizer(recipe: &Recipe) -> Result<Option<TokenizerFiles>> {
    match recipe.init_from.as_deref() {
        Some(dir) => TokenizerFiles::of_folder(dir).map(Some),
        None => Ok(None),
    }
}

/// Prepare the recipe's text unless it is already prepared from the same inputs.
pub fn prepare_text(recipe: &Recipe, force: bool) -> Result<Prepared<TextMeta>> {
    let dir = recipe.prepared_dir();
    let data = &recipe.data;
    let mut inputs = prepared::split_inputs(data);
    inputs.extend(
        data.tokenizer
            .path
            .clone()
            .map(|p| (p, "data.tokenizer.path".to_string())),
    );
    let pretrained = pretrained_tokenizer(recipe)?;
    let pretrained_inputs = pretrained.iter().flat_map(TokenizerFiles::inputs);
    inputs.extend(pretrained_inputs.map(|p| (p, "init_from".to_string())));
    let fingerprint = prepared::fingerprint(recipe, &inputs)?;
    let mut files: Vec<PathBuf> = Split::ALL.map(|s| split_path(&dir, s)).into();
    files.push(tokenizer_path(&dir));
    if let Some(done) = prepared::reusable(&dir, &fingerprint, &files, force) {
        return Ok(done);
    }

    let texts = prepared::read_splits(recipe, read_text, |train| {
        split_text(&train, &data.split, recipe.seed)
    })?;
    let all_text = texts.concat();
    let tokenizer = match &pretrained {
        Some(files) => TextTokenizer::load_pretrained(files)?,
        None => TextTokenizer::build(&data.tokenizer, &texts[0], &all_text)?,
    };
    let vocab_size = tokenizer.vocab_size();
    let width = TokenWidth::for_vocab(vocab_size);

    prepared::begin(&dir)?;
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
    let meta = TextMeta {
        fingerprint,
        vocab_size,
        token_width: width,
        train,
        valid,
        test,
    };
    prepared::finish(&dir, meta)
}

pub fn load_split(dir: &Path, meta: &TextMeta, split: Split) -> Result<Vec<u32>> {
    read_tokens(&split_path(dir, split), meta.token_width)
}
