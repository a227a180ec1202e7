//! Scoring word vectors: nearest neighbours by cosine, analogies in the Google analogy set's
//! format by 3CosAdd (Mikolov et al. 2013; the three question words excluded from the answers,
//! as word2vec's `compute-accuracy` and gensim do), and word-pair similarity (WordSim-353,
//! SimLex-999) by Spearman's rho with tied ranks averaged. Questions and pairs with a word
//! outside the vocabulary are skipped and counted. Also the word2vec text format, written and
//! read.

use super::report::Scores;
use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Words with their vectors, and the vectors scaled to unit length for cosines.
pub struct WordVectors {
    words: Vec<String>,
    index: HashMap<String, usize>,
    dim: usize,
    values: Vec<f32>,
    unit: Vec<f32>,
}

impl WordVectors {
    /// `values` row-major, one row of `dim` per word.
    pub fn new(words: Vec<String>, dim: usize, values: Vec<f32>) -> Self {
        assert_eq!(values.len(), words.len() * dim, "one row per word");
        let mut unit = values.clone();
        for row in unit.chunks_mut(dim.max(1)) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
        // The first of a repeated word wins, as gensim's loader keeps it.
        let mut index = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            index.entry(w.clone()).or_insert(i);
        }
        Self {
            words,
            index,
            dim,
            values,
            unit,
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn id(&self, word: &str) -> Option<usize> {
        self.index.get(word).copied()
    }

    fn unit_row(&self, id: usize) -> &[f32] {
        &self.unit[id * self.dim..][..self.dim]
    }

    /// The cosine of two words' vectors, if both are known.
    pub fn cosine(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.id(a)?, self.id(b)?);
        Some(dot(self.unit_row(a), self.unit_row(b)))
    }

    /// The word with the highest cosine to `target` (any length) outside `exclude`.
    fn best(&self, target: &[f32], exclude: &[usize]) -> Option<(usize, f64)> {
        (0..self.len())
            .filter(|i| !exclude.contains(i))
            .map(|i| (i, dot(self.unit_row(i), target)))
            .fold(None, |best, (i, s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((i, s)),
            })
    }

    /// The `n` words nearest to `word` by cosine, with their cosines; `None` for an unknown
    /// word.
    pub fn nearest(&self, word: &str, n: usize) -> Option<Vec<(String, f64)>> {
        let id = self.id(word)?;
        let query = self.unit_row(id);
        let mut scored: Vec<(usize, f64)> = (0..self.len())
            .filter(|&i| i != id)
            .map(|i| (i, dot(self.unit_row(i), query)))
            .collect();
        // Highest first; ties by vocabulary order (frequent first).
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(
            scored
                .into_iter()
                .take(n)
                .map(|(i, s)| (self.words[i].clone(), s))
                .collect(),
        )
    }

    /// 3CosAdd: the word nearest to `b - a + c` (unit vectors), other than the three.
    pub fn analogy(&self, a: &str, b: &str, c: &str) -> Option<String> {
        let (a, b, c) = (self.id(a)?, self.id(b)?, self.id(c)?);
        let target: Vec<f32> = (0..self.dim)
            .map(|k| self.unit_row(b)[k] - self.unit_row(a)[k] + self.unit_row(c)[k])
            .collect();
        let (best, _) = self.best(&target, &[a, b, c])?;
        Some(self.words[best].clone())
    }

    /// word2vec's text format: `count dim`, then `word v1 ... vd` per line (what gensim's
    /// `KeyedVectors.load_word2vec_format(path, binary=False)` reads).
    pub fn to_word2vec_text(&self) -> String {
        let mut out = format!("{} {}\n", self.len(), self.dim);
        for (word, row) in self.words.iter().zip(self.values.chunks(self.dim.max(1))) {
            out.push_str(word);
            for x in row {
                write!(out, " {x:.6}").expect("writing to a string");
            }
            out.push('\n');
        }
        out
    }

    /// Read the word2vec text format, with file:line errors.
    pub fn read_word2vec_text(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_path("read", path)?;
        let bad =
            |line: usize, what: String| Error::Data(format!("{}:{line}: {what}", path.display()));
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let sizes: Vec<usize> = header
            .split_whitespace()
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(1, format!("expected `count dim`, found {header:?}")))?;
        let [count, dim] = sizes[..] else {
            return Err(bad(1, format!("expected `count dim`, found {header:?}")));
        };
        let mut words = Vec::with_capacity(count);
        let mut values = Vec::with_capacity(count * dim);
        for (i, line) in lines.enumerate() {
            let mut fields = line.split_whitespace();
            let Some(word) = fields.next() else { continue };
            let row: Vec<f32> = fields
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| bad(i + 2, format!("a value is not a number ({e})")))?;
            if row.len() != dim {
                return Err(bad(
                    i + 2,
                    format!("{} values for `{word}`, expected {dim}", row.len()),
                ));
            }
            words.push(word.to_string());
            values.extend(row);
        }
        if words.len() != count {
            return Err(bad(
                1,
                format!(
                    "the header says {count} words, the file has {}",
                    words.len()
                ),
            ));
        }
        Ok(Self::new(words, dim, values))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum()
}

/// What `nlpkit eval` asks of an embeddings experiment.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingQueries {
    /// Words whose nearest neighbours are listed (`--query`, and `--queries FILE`'s lines).
    pub words: Vec<String>,
    pub neighbours: usize,
    /// A file of analogy questions in the Google set's format.
    pub analogies: Option<PathBuf>,
    /// A file of `word1 word2 score` lines.
    pub similarity: Option<PathBuf>,
}

impl EmbeddingQueries {
    pub fn is_empty(&self) -> bool {
        self.words.is_empty() && self.analogies.is_none() && self.similarity.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Neighbours {
    pub word: String,
    /// Empty when the word is not in the vocabulary.
    pub nearest: Vec<(String, f64)>,
    pub in_vocabulary: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnalogyCounts {
    pub correct: usize,
    /// Questions whose four words are all known.
    pub answered: usize,
    /// Questions with a word outside the vocabulary.
    pub skipped: usize,
    /// `correct / answered` (0 with none answered).
    pub accuracy: f64,
}

impl AnalogyCounts {
    fn new(correct: usize, answered: usize, skipped: usize) -> Self {
        Self {
            correct,
            answered,
            skipped,
            accuracy: if answered == 0 {
                0.0
            } else {
                correct as f64 / answered as f64
            },
        }
    }

    fn line(&self) -> String {
        format!(
            "{}/{} correct ({:.1}%), {} skipped (OOV)",
            self.correct,
            self.answered,
            100.0 * self.accuracy,
            self.skipped
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnalogySection {
    pub name: String,
    #[serde(flatten)]
    pub counts: AnalogyCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnalogyScores {
    pub file: PathBuf,
    pub sections: Vec<AnalogySection>,
    #[serde(flatten)]
    pub overall: AnalogyCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimilarityScores {
    pub file: PathBuf,
    /// Pairs whose two words are known: those scored.
    pub pairs: usize,
    /// Pairs with a word outside the vocabulary, left out.
    pub skipped: usize,
    /// The first few pairs left out, for the reader.
    pub skipped_pairs: Vec<String>,
    /// Spearman's rho between the file's scores and the cosines (absent under two pairs).
    pub spearman: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingScores {
    pub vocab_size: usize,
    pub dim: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<Neighbours>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analogy: Option<AnalogyScores>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<SimilarityScores>,
}

impl Scores for EmbeddingScores {
    fn summary(&self) -> Option<String> {
        let mut out = format!("vectors: {} words x {} dims\n", self.vocab_size, self.dim);
        for n in &self.neighbours {
            if !n.in_vocabulary {
                let _ = writeln!(out, "{}: not in the vocabulary", n.word);
                continue;
            }
            let list: Vec<String> = n
                .nearest
                .iter()
                .map(|(w, s)| format!("{w} {s:.3}"))
                .collect();
            let _ = writeln!(out, "nearest to {}: {}", n.word, list.join(", "));
        }
        if let Some(a) = &self.analogy {
            let _ = writeln!(
                out,
                "analogies ({}): {}",
                a.file.display(),
                a.overall.line()
            );
            for s in &a.sections {
                let _ = writeln!(out, "  {}: {}", s.name, s.counts.line());
            }
        }
        if let Some(s) = &self.similarity {
            let rho = s.spearman.map_or("n/a".into(), |r| format!("{r:.4}"));
            let _ = writeln!(
                out,
                "similarity ({}): Spearman rho {rho} over {} pairs, {} skipped (OOV){}",
                s.file.display(),
                s.pairs,
                s.skipped,
                match s.skipped_pairs.is_empty() {
                    true => String::new(),
                    false => format!(": {}", s.skipped_pairs.join(", ")),
                }
            );
        }
        Some(out)
    }

    fn headline(&self) -> String {
        let mut parts = vec![format!("{} words", self.vocab_size)];
        if let Some(a) = &self.analogy {
            parts.push(format!("analogy {:.1}%", 100.0 * a.overall.accuracy));
        }
        if let Some(rho) = self.similarity.as_ref().and_then(|s| s.spearman) {
            parts.push(format!("rho {rho:.3}"));
        }
        parts.join("  ")
    }
}

/// Score `vectors` as `queries` asks.
pub fn evaluate(vectors: &WordVectors, queries: &EmbeddingQueries) -> Result<EmbeddingScores> {
    if queries.is_empty() {
        return Err(Error::Usage(
            "an embeddings experiment is scored by queries: give --query WORD (or --queries \
             FILE), --analogies FILE (Google analogy format) or --similarity FILE \
             (`word1 word2 score` lines)"
                .into(),
        ));
    }
    let neighbours = queries
        .words
        .iter()
        .map(|word| {
            let nearest = vectors.nearest(word, queries.neighbours);
            Neighbours {
                word: word.clone(),
                in_vocabulary: nearest.is_some(),
                nearest: nearest.unwrap_or_default(),
            }
        })
        .collect();
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_path("read", p);
    let analogy = match &queries.analogies {
        Some(path) => Some(analogies(vectors, &read(path)?, path)?),
        None => None,
    };
    let similarity = match &queries.similarity {
        Some(path) => Some(similarity(vectors, &read(path)?, path)?),
        None => None,
    };
    Ok(EmbeddingScores {
        vocab_size: vectors.len(),
        dim: vectors.dim(),
        neighbours,
        analogy,
        similarity,
    })
}

/// Words of a `--queries` file: one per line (blank lines and `#` comments skipped).
pub fn read_query_words(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_path("read", path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// The analogy questions of `text` (`: section` lines, then `a b c d` lines), answered.
pub fn analogies(vectors: &WordVectors, text: &str, file: &Path) -> Result<AnalogyScores> {
    // (name, correct, answered, skipped)
    let mut sections: Vec<(String, usize, usize, usize)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix(':') {
            sections.push((name.trim().to_string(), 0, 0, 0));
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [a, b, c, d] = words[..] else {
            return Err(Error::Data(format!(
                "{}:{}: expected `: section` or four words `a b c d`, found {line:?}",
                file.display(),
                i + 1
            )));
        };
        if sections.is_empty() {
            sections.push(("(no section)".into(), 0, 0, 0));
        }
        let section = sections.last_mut().expect("one section");
        if [a, b, c, d].iter().any(|w| vectors.id(w).is_none()) {
            section.3 += 1;
            continue;
        }
        section.2 += 1;
        if vectors.analogy(a, b, c).as_deref() == Some(d) {
            section.1 += 1;
        }
    }
    let total = |f: fn(&(String, usize, usize, usize)) -> usize| sections.iter().map(f).sum();
    let overall = AnalogyCounts::new(total(|s| s.1), total(|s| s.2), total(|s| s.3));
    Ok(AnalogyScores {
        file: file.to_path_buf(),
        sections: sections
            .into_iter()
            .map(|(name, c, a, s)| AnalogySection {
                name,
                counts: AnalogyCounts::new(c, a, s),
            })
            .collect(),
        overall,
    })
}

/// Pairs shown in a report's `skipped_pairs`.
const SHOWN_SKIPPED: usize = 10;

/// `word1 word2 score` lines (tab or space separated; `#` comments and a header line without a
/// numeric score skipped), scored by Spearman's rho against the cosines.
pub fn similarity(vectors: &WordVectors, text: &str, file: &Path) -> Result<SimilarityScores> {
    let mut human = Vec::new();
    let mut cosines = Vec::new();
    let mut skipped = Vec::new();
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let score = fields.get(2).and_then(|s| s.parse::<f64>().ok());
        let header = std::mem::replace(&mut first, false);
        let (Some(score), [w1, w2, ..]) = (score, &fields[..]) else {
            if header {
                continue;
            }
            return Err(Error::Data(format!(
                "{}:{}: expected `word1 word2 score`, found {line:?}",
                file.display(),
                i + 1
            )));
        };
        match vectors.cosine(w1, w2) {
            Some(cosine) => {
                human.push(score);
                cosines.push(cosine);
            }
            None => skipped.push(format!("{w1} {w2}")),
        }
    }
    Ok(SimilarityScores {
        file: file.to_path_buf(),
        pairs: human.len(),
        skipped: skipped.len(),
        skipped_pairs: skipped.into_iter().take(SHOWN_SKIPPED).collect(),
        spearman: spearman(&human, &cosines),
    })
}

/// Ranks from 1, tied values given the mean of the ranks they span.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Ranks start+1 ..= end, averaged.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rho: Pearson's correlation of the average ranks (scipy's `spearmanr`); `None`
/// under two pairs or when either side is constant.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 2 || x.len() != y.len() {
        return None;
    }
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/embeddings")
            .join(name)
    }

    fn vectors() -> WordVectors {
        WordVectors::read_word2vec_text(&fixture("vectors.txt")).unwrap()
    }

    /// By hand, with unit vectors man (1, 0), woman (0, 1), king (3, 1)/sqrt 10, queen
    /// (1, 3)/sqrt 10, apple (-1, -1)/sqrt 2, pear (-3, -1)/sqrt 10:
    /// - man:woman::king:? target (-0.051, 1.316): woman 1.316 (excluded), queen 1.233 -> right;
    /// - king:queen::man:? target (0.368, 0.632): woman 0.632, pear -0.549 -> right;
    /// - apple:pear::man:? target (0.758, 0.391): king 0.843 > queen 0.611 -> wrong (queen);
    /// - woman:man::apple:? target (0.293, -1.707): pear 0.262, king -0.262 -> right;
    /// - `prince` is unknown -> skipped.
    #[test]
    fn analogies_equal_the_hand_computed_answers() {
        let v = vectors();
        let path = fixture("analogies.txt");
        let scores = analogies(&v, &std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        let got: Vec<(&str, usize, usize, usize)> = scores
            .sections
            .iter()
            .map(|s| {
                let c = &s.counts;
                (&*s.name, c.correct, c.answered, c.skipped)
            })
            .collect();
        assert_eq!(got, [("royal", 2, 2, 0), ("mixed", 1, 2, 1)]);
        let o = &scores.overall;
        assert_eq!((o.correct, o.answered, o.skipped), (3, 4, 1));
        assert_eq!(o.accuracy, 0.75);
        // The question words are excluded: otherwise `woman` would answer the first.
        assert_eq!(v.analogy("man", "woman", "king").as_deref(), Some("queen"));
        assert_eq!(v.analogy("apple", "pear", "man").as_deref(), Some("king"));
    }

    #[test]
    fn analogy_lines_of_the_wrong_shape_are_refused_with_file_and_line() {
        let err = analogies(&vectors(), ": s\na b c\n", Path::new("q.txt")).unwrap_err();
        assert!(err.to_string().contains("q.txt:2"), "{err}");
    }

    /// Cosines: man-woman 0, king-queen 0.6, man-king 3/sqrt 10 = 0.949, apple-pear
    /// 4/sqrt 20 = 0.894, woman-pear -1/sqrt 10; human scores 2, 9, 8, 8 (a tie), 1;
    /// queen-prince unknown. Average ranks: human [2, 5, 3.5, 3.5, 1], cosines [2, 3, 5, 4, 1];
    /// deviations from the mean 3: [-1, 2, .5, .5, -2] and [-1, 0, 2, 1, -2]; rho = 6.5 /
    /// sqrt(9.5 * 10) (ordinal ranks without averaging would give 6 / 10).
    #[test]
    fn similarity_equals_the_hand_computed_spearman() {
        let path = fixture("similarity.txt");
        let text = std::fs::read_to_string(&path).unwrap();
        let s = similarity(&vectors(), &text, &path).unwrap();
        assert_eq!((s.pairs, s.skipped), (5, 1));
        assert_eq!(s.skipped_pairs, ["queen prince"]);
        let rho = s.spearman.unwrap();
        assert!((rho - 6.5 / 95f64.sqrt()).abs() < 1e-12, "{rho}");
    }

    #[test]
    fn spearman_averages_ties_as_scipy_does() {
        // scipy.stats.spearmanr's documented example.
        let rho = spearman(&[1., 2., 3., 4., 5.], &[5., 6., 7., 8., 7.]).unwrap();
        assert!((rho - 0.8207826816681233).abs() < 1e-12, "{rho}");
        assert_eq!(average_ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        assert_eq!(spearman(&[1.0], &[2.0]), None);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn nearest_neighbours_by_cosine_and_the_text_format_round_trips() {
        let v = vectors();
        let nearest = v.nearest("king", 2).unwrap();
        assert_eq!(nearest[0].0, "man");
        assert!((nearest[0].1 - 3.0 / 10f64.sqrt()).abs() < 1e-6);
        assert_eq!(nearest[1].0, "queen");
        assert!(v.nearest("prince", 2).is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.txt");
        std::fs::write(&path, v.to_word2vec_text()).unwrap();
        let back = WordVectors::read_word2vec_text(&path).unwrap();
        assert_eq!(
            (back.words.clone(), back.dim, back.values.clone()),
            (v.words, 2, v.values)
        );
        std::fs::write(&path, "2 2\na 1 2\n").unwrap();
        let err = WordVectors::read_word2vec_text(&path).err().unwrap();
        assert!(err.to_string().contains("says 2 words"), "{err}");
    }
}
