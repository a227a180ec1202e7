//! Fuzzing on the stable toolchain: the recipe loader (with `--set` overrides and validation)
//! and the CSV, tagging and parallel-corpus readers run on seeded random mutations of real
//! inputs, and must answer every one with a value or an error, never a panic.
//!
//! The test suite runs a short seeded pass. A long run, printing executions and the number of
//! distinct outcomes it reached (errors by their first words: a rough measure of the paths
//! explored):
//!
//! ```text
//! NLPKIT_FUZZ_SECONDS=600 cargo test --release --test fuzz -- --nocapture
//! ```

mod common;

use common::repository_file;
use nlpkit::data::{parallel, table, tagging};
use nlpkit::recipe::{CsvSection, ParallelSection};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// A small fast generator (xorshift64*), seeded, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Fragments that matter to the formats: YAML structure, CSV quoting, tabs, line ends, odd
/// numbers, a byte-order mark, multi-byte characters.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "\n",
    "\r\n",
    "\t",
    "  ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "&a ",
    "*a",
    "<<: *a",
    "#",
    "---",
    "...",
    "!!str ",
    "|",
    ">",
    "~",
    "null",
    ".nan",
    "-.inf",
    "1e400",
    "99999999999999999999999",
    "-1",
    "0",
    "0.5",
    "true",
    "type: bert",
    "type: gpt2",
    "head: ",
    "\u{feff}",
    "中",
    "é",
    "\u{0}",
    "B-",
    "I-LOC",
    "O",
    "\"\"",
    "=",
    ".",
    "[0]",
];

/// One random edit of `input`: change, insert, delete or repeat a piece, or splice in another
/// seed.
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            2 => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(64)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(128)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let end = (at + token.len()).min(out.len());
                out.splice(at..end, token.iter().copied());
            }
        }
    }
    out
}

/// The outcome of one input, for counting distinct outcomes: "ok", or the error's first words
/// without file names, numbers and quoted input.
fn outcome<T>(result: nlpkit::error::Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e
            .to_string()
            .split_whitespace()
            .filter(|w| {
                w.chars()
                    .all(|c| c.is_ascii_alphabetic() || ",;:()-".contains(c))
            })
            .take(6)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Run `target` on mutations of `seeds` for `iterations` inputs or `NLPKIT_FUZZ_SECONDS`, and
/// fail on the first panic, showing the input.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, iterations: usize, target: impl Fn(&[u8]) -> String) {
    let limit = std::env::var("NLPKIT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let mut outcomes = BTreeSet::new();
    let mut runs = 0usize;
    let keep_going = |runs: usize| match limit {
        Some(limit) => started.elapsed() < limit,
        None => runs < iterations,
    };
    while keep_going(runs) {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, &seeds);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input))) {
            Ok(outcome) => {
                outcomes.insert(outcome);
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "{name}: input {runs} panicked ({message}):\n{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        runs += 1;
    }
    println!(
        "{name}: {runs} inputs in {:.1} s, {} distinct outcomes",
        started.elapsed().as_secs_f64(),
        outcomes.len()
    );
    assert!(
        outcomes.contains("ok") && outcomes.len() > 1,
        "{name}: the mutations must reach both accepted and refused inputs: {outcomes:?}"
    );
}

/// The first `n` lines of a repository file, each a seed of `per_seed` lines.
fn line_seeds(path: &str, n: usize, per_seed: usize) -> Vec<Vec<u8>> {
    let text = repository_file(path);
    let lines: Vec<&str> = text.lines().take(n).collect();
    lines
        .chunks(per_seed)
        .map(|c| (c.join("\n") + "\n").into_bytes())
        .collect()
}

#[test]
fn recipes_and_overrides() {
    let mut seeds: Vec<Vec<u8>> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes"))
            .unwrap()
            .flat_map(|recipe| {
                std::fs::read_dir(recipe.unwrap().path().join("conf"))
                    .into_iter()
                    .flatten()
            })
            .map(|file| std::fs::read(file.unwrap().path()).unwrap())
            .collect();
    seeds.push(common_recipe().into_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recipe.yaml");
    fuzz("recipe", seeds, 3000, |input| {
        std::fs::write(&path, input).unwrap();
        // Lines that a mutation gave an `=` also go in as `--set KEY=VALUE` overrides.
        let text = String::from_utf8_lossy(input);
        let overrides: Vec<String> = (text.lines())
            .filter(|line| line.contains('='))
            .take(2)
            .map(|line| line.trim().replace(": ", "."))
            .collect();
        outcome(nlpkit::recipe::load_recipe(&path, &overrides))
    });
}

/// A recipe with every section, inline (the test helpers' tiny one, with a model of each kind
/// close at hand in the token list).
fn common_recipe() -> String {
    "backend:\n  type: flex\nseed: 7\noutput_dir: exp\ndata:\n  train: input.txt\n  tokenizer:\n    \
     type: char\nmodel:\n  type: gpt2\n  n_layer: 1\n  n_head: 2\n  n_embd: 32\n  block_size: 16\n\
     optim:\n  type: adamw\n  lr: 1.0e-2\nscheduler:\n  type: constant\ntrain:\n  max_steps: 10\n  \
     batch_size: 8\n  save_interval: 10\n"
        .into()
}

#[test]
fn csv_reader() {
    let seeds = line_seeds("data/waimai_10k/waimai_10k.csv", 200, 20);
    let section: CsvSection = serde_json::from_value(serde_json::json!({
        "text_column": "review", "label_column": "label"
    }))
    .unwrap();
    fuzz("csv", seeds, 20_000, |input| {
        let text = String::from_utf8_lossy(input);
        outcome(table::parse_labelled(&text, "fuzz.csv", ',', &section))
    });
}

#[test]
fn tagging_reader() {
    let seeds = line_seeds("data/msra_ner/dh_msra.txt", 600, 60);
    fuzz("tagging", seeds, 20_000, |input| {
        outcome(tagging::parse_tagged(
            &String::from_utf8_lossy(input),
            "fuzz.txt",
        ))
    });
}

#[test]
fn parallel_reader() {
    let seeds = line_seeds("data/cmn-eng/cmn.txt", 200, 20);
    let section: ParallelSection = serde_json::from_value(serde_json::json!({
        "source_lang": "en", "target_lang": "zh", "on_bad_line": "error"
    }))
    .unwrap();
    fuzz("parallel", seeds, 20_000, |input| {
        outcome(parallel::read_tsv(
            &String::from_utf8_lossy(input),
            "fuzz.tsv",
            &section,
        ))
    });
}
