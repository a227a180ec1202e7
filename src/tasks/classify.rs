//! Text classification: TextCNN or BERT (fine-tuned from a pretraining experiment or from
//! scratch) on labelled texts, cross-entropy over the labels, batches of similar length.

use super::{LossSum, StepLoss, Task};
use crate::data::Split;
use crate::data::batching::{EpochBatches, batches_by_length};
use crate::data::labelled::{Example, LabelledMeta, Specials, load_examples};
use crate::data::token_batches::TokenBatch;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::distributed::batch_sizes;
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::models::bert::{BertClassifier, BertConfig};
use crate::models::textcnn::{TextCnn, TextCnnConfig};
use crate::recipe::Recipe;
use crate::train::checkpoint;
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use std::path::PathBuf;

/// A model that gives label logits for a batch of texts.
pub trait ClassifierSpec {
    type Model: Module + ModuleSnapshot;
    fn init(&self, device: &Device) -> Self::Model;
    fn logits(model: &Self::Model, batch: &TokenBatch, device: &Device) -> Tensor<2>;
    /// Texts are wrapped in `[CLS] ... [SEP]` (BERT).
    fn wraps_in_cls_sep(&self) -> bool;
    /// The longest input, special tokens included.
    fn max_len(&self) -> usize;
    /// The shortest padded input the model accepts.
    fn min_len(&self) -> usize;
    fn width(&self) -> usize;
}

impl ClassifierSpec for TextCnnConfig {
    type Model = TextCnn;
    fn init(&self, device: &Device) -> TextCnn {
        TextCnnConfig::init(self, device)
    }
    fn logits(model: &TextCnn, batch: &TokenBatch, device: &Device) -> Tensor<2> {
        model.forward(batch.ids_tensor(device), &batch.lengths)
    }
    fn wraps_in_cls_sep(&self) -> bool {
        false
    }
    fn max_len(&self) -> usize {
        self.options.max_len
    }
    fn min_len(&self) -> usize {
        self.options.kernel_sizes.iter().copied().max().unwrap_or(1)
    }
    fn width(&self) -> usize {
        self.options.embedding_dim
    }
}

impl ClassifierSpec for BertConfig {
    type Model = BertClassifier;
    fn init(&self, device: &Device) -> BertClassifier {
        self.init_classifier(device)
    }
    fn logits(model: &BertClassifier, batch: &TokenBatch, device: &Device) -> Tensor<2> {
        model.forward(batch.bert_input(device))
    }
    fn wraps_in_cls_sep(&self) -> bool {
        true
    }
    fn max_len(&self) -> usize {
        self.max_len
    }
    fn min_len(&self) -> usize {
        1
    }
    fn width(&self) -> usize {
        self.encoder.width
    }
}

/// The resolved recipe states the model completely: the vocabulary and label counts.
pub fn record_sizes(
    recipe: &mut Recipe,
    meta: &LabelledMeta,
    tokenizer: &TextTokenizer,
) -> Result<()> {
    let vocab = tokenizer.vocab_size();
    let labels = Some(meta.labels.len());
    match &mut recipe.model {
        crate::recipe::ModelSection::Cnn(o) => {
            o.vocab_size = Some(vocab);
            o.num_labels = labels;
        }
        crate::recipe::ModelSection::Bert(o) => {
            if o.vocab_size.is_some_and(|v| v != vocab) {
                return Err(Error::Recipe(format!(
                    "`model.vocab_size` ({}) differs from the tokenizer's {vocab}",
                    o.vocab_size.unwrap_or(0)
                )));
            }
            o.vocab_size = Some(vocab);
            if o.head != crate::models::bert::BertHead::Pretraining {
                o.num_labels = labels;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Token ids of `text`, cut to fit `max_len` with `[CLS]`/`[SEP]` when the model wants them.
pub fn encode_texts(
    tokenizer: &TextTokenizer,
    texts: &[&str],
    max_len: usize,
    cls_sep: Option<&Specials>,
) -> Result<Vec<Vec<u32>>> {
    let encoded = tokenizer.encode_lines(texts)?;
    Ok(encoded
        .into_iter()
        .map(|mut ids| match cls_sep {
            Some(s) => {
                ids.truncate(max_len - 2);
                let mut out = Vec::with_capacity(ids.len() + 2);
                out.push(s.cls);
                out.extend(ids);
                out.push(s.sep);
                out
            }
            None => {
                ids.truncate(max_len);
                ids
            }
        })
        .collect())
}

/// Encoded texts with their label ids.
pub struct LabelledSet {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<usize>,
    pub texts: Vec<String>,
}

impl LabelledSet {
    pub fn load<S: ClassifierSpec>(
        spec: &S,
        dir: &std::path::Path,
        split: Split,
        meta: &LabelledMeta,
        tokenizer: &TextTokenizer,
        specials: &Specials,
    ) -> Result<Self> {
        let mut texts = Vec::new();
        let mut labels = Vec::new();
        for example in load_examples(dir, split)? {
            let Example::Labelled { text, label } = example else {
                return Err(Error::Data(format!(
                    "{} does not hold labelled texts; prepare the data again",
                    dir.display()
                )));
            };
            let id = meta
                .labels
                .iter()
                .position(|l| *l == label)
                .ok_or_else(|| {
                    Error::Data(format!(
                        "label `{label}` is not in {}'s labels.json",
                        dir.display()
                    ))
                })?;
            texts.push(text);
            labels.push(id);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let cls_sep = spec.wraps_in_cls_sep().then_some(specials);
        let ids = encode_texts(tokenizer, &refs, spec.max_len(), cls_sep)?;
        Ok(Self { ids, labels, texts })
    }

    pub fn batch(&self, indices: &[usize], pad: u32, min_len: usize) -> (TokenBatch, Vec<i64>) {
        let seqs: Vec<&[u32]> = indices.iter().map(|&i| self.ids[i].as_slice()).collect();
        let labels = indices.iter().map(|&i| self.labels[i] as i64).collect();
        (TokenBatch::pad(&seqs, None, pad, min_len), labels)
    }
}

/// Batches of up to `batch_size` texts of similar length.
pub fn length_batches(ids: &[Vec<u32>], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    batches_by_length(
        ids.len(),
        |i| ids[i].len(),
        |i| ids[i].len(),
        None,
        batch_size,
        seed,
    )
}

pub struct ClassifyTask<S: ClassifierSpec> {
    pub spec: S,
    pub pretrained: Option<PathBuf>,
    train: LabelledSet,
    train_batches: EpochBatches,
    valid: LabelledSet,
    valid_batches: Vec<Vec<usize>>,
    num_labels: usize,
    pad: u32,
    label_smoothing: f64,
}

impl<S: ClassifierSpec> ClassifyTask<S> {
    pub fn new(
        recipe: &Recipe,
        spec: S,
        meta: &LabelledMeta,
        dir: &std::path::Path,
        tokenizer: &TextTokenizer,
        shard: Shard,
    ) -> Result<Self> {
        let specials = Specials::of(tokenizer)?;
        let train = LabelledSet::load(&spec, dir, Split::Train, meta, tokenizer, &specials)?;
        let valid = LabelledSet::load(&spec, dir, Split::Valid, meta, tokenizer, &specials)?;
        if valid.ids.is_empty() {
            return Err(Error::Data(
                "the validation split is empty; raise `data.split.valid`".into(),
            ));
        }
        let (batch, _) = batch_sizes(recipe, shard.count)?;
        let train_batches = length_batches(&train.ids, batch, recipe.seed);
        Ok(Self {
            train_batches: EpochBatches::new(
                train_batches,
                recipe.seed,
                recipe.train.accum_grad,
                shard,
            ),
            valid_batches: length_batches(&valid.ids, batch, recipe.seed),
            spec,
            pretrained: checkpoint::init_from_weights(recipe)?,
            train,
            valid,
            num_labels: meta.labels.len(),
            pad: specials.pad,
            label_smoothing: recipe.loss.label_smoothing,
        })
    }

    fn batch_loss(
        &self,
        model: &S::Model,
        set: &LabelledSet,
        indices: &[usize],
        smoothing: f64,
        device: &Device,
    ) -> (Tensor<1>, Tensor<1>) {
        let (batch, labels) = set.batch(indices, self.pad, self.spec.min_len());
        let logits = S::logits(model, &batch, device);
        let targets = Tensor::<1, Int>::from_data(labels.as_slice(), device);
        cross_entropy(logits, targets, smoothing, None)
    }
}

impl<S: ClassifierSpec> Task for ClassifyTask<S> {
    type Model = S::Model;

    fn init_model(&self, device: &Device) -> Result<S::Model> {
        checkpoint::with_pretrained_encoder(self.spec.init(device), self.pretrained.as_deref())
    }

    fn train_loss(&self, model: &S::Model, step: usize, micro: usize, device: &Device) -> StepLoss {
        let (indices, _) = self.train_batches.at(step, micro);
        let (loss, nll) =
            self.batch_loss(model, &self.train, indices, self.label_smoothing, device);
        StepLoss::single(loss, nll)
    }

    fn validation_sum(&self, model: &S::Model, device: &Device, shard: Shard) -> Result<LossSum> {
        let model = model.valid();
        let device = device.clone().without_autodiff();
        let mut sum = LossSum::default();
        for (_, indices) in self
            .valid_batches
            .iter()
            .enumerate()
            .filter(|(i, _)| shard.owns(*i))
        {
            let (_, nll) = self.batch_loss(&model, &self.valid, indices, 0.0, &device);
            sum.total += nll.into_scalar::<f64>() * indices.len() as f64;
            sum.count += indices.len() as f64;
        }
        Ok(sum)
    }

    fn loss_is_token_nll(&self) -> bool {
        false
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.train_batches
            .mean_batch_total(|i| self.train.ids[i].len())
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.train_batches.per_rank_epoch()
    }

    fn model_width(&self) -> usize {
        self.spec.width()
    }

    fn step_description(&self, ranks: usize, accum_grad: usize) -> String {
        format!(
            "~{:.0} texts ({} labels)",
            self.train_batches.mean_batch_len() * (ranks * accum_grad) as f64,
            self.num_labels
        )
    }
}

/// The predicted label of every text of `set`, in order.
pub fn predict<S: ClassifierSpec>(
    spec: &S,
    model: &S::Model,
    set: &LabelledSet,
    batch_size: usize,
    pad: u32,
    device: &Device,
) -> Vec<usize> {
    let mut predicted = vec![0; set.ids.len()];
    let batches = length_batches(&set.ids, batch_size, 0);
    for indices in &batches {
        let (batch, _) = set.batch(indices, pad, spec.min_len());
        let logits = S::logits(model, &batch, device);
        let best: Vec<i64> = logits.argmax(1).try_into_vec_as::<i64>().expect("ids");
        for (&i, &label) in indices.iter().zip(&best) {
            predicted[i] = label as usize;
        }
    }
    predicted
}
