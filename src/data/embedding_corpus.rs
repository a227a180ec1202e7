//! Plain text for word embeddings: each line a sentence, tokenized by the recipe's tokenizer
//! (`word` for whitespace-separated words, `char` for Chinese characters), a vocabulary of the
//! training split's tokens seen at least `min_count` times ordered by count (word2vec.c's
//! order), and every split rewritten in that vocabulary. Tokens below `min_count` and
//! whitespace tokens are dropped before any window is drawn, as word2vec.c and glove's
//! `cooccur` drop their out-of-vocabulary words, so windows reach over them. GloVe's weighted
//! co-occurrence counts are built here too, once, from the training split.
//!
//! The prepared folder holds `tokenizer.json`, `vocab.tsv` (`word<TAB>count` lines, the
//! vocabulary in id order), `{train,valid,test}.bin` (ids, each sentence followed by the id
//! `vocab_size` as its end mark), `cooccurrence.bin` for GloVe (little-endian
//! `u32 word, u32 context, f32 count` records) and `meta.json`.

use super::Split;
use super::prepared::{self, Meta, Prepared};
use super::split::split_text;
use super::text::read_text;
use super::token_file::{TokenWidth, read_tokens, write_tokens};
use super::tokenizer::TextTokenizer;
use crate::error::{Error, IoContext, Result, write_atomic};
use crate::recipe::Recipe;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What the model section decides about the prepared corpus.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct CorpusOptions {
    pub min_count: usize,
    /// GloVe: count co-occurrences up to this far apart.
    pub cooccurrence_window: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CorpusCounts {
    pub lines: usize,
    /// Lines with at least one kept token.
    pub sentences: usize,
    /// Tokens kept (in the vocabulary).
    pub tokens: usize,
    /// Tokens dropped (below `min_count`, unknown, or whitespace).
    pub dropped: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingMeta {
    pub fingerprint: String,
    pub options: CorpusOptions,
    /// The tokenizer's vocabulary, before `min_count`.
    pub tokenizer_vocab: usize,
    /// Words kept: the model's vocabulary.
    pub vocab_size: usize,
    pub token_width: TokenWidth,
    pub train: CorpusCounts,
    pub valid: CorpusCounts,
    pub test: CorpusCounts,
    /// GloVe: non-zero co-occurrence entries.
    #[serde(default)]
    pub cooccurrences: Option<usize>,
}

impl Meta for EmbeddingMeta {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl EmbeddingMeta {
    pub fn counts(&self, split: Split) -> &CorpusCounts {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// What `prepare-data` prints about it.
    pub fn describe(&self) -> String {
        let table = prepared::split_table(["lines", "sentences", "tokens", "dropped"], |split| {
            let c = self.counts(split);
            [c.lines, c.sentences, c.tokens, c.dropped]
        });
        let cooccurrences = match (self.cooccurrences, self.options.cooccurrence_window) {
            (Some(n), Some(w)) => format!("; {n} co-occurrence entries (window {w})"),
            _ => String::new(),
        };
        format!(
            "vocabulary: {} words seen at least {} times (of {} tokens){cooccurrences}\n{table}",
            self.vocab_size, self.options.min_count, self.tokenizer_vocab
        )
    }
}

pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.json")
}

pub fn vocab_path(dir: &Path) -> PathBuf {
    dir.join("vocab.tsv")
}

pub fn split_path(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("{}.bin", split.name()))
}

pub fn cooccurrence_path(dir: &Path) -> PathBuf {
    dir.join("cooccurrence.bin")
}

/// Prepare the recipe's corpus unless it is already prepared from the same inputs and options.
pub fn prepare_corpus(
    recipe: &Recipe,
    options: CorpusOptions,
    force: bool,
) -> Result<Prepared<EmbeddingMeta>> {
    let dir = recipe.prepared_dir();
    let data = &recipe.data;
    let mut inputs = prepared::split_inputs(data);
    inputs.extend(
        data.tokenizer
            .path
            .clone()
            .map(|p| (p, "data.tokenizer.path".to_string())),
    );
    // The vocabulary and the counts depend on the model's options as well as the data section.
    let mut hasher = Sha256::new();
    hasher.update(prepared::fingerprint(recipe, &inputs)?);
    hasher.update(serde_json::to_string(&options).expect("serialises"));
    let fingerprint = format!("{:x}", hasher.finalize());
    let mut files: Vec<PathBuf> = Split::ALL.map(|s| split_path(&dir, s)).into();
    files.extend([tokenizer_path(&dir), vocab_path(&dir)]);
    if options.cooccurrence_window.is_some() {
        files.push(cooccurrence_path(&dir));
    }
    if let Some(done) = prepared::reusable(&dir, &fingerprint, &files, force) {
        return Ok(done);
    }

    let texts = prepared::read_splits(recipe, read_text, |train| {
        split_text(&train, &data.split, recipe.seed)
    })?;
    let tokenizer = TextTokenizer::build(&data.tokenizer, &texts[0], &texts.concat())?;
    let encoded = texts
        .iter()
        .map(|text| tokenizer.encode_lines(&text.lines().collect::<Vec<_>>()))
        .collect::<Result<Vec<_>>>()?;
    let spaces: Vec<bool> = (0..tokenizer.vocab_size() as u32)
        .map(|id| tokenizer.id_to_token(id).trim().is_empty())
        .collect();
    let vocab = Vocabulary::count(&encoded[0], &spaces, options.min_count, |id| {
        tokenizer.id_to_token(id)
    });
    if vocab.words.is_empty() {
        return Err(Error::Data(format!(
            "no token of {} occurs at least {} times (`model.min_count`); lower it or give \
             more text",
            data.train.display(),
            options.min_count
        )));
    }
    let width = TokenWidth::for_vocab(vocab.words.len() + 1);

    prepared::begin(&dir)?;
    tokenizer.save(&tokenizer_path(&dir))?;
    write_vocab(&vocab_path(&dir), &vocab.words)?;
    let mut counts = Vec::new();
    let mut train_stream = Vec::new();
    for ((split, lines), text) in Split::ALL.into_iter().zip(&encoded).zip(&texts) {
        let (stream, mut c) = vocab.stream(lines);
        c.lines = text.lines().count();
        write_tokens(&split_path(&dir, split), &stream, width)?;
        counts.push(c);
        if split == Split::Train {
            train_stream = stream;
        }
    }
    let cooccurrences = match options.cooccurrence_window {
        Some(window) => {
            let entries = cooccurrences(&train_stream, vocab.words.len(), window);
            write_cooccurrences(&cooccurrence_path(&dir), &entries)?;
            Some(entries.len())
        }
        None => None,
    };
    let [train, valid, test]: [CorpusCounts; 3] = counts.try_into().expect("three splits");
    let meta = EmbeddingMeta {
        fingerprint,
        options,
        tokenizer_vocab: tokenizer.vocab_size(),
        vocab_size: vocab.words.len(),
        token_width: width,
        train,
        valid,
        test,
        cooccurrences,
    };
    prepared::finish(&dir, meta)
}

/// The kept words with their training counts, and the map from tokenizer ids to theirs.
struct Vocabulary {
    words: Vec<(String, u64)>,
    ids: Vec<Option<u32>>,
}

impl Vocabulary {
    fn count(
        sentences: &[Vec<u32>],
        spaces: &[bool],
        min_count: usize,
        token: impl Fn(u32) -> String,
    ) -> Self {
        let mut counts = vec![0u64; spaces.len()];
        for &id in sentences.iter().flatten() {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1;
            }
        }
        let mut kept: Vec<(u64, String, u32)> = counts
            .iter()
            .enumerate()
            .filter(|&(id, &c)| c >= min_count as u64 && !spaces[id])
            .map(|(id, &c)| (c, token(id as u32), id as u32))
            .collect();
        // By count, most frequent first; ties by the word, so the order is reproducible.
        kept.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut ids = vec![None; spaces.len()];
        for (new, (_, _, old)) in kept.iter().enumerate() {
            ids[*old as usize] = Some(new as u32);
        }
        Self {
            words: kept.into_iter().map(|(c, w, _)| (w, c)).collect(),
            ids,
        }
    }

    /// The sentences in vocabulary ids, each followed by the end mark; empty ones left out.
    fn stream(&self, sentences: &[Vec<u32>]) -> (Vec<u32>, CorpusCounts) {
        let end = self.words.len() as u32;
        let mut stream = Vec::new();
        let mut counts = CorpusCounts {
            lines: sentences.len(),
            sentences: 0,
            tokens: 0,
            dropped: 0,
        };
        for sentence in sentences {
            let before = stream.len();
            stream.extend(
                sentence
                    .iter()
                    .filter_map(|&id| self.ids.get(id as usize).copied().flatten()),
            );
            let kept = stream.len() - before;
            counts.tokens += kept;
            counts.dropped += sentence.len() - kept;
            if kept > 0 {
                stream.push(end);
                counts.sentences += 1;
            }
        }
        (stream, counts)
    }
}

fn write_vocab(path: &Path, words: &[(String, u64)]) -> Result<()> {
    let text: String = words.iter().map(|(w, c)| format!("{w}\t{c}\n")).collect();
    write_atomic(path, text.as_bytes())
}

/// `vocab.tsv`: the words in id order with their training counts.
pub fn read_vocab(path: &Path) -> Result<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(path).with_path("read", path)?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            line.rsplit_once('\t')
                .and_then(|(w, c)| Some((w.to_string(), c.parse().ok()?)))
                .ok_or_else(|| {
                    Error::Data(format!(
                        "{}:{}: expected `word<TAB>count`; the file is damaged, prepare the \
                         data again (`nlpkit prepare-data --force`)",
                        path.display(),
                        i + 1
                    ))
                })
        })
        .collect()
}

/// A split's stream of vocabulary ids with its sentence end marks (the id `vocab_size`).
pub fn load_split(dir: &Path, meta: &EmbeddingMeta, split: Split) -> Result<Vec<u32>> {
    read_tokens(&split_path(dir, split), meta.token_width)
}

/// GloVe's counts: within a sentence, each pair of words `d <= window` apart adds `1 / d` both
/// ways (glove's `cooccur` with `symmetric = 1`). Sorted by (word, context).
pub fn cooccurrences(stream: &[u32], vocab: usize, window: usize) -> Vec<(u32, u32, f32)> {
    let end = vocab as u32;
    let mut sums: HashMap<(u32, u32), f64> = HashMap::new();
    for (p, &w) in stream.iter().enumerate() {
        if w == end {
            continue;
        }
        for d in 1..=window {
            match stream.get(p + d) {
                Some(&c) if c != end => {
                    let weight = 1.0 / d as f64;
                    *sums.entry((w, c)).or_default() += weight;
                    *sums.entry((c, w)).or_default() += weight;
                }
                _ => break,
            }
        }
    }
    let mut entries: Vec<(u32, u32, f32)> = sums
        .into_iter()
        .map(|((w, c), x)| (w, c, x as f32))
        .collect();
    entries.sort_unstable_by_key(|&(w, c, _)| (w, c));
    entries
}

fn write_cooccurrences(path: &Path, entries: &[(u32, u32, f32)]) -> Result<()> {
    let mut bytes = Vec::with_capacity(entries.len() * 12);
    for &(w, c, x) in entries {
        bytes.extend_from_slice(&w.to_le_bytes());
        bytes.extend_from_slice(&c.to_le_bytes());
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

pub fn read_cooccurrences(dir: &Path) -> Result<Vec<(u32, u32, f32)>> {
    let path = cooccurrence_path(dir);
    let bytes = std::fs::read(&path).with_path("read", &path)?;
    if bytes.len() % 12 != 0 {
        return Err(Error::Data(format!(
            "{} is damaged (not whole 12-byte records); prepare the data again \
             (`nlpkit prepare-data --force`)",
            path.display()
        )));
    }
    let word = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    Ok(bytes
        .chunks_exact(12)
        .map(|r| {
            (
                word(&r[..4]),
                word(&r[4..8]),
                f32::from_le_bytes(r[8..].try_into().expect("4 bytes")),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_keeps_frequent_tokens_by_count_and_drops_the_rest_from_sentences() {
        // Tokenizer ids: 0 "a", 1 "b", 2 " ", 3 "c".
        let names = ["a", "b", " ", "c"];
        let sentences = vec![vec![0, 1, 2, 1, 3], vec![1, 0], vec![3], vec![2, 2]];
        let spaces = [false, false, true, false];
        let vocab = Vocabulary::count(&sentences, &spaces, 2, |id| names[id as usize].into());
        // b: 3, a: 2, c: 2 (ties by the word), the space dropped though frequent.
        let words: Vec<(&str, u64)> = vocab.words.iter().map(|(w, c)| (&**w, *c)).collect();
        assert_eq!(words, [("b", 3), ("a", 2), ("c", 2)]);
        let (stream, counts) = vocab.stream(&sentences);
        assert_eq!(stream, [1, 0, 0, 2, 3, 0, 1, 3, 2, 3]);
        assert_eq!((counts.sentences, counts.tokens, counts.dropped), (3, 7, 3));
    }

    #[test]
    fn cooccurrences_weigh_by_inverse_distance_within_sentences_both_ways() {
        // Sentences [0 1 2] and [1 0]; end mark 3.
        let entries = cooccurrences(&[0, 1, 2, 3, 1, 0, 3], 3, 2);
        let x = |w, c| {
            entries
                .iter()
                .find(|e| (e.0, e.1) == (w, c))
                .map_or(0.0, |e| e.2)
        };
        assert_eq!(x(0, 1), 2.0); // adjacent in both sentences
        assert_eq!(x(1, 0), 2.0);
        assert_eq!(x(0, 2), 0.5); // two apart
        assert_eq!(x(2, 1), 1.0);
        assert_eq!(x(2, 0), 0.5);
        assert_eq!(
            entries.len(),
            6,
            "nothing across the sentence end: {entries:?}"
        );
        // Window 1: the distant pair is out.
        assert_eq!(cooccurrences(&[0, 1, 2, 3], 3, 1).len(), 4);
    }
}
