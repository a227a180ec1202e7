//! BERT (Devlin et al. 2019): token + segment + learned position embeddings, a Transformer
//! encoder and a tanh pooler on `[CLS]`, with the heads for pretraining (masked LM tied to the
//! token embedding, next-sentence or sentence-order prediction), sequence classification and
//! token classification (softmax or CRF). ALBERT's options: a factorised embedding size projected
//! up to the hidden width, and one layer's weights shared by all layers.

use super::activation::Activation;
use super::classifier::{ClassifierConfig, MultiSampleDropout, TextBatch};
use super::crf::Crf;
use super::encoder::{Encoder, EncoderConfig};
use super::layer_norm::ForwardFused;
use super::lora::{BERT_TARGETS, LoraOptions};
use crate::error::{Error, Result};
use crate::recipe::{
    DataSizes, ModelOptions, TaskKind, require_dropout, require_heads_divide, require_positive,
};
use burn::module::Param;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// What the model is trained to do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BertHead {
    /// Masked LM plus `next_sentence` (BERT, ALBERT, RoBERTa pretraining).
    #[default]
    Pretraining,
    /// A label per text, from the pooled `[CLS]`.
    SequenceClassification,
    /// A tag per token, softmax or CRF.
    TokenClassification,
}

/// The sentence-pair objective of pretraining.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum NextSentence {
    /// Is segment B the text that followed A, or a random one? (BERT)
    #[default]
    Nsp,
    /// Are the two consecutive segments in order or swapped? (ALBERT)
    Sop,
    /// Masked LM only, one segment per sequence (RoBERTa).
    None,
}

impl NextSentence {
    pub fn loss_name(self) -> Option<&'static str> {
        match self {
            NextSentence::Nsp => Some("nsp"),
            NextSentence::Sop => Some("sop"),
            NextSentence::None => None,
        }
    }
}

/// The `model:` section for `type: bert`. With `init_from`, shape fields left out are taken
/// from the pretrained experiment (and must equal it when given).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct BertOptions {
    /// A shape users know (`bert-base`, `bert-tiny`, `albert-base`, `roberta-base`, from
    /// `configs/`) or a path to such a YAML file; keys given beside it win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default)]
    pub head: BertHead,
    #[serde(default)]
    pub n_layer: Option<usize>,
    #[serde(default)]
    pub n_head: Option<usize>,
    /// The hidden width.
    #[serde(default)]
    pub width: Option<usize>,
    /// Feed-forward width (default 4 x width).
    #[serde(default)]
    pub ffn_width: Option<usize>,
    /// ALBERT's factorised embedding size E (default: the width, no projection).
    #[serde(default)]
    pub embedding_size: Option<usize>,
    /// ALBERT's cross-layer parameter sharing.
    #[serde(default)]
    pub share_layers: Option<bool>,
    /// The longest sequence, `[CLS]` and `[SEP]` included (the position table's size, less
    /// `position_offset`).
    #[serde(default)]
    pub max_len: Option<usize>,
    /// The feed-forward and MLM-head activation (HF `hidden_act`): `gelu` (BERT, RoBERTa) or
    /// `gelu_new` (ALBERT).
    #[serde(default)]
    pub activation: Option<Activation>,
    /// LayerNorm's epsilon (HF `layer_norm_eps`): 1e-12 (BERT, ALBERT) or 1e-5 (RoBERTa).
    #[serde(default)]
    pub layer_norm_eps: Option<f64>,
    /// Segment (token type) embeddings (HF `type_vocab_size`): 2 (BERT, ALBERT) or 1 (RoBERTa).
    #[serde(default)]
    pub segments: Option<usize>,
    /// RoBERTa's position ids, which start after the padding id: a text's tokens are at
    /// `position_offset + i` and padding at `position_offset - 1`; 0 for BERT and ALBERT.
    #[serde(default)]
    pub position_offset: Option<usize>,
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Pretraining: the sentence-pair task.
    #[serde(default)]
    pub next_sentence: NextSentence,
    /// Token classification: a linear-chain CRF over the tags instead of a softmax per token.
    #[serde(default)]
    pub crf: bool,
    /// Classification and tagging: multi-sample dropout in the head (its `rate` replaces
    /// `dropout` before the head's linear layer; the encoder keeps `dropout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_sample_dropout: Option<MultiSampleDropout>,
    /// Filled from the tokenizer by `train`.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// Classification and tagging: the labels or tags in id order (HF's `id2label`), filled
    /// from the data by `train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// LoRA adapters on the encoder's linear layers; only they and the head train.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraOptions>,
}

/// Presets shipped in the binary, by name; the same files are in `configs/`.
const PRESETS: &[(&str, &str)] = &[
    ("bert-base", include_str!("../../configs/bert-base.yaml")),
    ("bert-tiny", include_str!("../../configs/bert-tiny.yaml")),
    (
        "albert-base",
        include_str!("../../configs/albert-base.yaml"),
    ),
    (
        "roberta-base",
        include_str!("../../configs/roberta-base.yaml"),
    ),
];

impl BertOptions {
    /// Fill the fields the recipe left out from its preset.
    fn apply_preset(&mut self) -> Result<()> {
        let Some(preset) = self.preset.take() else {
            return Ok(());
        };
        let base: BertOptions = super::read_preset(&preset, PRESETS)?;
        self.n_layer = self.n_layer.or(base.n_layer);
        self.n_head = self.n_head.or(base.n_head);
        self.width = self.width.or(base.width);
        self.ffn_width = self.ffn_width.or(base.ffn_width);
        self.embedding_size = self.embedding_size.or(base.embedding_size);
        self.share_layers = self.share_layers.or(base.share_layers);
        self.max_len = self.max_len.or(base.max_len);
        self.dropout = self.dropout.or(base.dropout);
        self.activation = self.activation.or(base.activation);
        self.layer_norm_eps = self.layer_norm_eps.or(base.layer_norm_eps);
        self.segments = self.segments.or(base.segments);
        self.position_offset = self.position_offset.or(base.position_offset);
        Ok(())
    }

    /// Take the encoder's shape from the pretrained model's options; a field the recipe sets
    /// must agree with it.
    pub fn inherit(&mut self, pretrained: &BertOptions) -> Result<()> {
        use super::inherit_field as take;
        super::refuse_preset_on_pretrained(&self.preset)?;
        take("n_layer", &mut self.n_layer, pretrained.n_layer)?;
        take("n_head", &mut self.n_head, pretrained.n_head)?;
        take("width", &mut self.width, pretrained.width)?;
        take("ffn_width", &mut self.ffn_width, pretrained.ffn_width)?;
        take(
            "embedding_size",
            &mut self.embedding_size,
            pretrained.embedding_size,
        )?;
        take(
            "share_layers",
            &mut self.share_layers,
            pretrained.share_layers,
        )?;
        super::inherit_length("max_len", &mut self.max_len, pretrained.max_len)?;
        take("activation", &mut self.activation, pretrained.activation)?;
        take(
            "layer_norm_eps",
            &mut self.layer_norm_eps,
            pretrained.layer_norm_eps,
        )?;
        take("segments", &mut self.segments, pretrained.segments)?;
        take(
            "position_offset",
            &mut self.position_offset,
            pretrained.position_offset,
        )?;
        take("vocab_size", &mut self.vocab_size, pretrained.vocab_size)?;
        self.dropout = self.dropout.or(pretrained.dropout);
        Ok(())
    }
}

impl ModelOptions for BertOptions {
    fn name(&self) -> &'static str {
        "bert"
    }

    fn title(&self) -> String {
        let head = match self.head {
            BertHead::Pretraining => "pretraining",
            BertHead::SequenceClassification => "sequence_classification",
            BertHead::TokenClassification => "token_classification",
        };
        format!("bert with `head: {head}`")
    }

    fn task(&self) -> TaskKind {
        match self.head {
            BertHead::Pretraining => TaskKind::Pretraining,
            BertHead::SequenceClassification => TaskKind::Classification,
            BertHead::TokenClassification => TaskKind::Tagging,
        }
    }

    /// Defaults for what neither the recipe nor a pretrained experiment gave: BERT-base.
    fn resolve(&mut self) -> Result<()> {
        self.apply_preset()?;
        let base = EncoderConfig::bert_base();
        let width = *self.width.get_or_insert(base.width);
        self.n_layer.get_or_insert(base.n_layer);
        self.n_head.get_or_insert(base.n_head);
        self.ffn_width.get_or_insert(4 * width);
        self.embedding_size.get_or_insert(width);
        self.share_layers.get_or_insert(false);
        self.max_len.get_or_insert(512);
        self.dropout.get_or_insert(base.dropout);
        self.activation.get_or_insert(base.activation);
        self.layer_norm_eps.get_or_insert(base.layer_norm_eps);
        self.segments.get_or_insert(2);
        self.position_offset.get_or_insert(0);
        if let Some(lora) = &mut self.lora {
            lora.resolve(BERT_TARGETS);
        }
        Ok(())
    }

    fn validate(&self, problems: &mut Vec<String>) {
        require_positive(
            problems,
            &[
                ("n_layer", self.n_layer.unwrap_or(1)),
                ("n_head", self.n_head.unwrap_or(1)),
                ("width", self.width.unwrap_or(1)),
                ("ffn_width", self.ffn_width.unwrap_or(1)),
                ("embedding_size", self.embedding_size.unwrap_or(1)),
            ],
        );
        if let (Some(w), Some(h)) = (self.width, self.n_head) {
            require_heads_divide(problems, "width", w, h);
        }
        if self.max_len.is_some_and(|l| l < 4) {
            problems.push("`model.max_len` must be at least 4 ([CLS] a [SEP] b)".into());
        }
        require_dropout(problems, self.dropout.unwrap_or(0.0));
        if self.segments == Some(1)
            && self.head == BertHead::Pretraining
            && self.next_sentence != NextSentence::None
        {
            problems.push(
                "`model.next_sentence` needs two segments; with `segments: 1` (RoBERTa) give \
                 `next_sentence: none`"
                    .into(),
            );
        }
        if self.segments == Some(0) {
            problems.push("`model.segments` must be 1 or more".into());
        }
        if self.crf && self.head != BertHead::TokenClassification {
            problems.push("`model.crf` is for `head: token_classification` only".into());
        }
        if let Some(lora) = &self.lora {
            lora.validate(BERT_TARGETS, problems);
        }
        if self.multi_sample_dropout.is_some() && self.head == BertHead::Pretraining {
            problems.push(
                "`model.multi_sample_dropout` is for the classification and tagging heads, not \
                 `head: pretraining`"
                    .into(),
            );
        }
        MultiSampleDropout::validate(self.multi_sample_dropout.as_ref(), problems);
    }

    /// The vocabulary is the tokenizer's (a pretrained model's embedding fixes it); a classifier
    /// or tagger has one output per label.
    fn record_sizes(&mut self, sizes: &DataSizes) -> Result<()> {
        if let Some(given) = self.vocab_size.filter(|&v| v != sizes.vocab) {
            return Err(Error::Recipe(format!(
                "`model.vocab_size` ({given}) differs from the tokenizer's {}",
                sizes.vocab
            )));
        }
        self.vocab_size = Some(sizes.vocab);
        if self.head != BertHead::Pretraining {
            if let Some(given) = self.labels.as_ref().filter(|l| **l != sizes.labels) {
                return Err(Error::Recipe(format!(
                    "`model.labels` ({}) differs from the data's ({})",
                    given.join(", "),
                    sizes.labels.join(", ")
                )));
            }
            self.labels = Some(sizes.labels.clone());
        }
        Ok(())
    }
}

impl BertOptions {
    /// The model configuration of a resolved recipe whose sizes `train` recorded.
    pub fn config(&self) -> Result<BertConfig> {
        let missing = || {
            Error::Recipe(
                "the bert model needs its vocabulary size (and, to classify or tag, its labels), \
                 filled in by `nlpkit train`; give an experiment folder it wrote"
                    .into(),
            )
        };
        let labels = match self.head {
            BertHead::Pretraining => Vec::new(),
            _ => self.labels.clone().ok_or_else(missing)?,
        };
        Ok(BertConfig {
            encoder: EncoderConfig {
                n_layer: self.n_layer.expect("resolved"),
                n_head: self.n_head.expect("resolved"),
                width: self.width.expect("resolved"),
                ffn_width: self.ffn_width.expect("resolved"),
                dropout: self.dropout.expect("resolved"),
                pre_norm: false,
                share_layers: self.share_layers.expect("resolved"),
                // Experiments written before these options existed had BERT's.
                activation: self.activation.unwrap_or_default(),
                layer_norm_eps: self.layer_norm_eps.unwrap_or(1e-12),
                lora: self.lora.as_ref().map(LoraOptions::config),
            },
            segments: self.segments.unwrap_or(2),
            position_offset: self.position_offset.unwrap_or(0),
            vocab_size: self.vocab_size.ok_or_else(missing)?,
            embedding_size: self.embedding_size.expect("resolved"),
            max_len: self.max_len.expect("resolved"),
            head: self.head,
            next_sentence: self.next_sentence,
            crf: self.crf,
            multi_sample_dropout: self.multi_sample_dropout,
            labels,
        })
    }
}

impl ClassifierConfig for BertConfig {
    type Model = BertClassifier;
    fn init(&self, device: &Device) -> BertClassifier {
        self.init_classifier(device)
    }
    fn logits(model: &BertClassifier, batch: TextBatch) -> Tensor<2> {
        model.forward(batch.bert_input())
    }
    fn embed(model: &BertClassifier, ids: Tensor<2, Int>) -> Tensor<3> {
        model.bert.embed(ids)
    }
    fn logits_embedded(model: &BertClassifier, embedded: Tensor<3>, batch: TextBatch) -> Tensor<2> {
        model.forward_embedded(embedded, batch.bert_input())
    }
    fn features(model: &BertClassifier, batch: TextBatch) -> Tensor<2> {
        model.features(batch.bert_input())
    }
    fn head(model: &BertClassifier) -> (&Dropout, &Linear) {
        (&model.dropout, &model.classifier)
    }
    fn multi_sample_dropout(&self) -> Option<MultiSampleDropout> {
        self.multi_sample_dropout
    }
    fn wraps_in_cls_sep(&self) -> bool {
        true
    }
    fn max_len(&self) -> usize {
        self.max_len
    }
    fn width(&self) -> usize {
        self.encoder.width
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub encoder: EncoderConfig,
    pub segments: usize,
    pub position_offset: usize,
    pub vocab_size: usize,
    pub embedding_size: usize,
    pub max_len: usize,
    pub head: BertHead,
    pub next_sentence: NextSentence,
    pub crf: bool,
    pub multi_sample_dropout: Option<MultiSampleDropout>,
    /// Classification and tagging: the labels or tags in id order.
    pub labels: Vec<String>,
}

/// BERT's initialisation: N(0, 0.02) weights, zero biases.
fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device)
}

fn layer_norm(width: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(width).with_epsilon(eps).init(device)
}

impl BertConfig {
    pub fn init_encoder(&self, device: &Device) -> Bert {
        let e = self.embedding_size;
        let h = self.encoder.width;
        let embedding = |rows| {
            EmbeddingConfig::new(rows, e)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device)
        };
        Bert {
            tokens: embedding(self.vocab_size),
            segments: embedding(self.segments),
            positions: embedding(self.position_offset + self.max_len),
            position_offset: self.position_offset,
            embedding_norm: layer_norm(e, self.encoder.layer_norm_eps, device),
            embedding_projection: (e != h).then(|| linear(e, h, device)),
            dropout: DropoutConfig::new(self.encoder.dropout).init(),
            encoder: self.encoder.init(device),
            pooler: linear(h, h, device),
        }
    }

    /// The pretraining model; `loss_terms` learned log-variances when the losses are weighted by
    /// uncertainty.
    pub fn init_pretraining(&self, uncertainty_terms: usize, device: &Device) -> BertPretraining {
        let (e, h) = (self.embedding_size, self.encoder.width);
        BertPretraining {
            bert: self.init_encoder(device),
            mlm_dense: linear(h, e, device),
            mlm_norm: layer_norm(e, self.encoder.layer_norm_eps, device),
            activation: self.encoder.activation,
            mlm_bias: Param::from_tensor(Tensor::zeros([self.vocab_size], device)),
            sentence_head: self.next_sentence.loss_name().map(|_| linear(h, 2, device)),
            log_variances: (uncertainty_terms > 0)
                .then(|| Param::from_tensor(Tensor::zeros([uncertainty_terms], device))),
        }
    }

    /// The dropout before a classification or tagging head's linear layer.
    fn head_dropout(&self) -> Dropout {
        let rate =
            MultiSampleDropout::head_rate(self.multi_sample_dropout.as_ref(), self.encoder.dropout);
        DropoutConfig::new(rate).init()
    }

    pub fn init_classifier(&self, device: &Device) -> BertClassifier {
        BertClassifier {
            bert: self.init_encoder(device),
            dropout: self.head_dropout(),
            classifier: linear(self.encoder.width, self.labels.len(), device),
        }
    }

    pub fn init_tagger(&self, device: &Device) -> BertTagger {
        BertTagger {
            bert: self.init_encoder(device),
            dropout: self.head_dropout(),
            classifier: linear(self.encoder.width, self.labels.len(), device),
            crf: self.crf.then(|| Crf::new(&self.labels, device)),
        }
    }
}

/// The shared encoder: what fine-tuning takes from pretraining (every tensor under `bert.`).
#[derive(Module, Debug)]
pub struct Bert {
    tokens: Embedding,
    segments: Embedding,
    positions: Embedding,
    /// RoBERTa's: see [`BertOptions::position_offset`].
    position_offset: usize,
    embedding_norm: LayerNorm,
    embedding_projection: Option<Linear>,
    dropout: Dropout,
    encoder: Encoder,
    pooler: Linear,
}

/// A padded batch for the encoder.
pub struct BertInput {
    /// `[batch, time]` token ids, `[CLS] ... [SEP] ...`, padded.
    pub ids: Tensor<2, Int>,
    /// `[batch, time]` 0 for segment A (and padding), 1 for segment B.
    pub segments: Tensor<2, Int>,
    /// `[batch, time]` true at padding.
    pub padding: Tensor<2, Bool>,
}

impl Bert {
    /// Hidden states `[batch, time, width]`.
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        self.forward_embedded(self.embed(input.ids.clone()), input)
    }

    /// The token embeddings `[batch, time, embedding]` (before segments, positions and the
    /// norm are added): where saliency differentiates.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.tokens.forward(ids)
    }

    /// [`Bert::forward`] from the token embeddings (`input.ids` give only the shape).
    pub fn forward_embedded(&self, embedded: Tensor<3>, input: BertInput) -> Tensor<3> {
        let [batch, time] = input.ids.dims();
        let device = input.ids.device();
        let offset = self.position_offset as i64;
        let mut positions = Tensor::<1, Int>::arange(offset..offset + time as i64, &device)
            .reshape([1, time])
            .expand([batch, time]);
        if offset > 0 {
            // RoBERTa gives padding the padding id's position, `offset - 1`.
            positions = positions.mask_fill(input.padding.clone(), offset - 1);
        }
        let x =
            embedded + self.segments.forward(input.segments) + self.positions.forward(positions);
        let mut x = self.dropout.forward(self.embedding_norm.forward_fused(x));
        if let Some(projection) = &self.embedding_projection {
            x = projection.forward(x);
        }
        self.encoder.forward(x, Some(input.padding))
    }

    /// BERT's pooled output: tanh(W h_[CLS] + b), `[batch, width]`.
    pub fn pool(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [batch, _, width] = hidden.dims();
        let cls = hidden.narrow(1, 0, 1).reshape([batch, width]);
        self.pooler.forward(cls).tanh()
    }
}

#[derive(Module, Debug)]
pub struct BertPretraining {
    pub bert: Bert,
    mlm_dense: Linear,
    mlm_norm: LayerNorm,
    mlm_bias: Param<Tensor<1>>,
    sentence_head: Option<Linear>,
    #[module(skip)]
    activation: Activation,
    /// Uncertainty weighting's s_i, one per loss (Kendall et al.), trained with the model.
    pub log_variances: Option<Param<Tensor<1>>>,
}

impl BertPretraining {
    /// MLM logits `[masked, vocab]` at the flat positions `masked` (row * time + column) and,
    /// with a sentence head, its logits `[batch, 2]`.
    pub fn forward(
        &self,
        input: BertInput,
        masked: Tensor<1, Int>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let hidden = self.bert.forward(input);
        let [batch, time, width] = hidden.dims();
        let sentence = self
            .sentence_head
            .as_ref()
            .map(|head| head.forward(self.bert.pool(hidden.clone())));
        // Only the masked positions are predicted: the vocabulary projection, the largest
        // matmul, runs on ~15% of the tokens.
        let picked = hidden.reshape([batch * time, width]).select(0, masked);
        let h = self
            .mlm_norm
            .forward_fused(self.activation.apply(self.mlm_dense.forward_fused(picked)));
        let tied = self.bert.tokens.weight.val().transpose();
        let logits = crate::models::linear::linear(h, tied, Some(self.mlm_bias.val()));
        (logits, sentence)
    }
}

#[derive(Module, Debug)]
pub struct BertClassifier {
    pub bert: Bert,
    dropout: Dropout,
    classifier: Linear,
}

impl BertClassifier {
    /// Label logits `[batch, labels]`.
    pub fn forward(&self, input: BertInput) -> Tensor<2> {
        self.forward_embedded(self.bert.embed(input.ids.clone()), input)
    }

    /// [`BertClassifier::forward`] from the token embeddings.
    pub fn forward_embedded(&self, embedded: Tensor<3>, input: BertInput) -> Tensor<2> {
        let pooled = self.bert.pool(self.bert.forward_embedded(embedded, input));
        self.classifier.forward(self.dropout.forward(pooled))
    }

    /// The pooled `[CLS]` `[batch, width]`, before the head.
    pub fn features(&self, input: BertInput) -> Tensor<2> {
        self.bert.pool(self.bert.forward(input))
    }
}

#[derive(Module, Debug)]
pub struct BertTagger {
    pub bert: Bert,
    dropout: Dropout,
    classifier: Linear,
    pub crf: Option<Crf>,
}

impl BertTagger {
    /// Tag scores `[batch, time, tags]` (emissions for the CRF).
    pub fn forward(&self, input: BertInput) -> Tensor<3> {
        self.forward_embedded(self.bert.embed(input.ids.clone()), input)
    }

    /// [`BertTagger::forward`] from the token embeddings.
    pub fn forward_embedded(&self, embedded: Tensor<3>, input: BertInput) -> Tensor<3> {
        let hidden = self.bert.forward_embedded(embedded, input);
        self.classifier.forward(self.dropout.forward(hidden))
    }

    /// The head: its dropout and the linear layer to the tags (applied to `bert`'s states).
    pub fn head(&self) -> (&Dropout, &Linear) {
        (&self.dropout, &self.classifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(embedding_size: usize, share_layers: bool) -> BertOptions {
        let mut o = BertOptions {
            n_layer: Some(3),
            n_head: Some(2),
            width: Some(16),
            embedding_size: Some(embedding_size),
            share_layers: Some(share_layers),
            max_len: Some(12),
            dropout: Some(0.0),
            vocab_size: Some(30),
            ..BertOptions::default()
        };
        o.resolve().unwrap();
        o
    }

    /// ALBERT's factorisation and sharing shrink the model by what they should: the token table
    /// is V x E plus an E x H projection, and three layers cost one.
    #[test]
    fn albert_options_shrink_the_parameters_as_designed() {
        let device = Device::flex();
        let count = |o: BertOptions| {
            o.config()
                .unwrap()
                .init_pretraining(0, &device)
                .num_params()
        };
        let base = count(options(16, false));
        let shared = count(options(16, true));
        let layer = 4 * 16 * 16 + 4 * 16 + 2 * 16 * 64 + 64 + 16 + 4 * 16;
        assert_eq!(base - shared, 2 * layer);
        let factorised = count(options(4, false));
        // Embedding tables (30 + 2 + 12 rows), embedding norm and MLM transform shrink to E=4;
        // the projection E -> H is added.
        let rows = 30 + 2 + 12;
        let before = rows * 16 + 2 * 16 + (16 * 16 + 16) + 2 * 16;
        let after = rows * 4 + 2 * 4 + (16 * 4 + 4) + 2 * 4 + (4 * 16 + 16);
        assert_eq!(base - factorised, before - after);
    }

    /// Each shipped preset resolves to the published shape's parameter count.
    #[test]
    fn presets_resolve_to_the_published_shapes() {
        let device = Device::flex();
        let count = |preset: &str, vocab: usize| {
            let mut o = BertOptions {
                preset: Some(preset.into()),
                vocab_size: Some(vocab),
                ..BertOptions::default()
            };
            o.resolve().unwrap();
            let mut problems = Vec::new();
            o.validate(&mut problems);
            assert!(problems.is_empty(), "{preset}: {problems:?}");
            let model = o.config().unwrap().init_encoder(&device);
            // BertModel's count, as HF reports it for bert-base-uncased: 109,482,240.
            model.num_params()
        };
        assert_eq!(count("bert-base", 30522), 109_482_240);
        // google/bert_uncased_L-2_H-128_A-2: 4,385,920 in HF's BertModel.
        assert_eq!(count("bert-tiny", 30522), 4_385_920);
        // albert-base-v2's AlbertModel (a 30,000-piece vocabulary): 11,683,584.
        assert_eq!(count("albert-base", 30000), 11_683_584);
        let mut roberta = BertOptions {
            preset: Some("roberta-base".into()),
            head: BertHead::Pretraining,
            ..BertOptions::default()
        };
        roberta.resolve().unwrap();
        let mut problems = Vec::new();
        roberta.validate(&mut problems);
        assert!(problems[0].contains("next_sentence: none"), "{problems:?}");
        assert_eq!(
            (roberta.segments, roberta.position_offset),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn inherit_fills_and_refuses_conflicts() {
        let pretrained = options(16, true);
        let mut mine = BertOptions {
            head: BertHead::SequenceClassification,
            ..BertOptions::default()
        };
        mine.inherit(&pretrained).unwrap();
        assert_eq!(mine.width, Some(16));
        assert_eq!(mine.share_layers, Some(true));
        let mut conflicting = BertOptions {
            width: Some(32),
            ..BertOptions::default()
        };
        let error = conflicting.inherit(&pretrained).unwrap_err().to_string();
        assert!(error.contains("model.width"), "{error}");
    }
}
