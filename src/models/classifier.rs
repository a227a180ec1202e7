//! What every text classifier offers the classification task: label logits for a padded batch
//! of token ids, and the facts the task needs to encode and batch texts for it.

use super::bert::BertInput;
use crate::error::{Error, Result};
use crate::recipe::DataSizes;
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;

/// A padded batch of texts.
#[derive(Debug, Clone)]
pub struct TextBatch {
    /// `[batch, time]` token ids, padded.
    pub ids: Tensor<2, Int>,
    /// `[batch, time]` 0 for a text's first segment (and padding), 1 for its second.
    pub segments: Tensor<2, Int>,
    /// `[batch, time]` true at padding.
    pub padding: Tensor<2, Bool>,
    /// Each text's real length.
    pub lengths: Vec<usize>,
}

impl TextBatch {
    pub fn bert_input(self) -> BertInput {
        BertInput {
            ids: self.ids,
            segments: self.segments,
            padding: self.padding,
        }
    }
}

/// A classifier's configuration: what the classification task needs to build and feed it.
pub trait ClassifierConfig {
    type Model: Module + ModuleSnapshot;
    fn init(&self, device: &Device) -> Self::Model;
    /// Label logits `[batch, labels]`.
    fn logits(model: &Self::Model, batch: TextBatch) -> Tensor<2>;
    /// The token embeddings `[batch, time, dim]` of `ids`: the input saliency differentiates
    /// against (`nlpkit explain`).
    fn embed(model: &Self::Model, ids: Tensor<2, Int>) -> Tensor<3>;
    /// [`ClassifierConfig::logits`] from the token embeddings (`batch.ids` give only the shape):
    /// `logits(m, b)` is `logits_embedded(m, embed(m, b.ids), b)`, bit for bit.
    fn logits_embedded(model: &Self::Model, embedded: Tensor<3>, batch: TextBatch) -> Tensor<2>;
    /// The pooled state a recurrent classifier's output layer reads, `[batch, width]`; `None`
    /// for models without one (leave-one-out reports its change).
    fn pooled_state(_model: &Self::Model, _batch: TextBatch) -> Option<Tensor<2>> {
        None
    }
    /// Texts are wrapped in `[CLS] ... [SEP]` (BERT).
    fn wraps_in_cls_sep(&self) -> bool {
        false
    }
    /// The longest input, special tokens included.
    fn max_len(&self) -> usize;
    /// The shortest padded input the model accepts.
    fn min_len(&self) -> usize {
        1
    }
    /// The model width, for schedules that scale by it.
    fn width(&self) -> usize;
}

/// Record a classifier's vocabulary size and number of labels from the data.
pub fn record_sizes((vocab, labels): (&mut Option<usize>, &mut Option<usize>), sizes: &DataSizes) {
    *vocab = Some(sizes.vocab);
    *labels = Some(sizes.labels.len());
}

/// A classifier's vocabulary size and number of labels, as `train` recorded them.
pub fn recorded_sizes(
    model: &str,
    vocab: Option<usize>,
    labels: Option<usize>,
) -> Result<(usize, usize)> {
    vocab.zip(labels).ok_or_else(|| {
        Error::Recipe(format!(
            "the {model} model needs `model.vocab_size` and `model.num_labels` (filled in by \
             `nlpkit train`; give an experiment folder it wrote)"
        ))
    })
}
