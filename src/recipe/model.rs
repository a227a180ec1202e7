//! The `model:` section and the task it decides. Each model's options type lives in its own
//! file in `models/` and answers for itself through [`ModelOptions`]: its name, the task it
//! trains for, its defaults, its checks and the sizes it takes from the data. The matches below
//! are the only places that list the model types (a test checks that `read_options` knows each
//! one).

use super::DataFormat;
use crate::error::Result;
use crate::models::{
    bert, gpt2, nnlm, rnn_classifier, rnn_lm, rnn_seq2seq, textcnn, transformer_seq2seq,
    transformer_xl,
};
use crate::models::{glove, word2vec};
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ModelSection {
    Gpt2(gpt2::Gpt2Options),
    RnnSeq2seq(rnn_seq2seq::RnnSeq2SeqOptions),
    TransformerSeq2seq(transformer_seq2seq::TransformerSeq2SeqOptions),
    Cnn(textcnn::TextCnnOptions),
    Rnn(rnn_classifier::RnnClassifierOptions),
    Bert(bert::BertOptions),
    RnnLm(rnn_lm::RnnLmOptions),
    Nnlm(nnlm::NnlmOptions),
    TransformerXl(transformer_xl::TransformerXlOptions),
    Word2vec(word2vec::Word2VecOptions),
    Glove(glove::GloveOptions),
}

impl ModelSection {
    pub fn options(&self) -> &dyn ModelOptions {
        match self {
            ModelSection::Gpt2(o) => o,
            ModelSection::RnnLm(o) => o,
            ModelSection::Nnlm(o) => o,
            ModelSection::RnnSeq2seq(o) => o,
            ModelSection::TransformerSeq2seq(o) => o,
            ModelSection::Cnn(o) => o,
            ModelSection::Rnn(o) => o,
            ModelSection::Bert(o) => o,
            ModelSection::TransformerXl(o) => o,
            ModelSection::Word2vec(o) => o,
            ModelSection::Glove(o) => o,
        }
    }

    pub fn options_mut(&mut self) -> &mut dyn ModelOptions {
        match self {
            ModelSection::Gpt2(o) => o,
            ModelSection::RnnLm(o) => o,
            ModelSection::Nnlm(o) => o,
            ModelSection::RnnSeq2seq(o) => o,
            ModelSection::TransformerSeq2seq(o) => o,
            ModelSection::Cnn(o) => o,
            ModelSection::Rnn(o) => o,
            ModelSection::Bert(o) => o,
            ModelSection::TransformerXl(o) => o,
            ModelSection::Word2vec(o) => o,
            ModelSection::Glove(o) => o,
        }
    }

    /// `model.type`.
    pub fn name(&self) -> &'static str {
        self.options().name()
    }

    /// The section of model type `name` read from `d`, a mapping of that model's options
    /// without the `type` key; `None` for an unknown type. serde reads `model:` through a
    /// buffer (it must find `type:` first), which loses where each value is written; read
    /// directly, a wrong value's error has its position (src/recipe/load.rs).
    pub(super) fn read_options<'de, D: Deserializer<'de>>(
        name: &str,
        d: D,
    ) -> Option<std::result::Result<Self, D::Error>> {
        Some(match name {
            "gpt2" => Deserialize::deserialize(d).map(ModelSection::Gpt2),
            "rnn_lm" => Deserialize::deserialize(d).map(ModelSection::RnnLm),
            "nnlm" => Deserialize::deserialize(d).map(ModelSection::Nnlm),
            "rnn_seq2seq" => Deserialize::deserialize(d).map(ModelSection::RnnSeq2seq),
            "transformer_seq2seq" => {
                Deserialize::deserialize(d).map(ModelSection::TransformerSeq2seq)
            }
            "cnn" => Deserialize::deserialize(d).map(ModelSection::Cnn),
            "rnn" => Deserialize::deserialize(d).map(ModelSection::Rnn),
            "bert" => Deserialize::deserialize(d).map(ModelSection::Bert),
            "transformer_xl" => Deserialize::deserialize(d).map(ModelSection::TransformerXl),
            "word2vec" => Deserialize::deserialize(d).map(ModelSection::Word2vec),
            "glove" => Deserialize::deserialize(d).map(ModelSection::Glove),
            _ => return None,
        })
    }
}

/// `model.type`'s values, in the order `ModelSection` declares them: serde's own list, which
/// it gives with an unknown type.
pub(super) fn model_types() -> Vec<&'static str> {
    match serde_saphyr::from_str::<ModelSection>("type: ''") {
        Err(e) => match e.without_snippet() {
            serde_saphyr::Error::SerdeUnknownVariant { expected, .. } => expected.clone(),
            _ => Vec::new(),
        },
        Ok(_) => Vec::new(),
    }
}

/// Reads `model:` as a mapping only (`#[serde(deserialize_with)]` on `Recipe::model`): serde's
/// internally tagged form also takes a list, the type followed by the options in declaration
/// order, so `model: [gpt2]` would pass as gpt2 with its defaults.
pub(super) fn deserialize_mapping<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<ModelSection, D::Error> {
    struct Mapping;

    impl<'de> Visitor<'de> for Mapping {
        type Value = ModelSection;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping with the model's `type` and options")
        }

        fn visit_map<A: MapAccess<'de>>(
            self,
            map: A,
        ) -> std::result::Result<ModelSection, A::Error> {
            ModelSection::deserialize(MapAccessDeserializer::new(map))
        }
    }

    d.deserialize_map(Mapping)
}

/// What every model's options tell the recipe about the model.
pub trait ModelOptions {
    /// `model.type`, as the recipe spells it.
    fn name(&self) -> &'static str;

    /// The model with the option that picks its task, for messages (BERT: with its head).
    fn title(&self) -> String {
        self.name().to_string()
    }

    /// The task this model trains for.
    fn task(&self) -> TaskKind;

    /// Fill presets and defaults, so the resolved recipe states every value.
    fn resolve(&mut self) -> Result<()> {
        Ok(())
    }

    /// Ranges and relations serde cannot check, one message per problem, starting with its key
    /// path in backticks (src/recipe/validate.rs).
    fn validate(&self, problems: &mut Vec<String>);

    /// Take the sizes the prepared data fixes (vocabularies, labels), checking any the recipe
    /// gives; `train` writes them into the resolved recipe, so the trained model can be rebuilt
    /// from the experiment folder alone.
    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()>;
}

/// What a model is trained to do. Decided by the model section (BERT by its head); the data
/// format must be one the task reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    LanguageModel,
    Translation,
    Classification,
    Tagging,
    Pretraining,
    /// Static word vectors (word2vec, GloVe) from plain text.
    WordEmbeddings,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::LanguageModel => "language modelling",
            TaskKind::Translation => "translation",
            TaskKind::Classification => "classification",
            TaskKind::Tagging => "tagging",
            TaskKind::Pretraining => "pretraining",
            TaskKind::WordEmbeddings => "word embeddings",
        }
    }

    /// The data formats the task reads.
    pub fn formats(self) -> &'static [DataFormat] {
        match self {
            TaskKind::LanguageModel => &[DataFormat::Text],
            TaskKind::Translation => &[DataFormat::Parallel],
            TaskKind::Classification => &[DataFormat::Csv],
            TaskKind::Tagging => &[DataFormat::Tagging],
            TaskKind::Pretraining => &[DataFormat::Text, DataFormat::Csv, DataFormat::Tagging],
            TaskKind::WordEmbeddings => &[DataFormat::Text],
        }
    }
}

/// What the prepared data fixes about a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSizes {
    /// The tokenizer's vocabulary (translation: the source side's).
    pub vocab: usize,
    /// The target side's vocabulary (the same as `vocab` but for translation with two
    /// tokenizers).
    pub target_vocab: usize,
    /// Classification and tagging: the labels or tags in id order (empty for the other tasks).
    pub labels: Vec<String>,
}

/// The recipe's vocabulary size if given (it must hold the tokenizer's), else the tokenizer's.
pub fn vocab_at_least(given: Option<usize>, tokenizer: usize, key: &str) -> Result<usize> {
    let size = given.unwrap_or(tokenizer);
    if size < tokenizer {
        return Err(crate::error::Error::Recipe(format!(
            "`model.{key}` ({size}) is smaller than the tokenizer's vocabulary ({tokenizer}); \
             remove it to use the tokenizer's size"
        )));
    }
    Ok(size)
}

/// A problem for each `model.<key>` among `values` that is 0.
pub fn require_positive(problems: &mut Vec<String>, values: &[(&str, usize)]) {
    for (key, value) in values {
        if *value == 0 {
            problems.push(format!("`model.{key}` must be at least 1"));
        }
    }
}

/// A problem unless `model.<width_key>` splits evenly into `n_head` attention heads (none when
/// `n_head` is 0: `require_positive` reports that).
pub fn require_heads_divide(
    problems: &mut Vec<String>,
    width_key: &str,
    width: usize,
    n_head: usize,
) {
    if n_head > 0 && !width.is_multiple_of(n_head) {
        problems.push(format!(
            "`model.{width_key}` ({width}) must be a multiple of `model.n_head` ({n_head})"
        ));
    }
}

/// A problem unless `model.dropout` is a probability below 1.
pub fn require_dropout(problems: &mut Vec<String>, dropout: f64) {
    if !(0.0..1.0).contains(&dropout) {
        problems.push(format!("`model.dropout` must be in [0, 1), got {dropout}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error, MapDeserializer};

    #[test]
    fn every_model_type_is_read_directly() {
        let types = model_types();
        assert!(
            types.contains(&"gpt2") && types.contains(&"bert"),
            "{types:?}"
        );
        for name in types {
            let empty = MapDeserializer::<_, Error>::new(std::iter::empty::<(&str, &str)>());
            match ModelSection::read_options(name, empty) {
                None => panic!("`read_options` lacks `{name}`"),
                Some(Ok(section)) => assert_eq!(section.name(), name),
                // A model with a required option.
                Some(Err(_)) => {}
            }
        }
    }
}
