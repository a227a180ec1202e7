//! Word embeddings: word2vec (skip-gram or CBOW with negative sampling) and GloVe trained on
//! plain text by the shared loop, their vectors written in word2vec's text format, and scored by
//! nearest neighbours, analogies and word-pair similarity (`eval::embeddings`).
//!
//! Batches are drawn as word2vec.c draws its training examples, but at random positions from
//! `SplitMix64::for_step(seed, step, micro)` rather than in a pass over the file, so a resumed
//! run sees the batches a straight one does: a centre word (kept with word2vec.c's
//! sub-sampling probability), its window `b` drawn in `1..=window`, the `b` nearest kept words
//! each side within its sentence (each kept with the same probability, so windows reach over
//! the words sub-sampling drops), and negatives from the unigram distribution raised to 3/4.
//! GloVe's batches are co-occurrence entries drawn uniformly.

use super::{EvalRequest, LossSum, Pipeline, PreparedData, StepLoss, Task};
use crate::data::Split;
use crate::data::embedding_corpus::{
    self, CorpusOptions, EmbeddingMeta, load_split, read_cooccurrences, read_vocab,
};
use crate::data::prepared::{Preparation, Prepared, load_meta};
use crate::distributed::Shard;
use crate::error::{Error, Result};
use crate::eval::embeddings::{EmbeddingScores, WordVectors};
use crate::eval::report::Evaluation;
use crate::experiment::Experiment;
use crate::models::glove::{CooccurrenceBatch, Glove, GloveConfig};
use crate::models::word2vec::{ContextBatch, Word2Vec, Word2VecConfig, Word2VecMethod};
use crate::recipe::{DataSizes, ModelSection, Recipe, TaskKind};
use crate::rng::SplitMix64;
use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use std::path::Path;

/// What the model section asks of the prepared corpus.
fn corpus_options(recipe: &Recipe) -> Result<CorpusOptions> {
    match &recipe.model {
        ModelSection::Word2vec(o) => Ok(CorpusOptions {
            min_count: o.min_count,
            cooccurrence_window: None,
        }),
        ModelSection::Glove(o) => Ok(CorpusOptions {
            min_count: o.min_count,
            cooccurrence_window: Some(o.window),
        }),
        other => Err(Error::Recipe(format!(
            "`model.type: {}` does not train word embeddings",
            other.name()
        ))),
    }
}

/// Plain text, its tokenizer and the vocabulary with counts; the experiment keeps both.
pub fn prepare(recipe: &Recipe, how: Preparation) -> Result<PreparedData> {
    let options = corpus_options(recipe)?;
    let prepared = match how {
        Preparation::IfChanged => embedding_corpus::prepare_corpus(recipe, options, false)?,
        Preparation::Force => embedding_corpus::prepare_corpus(recipe, options, true)?,
        Preparation::Reuse => {
            let dir = recipe.prepared_dir();
            Prepared {
                meta: load_meta(&dir)?,
                dir,
                up_to_date: true,
            }
        }
    };
    let sizes = DataSizes {
        vocab: prepared.meta.vocab_size,
        target_vocab: prepared.meta.vocab_size,
        labels: Vec::new(),
    };
    let dir = prepared.dir.clone();
    Ok(PreparedData::new(prepared, sizes, EmbeddingMeta::describe)
        .with_artefact(
            embedding_corpus::tokenizer_path(&dir),
            crate::experiment::TOKENIZER,
        )
        .with_artefact(embedding_corpus::vocab_path(&dir), crate::experiment::VOCAB))
}

/// What a word-embedding model offers the pipeline.
pub trait EmbeddingConfig {
    type Model: Module + ModuleSnapshot;
    type Training: Task<Model = Self::Model>;
    fn init(&self, device: &Device) -> Self::Model;
    /// The word vectors, `[vocab, dim]`.
    fn vectors(model: &Self::Model) -> Tensor<2>;
    fn training(self, recipe: &Recipe, shard: Shard) -> Result<Self::Training>;
}

/// The word-embedding pipeline of either model.
pub struct Embeddings<C> {
    config: C,
}

impl<C: EmbeddingConfig> Embeddings<C> {
    pub fn new(config: C) -> Self {
        Self { config }
    }

    /// The trained vectors with the experiment's vocabulary.
    pub fn word_vectors(&self, model: &C::Model, exp: &Experiment) -> Result<WordVectors> {
        let words: Vec<String> = read_vocab(&exp.file(crate::experiment::VOCAB))?
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        let vectors = C::vectors(model);
        let [rows, dim] = vectors.dims();
        if rows != words.len() {
            return Err(Error::Data(format!(
                "the model has {rows} vectors but {} lists {} words; the experiment folder \
                 is inconsistent, train it again",
                exp.file(crate::experiment::VOCAB).display(),
                words.len()
            )));
        }
        let values = vectors
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Run(format!("cannot read the vectors: {e:?}")))?;
        Ok(WordVectors::new(words, dim, values))
    }
}

impl<C: EmbeddingConfig> Pipeline for Embeddings<C> {
    const KIND: TaskKind = TaskKind::WordEmbeddings;
    type Model = C::Model;
    type Training = C::Training;
    type Scores = EmbeddingScores;

    fn init_model(&self, device: &Device) -> C::Model {
        self.config.init(device)
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<C::Training> {
        self.config.training(recipe, shard)
    }

    /// Nearest neighbours, analogies and similarity as the request asks; the split is unused.
    fn evaluate(
        &self,
        model: &C::Model,
        request: &EvalRequest,
    ) -> Result<Evaluation<EmbeddingScores>> {
        let vectors = self.word_vectors(model, request.exp)?;
        Ok(Evaluation::of(crate::eval::embeddings::evaluate(
            &vectors,
            &request.embeddings,
        )?))
    }

    fn write_vectors(&self, model: &C::Model, exp: &Experiment, out: &Path) -> Result<String> {
        let vectors = self.word_vectors(model, exp)?;
        crate::error::write_atomic(out, vectors.to_word2vec_text().as_bytes())?;
        Ok(format!(
            "{} vectors of {} dimensions written to {} (word2vec text format)",
            vectors.len(),
            vectors.dim(),
            out.display()
        ))
    }
}

/// The batch sizes and shard of one rank (see `lm::LmTask`: every rank draws the global batch
/// and keeps its slice).
struct Batching {
    seed: u64,
    batch_size: usize,
    global_batch: usize,
    shard: Shard,
    eval_batches: usize,
}

impl Batching {
    fn new(recipe: &Recipe, shard: Shard) -> Result<Self> {
        let (batch_size, global_batch) = crate::distributed::batch_sizes(recipe, shard.count)?;
        Ok(Self {
            seed: recipe.seed,
            batch_size,
            global_batch,
            shard,
            eval_batches: recipe.train.eval_batches,
        })
    }

    /// This rank's examples among the global batch's.
    fn mine(&self) -> std::ops::Range<usize> {
        let start = self.shard.index * self.batch_size;
        start..start + self.batch_size
    }

    /// The fixed validation sample: `eval_batches` global batches of rank-sized batches, each
    /// drawn from a generator of its own index.
    fn validation_batches(&self) -> usize {
        self.eval_batches * self.global_batch.div_ceil(self.batch_size)
    }

    fn validation_rng(&self, batch: usize) -> SplitMix64 {
        SplitMix64::for_step(self.seed ^ 0x7a11_d000, u64::MAX, batch as u64)
    }
}

fn load_corpus(recipe: &Recipe) -> Result<(std::path::PathBuf, EmbeddingMeta)> {
    let dir = recipe.prepared_dir();
    let meta: EmbeddingMeta = load_meta(&dir)?;
    Ok((dir, meta))
}

// ---------------------------------------------------------------- word2vec

impl EmbeddingConfig for Word2VecConfig {
    type Model = Word2Vec;
    type Training = Word2VecTask;

    fn init(&self, device: &Device) -> Word2Vec {
        Word2VecConfig::init(self, device)
    }

    fn vectors(model: &Word2Vec) -> Tensor<2> {
        model.vectors()
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<Word2VecTask> {
        Word2VecTask::new(recipe, self, shard)
    }
}

/// word2vec.c's sampling over one split's stream of vocabulary ids.
pub struct ContextSampler {
    stream: Vec<u32>,
    /// Positions of words (not sentence ends) in `stream`.
    positions: Vec<u32>,
    /// Each word's probability of being kept by sub-sampling.
    keep: Vec<f64>,
    /// The cumulative unigram distribution raised to 3/4, for negatives.
    noise: Vec<f64>,
    method: Word2VecMethod,
    window: usize,
    negative: usize,
}

impl ContextSampler {
    /// `counts`: the training counts of the vocabulary; `sample`: word2vec.c's `-sample`.
    pub fn new(
        stream: Vec<u32>,
        counts: &[u64],
        sample: f64,
        method: Word2VecMethod,
        window: usize,
        negative: usize,
    ) -> Self {
        let end = counts.len() as u32;
        let positions = (0..stream.len() as u32)
            .filter(|&p| stream[p as usize] != end)
            .collect();
        let total: u64 = counts.iter().sum();
        let keep = counts
            .iter()
            .map(|&c| keep_probability(c, total, sample))
            .collect();
        let mut noise = Vec::with_capacity(counts.len());
        let mut sum = 0.0;
        for &c in counts {
            sum += (c as f64).powf(0.75);
            noise.push(sum);
        }
        Self {
            stream,
            positions,
            keep,
            noise,
            method,
            window,
            negative,
        }
    }

    pub fn words(&self) -> usize {
        self.positions.len()
    }

    fn kept(&self, rng: &mut SplitMix64, word: u32) -> bool {
        let p = self.keep[word as usize];
        p >= 1.0 || rng.unit() < p
    }

    fn noise_word(&self, rng: &mut SplitMix64) -> u32 {
        let total = *self.noise.last().expect("a vocabulary");
        let u = rng.unit() * total;
        self.noise
            .partition_point(|&c| c <= u)
            .min(self.noise.len() - 1) as u32
    }

    /// `n` examples drawn from `rng`, of which those in `mine` are returned.
    pub fn draw(
        &self,
        rng: &mut SplitMix64,
        n: usize,
        mine: std::ops::Range<usize>,
    ) -> ContextBatch {
        let (w, k) = (2 * self.window, self.negative);
        let rows = mine.len();
        let mut batch = ContextBatch {
            batch: rows,
            width: w,
            negative: k,
            centres: Vec::with_capacity(rows),
            contexts: Vec::with_capacity(rows * w),
            context_mask: Vec::with_capacity(rows * w),
            negatives: Vec::new(),
            negative_mask: Vec::new(),
        };
        let end = self.keep.len() as u32;
        for example in 0..n {
            // A centre word, kept with its sub-sampling probability (bounded tries: a corpus of
            // one very frequent word must not loop for long).
            let mut position = 0;
            for _ in 0..64 {
                position = self.positions[rng.below(self.positions.len() as u64) as usize] as usize;
                if self.kept(rng, self.stream[position]) {
                    break;
                }
            }
            let centre = self.stream[position];
            let b = 1 + rng.below(self.window as u64) as usize;
            let mut context = Vec::with_capacity(w);
            for step in [-1isize, 1] {
                let (mut p, mut found) = (position as isize, 0);
                while found < b {
                    p += step;
                    let Some(&word) = usize::try_from(p).ok().and_then(|p| self.stream.get(p))
                    else {
                        break;
                    };
                    if word == end {
                        break;
                    }
                    if self.kept(rng, word) {
                        context.push(word);
                        found += 1;
                    }
                }
            }
            let predictions = match self.method {
                Word2VecMethod::SkipGram => w,
                Word2VecMethod::Cbow => 1,
            };
            let mut negatives = Vec::with_capacity(predictions * k);
            for prediction in 0..predictions {
                let live = match self.method {
                    Word2VecMethod::SkipGram => prediction < context.len(),
                    Word2VecMethod::Cbow => !context.is_empty(),
                };
                for _ in 0..k {
                    let word = self.noise_word(rng);
                    negatives.push((word, live && word != centre));
                }
            }
            if !mine.contains(&example) {
                continue;
            }
            batch.centres.push(centre as i64);
            for slot in 0..w {
                batch
                    .contexts
                    .push(context.get(slot).map_or(0, |&c| c as i64));
                batch
                    .context_mask
                    .push(if slot < context.len() { 1.0 } else { 0.0 });
            }
            for (word, live) in negatives {
                batch.negatives.push(word as i64);
                batch.negative_mask.push(if live { 1.0 } else { 0.0 });
            }
        }
        batch
    }
}

/// word2vec.c's sub-sampling: a word of `count` among `total` is kept with probability
/// `(sqrt(f / t) + 1) * t / f`, `f` its frequency and `t` the threshold `sample` (0: always).
pub fn keep_probability(count: u64, total: u64, sample: f64) -> f64 {
    if sample <= 0.0 || count == 0 {
        return 1.0;
    }
    let threshold = sample * total as f64;
    ((count as f64 / threshold).sqrt() + 1.0) * threshold / count as f64
}

pub struct Word2VecTask {
    config: Word2VecConfig,
    train: ContextSampler,
    valid: ContextSampler,
    batching: Batching,
}

impl Word2VecTask {
    pub fn new(recipe: &Recipe, config: Word2VecConfig, shard: Shard) -> Result<Self> {
        let (dir, meta) = load_corpus(recipe)?;
        let counts: Vec<u64> = read_vocab(&embedding_corpus::vocab_path(&dir))?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let o = &config.options;
        let sampler = |split: Split| -> Result<ContextSampler> {
            let sampler = ContextSampler::new(
                load_split(&dir, &meta, split)?,
                &counts,
                o.sample,
                o.method,
                o.window,
                o.negative,
            );
            if sampler.words() == 0 {
                return Err(Error::Data(format!(
                    "the {} split has no word of the vocabulary; give more text, or lower \
                     `model.min_count`",
                    split.name()
                )));
            }
            Ok(sampler)
        };
        Ok(Self {
            train: sampler(Split::Train)?,
            valid: sampler(Split::Valid)?,
            batching: Batching::new(recipe, shard)?,
            config,
        })
    }
}

impl Task for Word2VecTask {
    type Model = Word2Vec;

    fn init_model(&self, device: &Device, _load_pretrained: bool) -> Result<Word2Vec> {
        Ok(self.config.init(device))
    }

    fn train_loss(&self, model: &Word2Vec, step: usize, micro: usize, _: &Device) -> StepLoss {
        let b = &self.batching;
        let mut rng = SplitMix64::for_step(b.seed, step as u64, micro as u64);
        let batch = self.train.draw(&mut rng, b.global_batch, b.mine());
        let (loss, _) = model.loss(&batch, self.config.options.method);
        StepLoss::single(loss.clone(), loss)
    }

    fn validation_batches(&self) -> usize {
        self.batching.validation_batches()
    }

    fn validation_loss(&self, model: &Word2Vec, batch: usize, _: &Device) -> LossSum {
        let b = &self.batching;
        let drawn = self
            .valid
            .draw(&mut b.validation_rng(batch), b.batch_size, 0..b.batch_size);
        let (loss, count) = model.loss(&drawn, self.config.options.method);
        LossSum::of_mean(loss, count)
    }

    fn loss_is_token_nll(&self) -> bool {
        false
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.batching.batch_size
    }

    fn micro_batches_per_epoch(&self) -> usize {
        (self.train.words() / self.batching.global_batch).max(1)
    }

    fn model_width(&self) -> usize {
        self.config.options.dim
    }

    fn step_description(&self, _ranks: usize, accum_grad: usize) -> String {
        format!(
            "{} centre words (window up to {}, {} negatives)",
            self.batching.global_batch * accum_grad,
            self.config.options.window,
            self.config.options.negative
        )
    }
}

// ---------------------------------------------------------------- GloVe

impl EmbeddingConfig for GloveConfig {
    type Model = Glove;
    type Training = GloveTask;

    fn init(&self, device: &Device) -> Glove {
        GloveConfig::init(self, device)
    }

    fn vectors(model: &Glove) -> Tensor<2> {
        model.vectors()
    }

    fn training(self, recipe: &Recipe, shard: Shard) -> Result<GloveTask> {
        GloveTask::new(recipe, self, shard)
    }
}

pub struct GloveTask {
    config: GloveConfig,
    entries: Vec<(u32, u32, f32)>,
    batching: Batching,
}

impl GloveTask {
    pub fn new(recipe: &Recipe, config: GloveConfig, shard: Shard) -> Result<Self> {
        let (dir, meta) = load_corpus(recipe)?;
        if meta.options.cooccurrence_window != Some(config.options.window) {
            return Err(Error::Data(format!(
                "the prepared data in {} has no co-occurrence counts of window {}; prepare it \
                 again (`nlpkit prepare-data --force`)",
                dir.display(),
                config.options.window
            )));
        }
        let entries = read_cooccurrences(&dir)?;
        if entries.is_empty() {
            return Err(Error::Data(
                "no two words of the vocabulary co-occur in the training split; give more \
                 text, or lower `model.min_count`"
                    .into(),
            ));
        }
        Ok(Self {
            config,
            entries,
            batching: Batching::new(recipe, shard)?,
        })
    }

    /// `n` entries drawn uniformly, those in `mine` returned.
    fn draw(
        &self,
        rng: &mut SplitMix64,
        n: usize,
        mine: std::ops::Range<usize>,
    ) -> CooccurrenceBatch {
        let mut batch = CooccurrenceBatch::default();
        for example in 0..n {
            let (w, c, x) = self.entries[rng.below(self.entries.len() as u64) as usize];
            if mine.contains(&example) {
                batch.words.push(w as i64);
                batch.contexts.push(c as i64);
                batch.counts.push(x);
            }
        }
        batch
    }

    fn loss(&self, model: &Glove, batch: &CooccurrenceBatch) -> Tensor<1> {
        model.loss(batch, self.config.options.x_max, self.config.options.alpha)
    }
}

impl Task for GloveTask {
    type Model = Glove;

    fn init_model(&self, device: &Device, _load_pretrained: bool) -> Result<Glove> {
        Ok(self.config.init(device))
    }

    fn train_loss(&self, model: &Glove, step: usize, micro: usize, _: &Device) -> StepLoss {
        let b = &self.batching;
        let mut rng = SplitMix64::for_step(b.seed, step as u64, micro as u64);
        let batch = self.draw(&mut rng, b.global_batch, b.mine());
        let loss = self.loss(model, &batch);
        StepLoss::single(loss.clone(), loss)
    }

    fn validation_batches(&self) -> usize {
        self.batching.validation_batches()
    }

    /// GloVe fits the training counts: its validation figure is the objective on a fixed
    /// sample of them.
    fn validation_loss(&self, model: &Glove, batch: usize, _: &Device) -> LossSum {
        let b = &self.batching;
        let drawn = self.draw(&mut b.validation_rng(batch), b.batch_size, 0..b.batch_size);
        LossSum::of_mean(self.loss(model, &drawn), drawn.counts.len())
    }

    fn loss_is_token_nll(&self) -> bool {
        false
    }

    fn tokens_per_micro_batch(&self) -> usize {
        self.batching.batch_size
    }

    fn micro_batches_per_epoch(&self) -> usize {
        (self.entries.len() / self.batching.global_batch).max(1)
    }

    fn model_width(&self) -> usize {
        self.config.options.dim
    }

    fn step_description(&self, _ranks: usize, accum_grad: usize) -> String {
        format!(
            "{} co-occurrence entries",
            self.batching.global_batch * accum_grad
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_probability_is_word2vec_cs() {
        // f = 0.01 of the words, t = 1e-3: (sqrt(10) + 1) / 10.
        let p = keep_probability(100, 10_000, 1e-3);
        assert!((p - (10f64.sqrt() + 1.0) / 10.0).abs() < 1e-12, "{p}");
        assert_eq!(keep_probability(100, 10_000, 0.0), 1.0);
        assert!(
            keep_probability(1, 10_000, 1e-3) > 1.0,
            "rare words always kept"
        );
    }

    /// Sentences `0 1 2 3 4` and `5 6`; every word kept (no sub-sampling).
    fn sampler(method: Word2VecMethod, window: usize) -> ContextSampler {
        let end = 7;
        ContextSampler::new(
            vec![0, 1, 2, 3, 4, end, 5, 6, end],
            &[5, 4, 3, 3, 2, 2, 1],
            0.0,
            method,
            window,
            3,
        )
    }

    #[test]
    fn windows_are_dynamic_and_stay_within_the_sentence() {
        let s = sampler(Word2VecMethod::SkipGram, 3);
        let mut rng = SplitMix64::new(5);
        let mut widths = std::collections::BTreeSet::new();
        for _ in 0..400 {
            let batch = s.draw(&mut rng, 1, 0..1);
            let centre = batch.centres[0];
            let context: Vec<i64> = (0..batch.width)
                .filter(|&i| batch.context_mask[i] > 0.0)
                .map(|i| batch.contexts[i])
                .collect();
            let sentence: &[i64] = if centre < 5 {
                &[0, 1, 2, 3, 4]
            } else {
                &[5, 6]
            };
            assert!(
                context.iter().all(|c| sentence.contains(c) && *c != centre),
                "{centre}: {context:?}"
            );
            let left = context.iter().filter(|&&c| c < centre).count();
            let right = context.len() - left;
            // The same window b each side, cut by the sentence.
            let room_left = sentence.iter().filter(|&&w| w < centre).count();
            let room_right = sentence.len() - 1 - room_left;
            let b = left.max(right);
            assert!(b <= 3);
            assert_eq!(left, b.min(room_left), "{centre}: {context:?}");
            assert_eq!(right, b.min(room_right), "{centre}: {context:?}");
            if centre == 2 {
                widths.insert(b);
            }
            // Negatives never the centre where they count.
            for (i, &n) in batch.negatives.iter().enumerate() {
                if batch.negative_mask[i] > 0.0 {
                    assert_ne!(n, centre);
                }
            }
        }
        assert_eq!(
            widths.into_iter().collect::<Vec<_>>(),
            [1, 2],
            "b in 1..=3, cut at 2"
        );
    }

    #[test]
    fn negatives_follow_the_unigram_distribution_to_the_three_quarters() {
        let s = sampler(Word2VecMethod::Cbow, 2);
        let mut rng = SplitMix64::new(9);
        let mut seen = [0usize; 7];
        let draws = 200_000;
        for _ in 0..draws {
            seen[s.noise_word(&mut rng) as usize] += 1;
        }
        let weights: Vec<f64> = [5.0f64, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0]
            .iter()
            .map(|c| c.powf(0.75))
            .collect();
        let total: f64 = weights.iter().sum();
        for (word, w) in weights.iter().enumerate() {
            let share = seen[word] as f64 / draws as f64;
            assert!(
                (share - w / total).abs() < 0.005,
                "{word}: {share} vs {}",
                w / total
            );
        }
    }

    #[test]
    fn a_ranks_slice_is_the_global_batchs() {
        let s = sampler(Word2VecMethod::SkipGram, 2);
        let whole = s.draw(&mut SplitMix64::new(3), 4, 0..4);
        let second = s.draw(&mut SplitMix64::new(3), 4, 2..4);
        assert_eq!(second.centres, whole.centres[2..]);
        assert_eq!(second.contexts, whole.contexts[2 * 4..]);
        assert_eq!(second.negatives, whole.negatives[2 * 4 * 3..]);
    }
}
