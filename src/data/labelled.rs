//! Preparing labelled texts (CSV/TSV classification), tagged sentences (BIO/BIOES) and BERT
//! pretraining documents: read with file:line errors, split with the recipe's seed, build the
//! tokenizer (or take a pretrained experiment's), and write `tokenizer.json`, `labels.json` (the
//! labels or tags in id order, as the experiment folder keeps them),
//! `{train,valid,test}.jsonl` (the raw examples, readable and diffable; encoding them again is
//! fast) and `meta.json` (with how tagged tokens become ids, [`TokenAlignment`]).

use super::Split;
use super::prepared::{self, Meta, Prepared};
use super::split::deal;
use super::table::{LabelledText, label_list, read_labelled};
use super::tagging::{TaggedSentence, read_tagged, tag_list};
use super::text::read_text;
use super::tokenizer::TextTokenizer;
use crate::error::{Error, IoContext, Result, write_atomic};
use crate::hf::tokenizer::TokenizerFiles;
use crate::recipe::{CsvSection, DataFormat, Recipe, TaskKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The special tokens every labelled-data tokenizer has, BERT's.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// One example of any labelled format, as stored in the `.jsonl` files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Example {
    Labelled {
        text: String,
        label: String,
    },
    Tagged {
        tokens: Vec<String>,
        tags: Vec<String>,
    },
    Document {
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledMeta {
    pub fingerprint: String,
    pub format: DataFormat,
    /// Class labels or tags in id order (empty for pretraining documents).
    pub labels: Vec<String>,
    pub vocab_size: usize,
    /// Examples per split: train, valid, test.
    pub counts: [usize; 3],
    /// Tagged sentences: how a token becomes ids. Folders written before it existed read as
    /// `whole`, which is how they were encoded.
    #[serde(default)]
    pub alignment: TokenAlignment,
}

/// How a tagged sentence's tokens become the model's ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAlignment {
    /// One id per token: its own id, else its encoding when that is one id, else `[UNK]`. The
    /// tokenizer built from the corpus (a character vocabulary of its tokens) needs no more.
    #[default]
    Whole,
    /// HF `run_ner`'s rule, for a pretrained tokenizer: each token encoded alone into its
    /// sub-tokens (`Washington` → `wash ##ing ##ton`), its tag on the first; the others take no
    /// part in the loss or the predictions.
    FirstSubToken,
}

impl Meta for LabelledMeta {
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl LabelledMeta {
    /// What `prepare-data` prints about it.
    pub fn describe(&self) -> String {
        let [train, valid, test] = self.counts;
        let mut out = format!(
            "vocabulary: {} tokens; {} examples: train {train}, valid {valid}, test {test}\n",
            self.vocab_size,
            self.format.name()
        );
        if !self.labels.is_empty() {
            out += &format!(
                "labels ({}): {}\n",
                self.labels.len(),
                self.labels.join(" ")
            );
        }
        if self.alignment == TokenAlignment::FirstSubToken {
            out += "tags: on each token's first sub-token of the pretrained tokenizer\n";
        }
        out
    }

    /// The id of a label or tag, or an error naming where it came from.
    pub fn label_id(&self, label: &str, dir: &Path) -> Result<usize> {
        self.labels.iter().position(|l| l == label).ok_or_else(|| {
            Error::Data(format!(
                "label `{label}` is not in {}'s labels.json; prepare the data again",
                dir.display()
            ))
        })
    }
}

pub fn labels_path(dir: &Path) -> PathBuf {
    dir.join("labels.json")
}

pub fn examples_path(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("{}.jsonl", split.name()))
}

pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.json")
}

/// The pretrained model's tokenizer, when fine-tuning: an nlpkit experiment's, or an HF folder's
/// (`tokenizer.json`, else `vocab.txt`).
fn pretrained_tokenizer(recipe: &Recipe) -> Result<Option<TokenizerFiles>> {
    let Some(dir) = recipe.init_from.as_ref() else {
        return Ok(None);
    };
    if crate::hf::is_model_folder(dir) {
        return TokenizerFiles::of_folder(dir).map(Some);
    }
    Ok(Some(TokenizerFiles::Json(
        crate::experiment::Experiment::new(dir).tokenizer_path(),
    )))
}

/// BERT pretraining reads documents (texts without labels) instead of labelled examples.
fn is_pretraining(recipe: &Recipe) -> bool {
    recipe.task() == TaskKind::Pretraining
}

/// Tagged tokens go to their sub-tokens when fine-tuning: the pretrained tokenizer was not built
/// from these tokens, and many are not one id of it.
/// How the recipe's tagged tokens become ids (fine-tuned taggers: a pretrained tokenizer's
/// sub-tokens).
pub fn alignment(recipe: &Recipe) -> TokenAlignment {
    if recipe.task() == TaskKind::Tagging && recipe.init_from.is_some() {
        TokenAlignment::FirstSubToken
    } else {
        TokenAlignment::Whole
    }
}

/// Read every split with `read`; one file's rows (texts, sentences, documents) are dealt one by
/// one, by count.
fn read_splits<T>(
    recipe: &Recipe,
    read: impl Fn(&Path, &str) -> Result<Vec<T>>,
) -> Result<[Vec<T>; 3]> {
    prepared::read_splits(recipe, read, |rows| {
        deal(rows, &recipe.data.split, recipe.seed, |_| 1)
    })
}

/// Read and check the examples of every split; the labels in id order.
fn read_examples(recipe: &Recipe) -> Result<([Vec<Example>; 3], Vec<String>)> {
    let bert_pretraining = is_pretraining(recipe);
    match recipe.data.format {
        DataFormat::Csv => {
            let section = recipe.data.csv.clone().unwrap_or_default();
            let splits = read_splits(recipe, |p, k| read_labelled(p, k, &section))?;
            if bert_pretraining {
                let docs = splits.map(|rows| {
                    rows.into_iter()
                        .map(|r| Example::Document { text: r.text })
                        .collect()
                });
                return Ok((docs, vec![]));
            }
            let labels = label_list(&section, &splits[0]);
            let files = [
                Some(&recipe.data.train),
                recipe.data.valid.as_ref(),
                recipe.data.test.as_ref(),
            ];
            for (rows, file) in splits.iter().zip(files) {
                check_labels(rows, &labels, file.unwrap_or(&recipe.data.train), &section)?;
            }
            let examples = splits.map(|rows| {
                rows.into_iter()
                    .map(|r| Example::Labelled {
                        text: r.text,
                        label: r.label,
                    })
                    .collect()
            });
            Ok((examples, labels))
        }
        DataFormat::Tagging => {
            let splits = read_splits(recipe, read_tagged)?;
            if bert_pretraining {
                // Pretraining reads the sentences' text; the tags are not used.
                let docs = splits.map(|sentences| {
                    sentences
                        .into_iter()
                        .map(|s| Example::Document {
                            text: join_tokens(&s.tokens),
                        })
                        .collect()
                });
                return Ok((docs, vec![]));
            }
            let tags = tag_list(&splits[0]);
            for (split, sentences) in splits.iter().enumerate().skip(1) {
                check_tags(sentences, &tags, split)?;
            }
            let examples = splits.map(|s: Vec<TaggedSentence>| {
                s.into_iter()
                    .map(|s| Example::Tagged {
                        tokens: s.tokens,
                        tags: s.tags,
                    })
                    .collect()
            });
            Ok((examples, tags))
        }
        DataFormat::Text => {
            // Documents are separated by blank lines; a document's lines are its sentences.
            let docs = read_splits(recipe, |path, key| {
                let text = read_text(path, key)?;
                Ok(text
                    .split("\n\n")
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(|d| Example::Document { text: d.into() })
                    .collect())
            })?;
            Ok((docs, vec![]))
        }
        DataFormat::Parallel => Err(Error::Recipe(
            "parallel data is for translation; labelled data is `csv`, `tagging` or `text`".into(),
        )),
    }
}

/// A sentence's text from its tokens: characters (Chinese) joined directly, words with spaces.
pub fn join_tokens(tokens: &[String]) -> String {
    if tokens.iter().all(|t| t.chars().count() == 1) {
        tokens.concat()
    } else {
        tokens.join(" ")
    }
}

fn check_labels(
    rows: &[LabelledText],
    labels: &[String],
    file: &Path,
    section: &CsvSection,
) -> Result<()> {
    for row in rows {
        if !labels.contains(&row.label) {
            let origin = if section.labels.is_some() {
                "`data.csv.labels`"
            } else {
                "the labels of the training split"
            };
            return Err(Error::Data(format!(
                "{}:{}: label `{}` is not one of {origin}: {}",
                file.display(),
                row.line,
                row.label,
                labels.join(", ")
            )));
        }
    }
    Ok(())
}

fn check_tags(sentences: &[TaggedSentence], tags: &[String], split: usize) -> Result<()> {
    for s in sentences {
        if let Some(tag) = s.tags.iter().find(|t| !tags.contains(t)) {
            return Err(Error::Data(format!(
                "the {} split has tag `{tag}` (sentence at line {}), which the training split \
                 never uses; the model could not predict it",
                Split::ALL[split].name(),
                s.line
            )));
        }
    }
    Ok(())
}

/// Prepare the recipe's labelled data unless it is already prepared from the same inputs.
pub fn prepare_labelled(recipe: &Recipe, force: bool) -> Result<Prepared<LabelledMeta>> {
    let dir = recipe.prepared_dir();
    let data = &recipe.data;
    let mut inputs = prepared::split_inputs(data);
    let pretrained = pretrained_tokenizer(recipe)?;
    let pretrained_inputs = pretrained.iter().flat_map(TokenizerFiles::inputs);
    inputs.extend(pretrained_inputs.map(|p| (p, "init_from".into())));
    // The suffix names what the folder's examples are read as; a folder prepared for another
    // reading (an older one-id-per-token tagging folder of a fine-tuning recipe) is redone.
    let reads = match (is_pretraining(recipe), alignment(recipe)) {
        (true, _) => "documents",
        (false, TokenAlignment::Whole) => "labelled",
        (false, TokenAlignment::FirstSubToken) => "tagged-subtokens",
    };
    let fingerprint = format!("{}-{reads}", prepared::fingerprint(recipe, &inputs)?);
    let mut files: Vec<PathBuf> = Split::ALL.map(|s| examples_path(&dir, s)).into();
    files.extend([tokenizer_path(&dir), labels_path(&dir)]);
    if let Some(done) = prepared::reusable(&dir, &fingerprint, &files, force) {
        return Ok(done);
    }
    let (splits, labels) = read_examples(recipe)?;
    if splits[0].is_empty() {
        return Err(Error::Data(format!(
            "{} has no examples for the training split",
            data.train.display()
        )));
    }
    // Built from vocab.txt or loaded, it is saved below as tokenizer.json, which the experiment
    // folder copies: eval and generate load that, whatever the folder held.
    let tokenizer = match &pretrained {
        Some(files) => TextTokenizer::load_pretrained(files)?,
        None => {
            let text_of = |split: &[Example]| -> String {
                split
                    .iter()
                    .map(|e| match e {
                        Example::Labelled { text, .. } | Example::Document { text } => {
                            format!("{text}\n")
                        }
                        Example::Tagged { tokens, .. } => format!("{}\n", join_tokens(tokens)),
                    })
                    .collect()
            };
            let train_text = text_of(&splits[0]);
            let all_text: String = splits.iter().map(|s| text_of(s)).collect();
            let mut section = data.tokenizer.clone();
            for (i, special) in SPECIAL_TOKENS.iter().enumerate() {
                if !section.special_tokens.iter().any(|s| s == special) {
                    section.special_tokens.insert(i, special.to_string());
                }
            }
            TextTokenizer::build(&section, &train_text, &all_text)?
        }
    };

    prepared::begin(&dir)?;
    tokenizer.save(&tokenizer_path(&dir))?;
    for (split, examples) in Split::ALL.into_iter().zip(&splits) {
        let lines: String = examples
            .iter()
            .map(|e| serde_json::to_string(e).expect("serialises") + "\n")
            .collect();
        write_atomic(&examples_path(&dir, split), lines.as_bytes())?;
    }
    let json = serde_json::to_string_pretty(&labels).expect("labels serialise");
    write_atomic(&labels_path(&dir), json.as_bytes())?;
    let meta = LabelledMeta {
        fingerprint,
        format: data.format,
        labels,
        vocab_size: tokenizer.vocab_size(),
        counts: [splits[0].len(), splits[1].len(), splits[2].len()],
        alignment: alignment(recipe),
    };
    prepared::finish(&dir, meta)
}

pub fn load_examples(dir: &Path, split: Split) -> Result<Vec<Example>> {
    let path = examples_path(dir, split);
    let text = std::fs::read_to_string(&path).with_path("read", &path)?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::Data(format!("{}:{}: {e}; prepare again", path.display(), i + 1))
            })
        })
        .collect()
}

/// A labelled-data tokenizer and the ids of its special tokens.
pub fn load_tokenizer(path: &Path) -> Result<(TextTokenizer, Specials)> {
    let tokenizer = TextTokenizer::load(path)?;
    let specials = Specials::of(&tokenizer)?;
    Ok((tokenizer, specials))
}

/// The ids of BERT's special tokens in a tokenizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Specials {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

/// RoBERTa's names for BERT's special tokens, in [`SPECIAL_TOKENS`]' order: a RoBERTa
/// checkpoint's tokenizer has these instead.
const ROBERTA_SPECIAL_TOKENS: [&str; 5] = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"];

impl Specials {
    pub fn of(tokenizer: &TextTokenizer) -> Result<Self> {
        let names =
            if tokenizer.token_to_id("[CLS]").is_none() && tokenizer.token_to_id("<s>").is_some() {
                ROBERTA_SPECIAL_TOKENS
            } else {
                SPECIAL_TOKENS
            };
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                Error::Data(format!(
                    "the tokenizer has no `{t}` token; labelled data needs {} (or RoBERTa's {})",
                    SPECIAL_TOKENS.join(" "),
                    ROBERTA_SPECIAL_TOKENS.join(" ")
                ))
            })
        };
        Ok(Self {
            pad: id(names[0])?,
            unk: id(names[1])?,
            cls: id(names[2])?,
            sep: id(names[3])?,
            mask: id(names[4])?,
        })
    }

    pub fn contains(&self, id: u32) -> bool {
        [self.pad, self.unk, self.cls, self.sep, self.mask].contains(&id)
    }
}

/// A tagged sentence's tokens as the model's ids: token `i` is `ids[starts[i]..starts[i + 1]]`
/// (the last one runs to the end), never empty; its tag belongs to `ids[starts[i]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenIds {
    pub ids: Vec<u32>,
    pub starts: Vec<usize>,
}

impl TokenIds {
    /// The number of corpus tokens.
    pub fn tokens(&self) -> usize {
        self.starts.len()
    }

    /// The ids of token `i`.
    pub fn of(&self, i: usize) -> &[u32] {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.ids.len());
        &self.ids[self.starts[i]..end]
    }

    /// Per id: whether it is its token's first (HF's labels other than -100).
    pub fn first_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.ids.len()];
        for &s in &self.starts {
            mask[s] = true;
        }
        mask
    }

    /// Per-id values read back at each token's first id: one per corpus token.
    pub fn at_firsts<T: Clone>(&self, per_id: &[T]) -> Vec<T> {
        self.starts.iter().map(|&s| per_id[s].clone()).collect()
    }
}

/// The ids of a tagged sentence's tokens (see [`TokenAlignment`]); a token with no id of its own
/// (a control character the normaliser drops, say) is `[UNK]`, so no token loses its position.
pub fn encode_tokens(
    tokenizer: &TextTokenizer,
    tokens: &[String],
    unk: u32,
    alignment: TokenAlignment,
) -> Result<TokenIds> {
    let per_token: Vec<Vec<u32>> = match alignment {
        TokenAlignment::Whole => tokens
            .iter()
            .map(|t| {
                Ok(vec![match tokenizer.token_to_id(t) {
                    Some(id) => id,
                    None => match tokenizer.encode_lines(&[t.as_str()])?.as_slice() {
                        [ids] if ids.len() == 1 => ids[0],
                        _ => unk,
                    },
                }])
            })
            .collect::<Result<_>>()?,
        // Each token alone, without special tokens, as `run_ner`'s `is_split_into_words` does.
        TokenAlignment::FirstSubToken => {
            let lines: Vec<&str> = tokens.iter().map(String::as_str).collect();
            tokenizer.encode_lines(&lines)?
        }
    };
    let mut out = TokenIds {
        ids: Vec::with_capacity(per_token.iter().map(Vec::len).sum()),
        starts: Vec::with_capacity(tokens.len()),
    };
    for ids in per_token {
        out.starts.push(out.ids.len());
        if ids.is_empty() {
            out.ids.push(unk);
        } else {
            out.ids.extend(ids);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::bert_wordpiece;

    fn strings(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn tokens_go_to_their_sub_tokens_with_the_tag_on_the_first() {
        let t = bert_wordpiece(&["wash", "##ing", "##ton", "visit", "##ed", "in", "."]);
        let id = |s: &str| t.token_to_id(s).unwrap();
        let unk = id("[UNK]");
        // A zero-width space is dropped by BERT's normaliser: it still keeps its position.
        let tokens = strings(&["Washington", "visited", "\u{200b}", "in", "Oslo", "."]);
        let encoded = encode_tokens(&t, &tokens, unk, TokenAlignment::FirstSubToken).unwrap();
        let expected = [
            id("wash"),
            id("##ing"),
            id("##ton"),
            id("visit"),
            id("##ed"),
            unk,
            id("in"),
            unk,
            id("."),
        ];
        assert_eq!(encoded.ids, expected);
        assert_eq!(encoded.starts, [0, 3, 5, 6, 7, 8]);
        assert_eq!(encoded.tokens(), tokens.len());
        assert_eq!(encoded.of(1), [id("visit"), id("##ed")]);
        assert_eq!(
            encoded.first_mask(),
            [true, false, false, true, false, true, true, true, true]
        );
        // Back: a value per sub-token read at the firsts is one per corpus token.
        let per_id: Vec<usize> = (0..encoded.ids.len()).collect();
        assert_eq!(encoded.at_firsts(&per_id), [0, 3, 5, 6, 7, 8]);

        // One id per token, as before: a word the vocabulary splits is `[UNK]`.
        let whole = encode_tokens(&t, &tokens, unk, TokenAlignment::Whole).unwrap();
        assert_eq!(whole.ids, [unk, unk, unk, id("in"), unk, id(".")]);
        assert_eq!(whole.starts, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn meta_without_an_alignment_reads_as_one_id_per_token() {
        let old = r#"{"fingerprint": "x-labelled", "format": "tagging", "labels": ["O"],
            "vocab_size": 9, "counts": [1, 1, 1]}"#;
        let meta: LabelledMeta = serde_json::from_str(old).unwrap();
        assert_eq!(meta.alignment, TokenAlignment::Whole);
    }
}
