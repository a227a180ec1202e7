//! Corpus BLEU and chrF computed exactly as sacrebleu 2.x computes them with its defaults, so
//! figures are comparable with published ones: BLEU with the `13a` tokenizer (mteval-v13a, WMT's)
//! or the `zh` tokenizer (each CJK character a word, for Chinese targets), 4-grams, brevity
//! penalty, `exp` smoothing; chrF with character 6-grams, beta 2, whitespace ignored. One
//! reference per sentence. Checked against sacrebleu itself on fixtures (tests/fixtures).

use std::collections::HashMap;

/// sacrebleu's tokenizers for BLEU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BleuTokenizer {
    /// mteval-v13a: punctuation and symbols split off, periods and commas unless within numbers.
    #[value(name = "13a")]
    Mteval13a,
    /// Chinese: every CJK character (and CJK punctuation) a word, the rest as 13a.
    Zh,
    /// Split on whitespace only.
    None,
}

impl BleuTokenizer {
    /// sacrebleu's choice for a target language: `zh` for Chinese, `13a` otherwise.
    pub fn for_language(lang: &str) -> Self {
        if lang.eq_ignore_ascii_case("zh") || lang.to_ascii_lowercase().starts_with("zh-") {
            BleuTokenizer::Zh
        } else {
            BleuTokenizer::Mteval13a
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BleuTokenizer::Mteval13a => "13a",
            BleuTokenizer::Zh => "zh",
            BleuTokenizer::None => "none",
        }
    }

    /// The tokenized line, tokens joined by single spaces.
    pub fn tokenize(self, line: &str) -> String {
        match self {
            BleuTokenizer::Mteval13a => tokenize_13a(line),
            BleuTokenizer::Zh => tokenize_zh(line),
            BleuTokenizer::None => split_join(line),
        }
    }
}

/// Python's `str.isspace`, which `str.split()` and `strip()` use: Unicode White_Space plus the
/// ASCII information separators 0x1c-0x1f.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `' '.join(line.split())`.
fn split_join(line: &str) -> String {
    line.split(py_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    tokenize_regexp(&format!(" {line} "))
}

fn tokenize_zh(line: &str) -> String {
    let mut spaced = String::with_capacity(line.len() * 2);
    for c in line.trim_matches(py_space).chars() {
        if is_chinese_char(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    tokenize_regexp(&spaced)
}

/// sacrebleu's `_UCODE_RANGES`. Two of its bounds are written `'\u20000'` and `'\u2f800'` in
/// Python, which are two-character strings; compared with one character they behave as the
/// ranges U+2001..=U+2A6D and U+2F81..=U+2FA1 below, and we keep that behaviour to match.
const CHINESE_RANGES: [(u32, u32); 22] = [
    (0x3400, 0x4db5),
    (0x4e00, 0x9fa5),
    (0x9fa6, 0x9fbb),
    (0xf900, 0xfa2d),
    (0xfa30, 0xfa6a),
    (0xfa70, 0xfad9),
    (0x2001, 0x2a6d),
    (0x2f81, 0x2fa1),
    (0xff00, 0xffef),
    (0x2e80, 0x2eff),
    (0x3000, 0x303f),
    (0x31c0, 0x31ef),
    (0x2f00, 0x2fdf),
    (0x2ff0, 0x2fff),
    (0x3100, 0x312f),
    (0x31a0, 0x31bf),
    (0xfe10, 0xfe1f),
    (0xfe30, 0xfe4f),
    (0x2600, 0x26ff),
    (0x2700, 0x27bf),
    (0x3200, 0x32ff),
    (0x3300, 0x33ff),
];

fn is_chinese_char(c: char) -> bool {
    let c = c as u32;
    CHINESE_RANGES.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// sacrebleu's `TokenizerRegexp`: four regex substitutions, applied one after the other, each
/// scanning left to right without overlapping matches (as `re.sub`), then whitespace collapsed.
fn tokenize_regexp(line: &str) -> String {
    let is_symbol =
        |c: char| matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
    let digit = |c: char| c.is_ascii_digit();
    let period_comma = |c: char| c == '.' || c == ',';
    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 '
    let mut out = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_symbol(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    // ([^0-9])([\.,]) -> '\1 \2 '
    let out = substitute_pairs(
        &out,
        |a, b| !digit(a) && period_comma(b),
        |a, b, s| {
            s.extend([a, ' ', b, ' ']);
        },
    );
    // ([\.,])([^0-9]) -> ' \1 \2'
    let out = substitute_pairs(
        &out,
        |a, b| period_comma(a) && !digit(b),
        |a, b, s| {
            s.extend([' ', a, ' ', b]);
        },
    );
    // ([0-9])(-) -> '\1 \2 '
    let out = substitute_pairs(
        &out,
        |a, b| digit(a) && b == '-',
        |a, b, s| {
            s.extend([a, ' ', b, ' ']);
        },
    );
    split_join(&out)
}

/// `re.sub` for a pattern matching exactly two characters: scan left to right, replace each
/// match and continue after it.
fn substitute_pairs(
    text: &str,
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char, &mut String),
) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            replace(chars[i], chars[i + 1], &mut out);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

const MAX_ORDER: usize = 4;

/// Corpus BLEU with its parts, as sacrebleu reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    pub score: f64,
    /// n-gram precisions in percent (after smoothing), n = 1..4.
    pub precisions: [f64; MAX_ORDER],
    pub brevity_penalty: f64,
    pub sys_len: usize,
    pub ref_len: usize,
}

fn word_ngrams(tokens: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    for window in tokens.windows(n) {
        *counts
            .entry(window.iter().map(|s| s.to_string()).collect())
            .or_insert(0) += 1;
    }
    counts
}

/// Corpus BLEU of `hypotheses` against one reference each.
pub fn corpus_bleu(
    hypotheses: &[String],
    references: &[String],
    tokenizer: BleuTokenizer,
) -> BleuScore {
    assert_eq!(
        hypotheses.len(),
        references.len(),
        "one reference per hypothesis"
    );
    let (mut correct, mut total) = ([0usize; MAX_ORDER], [0usize; MAX_ORDER]);
    let (mut sys_len, mut ref_len) = (0, 0);
    for (hyp, reference) in hypotheses.iter().zip(references) {
        let hyp = tokenizer.tokenize(hyp.trim_end_matches(py_space));
        let reference = tokenizer.tokenize(reference.trim_end_matches(py_space));
        let hyp: Vec<&str> = hyp.split(' ').filter(|w| !w.is_empty()).collect();
        let reference: Vec<&str> = reference.split(' ').filter(|w| !w.is_empty()).collect();
        sys_len += hyp.len();
        ref_len += reference.len();
        for n in 1..=MAX_ORDER {
            let ref_counts = word_ngrams(&reference, n);
            for (gram, count) in word_ngrams(&hyp, n) {
                total[n - 1] += count;
                correct[n - 1] += count.min(ref_counts.get(&gram).copied().unwrap_or(0));
            }
        }
    }
    bleu_from_stats(correct, total, sys_len, ref_len)
}

fn bleu_from_stats(
    correct: [usize; MAX_ORDER],
    total: [usize; MAX_ORDER],
    sys_len: usize,
    ref_len: usize,
) -> BleuScore {
    let brevity_penalty = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = [0.0; MAX_ORDER];
    let zero = |precisions| BleuScore {
        score: 0.0,
        precisions,
        brevity_penalty,
        sys_len,
        ref_len,
    };
    if correct.iter().all(|&c| c == 0) {
        return zero(precisions);
    }
    // `exp` smoothing (mteval's): the k-th order with no match counts as 1 / 2^k matches.
    let mut smooth = 1.0;
    for n in 0..MAX_ORDER {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    if precisions.contains(&0.0) {
        // log(0) is sacrebleu's -9999999999: the score is 0.
        return zero(precisions);
    }
    let mean_log = precisions.iter().map(|p| p.ln()).sum::<f64>() / MAX_ORDER as f64;
    BleuScore {
        score: brevity_penalty * mean_log.exp(),
        precisions,
        brevity_penalty,
        sys_len,
        ref_len,
    }
}

const CHAR_ORDER: usize = 6;
const BETA: f64 = 2.0;

fn char_ngrams(line: &str, n: usize) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    let starts: Vec<usize> = line
        .char_indices()
        .map(|(i, _)| i)
        .chain([line.len()])
        .collect();
    for w in starts.windows(n + 1) {
        *counts.entry(&line[w[0]..w[n]]).or_insert(0) += 1;
    }
    counts
}

/// Corpus chrF (chrF2, character 6-grams, whitespace removed) against one reference each.
pub fn corpus_chrf(hypotheses: &[String], references: &[String]) -> f64 {
    assert_eq!(
        hypotheses.len(),
        references.len(),
        "one reference per hypothesis"
    );
    // Per order: hypothesis n-grams, reference n-grams, matches.
    let mut stats = [[0usize; 3]; CHAR_ORDER];
    for (hyp, reference) in hypotheses.iter().zip(references) {
        let hyp: String = hyp.split(py_space).collect();
        let reference: String = reference.split(py_space).collect();
        for (n, stat) in stats.iter_mut().enumerate() {
            let (h, r) = (char_ngrams(&hyp, n + 1), char_ngrams(&reference, n + 1));
            let hyp_count: usize = h.values().sum();
            let matches: usize = h
                .iter()
                .map(|(g, c)| (*c).min(r.get(g).copied().unwrap_or(0)))
                .sum();
            // sacrebleu counts no hypothesis n-grams where the reference has none.
            stat[0] += if r.is_empty() { 0 } else { hyp_count };
            stat[1] += r.values().sum::<usize>();
            stat[2] += matches;
        }
    }
    let (mut precision, mut recall, mut orders) = (0.0, 0.0, 0);
    for [hyp, reference, matches] in stats {
        if hyp > 0 && reference > 0 {
            precision += matches as f64 / hyp as f64;
            recall += matches as f64 / reference as f64;
            orders += 1;
        }
    }
    if orders == 0 {
        return 0.0;
    }
    let (p, r) = (precision / orders as f64, recall / orders as f64);
    let factor = BETA * BETA;
    if p + r == 0.0 {
        0.0
    } else {
        100.0 * (1.0 + factor) * p * r / (factor * p + r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_a_splits_punctuation_but_not_numbers() {
        let t = BleuTokenizer::Mteval13a;
        assert_eq!(
            t.tokenize("Hello, world! It costs $3.50."),
            "Hello , world ! It costs $ 3.50 ."
        );
        assert_eq!(t.tokenize("1-2 a-b &amp; x"), "1 - 2 a-b & x");
    }

    #[test]
    fn zh_splits_every_character() {
        assert_eq!(
            BleuTokenizer::Zh.tokenize("我爱北京。OK, 2.5"),
            "我 爱 北 京 。 OK , 2.5"
        );
    }

    #[test]
    fn perfect_match_scores_100_and_empty_scores_0() {
        let h = vec!["the cat sat on the mat".to_string()];
        let score = corpus_bleu(&h, &h, BleuTokenizer::Mteval13a);
        assert!((score.score - 100.0).abs() < 1e-9);
        assert!((corpus_chrf(&h, &h) - 100.0).abs() < 1e-9);
        let empty = vec![String::new()];
        assert_eq!(corpus_bleu(&empty, &h, BleuTokenizer::Mteval13a).score, 0.0);
        assert_eq!(corpus_chrf(&empty, &h), 0.0);
    }

    /// Tokenization, BLEU and chrF equal sacrebleu's on every fixture pair (each scored as a
    /// one-sentence corpus) and on each fixture corpus; made by
    /// tests/fixtures/make_sacrebleu_fixtures.py with sacrebleu itself.
    #[test]
    fn equals_sacrebleu_on_the_fixtures() {
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/sacrebleu.json")).unwrap();
        let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
        let mut checked = 0;
        for corpus in fixtures["corpora"].as_array().unwrap() {
            let tokenizer = match corpus["tokenize"].as_str().unwrap() {
                "zh" => BleuTokenizer::Zh,
                _ => BleuTokenizer::Mteval13a,
            };
            let (mut hyps, mut refs) = (Vec::new(), Vec::new());
            for pair in corpus["pairs"].as_array().unwrap() {
                let (hyp, reference) = (text(&pair["hypothesis"]), text(&pair["reference"]));
                let what = format!("{hyp:?} vs {reference:?}");
                assert_eq!(
                    tokenizer.tokenize(hyp.trim_end_matches(py_space)),
                    text(&pair["hypothesis_tokens"]),
                    "{what}"
                );
                assert_eq!(
                    tokenizer.tokenize(reference.trim_end_matches(py_space)),
                    text(&pair["reference_tokens"]),
                    "{what}"
                );
                let one = |s: &String| vec![s.clone()];
                let bleu = corpus_bleu(&one(&hyp), &one(&reference), tokenizer).score;
                assert!(
                    (bleu - pair["bleu"].as_f64().unwrap()).abs() < 1e-6,
                    "{what}: {bleu}"
                );
                let chrf = corpus_chrf(&one(&hyp), &one(&reference));
                assert!(
                    (chrf - pair["chrf"].as_f64().unwrap()).abs() < 1e-6,
                    "{what}: {chrf}"
                );
                hyps.push(hyp);
                refs.push(reference);
                checked += 1;
            }
            let bleu = corpus_bleu(&hyps, &refs, tokenizer).score;
            assert!(
                (bleu - corpus["corpus_bleu"].as_f64().unwrap()).abs() < 1e-6,
                "{bleu}"
            );
            let chrf = corpus_chrf(&hyps, &refs);
            assert!(
                (chrf - corpus["corpus_chrf"].as_f64().unwrap()).abs() < 1e-6,
                "{chrf}"
            );
        }
        assert!(checked >= 20);
    }
}
