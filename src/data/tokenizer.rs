//! Tokenizers, all through HF `tokenizers`: char level, trained BPE / WordPiece / Unigram, any
//! existing `tokenizer.json`, or the one an HF folder's `vocab.txt` makes (`hf::tokenizer`).
//! Whatever the kind, the result is saved as `tokenizer.json`, so the experiment folder can load
//! it without knowing how it was made.

use crate::error::{Error, Result};
use crate::hf::tokenizer::TokenizerFiles;
use crate::recipe::{TokenizerKind, TokenizerSection};
use std::collections::BTreeSet;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder, Vocab};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{AddedToken, Tokenizer};

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Built here, by a kind whose pre-tokenizer splits before every space (see
    /// [`TextTokenizer::encode`]), so a long text may be encoded in pieces. A loaded
    /// `tokenizer.json` may normalise across such a cut (a `Prepend` normaliser adds its marker to
    /// each piece), so it encodes texts whole.
    splits_at_spaces: bool,
}

fn tk_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Data(format!("tokenizer: {what}: {e}"))
}

impl TextTokenizer {
    /// Build the recipe's tokenizer. Trained kinds learn from `train_text`; the char kind takes
    /// its alphabet from `all_text` (every split), as nanoGPT does, so no held-out character is
    /// unknown.
    pub fn build(section: &TokenizerSection, train_text: &str, all_text: &str) -> Result<Self> {
        let specials: Vec<AddedToken> = section
            .special_tokens
            .iter()
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        let vocab_size = section.vocab_size.unwrap_or(0);
        let mut tokenizer = match section.kind {
            TokenizerKind::Char => {
                let alphabet: BTreeSet<char> = all_text.chars().collect();
                let mut vocab: Vocab = alphabet
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.to_string(), i as u32))
                    .collect();
                // BPE with no merges is exactly a character vocabulary. With an `<unk>` or `[UNK]` special,
                // characters outside the alphabet become it instead of vanishing.
                let mut builder = BPE::builder();
                let unk = ["<unk>", "[UNK]"]
                    .into_iter()
                    .find(|u| section.special_tokens.iter().any(|t| t == u));
                if let Some(unk) = unk {
                    vocab.insert(unk.into(), vocab.len() as u32);
                    builder = builder.unk_token(unk.into());
                }
                let model = builder
                    .vocab_and_merges(vocab, vec![])
                    .build()
                    .map_err(|e| tk_error("building the char vocabulary", e))?;
                let mut t = Tokenizer::new(model);
                t.with_decoder(Some(Fuse::new()));
                t
            }
            TokenizerKind::Bpe => {
                let mut t = Tokenizer::new(BPE::default());
                t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
                t.with_decoder(Some(ByteLevelDecoder::default()));
                let trainer = BpeTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(section.min_frequency)
                    .special_tokens(specials.clone())
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .show_progress(false)
                    .build();
                train(&mut t, trainer.into(), train_text)?;
                t
            }
            TokenizerKind::Wordpiece => {
                let mut t = Tokenizer::new(WordPiece::default());
                t.with_pre_tokenizer(Some(BertPreTokenizer));
                t.with_decoder(Some(WordPieceDecoder::default()));
                let mut with_unk = specials.clone();
                if !section.special_tokens.iter().any(|s| s == "[UNK]") {
                    with_unk.insert(0, AddedToken::from("[UNK]", true));
                }
                let trainer = WordPieceTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(section.min_frequency)
                    .special_tokens(with_unk)
                    .show_progress(false)
                    .build();
                train(&mut t, trainer.into(), train_text)?;
                t
            }
            TokenizerKind::Unigram => {
                let mut t = Tokenizer::new(Unigram::default());
                // Never prepend a word marker: then encoding a text in pieces (see `encode`)
                // gives exactly the tokens of encoding it whole.
                let metaspace = Metaspace::new('\u{2581}', PrependScheme::Never, true);
                t.with_pre_tokenizer(Some(metaspace.clone()));
                t.with_decoder(Some(metaspace));
                let mut with_unk = specials.clone();
                with_unk.insert(0, AddedToken::from("<unk>", true));
                let trainer = UnigramTrainer::builder()
                    .vocab_size(vocab_size as u32)
                    .special_tokens(with_unk)
                    .unk_token(Some("<unk>".into()))
                    .show_progress(false)
                    .build()
                    .map_err(|e| tk_error("configuring the unigram trainer", e))?;
                train(&mut t, trainer.into(), train_text)?;
                t
            }
            TokenizerKind::Word => {
                // Every word of every split, sorted, then `<unk>` (as the char kind takes its
                // alphabet): a word vocabulary needs no training, and the task that reads it
                // decides which words are frequent enough to keep.
                let words: BTreeSet<&str> = all_text.split_whitespace().collect();
                let mut vocab: Vocab = words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w.to_string(), i as u32))
                    .collect();
                vocab.insert("<unk>".into(), vocab.len() as u32);
                let model = WordLevel::builder()
                    .vocab(vocab)
                    .unk_token("<unk>".into())
                    .build()
                    .map_err(|e| tk_error("building the word vocabulary", e))?;
                let mut t = Tokenizer::new(model);
                t.with_pre_tokenizer(Some(WhitespaceSplit));
                t
            }
            TokenizerKind::File => {
                let path = section.path.as_ref().expect("validated: file needs a path");
                return Self::load(path);
            }
        };
        if matches!(section.kind, TokenizerKind::Char | TokenizerKind::Word) && !specials.is_empty()
        {
            tokenizer.add_special_tokens(&specials);
        }
        Ok(Self {
            inner: tokenizer,
            splits_at_spaces: true,
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Data(format!(
                "tokenizer {} does not exist; check `data.tokenizer.path` or run \
                 `nlpkit prepare-data` first",
                path.display()
            )));
        }
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| tk_error(&format!("cannot load {}", path.display()), e))?;
        // nlpkit cuts and pads the ids itself. A saved tokenizer may pad or truncate every
        // encoding (all-MiniLM-L6-v2's pads to 128), which transformers switches off unless
        // asked; left on, every text would become 128 ids, padding included.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| tk_error(&format!("cannot load {}", path.display()), e))?;
        Ok(Self::from_hf(inner))
    }

    /// A tokenizer made by `tokenizers` elsewhere (an HF folder's `vocab.txt`), encoded whole
    /// like a loaded one.
    pub fn from_hf(inner: Tokenizer) -> Self {
        Self {
            inner,
            splits_at_spaces: false,
        }
    }

    /// A pretrained model's tokenizer: a saved one, or the one built from an HF folder's
    /// `vocab.txt`.
    pub fn load_pretrained(files: &TokenizerFiles) -> Result<Self> {
        match files {
            TokenizerFiles::Json(path) => Self::load(path),
            TokenizerFiles::Vocab(dir) => Ok(Self::from_hf(crate::hf::tokenizer::from_vocab(dir)?)),
        }
    }

    /// The `tokenizers` tokenizer, for tests comparing it with transformers'.
    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| tk_error("cannot serialise", e))?;
        crate::error::write_atomic(path, json.as_bytes())
    }

    /// Make encoding with special tokens wrap a text as BERT's inputs are (`[CLS] a [SEP]`,
    /// `[CLS] a [SEP] b [SEP]` with segment 1 for b), unless the tokenizer already has a
    /// post-processor: what nlpkit's data pipeline adds itself, written into the file for
    /// users of HF's tokenizers.
    pub fn wrap_like_bert(&mut self, cls: &str, sep: &str) -> Result<()> {
        if self.inner.get_post_processor().is_some() {
            return Ok(());
        }
        let id = |t: &str| {
            self.inner.token_to_id(t).ok_or_else(|| {
                Error::Data(format!(
                    "the tokenizer has no `{t}` token to wrap texts with"
                ))
            })
        };
        let (cls_id, sep_id) = (id(cls)?, id(sep)?);
        let template = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single(format!("{cls} $A {sep}"))
            .and_then(|b| b.try_pair(format!("{cls} $A {sep} $B:1 {sep}:1")))
            .map_err(|e| Error::Data(format!("cannot build the template: {e}")))?
            .special_tokens(vec![(cls, cls_id), (sep, sep_id)])
            .build()
            .map_err(|e| Error::Data(format!("cannot build the template: {e}")))?;
        self.inner.with_post_processor(Some(template));
        Ok(())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The vocabulary entry of `id` (`<id>` for an id outside the vocabulary).
    pub fn id_to_token(&self, id: u32) -> String {
        self.inner
            .id_to_token(id)
            .unwrap_or_else(|| format!("<{id}>"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encode sentences one by one (in parallel), without special tokens.
    pub fn encode_lines(&self, lines: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch_fast(lines.to_vec(), false)
            .map_err(|e| tk_error("encoding failed", e))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Decode ids to text, leaving out special tokens (padding, sentence marks, added ones).
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| tk_error("decoding failed", e))
    }

    /// Encode a long text: in pieces encoded in parallel where that gives the tokens of the
    /// whole text, whole otherwise.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let piece_bytes = if self.splits_at_spaces {
            64 * 1024
        } else {
            usize::MAX
        };
        self.encode_in_pieces(text, piece_bytes)
    }

    /// Pieces of about `piece_bytes` are cut just before a space that follows a non-space
    /// character: every pre-tokenizer we use (byte-level BPE's regex, Metaspace, BERT's
    /// whitespace split, char) splits there anyway, so the tokens equal those of the whole text.
    fn encode_in_pieces(&self, text: &str, piece_bytes: usize) -> Result<Vec<u32>> {
        let bytes = text.as_bytes();
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let from = start.saturating_add(piece_bytes).min(text.len());
            let cut = (from.max(start + 1)..text.len())
                .find(|&i| bytes[i] == b' ' && !bytes[i - 1].is_ascii_whitespace())
                .unwrap_or(text.len());
            pieces.push(&text[start..cut]);
            start = cut;
        }
        let encodings = self
            .inner
            .encode_batch_fast(pieces, false)
            .map_err(|e| tk_error("encoding failed", e))?;
        Ok(encodings
            .into_iter()
            .flat_map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Encode a prompt, refusing characters the vocabulary cannot represent instead of silently
    /// dropping them.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text)?;
        let round_trip = self.decode(&ids)?;
        if round_trip != text {
            let unknown: BTreeSet<char> =
                text.chars().filter(|c| !round_trip.contains(*c)).collect();
            if !unknown.is_empty() {
                return Err(Error::Usage(format!(
                    "the prompt has characters the tokenizer does not know: {:?}",
                    unknown.into_iter().collect::<String>()
                )));
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| tk_error("decoding failed", e))
    }
}

/// A BERT WordPiece tokenizer (lower-casing normaliser, BERT's pre-tokenizer and special
/// tokens) over `vocab`, laid out as HF's `tokenizer.json`, for tests of pretrained tokenizers.
#[cfg(test)]
pub(crate) fn bert_wordpiece(vocab: &[&str]) -> TextTokenizer {
    let specials = super::labelled::SPECIAL_TOKENS;
    let all: Vec<&str> = specials
        .iter()
        .copied()
        .chain(vocab.iter().copied())
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": specials.iter().enumerate().map(|(i, t)| serde_json::json!({
            "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        })).collect::<Vec<_>>(),
        "normalizer": {
            "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {
            "type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": all.iter().enumerate().map(|(i, t)| (t.to_string(), i.into())).collect::<serde_json::Map<_, _>>()
        }
    });
    TextTokenizer {
        inner: json.to_string().parse().expect("a tokenizer.json"),
        splits_at_spaces: false,
    }
}

fn train(tokenizer: &mut Tokenizer, mut trainer: TrainerWrapper, text: &str) -> Result<()> {
    tokenizer
        .train(&mut trainer, text.split_inclusive('\n'))
        .map_err(|e| tk_error("training failed", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(kind: TokenizerKind, vocab_size: Option<usize>) -> TokenizerSection {
        TokenizerSection {
            kind,
            vocab_size,
            path: None,
            min_frequency: 1,
            special_tokens: vec![],
        }
    }

    const TEXT: &str =
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n";

    #[test]
    fn char_tokenizer_round_trips_and_sorts_its_alphabet() {
        let t = TextTokenizer::build(&section(TokenizerKind::Char, None), TEXT, TEXT).unwrap();
        let ids = t.encode(TEXT).unwrap();
        assert_eq!(ids.len(), TEXT.chars().count());
        assert_eq!(t.decode(&ids).unwrap(), TEXT);
        // Sorted alphabet: '\n' (0x0a) is id 0, as in nanoGPT's meta.pkl.
        assert_eq!(t.encode("\n").unwrap(), vec![0]);
        assert!(t.encode_prompt("Z").is_err());
    }

    #[test]
    fn word_tokenizer_splits_at_whitespace_and_knows_every_word() {
        let t = TextTokenizer::build(&section(TokenizerKind::Word, None), TEXT, TEXT).unwrap();
        let ids = t.encode("hear me\tspeak.\n").unwrap();
        let words: Vec<String> = ids.iter().map(|&i| t.id_to_token(i)).collect();
        assert_eq!(words, ["hear", "me", "speak."]);
        assert_eq!(t.id_to_token(t.encode("Zounds").unwrap()[0]), "<unk>");
    }

    #[test]
    fn trained_tokenizers_round_trip() {
        for kind in [TokenizerKind::Bpe, TokenizerKind::Unigram] {
            let t = TextTokenizer::build(&section(kind, Some(300)), TEXT, TEXT).unwrap();
            let ids = t.encode(TEXT).unwrap();
            assert!(ids.len() < TEXT.len(), "{kind:?} should merge something");
            assert_eq!(t.decode(&ids).unwrap(), TEXT, "{kind:?}");
        }
    }

    #[test]
    fn encoding_in_pieces_equals_encoding_whole() {
        let text = TEXT.repeat(20);
        for kind in [
            TokenizerKind::Char,
            TokenizerKind::Bpe,
            TokenizerKind::Unigram,
            TokenizerKind::Word,
        ] {
            let t = TextTokenizer::build(&section(kind, Some(300)), &text, &text).unwrap();
            let whole = t.encode_in_pieces(&text, usize::MAX / 2).unwrap();
            assert_eq!(t.encode_in_pieces(&text, 50).unwrap(), whole, "{kind:?}");
            if kind != TokenizerKind::Word {
                assert_eq!(t.decode(&whole).unwrap(), text, "{kind:?}");
            }
        }
    }

    /// A `tokenizer.json` whose normaliser prepends a word marker (Llama/SentencePiece style):
    /// encoding it in pieces would put a marker at every piece, so it is encoded whole.
    #[test]
    fn a_loaded_tokenizer_with_a_prepend_normaliser_encodes_long_texts_whole() {
        use tokenizers::normalizers::prepend::Prepend;
        let text = "ab ba ".repeat(20_000); // 120 kB: more than one piece
        let vocab: Vocab = ["\u{2581}", "a", "b", " "]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let model = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .build()
            .unwrap();
        let mut inner = Tokenizer::new(model);
        inner.with_normalizer(Some(Prepend::new("\u{2581}".into())));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        inner.save(&path, false).unwrap();

        let loaded = TextTokenizer::load(&path).unwrap();
        let whole = inner
            .encode_fast(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(
            whole.iter().filter(|&&id| id == 0).count(),
            1,
            "one marker, at the start"
        );
        assert_eq!(loaded.encode(&text).unwrap(), whole);
    }

    #[test]
    fn saved_tokenizer_loads_identically() {
        let dir = tempfile::tempdir().unwrap();
        let t = TextTokenizer::build(&section(TokenizerKind::Bpe, Some(300)), TEXT, TEXT).unwrap();
        let path = dir.path().join("tokenizer.json");
        t.save(&path).unwrap();
        let loaded = TextTokenizer::load(&path).unwrap();
        assert_eq!(loaded.encode(TEXT).unwrap(), t.encode(TEXT).unwrap());
    }
}
