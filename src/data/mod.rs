//! Data: reading raw text, splitting it, tokenizing it with HF `tokenizers`, storing token
//! streams compactly, and cutting training windows from them.

pub mod batching;
pub mod embedding_corpus;
pub mod labelled;
pub mod lm_batches;
pub mod pair_batches;
pub mod parallel;
pub mod plain_text;
pub mod prepared;
pub mod pretraining;
pub mod split;
pub mod table;
pub mod tagging;
pub mod text;
pub mod token_batches;
pub mod token_file;
pub mod tokenizer;

/// The three splits every task knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    pub fn parse(name: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|s| s.name() == name)
    }
}
