//! The typed recipe: one YAML file that says everything about an experiment.
//!
//! Every section rejects unknown keys, every optional key has a default, and the fully resolved
//! recipe (defaults filled, `--set` overrides applied, paths made absolute) is written into the
//! experiment folder so `eval`, `generate` and a resumed `train` need nothing else.

mod load;
mod model;
mod overrides;
mod validate;

pub use load::{load_recipe, parse_recipe};
pub use model::{
    DataSizes, ModelOptions, ModelSection, TaskKind, require_dropout, require_heads_divide,
    require_positive, vocab_at_least,
};
pub use overrides::apply_overrides;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Which Burn backend runs the model, and on which device.
    #[serde(default)]
    pub backend: BackendSection,
    /// Seed for weight initialisation, data order and dropout.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The experiment folder (resolved recipe, checkpoints, metrics, reports).
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    pub data: DataSection,
    #[serde(deserialize_with = "model::deserialize_mapping")]
    pub model: ModelSection,
    #[serde(default)]
    pub loss: LossSection,
    #[serde(default)]
    pub optim: OptimSection,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    #[serde(default)]
    pub train: TrainSection,
    /// Data-parallel training over MPI (ignored by a single process).
    #[serde(default)]
    pub distributed: DistributedSection,
    /// Fine-tuning: start from the encoder of this pretraining experiment (its best
    /// checkpoint), with its tokenizer; the new head is initialised fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

fn default_seed() -> u64 {
    1337
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Flex,
    Ndarray,
    Wgpu,
    Tch,
    Cuda,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Tch => "tch",
            BackendKind::Cuda => "cuda",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    #[serde(rename = "type", default)]
    pub kind: BackendKind,
    /// Which device of that backend: `default`; wgpu: `cpu`, `discrete:N`, `integrated:N`,
    /// `virtual:N`; cuda: `N`; tch: `cpu`, `cuda:N`, `mps`.
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    "default".into()
}

impl Default for BackendSection {
    fn default() -> Self {
        Self {
            kind: BackendKind::default(),
            device: default_device(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Plain UTF-8 text for language modelling: one contiguous token stream.
    #[default]
    Text,
    /// Sentence pairs for translation (`data.parallel` says how they are laid out).
    Parallel,
    /// A CSV/TSV table of labelled texts for classification (`data.csv` names the columns); a
    /// BERT pretraining recipe takes its text column as documents.
    Csv,
    /// Token classification: `token<TAB>tag` lines, a blank line between sentences (BIO/BIOES).
    Tagging,
}

impl DataFormat {
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Text => "text",
            DataFormat::Parallel => "parallel",
            DataFormat::Csv => "csv",
            DataFormat::Tagging => "tagging",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    #[serde(default)]
    pub format: DataFormat,
    /// The raw training text. When `valid`/`test` are absent it is split by `split`.
    pub train: PathBuf,
    #[serde(default)]
    pub valid: Option<PathBuf>,
    #[serde(default)]
    pub test: Option<PathBuf>,
    #[serde(default)]
    pub split: SplitSection,
    /// Where `prepare-data` writes the tokenizer and the encoded splits
    /// (default: `<output_dir>/data`).
    #[serde(default)]
    pub prepared_dir: Option<PathBuf>,
    /// The tokenizer (for parallel data: the source side's, or both sides' when
    /// `target_tokenizer` is absent, i.e. a joint vocabulary).
    pub tokenizer: TokenizerSection,
    /// Parallel data only: a separate tokenizer for the target side.
    #[serde(default)]
    pub target_tokenizer: Option<TokenizerSection>,
    /// Parallel data only: languages, layout, bad lines and length filters.
    #[serde(default)]
    pub parallel: Option<ParallelSection>,
    /// CSV data only: the delimiter, header and columns.
    #[serde(default)]
    pub csv: Option<CsvSection>,
    /// BERT pretraining only: masking and how sentences are packed into sequences.
    #[serde(default)]
    pub mlm: Option<MlmSection>,
}

/// A table of labelled texts: RFC 4180 CSV (quoted fields may hold delimiters, doubled quotes and
/// line breaks) or TSV.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsvSection {
    /// The field separator (default: a tab for `*.tsv` files, else a comma).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// The first row names the columns; without a header, columns are named by 0-based index.
    #[serde(default = "default_true")]
    pub header: bool,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    #[serde(default = "default_label_column")]
    pub label_column: String,
    /// The labels, in id order. Absent: those of the training split, sorted (numerically when
    /// all are numbers); a held-out label the training split lacks is then an error.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

impl Default for CsvSection {
    fn default() -> Self {
        Self {
            delimiter: None,
            header: true,
            text_column: default_text_column(),
            label_column: default_label_column(),
            labels: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_text_column() -> String {
    "text".into()
}
fn default_label_column() -> String {
    "label".into()
}

/// BERT's data creation: 15% of the non-special tokens are picked for prediction, of which 80%
/// become `[MASK]`, 10% a random token and 10% stay; sequences are packed from whole sentences of
/// one document, a shorter target length drawn with `short_seq_prob`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MlmSection {
    #[serde(default = "default_mask_prob")]
    pub mask_prob: f64,
    #[serde(default = "default_mask_token_prob")]
    pub mask_token_prob: f64,
    #[serde(default = "default_random_token_prob")]
    pub random_token_prob: f64,
    #[serde(default = "default_short_seq_prob")]
    pub short_seq_prob: f64,
    /// `static`: one masking per sequence, drawn once (BERT); `dynamic`: re-drawn every epoch
    /// (RoBERTa).
    #[serde(default)]
    pub masking: Masking,
}

fn default_mask_prob() -> f64 {
    0.15
}
fn default_mask_token_prob() -> f64 {
    0.8
}
fn default_random_token_prob() -> f64 {
    0.1
}
fn default_short_seq_prob() -> f64 {
    0.1
}

impl Default for MlmSection {
    fn default() -> Self {
        Self {
            mask_prob: default_mask_prob(),
            mask_token_prob: default_mask_token_prob(),
            random_token_prob: default_random_token_prob(),
            short_seq_prob: default_short_seq_prob(),
            masking: Masking::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Masking {
    #[default]
    Static,
    Dynamic,
}

/// Sentence pairs: a TSV (`source<TAB>target[<TAB>ignored...]`, columns named by
/// `tsv_columns`) or two aligned files `<path>.<source_lang>` and `<path>.<target_lang>`
/// (fairseq's `--trainpref` with `--source-lang`/`--target-lang`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParallelSection {
    pub source_lang: String,
    pub target_lang: String,
    #[serde(default)]
    pub layout: ParallelLayout,
    /// The languages of the TSV's first columns, in order (default: source, target). Naming
    /// them lets one corpus be trained in either direction by swapping the two `*_lang` keys.
    #[serde(default)]
    pub tsv_columns: Option<Vec<String>>,
    /// What a malformed line (missing tab, empty side) does: `skip` it (counted and reported,
    /// the first few with file:line) or `error` (stop at the first, with file:line).
    #[serde(default)]
    pub on_bad_line: BadLinePolicy,
    /// Training pairs longer than this many source tokens are dropped (counted).
    #[serde(default = "default_max_pair_tokens")]
    pub max_source_tokens: usize,
    /// Training pairs longer than this many target tokens are dropped (counted).
    #[serde(default = "default_max_pair_tokens")]
    pub max_target_tokens: usize,
    /// Training pairs whose token lengths differ by more than this ratio either way are
    /// dropped (Moses' clean-corpus `-ratio`); 0 keeps all.
    #[serde(default)]
    pub max_length_ratio: f64,
}

fn default_max_pair_tokens() -> usize {
    128
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ParallelLayout {
    #[default]
    Tsv,
    /// Two line-aligned files, `<path>.<lang>` for each side.
    Files,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BadLinePolicy {
    #[default]
    Skip,
    Error,
}

/// How one raw file is cut into train/valid/test, always at line boundaries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitSection {
    #[serde(default = "default_train_ratio")]
    pub train: f64,
    #[serde(default = "default_heldout_ratio")]
    pub valid: f64,
    #[serde(default = "default_heldout_ratio")]
    pub test: f64,
    /// `false`: contiguous (train first, then valid, then test), as nanoGPT does.
    /// `true`: chunks of `chunk_lines` lines are dealt to the splits by a seeded shuffle.
    #[serde(default)]
    pub shuffle: bool,
    #[serde(default = "default_chunk_lines")]
    pub chunk_lines: usize,
}

fn default_train_ratio() -> f64 {
    0.9
}
fn default_heldout_ratio() -> f64 {
    0.05
}
fn default_chunk_lines() -> usize {
    100
}

impl Default for SplitSection {
    fn default() -> Self {
        Self {
            train: default_train_ratio(),
            valid: default_heldout_ratio(),
            test: default_heldout_ratio(),
            shuffle: false,
            chunk_lines: default_chunk_lines(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// One token per Unicode character seen in the training text (nanoGPT's char level).
    Char,
    /// Byte-level BPE as in GPT-2, trained on the training split.
    Bpe,
    /// WordPiece as in BERT, trained on the training split.
    Wordpiece,
    /// Unigram as in SentencePiece, trained on the training split.
    Unigram,
    /// An existing HF `tokenizer.json` (`path`).
    File,
    /// One token per whitespace-separated word seen in the text (HF's WordLevel model), with
    /// `<unk>` for the others: the words of word embeddings.
    Word,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    #[serde(rename = "type")]
    pub kind: TokenizerKind,
    /// Target vocabulary size for trained tokenizers (bpe, wordpiece, unigram).
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// The `tokenizer.json` to load when `type: file`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Minimum pair frequency for a merge (bpe, wordpiece).
    #[serde(default = "default_min_frequency")]
    pub min_frequency: u64,
    /// Extra special tokens added to the vocabulary (e.g. `<|endoftext|>`).
    #[serde(default)]
    pub special_tokens: Vec<String>,
}

fn default_min_frequency() -> u64 {
    2
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// Label smoothing for cross-entropy (0 = plain cross-entropy).
    #[serde(default)]
    pub label_smoothing: f64,
    /// How a task with several losses (BERT pretraining: `mlm` and `nsp`/`sop`) adds them up.
    #[serde(default)]
    pub weighting: WeightingKind,
    /// `static`: each loss's weight by name (default 1).
    #[serde(default)]
    pub task_weights: std::collections::BTreeMap<String, f64>,
    /// `dwa`: the softmax temperature T over the losses' rates of descent (Liu et al.: 2).
    #[serde(default = "default_dwa_temperature")]
    pub temperature: f64,
    /// `dwa`: steps in one averaging window (the paper's epoch; default: one epoch).
    #[serde(default)]
    pub window_steps: Option<usize>,
    /// `dtp`: the focusing parameter gamma of `-(1 - kpi)^gamma * log(kpi)`.
    #[serde(default = "default_dtp_gamma")]
    pub focal_gamma: f64,
    /// `dtp`: the KPI (accuracy) is smoothed as `kpi = m * kpi + (1 - m) * batch_kpi`.
    #[serde(default = "default_kpi_momentum")]
    pub kpi_momentum: f64,
}

fn default_dwa_temperature() -> f64 {
    2.0
}
fn default_dtp_gamma() -> f64 {
    1.0
}
fn default_kpi_momentum() -> f64 {
    0.9
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            label_smoothing: 0.0,
            weighting: WeightingKind::default(),
            task_weights: Default::default(),
            temperature: default_dwa_temperature(),
            window_steps: None,
            focal_gamma: default_dtp_gamma(),
            kpi_momentum: default_kpi_momentum(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightingKind {
    /// Fixed weights (`task_weights`).
    #[default]
    Static,
    /// Kendall, Gal & Cipolla 2018: `sum(exp(-s_i) * L_i + s_i)`, the s_i learned.
    Uncertainty,
    /// Dynamic weight average (Liu, Johns & Davison 2019).
    Dwa,
    /// Dynamic task prioritisation (Guo et al. 2018).
    Dtp,
}

impl WeightingKind {
    pub fn name(self) -> &'static str {
        match self {
            WeightingKind::Static => "static",
            WeightingKind::Uncertainty => "uncertainty",
            WeightingKind::Dwa => "dwa",
            WeightingKind::Dtp => "dtp",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimKind {
    #[default]
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    #[serde(rename = "type", default)]
    pub kind: OptimKind,
    /// Peak learning rate (for `noam`, the factor in front of the schedule).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// AdamW's (beta1, beta2).
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay (AdamW) or L2 penalty (SGD). Biases, norms and embeddings are
    /// never decayed.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// SGD momentum (0 = plain SGD).
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    /// Layer-wise learning-rate decay (ELECTRA, BEiT): the top layer trains at `lr`, the layer
    /// `d` below it at `lr * layer_lr_decay^d`, the embeddings at `lr * layer_lr_decay^layers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_lr_decay: Option<f64>,
    /// The task head (classifier, tagger, CRF, MLM/NSP heads) trains at `lr * head_lr_scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_lr_scale: Option<f64>,
    /// Lookahead around the optimiser (Zhang et al. 2019); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookahead: Option<LookaheadSection>,
}

/// `optim.lookahead`: every `k` optimiser steps the slow weights move `alpha` of the way to the
/// fast ones, and the fast weights restart from them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LookaheadSection {
    #[serde(default = "default_lookahead_k")]
    pub k: usize,
    #[serde(default = "default_lookahead_alpha")]
    pub alpha: f64,
}

fn default_lookahead_k() -> usize {
    5
}
fn default_lookahead_alpha() -> f64 {
    0.5
}

fn default_lr() -> f64 {
    1e-3
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.01
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            kind: OptimKind::default(),
            lr: default_lr(),
            betas: default_betas(),
            eps: default_eps(),
            weight_decay: default_weight_decay(),
            momentum: 0.0,
            nesterov: false,
            lookahead: None,
            layer_lr_decay: None,
            head_lr_scale: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    #[default]
    Constant,
    /// Linear warm-up, then cosine decay to `min_lr` at `decay_steps` (nanoGPT).
    WarmupCosine,
    /// Linear warm-up, then linear decay to `min_lr` at `decay_steps` (BERT, HF default).
    WarmupLinear,
    /// Vaswani et al.: `lr * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`.
    Noam,
    /// fairseq's inverse_sqrt: linear warm-up to `lr`, then `lr * sqrt(warmup / step)`.
    InverseSqrt,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    #[serde(rename = "type", default)]
    pub kind: SchedulerKind,
    #[serde(default)]
    pub warmup_steps: usize,
    /// The floor that cosine and linear decay reach.
    #[serde(default)]
    pub min_lr: f64,
    /// The step at which decay reaches `min_lr` (default: the last training step).
    #[serde(default)]
    pub decay_steps: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Number of optimiser steps. Give this or `max_epochs`.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Number of passes over the training tokens, turned into steps.
    #[serde(default)]
    pub max_epochs: Option<usize>,
    /// Examples per micro-batch (sequences, texts, sentences or sentence pairs); for tasks with
    /// examples of varying length, the most in one batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Tasks with examples of varying length (translation, classification, tagging,
    /// pretraining): a micro-batch holds examples of similar length up to this many tokens,
    /// padding included (the longest example times the examples, as fairseq's `--max-tokens`).
    /// Per rank, like `batch_size`, as `distributed.batch_size_is` says.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Micro-batches whose gradients are averaged into one optimiser step.
    #[serde(default = "default_one")]
    pub accum_grad: usize,
    /// Clip gradients to this global L2 norm over all parameters (0 disables).
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    #[serde(default = "default_log_interval")]
    pub log_interval: usize,
    #[serde(default = "default_eval_interval")]
    pub eval_interval: usize,
    /// Batches drawn from each held-out split per evaluation.
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    #[serde(default = "default_save_interval")]
    pub save_interval: usize,
    /// Keep this many most recent checkpoints.
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
    /// Also keep this many checkpoints with the lowest validation loss.
    #[serde(default = "default_one")]
    pub keep_best: usize,
    /// Write every figure of `metrics.jsonl` as TensorBoard scalars too
    /// (`EXP_DIR/tensorboard/`).
    #[serde(default = "default_true")]
    pub tensorboard: bool,
    /// Stop when the validation loss stops improving (HF's `EarlyStoppingCallback`, fairseq's
    /// `--patience`); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingSection>,
    /// Keep an exponential moving average of the weights with this decay (off when absent); it
    /// is what validation measures and is saved as `ema.safetensors` in each checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Parameters left as they are (fine-tuning): no gradient, optimiser state or weight decay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<FreezeSection>,
}

/// `train.freeze`: what fine-tuning leaves untrained. Which parameters are the embeddings and
/// which make layer `i` is the model's (`train::freeze::Anatomy`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct FreezeSection {
    /// The token, position and segment embeddings (with their norm and projection).
    #[serde(default)]
    pub embeddings: bool,
    /// The lowest this many layers of each layer stack.
    #[serde(default)]
    pub bottom_layers: usize,
    /// Dotted parameter-path prefixes, as `nlpkit` names them (e.g. `bert.encoder.layers.0`).
    #[serde(default)]
    pub modules: Vec<String>,
}

/// `train.early_stopping`: after each evaluation every `eval_interval` steps, one that does not
/// improve on the best by more than `min_delta` is a bad one; `patience` bad ones in a row stop
/// the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingSection {
    pub patience: usize,
    #[serde(default)]
    pub min_delta: f64,
    #[serde(default)]
    pub metric: EarlyStoppingMetric,
}

/// What early stopping watches. Lower is better for each.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EarlyStoppingMetric {
    /// The validation loss (the plain NLL for token-level tasks), all-reduced over the ranks.
    #[default]
    ValidLoss,
}

fn default_batch_size() -> usize {
    12
}
fn default_one() -> usize {
    1
}
fn default_grad_clip() -> f64 {
    1.0
}
fn default_log_interval() -> usize {
    10
}
fn default_eval_interval() -> usize {
    250
}
fn default_eval_batches() -> usize {
    20
}
fn default_save_interval() -> usize {
    500
}
fn default_keep_last() -> usize {
    2
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            max_steps: None,
            max_epochs: None,
            batch_size: default_batch_size(),
            max_tokens: None,
            accum_grad: 1,
            grad_clip: default_grad_clip(),
            log_interval: default_log_interval(),
            eval_interval: default_eval_interval(),
            eval_batches: default_eval_batches(),
            save_interval: default_save_interval(),
            keep_last: default_keep_last(),
            keep_best: 1,
            early_stopping: None,
            tensorboard: true,
            freeze: None,
            ema_decay: None,
        }
    }
}

/// How `train.batch_size` is read when several ranks train one model.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BatchScope {
    /// Every rank takes `batch_size` sequences, so the global batch grows with the ranks (torch
    /// DDP, fairseq, HF Trainer).
    #[default]
    PerRank,
    /// `batch_size` is the global batch, split evenly across the ranks: the same recipe trains
    /// the same way on any number of ranks.
    Global,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistributedSection {
    #[serde(default)]
    pub batch_size_is: BatchScope,
    /// The device each rank takes, replacing `backend.device`; `{local_rank}` (the rank on its
    /// machine) and `{rank}` are filled in, e.g. `cuda:{local_rank}` for tch, `{local_rank}` for
    /// cuda, `discrete:{local_rank}` for wgpu.
    #[serde(default)]
    pub device: Option<String>,
    /// Seconds a rank waits for the others in a collective before it aborts the whole job (a
    /// rank that died or hangs). Must exceed the time rank 0 takes to write a checkpoint.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
}

fn default_timeout_s() -> f64 {
    30.0
}

impl Default for DistributedSection {
    fn default() -> Self {
        Self {
            batch_size_is: BatchScope::default(),
            device: None,
            timeout_s: default_timeout_s(),
        }
    }
}

impl Recipe {
    /// What the recipe trains its model to do: its model section decides (validation checked
    /// that the data format suits it).
    pub fn task(&self) -> TaskKind {
        self.model.options().task()
    }

    /// The experiment folder.
    pub fn output_dir(&self) -> PathBuf {
        self.output_dir.clone().unwrap_or_else(|| "exp".into())
    }

    /// Where the tokenizer and encoded splits live.
    pub fn prepared_dir(&self) -> PathBuf {
        self.data
            .prepared_dir
            .clone()
            .unwrap_or_else(|| self.output_dir().join("data"))
    }

    /// The recipe as YAML, for `recipe check` and the experiment folder.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a recipe always serialises")
    }
}
