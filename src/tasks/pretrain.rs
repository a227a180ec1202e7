//! BERT pretraining: masked LM plus next-sentence or sentence-order prediction on documents
//! packed into `[CLS] A [SEP] B [SEP]` sequences; the two losses are weighted by
//! `loss.weighting`. Static masking draws each sequence's mask once (BERT); dynamic masking draws
//! it again every epoch (RoBERTa).

use super::{EvalRequest, LossSum, Pipeline, StepLoss, Task};
use crate::data::Split;
use crate::data::batching::{BatchLimits, EpochBatches, batches_by_length};
use crate::data::labelled::{Example, Specials, load_examples, load_tokenizer, tokenizer_path};
use crate::data::pretraining::{Instance, Masked, create_instances, mask_tokens, sentences};
use crate::data::token_batches::TokenBatch;
use crate::data::tokenizer::TextTokenizer;
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::eval::report::{Evaluation, Scores};
use crate::loss::cross_entropy;
use crate::models::bert::{BertConfig, BertPretraining};
use crate::recipe::{Masking, MlmSection, Recipe, TaskKind, WeightingKind};
use crate::rng::SplitMix64;
use crate::train::pretrained::{Pretrained, with_pretrained};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
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

/// BERT pretraining of the configured encoder.
pub struct Pretraining {
    objective: Objective,
    /// Learned log-variances in the model: one per loss under uncertainty weighting.
    uncertainty_terms: usize,
}

impl Pretraining {
    pub fn new(config: BertConfig, recipe: &Recipe) -> Self {
        let uncertainty_terms = match recipe.loss.weighting {
            WeightingKind::Uncertainty => loss_names(&config).len(),
            _ => 0,
        };
        Self {
            objective: Objective {
                config,
                mlm: recipe.data.mlm.clone().unwrap_or_default(),
                seed: recipe.seed,
            },
            uncertainty_terms,
        }
    }
}

/// The losses the loop weights: masked LM and the sentence-pair task, when there is one (a
/// single loss needs no names).
fn loss_names(config: &BertConfig) -> Vec<&'static str> {
    match config.next_sentence.loss_name() {
        Some(name) => vec!["mlm", name],
        None => vec![],
    }
}

/// How sequences are built, masked and scored: what training and evaluation share.
struct Objective {
    config: BertConfig,
    mlm: MlmSection,
    seed: u64,
}

/// Summed pretraining figures: MLM loss and hits over masked tokens, sentence-task loss and hits
/// over sequences.
#[derive(Debug, Clone, Copy, Default)]
struct PretrainSums {
    mlm_loss: f64,
    mlm_correct: f64,
    masked: f64,
    sentence_loss: f64,
    sentence_correct: f64,
    sequences: f64,
}

impl std::ops::AddAssign for PretrainSums {
    fn add_assign(&mut self, other: Self) {
        self.mlm_loss += other.mlm_loss;
        self.mlm_correct += other.mlm_correct;
        self.masked += other.masked;
        self.sentence_loss += other.sentence_loss;
        self.sentence_correct += other.sentence_correct;
        self.sequences += other.sequences;
    }
}

struct PretrainOutput {
    mlm_loss: Tensor<1>,
    mlm_accuracy: Tensor<1>,
    masked: usize,
    sentence: Option<(Tensor<1>, Tensor<1>)>,
}

impl Objective {
    /// The pretraining sequences of a split's documents.
    fn instances(
        &self,
        dir: &Path,
        split: Split,
        tokenizer: &TextTokenizer,
        specials: &Specials,
        seed: u64,
    ) -> Result<Vec<Instance>> {
        let docs = load_documents(dir, split, tokenizer)?;
        Ok(create_instances(
            &docs,
            self.config.max_len,
            self.config.next_sentence,
            &self.mlm,
            specials,
            seed,
        ))
    }

    /// The mask of instance `i` in `epoch`: drawn once (static) or per epoch (dynamic).
    fn masked(
        &self,
        set: &[Instance],
        i: usize,
        epoch: usize,
        salt: u64,
        specials: &Specials,
    ) -> Masked {
        let epoch = match self.mlm.masking {
            Masking::Static => 0,
            Masking::Dynamic => epoch as u64,
        };
        let mut rng = SplitMix64::for_step(self.seed ^ salt, epoch, i as u64);
        mask_tokens(
            &set[i].ids,
            specials,
            self.config.vocab_size,
            &self.mlm,
            &mut rng,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        model: &BertPretraining,
        set: &[Instance],
        indices: &[usize],
        epoch: usize,
        salt: u64,
        specials: &Specials,
        device: &Device,
    ) -> PretrainOutput {
        let masked: Vec<Masked> = indices
            .iter()
            .map(|&i| self.masked(set, i, epoch, salt, specials))
            .collect();
        let inputs: Vec<&[u32]> = masked.iter().map(|m| m.input.as_slice()).collect();
        let starts: Vec<usize> = indices.iter().map(|&i| set[i].first_segment).collect();
        let batch = TokenBatch::pad(&inputs, Some(&starts), specials.pad, 1);
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

    /// The figures of one batch of a held-out set (fixed masks, so evaluations compare).
    fn sums(
        &self,
        model: &BertPretraining,
        set: &[Instance],
        indices: &[usize],
        specials: &Specials,
        device: &Device,
    ) -> PretrainSums {
        let out = self.forward(model, set, indices, 0, 0x7e57, specials, device);
        let masked = out.masked as f64;
        let mut sums = PretrainSums {
            mlm_loss: out.mlm_loss.into_scalar::<f64>() * masked,
            mlm_correct: out.mlm_accuracy.into_scalar::<f64>() * masked,
            masked,
            ..PretrainSums::default()
        };
        if let Some((loss, acc)) = out.sentence {
            let n = indices.len() as f64;
            sums.sentence_loss = loss.into_scalar::<f64>() * n;
            sums.sentence_correct = acc.into_scalar::<f64>() * n;
            sums.sequences = n;
        }
        sums
    }
}

/// Batches of sequences of similar length.
fn instance_batches(set: &[Instance], limits: BatchLimits, seed: u64) -> Vec<Vec<usize>> {
    batches_by_length(
        set.len(),
        |i| set[i].ids.len(),
        |i| set[i].ids.len(),
        limits,
        seed,
    )
}

/// The scores of a pretrained model on a whole split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainScores {
    pub mlm_loss: f64,
    pub mlm_accuracy: f64,
    pub masked_tokens: usize,
    pub sequences: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_accuracy: Option<f64>,
}

impl PretrainScores {
    /// The sentence-pair task's name, loss and accuracy, when there is one.
    fn sentence_task(&self) -> Option<(&'static str, f64, f64)> {
        let nsp = self
            .nsp_loss
            .zip(self.nsp_accuracy)
            .map(|(l, a)| ("nsp", l, a));
        let sop = self
            .sop_loss
            .zip(self.sop_accuracy)
            .map(|(l, a)| ("sop", l, a));
        nsp.or(sop)
    }
}

impl Scores for PretrainScores {
    fn summary(&self) -> Option<String> {
        let mut out = format!(
            "masked LM: loss {:.4} (ppl {:.2}), accuracy {:.4} over {} masked tokens\n",
            self.mlm_loss,
            self.mlm_loss.exp(),
            self.mlm_accuracy,
            self.masked_tokens
        );
        if let Some((name, loss, accuracy)) = self.sentence_task() {
            out += &format!(
                "{}: loss {loss:.4}, accuracy {accuracy:.4}\n",
                name.to_uppercase()
            );
        }
        Some(out)
    }

    fn headline(&self) -> String {
        let mut out = format!(
            "MLM loss {:.4}  MLM acc {:.4}",
            self.mlm_loss, self.mlm_accuracy
        );
        if let Some((name, _, accuracy)) = self.sentence_task() {
            out += &format!("  {} acc {accuracy:.4}", name.to_uppercase());
        }
        out
    }
}

impl Pipeline for Pretraining {
    const KIND: TaskKind = TaskKind::Pretraining;
    type Model = BertPretraining;
    type Training = PretrainTask;
    type Scores = PretrainScores;

    fn init_model(&self, device: &Device) -> BertPretraining {
        (self.objective.config).init_pretraining(self.uncertainty_terms, device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<PretrainTask> {
        PretrainTask::new(recipe, self, shard)
    }

    fn evaluate(
        &self,
        model: &BertPretraining,
        request: &EvalRequest,
    ) -> Result<Evaluation<PretrainScores>> {
        let dir = request.recipe.prepared_dir();
        let (tokenizer, specials) = load_tokenizer(&request.exp.tokenizer_path())?;
        let objective = &self.objective;
        let set = objective.instances(
            &dir,
            request.split,
            &tokenizer,
            &specials,
            objective.seed ^ 2,
        )?;
        let limits = BatchLimits::scoring(request.recipe, request.batch_size);
        let mut sums = PretrainSums::default();
        for indices in instance_batches(&set, limits, 0) {
            sums += objective.sums(model, &set, &indices, &specials, request.device);
        }
        // The sentence task's figures, per sequence, under its own name.
        let sentence = |task: &str, sum: f64| {
            (objective.config.next_sentence.loss_name() == Some(task))
                .then(|| sum / sums.sequences.max(1.0))
        };
        Ok(Evaluation::of(PretrainScores {
            mlm_loss: sums.mlm_loss / sums.masked.max(1.0),
            mlm_accuracy: sums.mlm_correct / sums.masked.max(1.0),
            masked_tokens: sums.masked as usize,
            sequences: set.len(),
            nsp_loss: sentence("nsp", sums.sentence_loss),
            nsp_accuracy: sentence("nsp", sums.sentence_correct),
            sop_loss: sentence("sop", sums.sentence_loss),
            sop_accuracy: sentence("sop", sums.sentence_correct),
        }))
    }
}

pub struct PretrainTask {
    pretraining: Pretraining,
    /// Continued pretraining: the checkpoint it starts from.
    pretrained: Option<Pretrained>,
    specials: Specials,
    train: Vec<Instance>,
    train_batches: EpochBatches,
    valid: Vec<Instance>,
    valid_batches: Vec<Vec<usize>>,
}

impl PretrainTask {
    fn new(recipe: &Recipe, pretraining: Pretraining, shard: Shard) -> Result<Self> {
        let dir = recipe.prepared_dir();
        let (tokenizer, specials) = load_tokenizer(&tokenizer_path(&dir))?;
        let objective = &pretraining.objective;
        let train = objective.instances(&dir, Split::Train, &tokenizer, &specials, recipe.seed)?;
        let valid =
            objective.instances(&dir, Split::Valid, &tokenizer, &specials, recipe.seed ^ 1)?;
        if train.is_empty() || valid.is_empty() {
            return Err(Error::Data(
                "no pretraining sequences in the training or validation split; check the data \
                 and `data.split`"
                    .into(),
            ));
        }
        let limits = BatchLimits::per_rank(recipe, shard.count)?;
        Ok(Self {
            train_batches: EpochBatches::new(
                instance_batches(&train, limits, recipe.seed),
                recipe.seed,
                recipe.train.accum_grad,
                shard,
            ),
            valid_batches: instance_batches(&valid, limits, recipe.seed),
            pretraining,
            pretrained: Pretrained::of(recipe)?,
            specials,
            train,
            valid,
        })
    }

    fn config(&self) -> &BertConfig {
        &self.pretraining.objective.config
    }
}

impl Task for PretrainTask {
    type Model = BertPretraining;

    fn init_model(&self, device: &Device, load_pretrained: bool) -> Result<BertPretraining> {
        with_pretrained(
            self.pretraining.init_model(device),
            self.pretrained.as_ref().filter(|_| load_pretrained),
        )
    }

    fn train_loss(
        &self,
        model: &BertPretraining,
        step: usize,
        micro: usize,
        device: &Device,
    ) -> StepLoss {
        let (indices, epoch) = self.train_batches.at(step, micro);
        let objective = &self.pretraining.objective;
        let out = objective.forward(
            model,
            &self.train,
            indices,
            epoch,
            0,
            &self.specials,
            device,
        );
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
        loss_names(self.config())
    }

    fn log_variances(&self, model: &BertPretraining) -> Option<Tensor<1>> {
        model.log_variances.as_ref().map(|s| s.val())
    }

    fn validation_batches(&self) -> usize {
        self.valid_batches.len()
    }

    /// The masked-LM loss per masked token.
    fn validation_loss(&self, model: &BertPretraining, batch: usize, device: &Device) -> LossSum {
        let indices = &self.valid_batches[batch];
        let objective = &self.pretraining.objective;
        let sums = objective.sums(model, &self.valid, indices, &self.specials, device);
        LossSum {
            total: sums.mlm_loss,
            count: sums.masked,
        }
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.train_batches
            .mean_batch_total(|i| self.train[i].ids.len())
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.train_batches.per_rank_epoch()
    }

    fn model_width(&self) -> usize {
        self.config().encoder.width
    }

    fn step_description(&self, ranks: usize, accum_grad: usize) -> String {
        let config = self.config();
        format!(
            "~{:.0} sequences of up to {} tokens ({} pretraining sequences, masked LM{})",
            self.train_batches.mean_batch_len() * (ranks * accum_grad) as f64,
            config.max_len,
            self.train.len(),
            config
                .next_sentence
                .loss_name()
                .map_or(String::new(), |n| format!(" + {}", n.to_uppercase()))
        )
    }
}
