//! Word embeddings end to end: word2vec (skip-gram, CBOW) and GloVe trained by the binary on
//! tinyshakespeare's words, their vectors written in word2vec's text format and read back,
//! `nlpkit eval` with queries, an analogy file and a similarity file, `nlpkit export`, exact
//! resume, and bad recipes.

mod common;

use common::{Scratch, assert_loss_falls, same_weights, shakespeare, succeeded};
use std::path::Path;

/// A word2vec recipe on `input.txt` (whitespace words), `steps` steps, saved every 10.
fn word2vec_recipe(method: &str, steps: usize) -> String {
    format!(
        "seed: 11\noutput_dir: exp\n\
         data:\n  train: input.txt\n  prepared_dir: prepared\n  tokenizer:\n    type: word\n\
         model:\n  type: word2vec\n  method: {method}\n  dim: 16\n  window: 3\n  negative: 3\n  \
         sample: 1.0e-3\n  min_count: 3\n\
         optim:\n  type: adamw\n  lr: 5.0e-2\n  weight_decay: 0.0\n\
         scheduler:\n  type: warmup_linear\n  warmup_steps: 3\n  decay_steps: 60\n\
         train:\n  max_steps: {steps}\n  batch_size: 256\n  log_interval: 1\n  eval_interval: 10\n  \
         eval_batches: 2\n  save_interval: 10\n  keep_last: 3\n"
    )
}

fn glove_recipe(steps: usize) -> String {
    word2vec_recipe("cbow", steps)
        .replace(
            "  type: word2vec\n  method: cbow\n  dim: 16\n  window: 3\n  negative: 3\n  \
         sample: 1.0e-3\n",
            "  type: glove\n  dim: 16\n  window: 4\n  x_max: 20.0\n",
        )
        // GloVe's weighted loss wants a smaller step and larger batches than word2vec's.
        .replace("  lr: 5.0e-2\n", "  lr: 1.0e-2\n")
        .replace("  batch_size: 256\n", "  batch_size: 1024\n")
}

fn scratch(recipe: &str) -> Scratch {
    let s = Scratch::new();
    s.write("input.txt", shakespeare(60_000));
    s.write("recipe.yaml", recipe);
    s
}

/// The words of the vectors file and its rows, checking the header and every row's length.
fn read_vectors(path: &Path) -> (Vec<String>, Vec<Vec<f32>>) {
    let text = std::fs::read_to_string(path).expect("the vectors file");
    let mut lines = text.lines();
    let header: Vec<usize> = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let (mut words, mut rows) = (Vec::new(), Vec::new());
    for line in lines {
        let mut fields = line.split(' ');
        words.push(fields.next().unwrap().to_string());
        let row: Vec<f32> = fields.map(|x| x.parse().unwrap()).collect();
        assert_eq!(row.len(), header[1], "{line}");
        rows.push(row);
    }
    assert_eq!(words.len(), header[0]);
    (words, rows)
}

/// A tensor of a safetensors file as f32 rows of `width`.
fn tensor_rows(path: &Path, name: &str, width: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = tensors.tensor(name).unwrap_or_else(|_| {
        panic!("no {name} among {:?}", tensors.names());
    });
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    values.chunks(width).map(<[f32]>::to_vec).collect()
}

/// The weights of the best checkpoint, which `train`'s summary names (`eval` and `export` use
/// it too).
fn best_weights(s: &Scratch, train_output: &str) -> std::path::PathBuf {
    let step: u64 = train_output
        .lines()
        .find_map(|l| l.strip_prefix("best checkpoint: step "))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no best checkpoint in:\n{train_output}"));
    s.path()
        .join(format!("exp/checkpoints/step_{step:08}/model.safetensors"))
}

fn assert_close_rows(a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() < 1e-6, "{p} vs {q}");
        }
    }
}

#[test]
fn skip_gram_trains_exports_its_vectors_and_is_scored_by_eval() {
    let s = scratch(&word2vec_recipe("skip_gram", 40));
    let trained = s.ok(&["train", "recipe.yaml"]);
    assert!(trained.contains("written to"), "{trained}");
    assert_loss_falls(&s.train_losses());

    // The vectors file: the vocabulary in order, each with its input vector (word2vec.c's syn0).
    let vocab = std::fs::read_to_string(s.path().join("exp/vocab.tsv")).unwrap();
    let vocab: Vec<&str> = vocab
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let (words, rows) = read_vectors(&s.path().join("exp/vectors.txt"));
    assert_eq!(words, vocab);
    assert!(words.len() > 300, "{} words", words.len());
    let weights = best_weights(&s, &trained);
    let input = tensor_rows(&weights, "input_embed", 16);
    assert_close_rows(&rows, &input);

    // `nlpkit export` writes the same file.
    let out = s.ok(&["export", "exp", "-o", "exported.txt"]);
    assert!(out.contains("word2vec text format"), "{out}");
    assert_eq!(
        std::fs::read(s.path().join("exported.txt")).unwrap(),
        std::fs::read(s.path().join("exp/vectors.txt")).unwrap()
    );

    // Queries, analogies (one question with an unknown word) and similarity (one unknown pair).
    s.write(
        "analogies.txt",
        ": pronouns\nI my you your\nhe his she her\n: other\nthe a zounds prithee\n",
    );
    s.write(
        "similarity.txt",
        "the\ta\t5.0\nI me 8\nyou thou 9\nking queen 7\nzounds the 1\n",
    );
    let out = s.ok(&[
        "eval",
        "exp",
        "--query",
        "the",
        "--query",
        "zounds",
        "--neighbours",
        "4",
        "--analogies",
        "analogies.txt",
        "--similarity",
        "similarity.txt",
    ]);
    assert!(out.contains("nearest to the: "), "{out}");
    assert!(out.contains("zounds: not in the vocabulary"), "{out}");
    let report = std::fs::read_dir(s.path().join("exp"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("eval_")
        })
        .expect("an eval report");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let known = |w: &str| words.iter().any(|v| v == w);
    assert_eq!(
        report["neighbours"][0]["nearest"].as_array().unwrap().len(),
        4
    );
    assert_eq!(report["neighbours"][1]["in_vocabulary"], false);
    let analogy = &report["analogy"];
    let answerable = [["I", "my", "you", "your"], ["he", "his", "she", "her"]]
        .iter()
        .filter(|q| q.iter().all(|w| known(w)))
        .count();
    assert_eq!(analogy["answered"], answerable as u64, "{analogy}");
    assert_eq!(analogy["skipped"], 3 - answerable as u64, "{analogy}");
    assert_eq!(analogy["sections"][1]["name"], "other");
    let pairs = [
        ("the", "a"),
        ("I", "me"),
        ("you", "thou"),
        ("king", "queen"),
    ];
    let scored = pairs.iter().filter(|(a, b)| known(a) && known(b)).count();
    let similarity = &report["similarity"];
    assert_eq!(similarity["pairs"], scored as u64, "{similarity}");
    assert_eq!(similarity["skipped"], 5 - scored as u64, "{similarity}");
    assert!(similarity["spearman"].as_f64().unwrap().abs() <= 1.0);

    // Without any query, eval says what it needs.
    let out = s.run(&["eval", "exp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--analogies FILE"));
}

#[test]
fn cbow_and_glove_train_and_export_their_vectors() {
    let s = scratch(&word2vec_recipe("cbow", 30));
    let trained = s.ok(&["train", "recipe.yaml"]);
    assert_loss_falls(&s.train_losses());
    let (_, rows) = read_vectors(&s.path().join("exp/vectors.txt"));
    let weights = best_weights(&s, &trained);
    assert_close_rows(&rows, &tensor_rows(&weights, "input_embed", 16));

    let s = scratch(&glove_recipe(60));
    let out = s.ok(&["prepare-data", "recipe.yaml"]);
    assert!(out.contains("co-occurrence entries (window 4)"), "{out}");
    let trained = s.ok(&["train", "recipe.yaml"]);
    assert_loss_falls(&s.train_losses());
    // GloVe's vectors are w + w~.
    let (_, rows) = read_vectors(&s.path().join("exp/vectors.txt"));
    let weights = best_weights(&s, &trained);
    let (w, c) = (
        tensor_rows(&weights, "word_embed", 16),
        tensor_rows(&weights, "context_embed", 16),
    );
    let sum: Vec<Vec<f32>> = w
        .iter()
        .zip(&c)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
        .collect();
    assert_close_rows(&rows, &sum);
}

#[test]
fn a_word2vec_or_glove_run_cut_and_resumed_equals_a_straight_one() {
    // Two micro-batches a step, so batches are drawn for (step, micro) pairs.
    let recipe = |method: &str, steps: usize| {
        let recipe = match method {
            "glove" => glove_recipe(steps),
            _ => word2vec_recipe(method, steps),
        };
        recipe.replace("  max_steps:", "  accum_grad: 2\n  max_steps:")
    };
    for method in ["skip_gram", "cbow", "glove"] {
        let straight = scratch(&recipe(method, 20));
        straight.ok(&["train", "recipe.yaml", "--quiet"]);
        let cut = scratch(&recipe(method, 10));
        cut.ok(&["train", "recipe.yaml", "--quiet"]);
        cut.ok(&[
            "train",
            "recipe.yaml",
            "--quiet",
            "--resume",
            "--set",
            "train.max_steps=20",
        ]);
        let weights = |s: &Scratch| {
            s.path()
                .join("exp/checkpoints/step_00000020/model.safetensors")
        };
        same_weights(&weights(&straight), &weights(&cut))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(
            std::fs::read(straight.path().join("exp/vectors.txt")).unwrap(),
            std::fs::read(cut.path().join("exp/vectors.txt")).unwrap()
        );
    }
}

/// Train with `recipe` on `input.txt`; expect exit 2 and every `needle` in stderr.
fn rejects(recipe: &str, needles: &[&str]) {
    let s = scratch(recipe);
    let out = s.run(&["train", "recipe.yaml", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
}

#[test]
fn bad_embedding_recipes_are_refused_with_the_key_and_what_to_do() {
    let base = word2vec_recipe("skip_gram", 5);
    rejects(
        &base.replace("method: skip_gram", "method: skipgram"),
        &["model.method", "skip_gram"],
    );
    rejects(
        &base.replace("negative: 3", "negative: 0"),
        &["`model.negative` must be at least 1"],
    );
    rejects(
        &base.replace("sample: 1.0e-3", "sample: 1.5"),
        &["`model.sample` must be in [0, 1)"],
    );
    rejects(
        &base.replace("min_count: 3", "min_count: 1000000"),
        &["occurs at least 1000000 times", "`model.min_count`"],
    );
    rejects(
        &base.replace(
            "  train: input.txt\n",
            "  format: csv\n  train: input.txt\n",
        ),
        &["data.format", "word2vec"],
    );
    rejects(
        &glove_recipe(5).replace("x_max: 20.0", "x_max: 20.0\n  alpha: 0.0"),
        &["`model.alpha` must be in (0, 1]"],
    );
    rejects(
        &base.replace("  min_count: 3\n", "  min_count: 3\n  vocab_size: 7\n"),
        &["`model.vocab_size` (7) differs from the prepared vocabulary"],
    );
    rejects(
        &base.replace("  window: 3\n", "  window: 3\n  windows: 2\n"),
        &["unknown key `model.windows`", "did you mean `window`?"],
    );
}

#[test]
fn prepared_vectors_file_round_trips_through_the_reader() {
    // The reader eval's fixtures use accepts what training writes.
    let s = scratch(&word2vec_recipe("skip_gram", 2));
    succeeded("train", s.run(&["train", "recipe.yaml", "--quiet"]));
    let v = nlpkit::eval::embeddings::WordVectors::read_word2vec_text(
        &s.path().join("exp/vectors.txt"),
    )
    .unwrap();
    assert_eq!(v.dim(), 16);
    assert!(v.len() > 300);
}

#[test]
fn embedding_queries_on_another_task_are_refused() {
    let s = Scratch::with_recipe(&common::tiny_recipe("flex", 2));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    let out = s.run(&["eval", "exp", "--query", "the"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("score word embeddings; this is a language modelling experiment"),
        "{stderr}"
    );
}

#[test]
fn the_prepared_vocabulary_follows_min_count_and_glove_s_window() {
    let s = scratch(&word2vec_recipe("skip_gram", 2));
    let first = s.ok(&["prepare-data", "recipe.yaml"]);
    let words = |out: &str| -> usize {
        let at = out.find("vocabulary: ").expect("the vocabulary line") + "vocabulary: ".len();
        out[at..].split(' ').next().unwrap().parse().unwrap()
    };
    // The model's options are inputs of the prepared data: changing one prepares it again.
    let again = s.ok(&["prepare-data", "recipe.yaml"]);
    assert!(again.contains("is up to date"), "{again}");
    let fewer = s.ok(&["prepare-data", "recipe.yaml", "--set", "model.min_count=10"]);
    assert!(!fewer.contains("is up to date"), "{fewer}");
    assert!(words(&fewer) < words(&first), "{first}\n{fewer}");
    let vocab = std::fs::read_to_string(s.path().join("prepared/vocab.tsv")).unwrap();
    let counts: Vec<u64> = vocab
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), words(&fewer));
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "most frequent first"
    );
    assert!(*counts.last().unwrap() >= 10);

    s.write("recipe.yaml", glove_recipe(2));
    let four = s.ok(&["prepare-data", "recipe.yaml"]);
    let eight = s.ok(&["prepare-data", "recipe.yaml", "--set", "model.window=8"]);
    let entries = |out: &str| -> usize {
        let at = out.find("; ").expect("the co-occurrence count") + 2;
        out[at..].split(' ').next().unwrap().parse().unwrap()
    };
    assert!(entries(&eight) > entries(&four), "{four}\n{eight}");
}
