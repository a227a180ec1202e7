//! HF BERT checkpoints (`BertModel`, `BertForPreTraining`, `BertForMaskedLM`,
//! `BertForSequenceClassification`, `BertForTokenClassification`), and RoBERTa's and ALBERT's
//! (`RobertaModel`, `RobertaForMaskedLM`, `RobertaForSequenceClassification`,
//! `RobertaForTokenClassification`; `AlbertModel`, `AlbertForPreTraining`, `AlbertForMaskedLM`,
//! `AlbertForSequenceClassification`, `AlbertForTokenClassification`) as nlpkit's BERT; BERT
//! back again.

use super::layout::{self, Rule};
use super::{Exported, HfTensor, Imported};
use crate::error::{Error, Result};
use crate::models::activation::Activation;
use crate::models::bert::{BertHead, BertOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The HF architectures nlpkit's BERT computes. They differ in names and a few options: RoBERTa
/// in its position ids and one segment, ALBERT in its factorised embedding and shared layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Bert,
    Roberta,
    Albert,
}

impl Family {
    fn of(config: &Value) -> Option<Self> {
        match config.get("model_type").and_then(Value::as_str)? {
            "bert" => Some(Family::Bert),
            "roberta" => Some(Family::Roberta),
            "albert" => Some(Family::Albert),
            _ => None,
        }
    }

    /// Where the encoder sits in the task classes (`BertModel` and kin saved alone: nowhere).
    fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert.",
            Family::Roberta => "roberta.",
            Family::Albert => "albert.",
        }
    }
}

/// The encoder's shape from `config.json`; a field that would make nlpkit compute something
/// other than transformers does is refused, naming it.
pub fn options(config: &Value, dir: &Path) -> Result<BertOptions> {
    let fields = super::ConfigFields::new(config, dir);
    let refuse = |field: &str, why: String| fields.refuse(field, why);
    let text = |field: &str| fields.text(field);
    let size = |field: &str| fields.size(field);
    let Some(family) = Family::of(config) else {
        return Err(refuse(
            "model_type",
            format!(
                "is {}; a bert recipe imports `bert`, `roberta` and `albert` checkpoints",
                text("model_type").map_or("missing".to_string(), |t| format!("`{t}`"))
            ),
        ));
    };
    let act = text("hidden_act").unwrap_or(if family == Family::Albert {
        "gelu_new"
    } else {
        "gelu"
    });
    let activation = Activation::from_hf_name(act).ok_or_else(|| {
        refuse(
            "hidden_act",
            format!("is `{act}`; nlpkit's BERT has `gelu` and `gelu_new`"),
        )
    })?;
    if let Some(kind) = text("position_embedding_type").filter(|k| *k != "absolute") {
        return Err(refuse(
            "position_embedding_type",
            format!("is `{kind}`; nlpkit's BERT has absolute position embeddings only"),
        ));
    }
    for flag in ["is_decoder", "add_cross_attention"] {
        if config.get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(refuse(
                flag,
                "is true; only encoder checkpoints are imported".into(),
            ));
        }
    }
    let (width, heads) = (size("hidden_size")?, size("num_attention_heads")?);
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(refuse(
            "num_attention_heads",
            format!("({heads}) does not divide `hidden_size` ({width})"),
        ));
    }
    let embedding_size = match family {
        Family::Albert => {
            for field in ["num_hidden_groups", "inner_group_num"] {
                if let Some(n) = config
                    .get(field)
                    .and_then(Value::as_u64)
                    .filter(|n| *n != 1)
                {
                    return Err(refuse(
                        field,
                        format!("is {n}; nlpkit's ALBERT shares one layer across all"),
                    ));
                }
            }
            let e = size("embedding_size")?;
            if e == width {
                return Err(refuse(
                    "embedding_size",
                    format!(
                        "equals `hidden_size` ({width}); nlpkit projects ALBERT's embedding only \
                         when it is smaller"
                    ),
                ));
            }
            e
        }
        _ => width,
    };
    // RoBERTa numbers positions from after the padding id.
    let position_offset = match family {
        Family::Roberta => {
            config
                .get("pad_token_id")
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize
                + 1
        }
        _ => 0,
    };
    let positions = size("max_position_embeddings")?;
    if positions <= position_offset {
        return Err(refuse(
            "max_position_embeddings",
            format!("({positions}) leaves no positions after the padding id"),
        ));
    }
    let segments = size("type_vocab_size")?;
    if segments == 0 {
        return Err(refuse("type_vocab_size", "is 0".into()));
    }
    Ok(BertOptions {
        n_layer: Some(size("num_hidden_layers")?),
        n_head: Some(heads),
        width: Some(width),
        ffn_width: Some(size("intermediate_size")?),
        embedding_size: Some(embedding_size),
        share_layers: Some(family == Family::Albert),
        max_len: Some(positions - position_offset),
        vocab_size: Some(size("vocab_size")?),
        dropout: config.get("hidden_dropout_prob").and_then(Value::as_f64),
        activation: Some(activation),
        layer_norm_eps: Some(
            config
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-12),
        ),
        segments: Some(segments),
        position_offset: Some(position_offset),
        ..BertOptions::default()
    })
}

/// The rules for the encoder: HF's tensors under `hf` (the family's prefix in the task classes,
/// nothing in a base model saved alone) as nlpkit's `bert.*`; with or without the pooler, which
/// HF's masked-LM and token-classification classes do not have.
fn encoder_rules(family: Family, hf: &str, n_layer: usize, pooler: bool) -> Vec<Rule> {
    let mut rules = vec![
        Rule::same(
            format!("{hf}embeddings.word_embeddings.weight"),
            "bert.tokens.weight",
        ),
        Rule::same(
            format!("{hf}embeddings.position_embeddings.weight"),
            "bert.positions.weight",
        ),
        Rule::same(
            format!("{hf}embeddings.token_type_embeddings.weight"),
            "bert.segments.weight",
        ),
    ];
    layout::layer_norm(
        &mut rules,
        &format!("{hf}embeddings.LayerNorm"),
        "bert.embedding_norm",
    );
    // ALBERT's one shared layer, or BERT's and RoBERTa's layers: the same tensors under other
    // names.
    let (layers, names, pooler_name) = if family == Family::Albert {
        layout::linear(
            &mut rules,
            &format!("{hf}encoder.embedding_hidden_mapping_in"),
            "bert.embedding_projection",
        );
        let theirs = format!("{hf}encoder.albert_layer_groups.0.albert_layers.0");
        (vec![(theirs, 0)], &ALBERT_LAYER, "pooler")
    } else {
        let layers = (0..n_layer)
            .map(|layer| (format!("{hf}encoder.layer.{layer}"), layer))
            .collect();
        (layers, &BERT_LAYER, "pooler.dense")
    };
    for (theirs, layer) in layers {
        let ours = format!("bert.encoder.layers.{layer}");
        push_fused_qkv(&mut rules, &format!("{theirs}.{}", names.attention), &ours);
        let linears = [
            (names.out, "out"),
            (names.ffn_in, "ffn_in"),
            (names.ffn_out, "ffn_out"),
        ];
        for (hf_name, mine) in linears {
            layout::linear(
                &mut rules,
                &format!("{theirs}.{hf_name}"),
                &format!("{ours}.{mine}"),
            );
        }
        for (hf_name, mine) in [(names.norm_1, "norm_1"), (names.norm_2, "norm_2")] {
            layout::layer_norm(
                &mut rules,
                &format!("{theirs}.{hf_name}"),
                &format!("{ours}.{mine}"),
            );
        }
    }
    if pooler {
        layout::linear(&mut rules, &format!("{hf}{pooler_name}"), "bert.pooler");
    }
    rules
}

/// HF's names, within one layer, of what nlpkit's encoder layer holds.
struct LayerNames {
    /// Where `query`, `key` and `value` are.
    attention: &'static str,
    out: &'static str,
    ffn_in: &'static str,
    ffn_out: &'static str,
    norm_1: &'static str,
    norm_2: &'static str,
}

const BERT_LAYER: LayerNames = LayerNames {
    attention: "attention.self",
    out: "attention.output.dense",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    norm_1: "attention.output.LayerNorm",
    norm_2: "output.LayerNorm",
};

const ALBERT_LAYER: LayerNames = LayerNames {
    attention: "attention",
    out: "attention.dense",
    ffn_in: "ffn",
    ffn_out: "ffn_output",
    norm_1: "attention.LayerNorm",
    norm_2: "full_layer_layer_norm",
};

/// HF's `query`, `key` and `value` under `attention` as the fused projection of layer `ours`.
fn push_fused_qkv(rules: &mut Vec<Rule>, attention: &str, ours: &str) {
    for (part, weight) in [("weight", true), ("bias", false)] {
        rules.push(Rule::Fused {
            hf: ["query", "key", "value"].map(|p| format!("{attention}.{p}.{part}")),
            ours: format!("{ours}.qkv.{part}"),
            weight,
        });
    }
}

/// The rules for a head, by HF's names in the family's pretraining, masked-LM and
/// classification classes.
fn head_rules(family: Family, options: &BertOptions) -> Vec<Rule> {
    let mut rules = Vec::new();
    match (options.head, family) {
        (BertHead::Pretraining, Family::Bert) => {
            layout::linear(&mut rules, "cls.predictions.transform.dense", "mlm_dense");
            layout::layer_norm(
                &mut rules,
                "cls.predictions.transform.LayerNorm",
                "mlm_norm",
            );
            rules.push(Rule::same("cls.predictions.bias", "mlm_bias"));
            if options.next_sentence.loss_name().is_some() {
                layout::linear(&mut rules, "cls.seq_relationship", "sentence_head");
            }
        }
        (BertHead::Pretraining, Family::Roberta) => {
            layout::linear(&mut rules, "lm_head.dense", "mlm_dense");
            layout::layer_norm(&mut rules, "lm_head.layer_norm", "mlm_norm");
            rules.push(Rule::same("lm_head.bias", "mlm_bias"));
        }
        (BertHead::Pretraining, Family::Albert) => {
            layout::linear(&mut rules, "predictions.dense", "mlm_dense");
            layout::layer_norm(&mut rules, "predictions.LayerNorm", "mlm_norm");
            rules.push(Rule::same("predictions.bias", "mlm_bias"));
            if options.next_sentence.loss_name().is_some() {
                layout::linear(&mut rules, "sop_classifier.classifier", "sentence_head");
            }
        }
        // RoBERTa's classification head is dense + tanh on `<s>`, then a projection: BERT's
        // pooler and classifier under other names.
        (BertHead::SequenceClassification, Family::Roberta) => {
            layout::linear(&mut rules, "classifier.dense", "bert.pooler");
            layout::linear(&mut rules, "classifier.out_proj", "classifier");
        }
        (BertHead::SequenceClassification | BertHead::TokenClassification, _) => {
            layout::linear(&mut rules, "classifier", "classifier");
        }
    }
    rules
}

/// An HF BERT, RoBERTa or ALBERT folder's tensors for the nlpkit model `options` describes
/// (resolved, with its sizes recorded): the encoder always; the head when the checkpoint has one
/// that computes what the model's does: a pretraining head for pretraining, a classifier whose
/// `id2label` names the data's labels in the same order for classification or tagging. The rest
/// is left to the model's initialisation and listed.
pub fn import(dir: &Path, options: &BertOptions) -> Result<Imported> {
    let config = super::read_config(dir)?;
    let family = Family::of(&config).ok_or_else(|| {
        Error::Data(format!(
            "{}: not a BERT, RoBERTa or ALBERT config",
            dir.display()
        ))
    })?;
    let weights = super::read_weights(dir)?;
    let prefix = family.prefix();
    let hf = if weights.contains_key(&format!("{prefix}embeddings.word_embeddings.weight")) {
        prefix
    } else {
        ""
    };
    let n_layer = options.n_layer.expect("resolved");
    let mut rules = encoder_rules(family, hf, n_layer, true);
    let mut notes = Vec::new();
    match options.head {
        BertHead::Pretraining => rules.extend(head_rules(family, options)),
        BertHead::SequenceClassification | BertHead::TokenClassification => {
            let theirs = hf_labels(&config);
            let ours = options.labels.clone().unwrap_or_default();
            if theirs == ours {
                rules.extend(head_rules(family, options));
            } else if weights.keys().any(|n| n.starts_with("classifier.")) {
                notes.push(format!(
                    "the checkpoint's classifier is for the labels [{}], the data's are [{}]: a \
                     new one is trained",
                    theirs.join(", "),
                    ours.join(", ")
                ));
            }
        }
    }
    let (mut tensors, unused) = layout::import(&rules, weights)
        .map_err(|e| Error::Data(format!("{}: {e}", dir.display())))?;
    let rows = options.position_offset.unwrap_or(0) + options.max_len.expect("resolved");
    super::keep_rows(&mut tensors, "bert.positions.weight", rows);
    // Buffers (0..max_len, a token-type row) and decoder copies tied to the word embeddings:
    // transformers ignores them too.
    let derived = |n: &str| {
        n.ends_with("embeddings.position_ids")
            || n.ends_with("embeddings.token_type_ids")
            || n.contains("predictions.decoder.")
            || n.starts_with("lm_head.decoder.")
    };
    Ok(Imported {
        tensors,
        unused: unused.into_iter().filter(|n| !derived(n)).collect(),
        notes,
        required: |name| name.starts_with("bert.") && !name.starts_with("bert.pooler."),
    })
}

/// The labels in id order of an HF config's `id2label` (empty when it has none).
fn hf_labels(config: &Value) -> Vec<String> {
    let Some(map) = config.get("id2label").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut labels: Vec<(u64, String)> = map
        .iter()
        .filter_map(|(id, label)| Some((id.parse().ok()?, label.as_str()?.to_string())))
        .collect();
    labels.sort();
    labels.into_iter().map(|(_, label)| label).collect()
}

/// What `nlpkit export` writes for a BERT experiment: `config.json`, the tensors under HF's
/// names for the HF class that computes what the model does, and the tensors HF has no place
/// for (a CRF's transitions), under nlpkit's names.
pub fn export(
    options: &BertOptions,
    ours: &BTreeMap<String, HfTensor>,
    pad: u32,
) -> Result<Exported> {
    if options.share_layers == Some(true)
        || options.embedding_size != options.width
        || options.position_offset.unwrap_or(0) != 0
    {
        return Err(Error::Usage(
            "the model shares its layers, factorises its embedding (ALBERT's options) or numbers \
             positions after the padding id (RoBERTa's), which HF's BERT classes cannot hold; \
             nlpkit exports BERT-shaped models so far"
                .into(),
        ));
    }
    let (class, pooler) = match options.head {
        BertHead::Pretraining if options.next_sentence.loss_name().is_some() => {
            ("BertForPreTraining", true)
        }
        BertHead::Pretraining => ("BertForMaskedLM", false),
        BertHead::SequenceClassification => ("BertForSequenceClassification", true),
        BertHead::TokenClassification => ("BertForTokenClassification", false),
    };
    let n_layer = options.n_layer.expect("resolved");
    let mut rules = encoder_rules(Family::Bert, "bert.", n_layer, pooler);
    rules.extend(head_rules(Family::Bert, options));
    let tensors = layout::export(&rules, ours)?;
    let taken: std::collections::BTreeSet<&str> = rules.iter().map(Rule::ours_name).collect();
    let extra: BTreeMap<String, HfTensor> = ours
        .iter()
        .filter(|(name, _)| name.starts_with("crf."))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let left: Vec<&str> = ours
        .keys()
        .map(String::as_str)
        .filter(|n| !taken.contains(n) && !extra.contains_key(*n))
        .collect();
    let dropout = options.dropout.unwrap_or(0.1);
    let width = options.width.expect("resolved");
    let mut config = serde_json::json!({
        "architectures": [class],
        "model_type": "bert",
        "vocab_size": options.vocab_size,
        "hidden_size": width,
        "num_hidden_layers": n_layer,
        "num_attention_heads": options.n_head,
        "intermediate_size": options.ffn_width,
        "hidden_act": options.activation.unwrap_or_default().hf_name(),
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        "max_position_embeddings": options.max_len,
        "type_vocab_size": options.segments.unwrap_or(2),
        "initializer_range": 0.02,
        "layer_norm_eps": options.layer_norm_eps.unwrap_or(1e-12),
        "pad_token_id": pad,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": true,
        "dtype": "float32",
    });
    if let Some(labels) = options
        .labels
        .as_ref()
        .filter(|_| options.head != BertHead::Pretraining)
    {
        config["id2label"] = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), Value::from(l.as_str())))
            .collect::<serde_json::Map<_, _>>()
            .into();
        config["label2id"] = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), Value::from(i)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    Ok(Exported {
        config,
        tensors,
        extra,
        left_out: left.into_iter().map(String::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::test_support::{expected, fixture, floats, int_rows, largest_difference};
    use crate::models::bert::{BertInput, NextSentence};
    use crate::recipe::ModelOptions;
    use crate::train::pretrained::Pretrained;
    use burn::prelude::*;

    /// nlpkit's classifier for the BERT folder `dir`, its weights imported; the labels are the
    /// config's (a `BertModel` without any gets two, and a new head).
    fn imported_classifier(dir: &Path) -> crate::models::bert::BertClassifier {
        let config = crate::hf::read_config(dir).unwrap();
        let mut options = options(&config, dir).unwrap();
        options.head = BertHead::SequenceClassification;
        options.resolve().unwrap();
        let labels = hf_labels(&config);
        options.labels = Some(if labels.is_empty() {
            vec!["a".into(), "b".into()]
        } else {
            labels
        });
        let model = options.config().unwrap().init_classifier(&Device::flex());
        let section = crate::recipe::ModelSection::Bert(options);
        Pretrained::hf_folder(dir, section)
            .load_into(model)
            .unwrap()
    }

    /// The largest differences between nlpkit's hidden states, pooled output and (for a
    /// classifier) logits and those transformers computed (`expected.json` in `dir`, from
    /// tests/fixtures/make_hf_fixtures.py) for the BERT folder `dir`.
    fn differences_from_transformers(dir: &Path) -> (f32, Option<f32>, Option<f32>) {
        let expected = expected(dir);
        let model = imported_classifier(dir);
        let device = Device::flex();
        let (ids, mask) = (
            int_rows(&expected, "input_ids", &device),
            int_rows(&expected, "attention_mask", &device),
        );
        let [batch, time] = ids.dims();
        let padding = mask.equal_elem(0);
        assert!(
            padding.clone().any().into_scalar::<bool>(),
            "the batch has padding"
        );
        let input = || BertInput {
            ids: ids.clone(),
            segments: ids.zeros_like(),
            padding: padding.clone(),
        };
        let hidden = model.bert.forward(input());
        let width = hidden.dims()[2];
        let pooled = model.bert.pool(hidden.clone());
        let hidden = hidden.reshape([batch * time, width]);
        let logits = expected
            .get("logits")
            .map(|l| largest_difference(model.forward(input()), &floats(l)));
        (
            largest_difference(hidden, &floats(&expected["last_hidden_state"])),
            expected
                .get("pooler_output")
                .map(|p| largest_difference(pooled, &floats(p))),
            logits,
        )
    }

    /// transformers' BERT classifier with random weights of an unusual shape, a padded batch:
    /// nlpkit's hidden states, pooled output and logits (the head imported: its labels are the
    /// data's) equal transformers'.
    #[test]
    fn an_imported_classifier_computes_what_transformers_computes() {
        let (hidden, pooled, logits) = differences_from_transformers(&fixture("bert_tiny_cls"));
        let (pooled, logits) = (
            pooled.unwrap(),
            logits.expect("the fixture is a classifier"),
        );
        println!("hidden states within {hidden:e}, pooled {pooled:e}, logits {logits:e}");
        assert!(hidden < 1e-4, "hidden states differ by {hidden}");
        assert!(pooled < 1e-4, "pooled outputs differ by {pooled}");
        assert!(logits < 1e-4, "logits differ by {logits}");
    }

    /// RoBERTa: positions numbered after the padding id, one segment, LayerNorm epsilon 1e-5,
    /// and its classification head as BERT's pooler and classifier.
    #[test]
    fn an_imported_roberta_classifier_computes_what_transformers_computes() {
        let dir = fixture("roberta_tiny_cls");
        let (hidden, _, logits) = differences_from_transformers(&dir);
        let logits = logits.expect("the fixture is a classifier");
        println!("RoBERTa: hidden states within {hidden:e}, logits {logits:e}");
        assert!(hidden < 1e-4, "hidden states differ by {hidden}");
        assert!(logits < 1e-4, "logits differ by {logits}");
        let options = options(&crate::hf::read_config(&dir).unwrap(), &dir).unwrap();
        assert_eq!(
            (options.position_offset, options.max_len),
            (Some(2), Some(18))
        );
    }

    /// ALBERT: the factorised embedding projected up, one layer shared by all, `gelu_new`.
    #[test]
    fn an_imported_albert_computes_what_transformers_computes() {
        let dir = fixture("albert_tiny");
        let (hidden, pooled, _) = differences_from_transformers(&dir);
        let pooled = pooled.unwrap();
        println!("ALBERT: hidden states within {hidden:e}, pooled {pooled:e}");
        assert!(hidden < 1e-4, "hidden states differ by {hidden}");
        assert!(pooled < 1e-4, "pooled outputs differ by {pooled}");
    }

    /// The largest differences between nlpkit's masked-LM logits (at every position) and
    /// sentence-pair logits and transformers' for the pretraining folder `dir`.
    fn pretraining_differences(dir: &Path, next_sentence: NextSentence) -> (f32, f32) {
        let expected = expected(dir);
        let mut options = options(&crate::hf::read_config(dir).unwrap(), dir).unwrap();
        options.next_sentence = next_sentence;
        options.resolve().unwrap();
        let device = Device::flex();
        let model = options.config().unwrap().init_pretraining(0, &device);
        let section = crate::recipe::ModelSection::Bert(options);
        let model = Pretrained::hf_folder(dir, section)
            .load_into(model)
            .unwrap();
        let ids = int_rows(&expected, "input_ids", &device);
        let padding = int_rows(&expected, "attention_mask", &device).equal_elem(0);
        let [batch, time] = ids.dims();
        let every = Tensor::<1, Int>::arange(0..(batch * time) as i64, &device);
        let input = BertInput {
            segments: ids.zeros_like(),
            ids,
            padding,
        };
        let (mlm, sentence) = model.forward(input, every);
        (
            largest_difference(mlm, &floats(&expected["prediction_logits"])),
            largest_difference(sentence.unwrap(), &floats(&expected["sentence_logits"])),
        )
    }

    /// BERT's and ALBERT's pretraining heads (masked LM tied to the embedding; next-sentence or
    /// sentence-order) compute what transformers' do.
    #[test]
    fn imported_pretraining_heads_compute_what_transformers_computes() {
        for (name, next_sentence) in [
            ("bert_tiny_pretraining", NextSentence::Nsp),
            ("albert_tiny", NextSentence::Sop),
        ] {
            let (mlm, sentence) = pretraining_differences(&fixture(name), next_sentence);
            println!("{name}: masked-LM logits within {mlm:e}, sentence logits {sentence:e}");
            assert!(mlm < 1e-4, "{name}: masked-LM logits differ by {mlm}");
            assert!(
                sentence < 1e-4,
                "{name}: sentence logits differ by {sentence}"
            );
        }
    }

    /// ALBERT's pretraining heads (masked LM and sentence order) are taken for pretraining.
    #[test]
    fn albert_pretraining_heads_are_imported() {
        let dir = fixture("albert_tiny");
        let mut options = options(&crate::hf::read_config(&dir).unwrap(), &dir).unwrap();
        options.next_sentence = NextSentence::Sop;
        options.resolve().unwrap();
        let imported = import(&dir, &options).unwrap();
        assert!(imported.unused.is_empty(), "{:?}", imported.unused);
        for name in [
            "mlm_dense.weight",
            "mlm_norm.gamma",
            "mlm_bias",
            "sentence_head.weight",
        ] {
            assert!(imported.tensors.contains_key(name), "{name}");
        }
    }

    /// The same for a real checkpoint outside the repository (NLPKIT_HF_FOLDER, with the
    /// expected.json the fixture script writes for it): `cargo test --release --lib hf:: --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "needs NLPKIT_HF_FOLDER: a real checkpoint, not in the repository"]
    fn a_real_checkpoint_computes_what_transformers_computes() {
        let dir = std::path::PathBuf::from(std::env::var("NLPKIT_HF_FOLDER").unwrap());
        let (hidden, pooled, _) = differences_from_transformers(&dir);
        let pooled = pooled.unwrap_or(0.0);
        println!(
            "{}: hidden states within {hidden:e}, pooled output within {pooled:e}",
            dir.display()
        );
        assert!(hidden < 1e-4 && pooled < 1e-4);
    }

    /// A checkpoint that does not hold what its names say is an error naming the tensor, not a
    /// panic in the layout code.
    #[test]
    fn a_tensor_of_the_wrong_rank_is_an_error_naming_it() {
        let mut tensors = crate::hf::read_weights(&fixture("bert_tiny_cls")).unwrap();
        let name = "bert.encoder.layer.1.attention.self.key.weight";
        let key = tensors.get_mut(name).unwrap();
        key.shape = vec![key.values.len()];
        let rules = encoder_rules(Family::Bert, "bert.", 2, true);
        let error = layout::import(&rules, tensors).unwrap_err().to_string();
        assert!(error.contains(name) && error.contains("2-D"), "{error}");
    }

    /// Import then export gives back every tensor of `BertForSequenceClassification` as it was.
    #[test]
    fn export_gives_back_the_imported_tensors() {
        let dir = fixture("bert_tiny_cls");
        let config = crate::hf::read_config(&dir).unwrap();
        let mut options = options(&config, &dir).unwrap();
        options.head = BertHead::SequenceClassification;
        options.labels = Some(hf_labels(&config));
        options.resolve().unwrap();
        let imported = import(&dir, &options).unwrap();
        assert!(imported.unused.is_empty(), "{:?}", imported.unused);
        let exported = export(&options, &imported.tensors, 0).unwrap();
        let original = crate::hf::read_weights(&dir).unwrap();
        assert_eq!(exported.tensors, original);
        assert_eq!(
            exported.config["id2label"],
            serde_json::json!({"0": "neg", "1": "neu", "2": "pos"})
        );
    }

    /// A classifier for other labels than the checkpoint's starts with a new head, said why.
    #[test]
    fn a_classifier_for_other_labels_gets_a_new_head() {
        let dir = fixture("bert_tiny_cls");
        let mut options = options(&crate::hf::read_config(&dir).unwrap(), &dir).unwrap();
        options.head = BertHead::SequenceClassification;
        options.labels = Some(vec!["neg".into(), "pos".into()]);
        options.resolve().unwrap();
        let imported = import(&dir, &options).unwrap();
        assert!(!imported.tensors.contains_key("classifier.weight"));
        assert_eq!(imported.unused, ["classifier.bias", "classifier.weight"]);
        assert!(
            imported.notes[0].contains("[neg, neu, pos]"),
            "{:?}",
            imported.notes
        );
    }
}
