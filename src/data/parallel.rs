//! Parallel corpora for translation: reading sentence pairs (a TSV or two aligned files) with
//! file:line reports of malformed lines, splitting them, tokenizing each side, filtering by
//! length, and storing every split as two token files plus the cleaned text.
//!
//! The prepared folder holds `tokenizer.src.json`, `tokenizer.tgt.json` (the same file twice for
//! a joint vocabulary), `{split}.src.bin`, `{split}.tgt.bin`, `{split}.len.bin` (source and target
//! lengths, interleaved), `{split}.tsv` (the pairs as text, for references and translation) and
//! `meta.json`, written last.

use super::Split;
use super::prepared::{self, Meta, Prepared};
use super::text::read_text;
use super::token_file::{TokenWidth, read_tokens, write_tokens};
use super::tokenizer::TextTokenizer;
use crate::error::{Error, IoContext, Result, write_atomic};
use crate::recipe::{
    BadLinePolicy, ParallelLayout, ParallelSection, Recipe, SplitSection, TokenizerKind,
    TokenizerSection,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Padding, begin/end of sentence and unknown, added to every translation vocabulary.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

/// The special tokens' ids in one vocabulary.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
}

impl SpecialIds {
    pub fn of(tokenizer: &TextTokenizer) -> Result<Self> {
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                Error::Data(format!(
                    "the tokenizer has no {t} token; a translation tokenizer needs {}",
                    SPECIAL_TOKENS.join(" ")
                ))
            })
        };
        Ok(Self {
            pad: id("<pad>")?,
            bos: id("<s>")?,
            eos: id("</s>")?,
            unk: id("<unk>")?,
        })
    }
}

/// One sentence pair and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub source: String,
    pub target: String,
    /// `file:line` of the pair (the TSV's, or the source file's).
    pub origin: String,
}

/// Pairs read from a corpus, and the malformed lines that were skipped.
#[derive(Debug, Default)]
pub struct ReadPairs {
    pub pairs: Vec<Pair>,
    /// `file:line: what` for each skipped line.
    pub skipped: Vec<String>,
}

/// Read the pairs of a corpus named by `path` (a TSV, or the prefix of two files).
pub fn read_pairs(path: &Path, key: &str, section: &ParallelSection) -> Result<ReadPairs> {
    match section.layout {
        ParallelLayout::Tsv => {
            let text = read_text(path, key)?;
            read_tsv(&text, &path.display().to_string(), section)
        }
        ParallelLayout::Files => {
            let (src_path, tgt_path) = (
                side_file(path, &section.source_lang),
                side_file(path, &section.target_lang),
            );
            let source = read_text(&src_path, key)?;
            let target = read_text(&tgt_path, key)?;
            read_aligned(&source, &target, &src_path, &tgt_path, section)
        }
    }
}

/// One side of a corpus laid out as two files: `<prefix>.<lang>`.
fn side_file(prefix: &Path, lang: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!(".{lang}"));
    PathBuf::from(name)
}

/// The columns holding the source and the target in a TSV.
fn tsv_columns(section: &ParallelSection) -> Result<(usize, usize)> {
    let names = section
        .tsv_columns
        .clone()
        .unwrap_or_else(|| vec![section.source_lang.clone(), section.target_lang.clone()]);
    let find = |lang: &str| {
        names.iter().position(|n| n == lang).ok_or_else(|| {
            Error::Recipe(format!(
                "`data.parallel.tsv_columns` ({}) has no column for language `{lang}`",
                names.join(", ")
            ))
        })
    };
    Ok((find(&section.source_lang)?, find(&section.target_lang)?))
}

pub fn read_tsv(text: &str, file: &str, section: &ParallelSection) -> Result<ReadPairs> {
    let (src_col, tgt_col) = tsv_columns(section)?;
    let needed = src_col.max(tgt_col) + 1;
    let mut out = ReadPairs::default();
    for (i, line) in text.lines().enumerate() {
        let origin = format!("{file}:{}", i + 1);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue; // blank lines separate nothing in a TSV; not an error
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let problem = if fields.len() < needed {
            Some(format!(
                "{} tab-separated field(s), expected at least {needed} (source<TAB>target)",
                fields.len()
            ))
        } else {
            empty_side(fields[src_col], fields[tgt_col])
        };
        match problem {
            Some(what) => reject(&mut out, &origin, what, section.on_bad_line)?,
            None => out.pairs.push(Pair {
                source: fields[src_col].trim().to_string(),
                target: fields[tgt_col].trim().to_string(),
                origin,
            }),
        }
    }
    Ok(out)
}

fn read_aligned(
    source: &str,
    target: &str,
    src_path: &Path,
    tgt_path: &Path,
    section: &ParallelSection,
) -> Result<ReadPairs> {
    let (src_lines, tgt_lines): (Vec<&str>, Vec<&str>) =
        (source.lines().collect(), target.lines().collect());
    if src_lines.len() != tgt_lines.len() {
        return Err(Error::Data(format!(
            "{} has {} lines but {} has {}; the two sides of a parallel corpus must be line-aligned",
            src_path.display(),
            src_lines.len(),
            tgt_path.display(),
            tgt_lines.len()
        )));
    }
    let mut out = ReadPairs::default();
    for (i, (s, t)) in src_lines.iter().zip(&tgt_lines).enumerate() {
        let origin = format!("{}:{}", src_path.display(), i + 1);
        match empty_side(s, t) {
            Some(what) => reject(&mut out, &origin, what, section.on_bad_line)?,
            None => out.pairs.push(Pair {
                source: s.trim().to_string(),
                target: t.trim().to_string(),
                origin,
            }),
        }
    }
    Ok(out)
}

fn empty_side(source: &str, target: &str) -> Option<String> {
    match (source.trim().is_empty(), target.trim().is_empty()) {
        (true, true) => Some("both sides are empty".into()),
        (true, false) => Some("the source side is empty".into()),
        (false, true) => Some("the target side is empty".into()),
        (false, false) => None,
    }
}

fn reject(out: &mut ReadPairs, origin: &str, what: String, policy: BadLinePolicy) -> Result<()> {
    match policy {
        BadLinePolicy::Skip => {
            out.skipped.push(format!("{origin}: {what}"));
            Ok(())
        }
        BadLinePolicy::Error => Err(Error::Data(format!(
            "{origin}: malformed sentence pair: {what}; fix the line, or set \
             `data.parallel.on_bad_line: skip` to skip such lines"
        ))),
    }
}

/// Deal pairs to (train, valid, test): chunks of `chunk_lines` pairs, shuffled by the seed when
/// `shuffle` is set, cut by the ratios counted in pairs.
pub fn split_pairs(pairs: Vec<Pair>, split: &SplitSection, seed: u64) -> [Vec<Pair>; 3] {
    let unit = if split.shuffle { split.chunk_lines } else { 1 };
    let chunks: Vec<Vec<Pair>> = pairs.chunks(unit).map(|c| c.to_vec()).collect();
    super::split::deal(chunks, split, seed, Vec::len).map(|parts| parts.concat())
}

/// Pairs of one split, as counted while preparing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PairCounts {
    /// Pairs read (after malformed lines were skipped).
    pub read: usize,
    /// Dropped by the length filters (training split only).
    pub too_long: usize,
    pub ratio: usize,
    /// Pairs stored.
    pub pairs: usize,
    pub source_tokens: usize,
    pub target_tokens: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParallelMeta {
    pub fingerprint: String,
    pub source_vocab_size: usize,
    pub target_vocab_size: usize,
    pub joint_vocabulary: bool,
    pub source_specials: SpecialIds,
    pub target_specials: SpecialIds,
    pub token_width: TokenWidth,
    /// Malformed lines skipped while reading (all splits).
    pub skipped_lines: usize,
    /// The first few of them, `file:line: what`.
    #[serde(default)]
    pub skipped_examples: Vec<String>,
    pub train: PairCounts,
    pub valid: PairCounts,
    pub test: PairCounts,
}

impl Meta for ParallelMeta {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl ParallelMeta {
    pub fn counts(&self, split: Split) -> &PairCounts {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// What `prepare-data` prints about it.
    pub fn describe(&self) -> String {
        let joint = if self.joint_vocabulary {
            " (joint)"
        } else {
            ""
        };
        let mut out = format!(
            "vocabulary: source {} tokens, target {} tokens{joint}\n",
            self.source_vocab_size, self.target_vocab_size
        );
        if self.skipped_lines > 0 {
            out += &format!("skipped {} malformed line(s):\n", self.skipped_lines);
            for line in &self.skipped_examples {
                out += &format!("  {line}\n");
            }
        }
        let headers = [
            "read",
            "too long",
            "ratio",
            "pairs",
            "src tokens",
            "tgt tokens",
        ];
        out + &prepared::split_table(headers, |split| {
            let c = self.counts(split);
            [
                c.read,
                c.too_long,
                c.ratio,
                c.pairs,
                c.source_tokens,
                c.target_tokens,
            ]
        })
    }
}

pub fn source_tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.src.json")
}

pub fn target_tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.tgt.json")
}

fn file(dir: &Path, split: Split, what: &str) -> PathBuf {
    dir.join(format!("{}.{what}", split.name()))
}

/// The tokenizer section with the translation specials listed first, so trained kinds give
/// them ids 0..4.
fn with_specials(section: &TokenizerSection) -> TokenizerSection {
    let mut section = section.clone();
    let mut specials: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    specials.extend(
        section
            .special_tokens
            .iter()
            .filter(|t| !SPECIAL_TOKENS.contains(&t.as_str()))
            .cloned(),
    );
    section.special_tokens = specials;
    section
}

fn build_tokenizer(section: &TokenizerSection, train_text: &str) -> Result<TextTokenizer> {
    let section = with_specials(section);
    // The char alphabet comes from the training text only: held-out characters map to <unk>
    // as they would for a user's new sentence.
    let tokenizer = TextTokenizer::build(&section, train_text, train_text)?;
    if section.kind == TokenizerKind::File {
        SpecialIds::of(&tokenizer)?;
    }
    Ok(tokenizer)
}

/// Prepare the recipe's parallel corpus unless it is already prepared from the same inputs.
pub fn prepare_pairs(recipe: &Recipe, force: bool) -> Result<Prepared<ParallelMeta>> {
    let data = &recipe.data;
    let section = data
        .parallel
        .as_ref()
        .expect("validated: parallel data has a `data.parallel` section");
    let dir = recipe.prepared_dir();
    let inputs = input_files(recipe, section);
    let fingerprint = prepared::fingerprint(recipe, &inputs)?;
    let mut files = vec![source_tokenizer_path(&dir), target_tokenizer_path(&dir)];
    for split in Split::ALL {
        files.extend(["src.bin", "tgt.bin", "len.bin", "tsv"].map(|what| file(&dir, split, what)));
    }
    if let Some(done) = prepared::reusable(&dir, &fingerprint, &files, force) {
        return Ok(done);
    }

    let read = prepared::read_splits(
        recipe,
        |path, key| read_pairs(path, key, section),
        |all| {
            let [train, valid, test] = split_pairs(all.pairs, &data.split, recipe.seed);
            let held_out = |pairs| ReadPairs {
                pairs,
                skipped: vec![],
            };
            [
                ReadPairs {
                    pairs: train,
                    skipped: all.skipped,
                },
                held_out(valid),
                held_out(test),
            ]
        },
    )?;
    let mut skipped: Vec<String> = read.iter().flat_map(|r| r.skipped.clone()).collect();
    let splits: [Vec<Pair>; 3] = read.map(|r| r.pairs);
    if splits.iter().any(|s| s.is_empty()) {
        return Err(Error::Data(format!(
            "a split has no sentence pairs (train {}, valid {}, test {}); give more data or \
             change `data.split`",
            splits[0].len(),
            splits[1].len(),
            splits[2].len()
        )));
    }

    let join = |side: fn(&Pair) -> &str| {
        let mut text = String::new();
        for pair in &splits[0] {
            text.push_str(side(pair));
            text.push('\n');
        }
        text
    };
    let (src_train, tgt_train) = (join(|p| &p.source), join(|p| &p.target));
    let (source_tok, target_tok, joint) = match &data.target_tokenizer {
        Some(target_section) => (
            build_tokenizer(&data.tokenizer, &src_train)?,
            build_tokenizer(target_section, &tgt_train)?,
            false,
        ),
        None => {
            let both = build_tokenizer(&data.tokenizer, &(src_train + &tgt_train))?;
            (both.clone(), both, true)
        }
    };
    let (source_specials, target_specials) =
        (SpecialIds::of(&source_tok)?, SpecialIds::of(&target_tok)?);
    let width = TokenWidth::for_vocab(source_tok.vocab_size().max(target_tok.vocab_size()));

    prepared::begin(&dir)?;
    source_tok.save(&source_tokenizer_path(&dir))?;
    target_tok.save(&target_tokenizer_path(&dir))?;
    let mut counts: Vec<PairCounts> = Vec::new();
    for (split, pairs) in Split::ALL.into_iter().zip(splits) {
        let sources: Vec<&str> = pairs.iter().map(|p| p.source.as_str()).collect();
        let targets: Vec<&str> = pairs.iter().map(|p| p.target.as_str()).collect();
        let src_ids = source_tok.encode_lines(&sources)?;
        let tgt_ids = target_tok.encode_lines(&targets)?;
        let mut c = PairCounts {
            read: pairs.len(),
            ..Default::default()
        };
        let (mut src_flat, mut tgt_flat, mut lens, mut tsv) =
            (Vec::new(), Vec::new(), Vec::new(), String::new());
        for ((pair, s), t) in pairs.iter().zip(src_ids).zip(tgt_ids) {
            // Only training pairs are filtered; held-out pairs are all scored.
            if split == Split::Train {
                if s.len() > section.max_source_tokens || t.len() > section.max_target_tokens {
                    c.too_long += 1;
                    continue;
                }
                let ratio = s.len().max(t.len()) as f64 / s.len().min(t.len()).max(1) as f64;
                if section.max_length_ratio > 0.0 && ratio > section.max_length_ratio {
                    c.ratio += 1;
                    continue;
                }
            }
            c.pairs += 1;
            c.source_tokens += s.len();
            c.target_tokens += t.len();
            lens.extend([s.len() as u32, t.len() as u32]);
            src_flat.extend(s);
            tgt_flat.extend(t);
            tsv.push_str(&pair.source);
            tsv.push('\t');
            tsv.push_str(&pair.target);
            tsv.push('\n');
        }
        write_tokens(&file(&dir, split, "src.bin"), &src_flat, width)?;
        write_tokens(&file(&dir, split, "tgt.bin"), &tgt_flat, width)?;
        write_tokens(&file(&dir, split, "len.bin"), &lens, TokenWidth::U32)?;
        write_atomic(&file(&dir, split, "tsv"), tsv.as_bytes())?;
        counts.push(c);
    }
    let [train, valid, test]: [PairCounts; 3] = counts.try_into().expect("three splits");
    if train.pairs == 0 {
        return Err(Error::Data(format!(
            "every training pair was dropped by the length filters ({} too long, {} over the \
             ratio); raise `data.parallel.max_source_tokens`/`max_target_tokens`/`max_length_ratio`",
            train.too_long, train.ratio
        )));
    }
    let skipped_lines = skipped.len();
    skipped.truncate(5);
    let meta = ParallelMeta {
        fingerprint,
        source_vocab_size: source_tok.vocab_size(),
        target_vocab_size: target_tok.vocab_size(),
        joint_vocabulary: joint,
        source_specials,
        target_specials,
        token_width: width,
        skipped_lines,
        skipped_examples: skipped,
        train,
        valid,
        test,
    };
    prepared::finish(&dir, meta)
}

/// The files the corpus is read from, for the fingerprint.
fn input_files(recipe: &Recipe, section: &ParallelSection) -> Vec<(PathBuf, String)> {
    let data = &recipe.data;
    let mut out = Vec::new();
    for (path, key) in prepared::split_inputs(data) {
        match section.layout {
            ParallelLayout::Tsv => out.push((path, key)),
            ParallelLayout::Files => {
                for lang in [&section.source_lang, &section.target_lang] {
                    out.push((side_file(&path, lang), key.clone()));
                }
            }
        }
    }
    for tk in [Some(&data.tokenizer), data.target_tokenizer.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Some(path) = &tk.path {
            out.push((path.clone(), "data.tokenizer.path".into()));
        }
    }
    out
}

/// The token ids of one split: every pair's source and target (no BOS/EOS; batching adds them).
#[derive(Debug, Clone, Default)]
pub struct PairSet {
    pub sources: Vec<Vec<u32>>,
    pub targets: Vec<Vec<u32>>,
}

impl PairSet {
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

pub fn load_pair_split(dir: &Path, meta: &ParallelMeta, split: Split) -> Result<PairSet> {
    let src = read_tokens(&file(dir, split, "src.bin"), meta.token_width)?;
    let tgt = read_tokens(&file(dir, split, "tgt.bin"), meta.token_width)?;
    let lens = read_tokens(&file(dir, split, "len.bin"), TokenWidth::U32)?;
    let mut set = PairSet::default();
    let (mut s, mut t) = (0usize, 0usize);
    for pair in lens.chunks(2) {
        let (ls, lt) = (pair[0] as usize, pair.get(1).copied().unwrap_or(0) as usize);
        if s + ls > src.len() || t + lt > tgt.len() {
            return Err(Error::Data(format!(
                "{} does not match its token files; rerun `nlpkit prepare-data --force`",
                file(dir, split, "len.bin").display()
            )));
        }
        set.sources.push(src[s..s + ls].to_vec());
        set.targets.push(tgt[t..t + lt].to_vec());
        s += ls;
        t += lt;
    }
    Ok(set)
}

/// The pairs of a split as text (source, target), in the order of its token files.
pub fn load_pair_text(dir: &Path, split: Split) -> Result<Vec<(String, String)>> {
    let path = file(dir, split, "tsv");
    let text = std::fs::read_to_string(&path).with_path("read", &path)?;
    Ok(text
        .lines()
        .map(|l| {
            let (s, t) = l.split_once('\t').unwrap_or((l, ""));
            (s.to_string(), t.to_string())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(policy: BadLinePolicy) -> ParallelSection {
        ParallelSection {
            source_lang: "en".into(),
            target_lang: "zh".into(),
            layout: ParallelLayout::Tsv,
            tsv_columns: None,
            on_bad_line: policy,
            max_source_tokens: 128,
            max_target_tokens: 128,
            max_length_ratio: 0.0,
        }
    }

    const TSV: &str = "Hi.\t你好。\tCC-BY\nno tab here\n\t空的\nRun!\t\nGo.\t走。\n";

    #[test]
    fn malformed_lines_are_skipped_with_file_and_line() {
        let read = read_tsv(TSV, "cmn.txt", &section(BadLinePolicy::Skip)).unwrap();
        assert_eq!(read.pairs.len(), 2);
        assert_eq!(read.pairs[0].target, "你好。");
        assert_eq!(read.pairs[1].origin, "cmn.txt:5");
        assert_eq!(read.skipped.len(), 3);
        assert!(read.skipped[0].starts_with("cmn.txt:2: 1 tab-separated field(s)"));
        assert!(read.skipped[1].starts_with("cmn.txt:3: the source side is empty"));
        assert!(read.skipped[2].starts_with("cmn.txt:4: the target side is empty"));
    }

    #[test]
    fn malformed_lines_are_rejected_when_the_recipe_says_so() {
        let err = read_tsv(TSV, "cmn.txt", &section(BadLinePolicy::Error)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("cmn.txt:2:"), "{message}");
        assert!(message.contains("on_bad_line: skip"), "{message}");
    }

    #[test]
    fn named_columns_choose_the_direction() {
        let mut s = section(BadLinePolicy::Skip);
        s.tsv_columns = Some(vec!["en".into(), "zh".into()]);
        s.source_lang = "zh".into();
        s.target_lang = "en".into();
        let read = read_tsv("Go.\t走。\n", "f", &s).unwrap();
        assert_eq!(read.pairs[0].source, "走。");
        assert_eq!(read.pairs[0].target, "Go.");
    }

    #[test]
    fn aligned_files_must_have_equal_lines() {
        let s = section(BadLinePolicy::Skip);
        let (a, b) = (Path::new("x.en"), Path::new("x.zh"));
        assert!(read_aligned("a\nb\n", "甲\n", a, b, &s).is_err());
        let read = read_aligned("a\n\nc\n", "甲\n乙\n丙\n", a, b, &s).unwrap();
        assert_eq!(read.pairs.len(), 2);
        assert_eq!(read.skipped, vec!["x.en:2: the source side is empty"]);
    }
}
