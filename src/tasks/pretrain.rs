//! BERT pretraining: masked LM plus next-sentence or sentence-order prediction on documents
//! packed into `[CLS] A [SEP] B [SEP]` sequences; the two losses are weighted by
//! `loss.weighting`. Static masking draws each sequence's mask once (BERT); dynamic masking draws
//! it again every epoch (RoBERTa).

use super::{LossSum, StepLoss, Task};
use crate::data::Split;
use crate::data::batching::{EpochBatches, batches_by_length};
use crate::data::labelled::{Example, Specials, load_examples};
use crate::data::pretraining::{Instance, Masked, create_instances, mask_tokens, sentences};
use crate::data::token_batches::TokenBatch;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::{Shard, batch_sizes};
use crate::error::{Error, Result};
use crate::loss::cross_entropy;
use crate::models::bert::{BertConfig, BertPretraining, NextSentence};
use crate::recipe::{Masking, MlmSection, Recipe, WeightingKind};
use crate::rng::SplitMix64;
use burn::prelude::*;
use std::path::Path;

/// Every document of a split, cut into sentences and encoded.
pub fn load_documents(
    dir: &Path,
    split: Split,
    tokenizer: &TextTokenizer,
) -> Result<Vec<Vec<Vec<u32>>>> {
    let mut documents = Vec::new();
    for example in load_examples(dir, split)? {
        let text = match example {
            Example::Document { text } | Example::Labelled { text, .. } => text,
            Example::Tagged { tokens, .. } => crate::data::labelled::join_tokens(&tokens),
        };
        let parts = sentences(&text);
        let encoded: Vec<Vec<u32>> = tokenizer
            .encode_lines(&parts)?
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        if !encoded.is_empty() {
            documents.push(encoded);
        }
    }
    Ok(documents)
}

pub struct PretrainTask {
    pub config: BertConfig,
    mlm: MlmSection,
    specials: Specials,
    weighting: WeightingKind,
    train: Vec<Instance>,
    train_batches: EpochBatches,
    valid: Vec<Instance>,
    valid_batches: Vec<Vec<usize>>,
    seed: u64,
}

/// Pretraining figures of one batch: summed MLM loss and hits over masked tokens, summed
/// sentence-task loss and hits over sequences.
#[derive(Debug, Clone, Copy, Default)]
pub struct PretrainSums {
    pub mlm_loss: f64,
    pub mlm_correct: f64,
    pub masked: f64,
    pub sentence_loss: f64,
    pub sentence_correct: f64,
    pub sequences: f64,
}

struct PretrainOutput {
    mlm_loss: Tensor<1>,
    mlm_accuracy: Tensor<1>,
    masked: usize,
    sentence: Option<(Tensor<1>, Tensor<1>)>,
}

impl PretrainTask {
    pub fn new(
        recipe: &Recipe,
        config: BertConfig,
        dir: &Path,
        tokenizer: &TextTokenizer,
        shard: Shard,
    ) -> Result<Self> {
        let specials = Specials::of(tokenizer)?;
        let mlm = recipe.data.mlm.clone().unwrap_or_default();
        let instances = |split: Split, seed: u64| -> Result<Vec<Instance>> {
            let docs = load_documents(dir, split, tokenizer)?;
            Ok(create_instances(
                &docs,
                config.max_len,
                config.next_sentence,
                &mlm,
                &specials,
                seed,
            ))
        };
        let train = instances(Split::Train, recipe.seed)?;
        let valid = instances(Split::Valid, recipe.seed ^ 1)?;
        if train.is_empty() || valid.is_empty() {
            return Err(Error::Data(
                "no pretraining sequences in the training or validation split; check the data \
                 and `data.split`"
                    .into(),
            ));
        }
        let (batch, _) = batch_sizes(recipe, shard.count)?;
        let batches = |set: &[Instance]| {
            batches_by_length(
                set.len(),
                |i| set[i].ids.len(),
                |i| set[i].ids.len(),
                recipe.train.max_tokens,
                batch,
                recipe.seed,
            )
        };
        Ok(Self {
            train_batches: EpochBatches::new(
                batches(&train),
                recipe.seed,
                recipe.train.accum_grad,
                shard,
            ),
            valid_batches: batches(&valid),
            config,
            mlm,
            specials,
            weighting: recipe.loss.weighting,
            train,
            valid,
            seed: recipe.seed,
        })
    }

    /// The mask of instance `i` in `epoch`: drawn once (static) or per epoch (dynamic).
    fn masked(&self, set: &[Instance], i: usize, epoch: usize, salt: u64) -> Masked {
        let epoch = match self.mlm.masking {
            Masking::Static => 0,
            Masking::Dynamic => epoch as u64,
        };
        let mut rng = SplitMix64::for_step(self.seed ^ salt, epoch, i as u64);
        mask_tokens(
            &set[i].ids,
            &self.specials,
            self.config.vocab_size,
            &self.mlm,
            &mut rng,
        )
    }

    fn forward(
        &self,
        model: &BertPretraining,
        set: &[Instance],
        indices: &[usize],
        epoch: usize,
        salt: u64,
        device: &Device,
    ) -> PretrainOutput {
        let masked: Vec<Masked> = indices
            .iter()
            .map(|&i| self.masked(set, i, epoch, salt))
            .collect();
        let inputs: Vec<&[u32]> = masked.iter().map(|m| m.input.as_slice()).collect();
        let starts: Vec<usize> = indices.iter().map(|&i| set[i].first_segment).collect();
        let batch = TokenBatch::pad(&inputs, Some(&starts), self.specials.pad, 1);
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (row, m) in masked.iter().enumerate() {
            for &(p, id) in &m.targets {
                positions.push((row * batch.time + p) as i64);
                targets.push(id as i64);
            }
        }
        let positions = Tensor::<1, Int>::from_data(positions.as_slice(), device);
        let targets = Tensor::<1, Int>::from_data(targets.as_slice(), device);
        let (mlm_logits, sentence_logits) = model.forward(batch.bert_input(device), positions);
        let accuracy = |logits: Tensor<2>, targets: Tensor<1, Int>| {
            logits
                .argmax(1)
                .reshape([targets.dims()[0]])
                .equal(targets)
                .float()
                .mean()
        };
        let mlm_accuracy = accuracy(mlm_logits.clone().detach(), targets.clone());
        let (mlm_loss, _) = cross_entropy(mlm_logits, targets.clone(), 0.0, None);
        let sentence = sentence_logits.map(|logits| {
            let labels: Vec<i64> = indices
                .iter()
                .map(|&i| set[i].sentence_label as i64)
                .collect();
            let labels = Tensor::<1, Int>::from_data(labels.as_slice(), device);
            let acc = accuracy(logits.clone().detach(), labels.clone());
            (cross_entropy(logits, labels, 0.0, None).0, acc)
        });
        PretrainOutput {
            mlm_loss,
            mlm_accuracy,
            masked: targets.dims()[0],
            sentence,
        }
    }

    /// Summed figures over the batches of `set` that `shard` owns (valid or a test split).
    pub fn sums(
        &self,
        model: &BertPretraining,
        set: &[Instance],
        batches: &[Vec<usize>],
        device: &Device,
        shard: Shard,
    ) -> PretrainSums {
        let mut sums = PretrainSums::default();
        for (_, indices) in batches.iter().enumerate().filter(|(i, _)| shard.owns(*i)) {
            let out = self.forward(model, set, indices, 0, 0x7e57, device);
            let masked = out.masked as f64;
            sums.mlm_loss += out.mlm_loss.into_scalar::<f64>() * masked;
            sums.mlm_correct += out.mlm_accuracy.into_scalar::<f64>() * masked;
            sums.masked += masked;
            if let Some((loss, acc)) = out.sentence {
                let n = indices.len() as f64;
                sums.sentence_loss += loss.into_scalar::<f64>() * n;
                sums.sentence_correct += acc.into_scalar::<f64>() * n;
                sums.sequences += n;
            }
        }
        sums
    }

    /// The instances and batches of a split, for `eval`.
    pub fn split_instances(
        &self,
        dir: &Path,
        split: Split,
        tokenizer: &TextTokenizer,
        batch_size: usize,
    ) -> Result<(Vec<Instance>, Vec<Vec<usize>>)> {
        let docs = load_documents(dir, split, tokenizer)?;
        let set = create_instances(
            &docs,
            self.config.max_len,
            self.config.next_sentence,
            &self.mlm,
            &self.specials,
            self.seed ^ 2,
        );
        let batches = batches_by_length(
            set.len(),
            |i| set[i].ids.len(),
            |i| set[i].ids.len(),
            None,
            batch_size,
            0,
        );
        Ok((set, batches))
    }

    pub fn sentence_task(&self) -> NextSentence {
        self.config.next_sentence
    }
}

impl Task for PretrainTask {
    type Model = BertPretraining;

    fn init_model(&self, device: &Device) -> Result<BertPretraining> {
        let terms = match self.weighting {
            WeightingKind::Uncertainty => self.loss_names().len(),
            _ => 0,
        };
        Ok(self.config.init_pretraining(terms, device))
    }

    fn train_loss(
        &self,
        model: &BertPretraining,
        step: usize,
        micro: usize,
        device: &Device,
    ) -> StepLoss {
        let (indices, epoch) = self.train_batches.at(step, micro);
        let out = self.forward(model, &self.train, indices, epoch, 0, device);
        let nll = out.mlm_loss.clone().detach();
        match out.sentence {
            Some((loss, acc)) => StepLoss {
                losses: vec![out.mlm_loss, loss],
                nll,
                kpis: vec![out.mlm_accuracy, acc],
            },
            None => StepLoss::single(out.mlm_loss, nll),
        }
    }

    fn loss_names(&self) -> Vec<&'static str> {
        match self.config.next_sentence.loss_name() {
            Some(name) => vec!["mlm", name],
            None => vec![],
        }
    }

    fn log_variances(&self, model: &BertPretraining) -> Option<Tensor<1>> {
        model.log_variances.as_ref().map(|s| s.val())
    }

    /// The masked-LM loss per masked token (masks fixed, so evaluations compare).
    fn validation_sum(
        &self,
        model: &BertPretraining,
        device: &Device,
        shard: Shard,
    ) -> Result<LossSum> {
        let model = model.valid();
        let device = device.clone().without_autodiff();
        let sums = self.sums(&model, &self.valid, &self.valid_batches, &device, shard);
        Ok(LossSum {
            total: sums.mlm_loss,
            count: sums.masked,
        })
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.train_batches
            .mean_batch_total(|i| self.train[i].ids.len())
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.train_batches.per_rank_epoch()
    }

    fn model_width(&self) -> usize {
        self.config.encoder.width
    }

    fn step_description(&self, ranks: usize, accum_grad: usize) -> String {
        format!(
            "~{:.0} sequences of up to {} tokens ({} pretraining sequences, masked LM{})",
            self.train_batches.mean_batch_len() * (ranks * accum_grad) as f64,
            self.config.max_len,
            self.train.len(),
            self.config
                .next_sentence
                .loss_name()
                .map_or(String::new(), |n| format!(" + {}", n.to_uppercase()))
        )
    }
}
