//! Translation end to end, as a user runs it: prepare a parallel corpus (with malformed lines),
//! train both model types, average checkpoints, score BLEU/chrF with greedy and beam search,
//! translate a file.

mod common;

use common::{Scratch, assert_loss_falls};
use std::path::Path;

/// The first `pairs` lines of the Tatoeba corpus, with two malformed lines put in at lines 3
/// and 6.
fn corpus(pairs: usize) -> String {
    let full =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cmn-eng/cmn.txt"))
            .expect("data/cmn-eng/cmn.txt is in the repository");
    let mut lines: Vec<&str> = full.lines().take(pairs).collect();
    lines.insert(2, "a line without a tab");
    lines.insert(5, "Empty target.\t");
    lines.join("\n") + "\n"
}

fn recipe(model: &str, on_bad_line: &str) -> String {
    format!(
        "seed: 3\noutput_dir: exp\n\
         data:\n  format: parallel\n  train: pairs.tsv\n  prepared_dir: prepared\n  \
         parallel:\n    source_lang: en\n    target_lang: zh\n    on_bad_line: {on_bad_line}\n  \
         split:\n    train: 0.8\n    valid: 0.1\n    test: 0.1\n    shuffle: true\n    chunk_lines: 1\n  \
         tokenizer:\n    type: bpe\n    vocab_size: 400\n  target_tokenizer:\n    type: char\n\
         model:\n{model}\
         loss:\n  label_smoothing: 0.1\n\
         optim:\n  type: adamw\n  lr: 3.0e-3\n  weight_decay: 0.0\n\
         train:\n  max_steps: 40\n  batch_size: 64\n  max_tokens: 800\n  log_interval: 2\n  \
         eval_interval: 10\n  save_interval: 10\n  keep_last: 1\n  keep_best: 3\n"
    )
}

const TRANSFORMER: &str = "  type: transformer_seq2seq\n  encoder_layers: 1\n  decoder_layers: 1\n  \
    d_model: 32\n  n_head: 2\n  ffn_dim: 64\n  dropout: 0.0\n";
const RNN: &str = "  type: rnn_seq2seq\n  cell: lstm\n  embed_dim: 32\n  hidden_size: 32\n  \
    dropout: 0.0\n";

fn scratch(model: &str, on_bad_line: &str) -> Scratch {
    let s = Scratch::new();
    s.write("pairs.tsv", corpus(600));
    s.write("recipe.yaml", recipe(model, on_bad_line));
    s
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report")).expect("JSON")
}

#[test]
fn malformed_lines_are_skipped_with_a_count_or_rejected() {
    let s = scratch(TRANSFORMER, "skip");
    let out = s.ok(&["prepare-data", "recipe.yaml"]);
    assert!(out.contains("skipped 2 malformed line(s)"), "{out}");
    assert!(
        out.contains("pairs.tsv:3: 1 tab-separated field(s)"),
        "{out}"
    );
    assert!(
        out.contains("pairs.tsv:6: the target side is empty"),
        "{out}"
    );
    let meta = json(&s.path().join("prepared/meta.json"));
    let stored: u64 = ["train", "valid", "test"]
        .iter()
        .map(|k| meta[k]["pairs"].as_u64().unwrap())
        .sum();
    assert_eq!(stored, 600);

    // Length filters drop training pairs (only), and say how many.
    s.ok(&[
        "prepare-data",
        "recipe.yaml",
        "--set",
        "data.parallel.max_target_tokens=5",
        "--set",
        "data.parallel.max_length_ratio=1.5",
    ]);
    let meta = json(&s.path().join("prepared/meta.json"));
    let train = &meta["train"];
    let dropped = train["too_long"].as_u64().unwrap() + train["ratio"].as_u64().unwrap();
    assert!(train["too_long"].as_u64().unwrap() > 0 && train["ratio"].as_u64().unwrap() > 0);
    assert_eq!(
        train["pairs"].as_u64().unwrap() + dropped,
        train["read"].as_u64().unwrap()
    );
    assert_eq!(meta["test"]["too_long"].as_u64().unwrap(), 0);

    let s = scratch(TRANSFORMER, "error");
    let out = s.run(&["prepare-data", "recipe.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pairs.tsv:3: malformed sentence pair"),
        "{err}"
    );
    assert!(err.contains("on_bad_line: skip"), "{err}");
}

#[test]
fn transformer_trains_averages_scores_and_translates() {
    let s = scratch(TRANSFORMER, "skip");
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    assert_loss_falls(&s.train_losses());
    // With label smoothing the plain NLL is logged beside the optimised loss.
    let metrics = std::fs::read_to_string(s.path().join("exp/metrics.jsonl")).unwrap();
    let last: serde_json::Value = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|v| v["split"] == "train")
        .unwrap();
    let (loss, nll) = (
        last["loss"].as_f64().unwrap(),
        last["nll"].as_f64().unwrap(),
    );
    assert!(nll > 0.0 && nll < loss, "loss {loss}, nll {nll}");

    let out = s.ok(&["average", "exp", "--best", "2", "-o", "exp/avg"]);
    assert!(out.contains("averaged 2 checkpoints"), "{out}");
    let test_pairs = json(&s.path().join("prepared/meta.json"))["test"]["pairs"]
        .as_u64()
        .unwrap() as usize;
    for beam in ["1", "3"] {
        let out = s.ok(&[
            "eval",
            "exp",
            "--split",
            "test",
            "--beam",
            beam,
            "--checkpoint",
            "exp/avg",
        ]);
        let report: serde_json::Value = serde_json::from_str(&out).expect("eval prints JSON");
        let bleu = report["bleu"].as_f64().unwrap();
        let chrf = report["chrf"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&bleu) && chrf > 0.0, "{report}");
        assert!(report["loss"].as_f64().unwrap().is_finite());
        assert!(
            report["bleu_signature"]
                .as_str()
                .unwrap()
                .contains("tok:zh")
        );
        let written = s.path().join(report["translations"].as_str().unwrap());
        let translations = std::fs::read_to_string(written).expect("translations written");
        assert_eq!(translations.lines().count(), test_pairs);
    }

    s.write("input.en", "Hi.\n\nI am hungry.\n");
    s.ok(&[
        "translate",
        "exp",
        "--input",
        "input.en",
        "--output",
        "out.zh",
        "--beam",
        "2",
    ]);
    let out = std::fs::read_to_string(s.path().join("out.zh")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert!(!lines[0].is_empty() && lines[1].is_empty(), "{out:?}");
    assert!(!out.contains("<unk>") && !out.contains("</s>"), "{out:?}");

    // Averaging more checkpoints than were kept is explained, not attempted.
    let out = s.run(&["average", "exp", "--best", "9", "-o", "exp/avg9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep_best"));

    // The summary has one line per report: the averaged checkpoint with each beam.
    let summary = s.ok(&["summary", "exp"]);
    let labels: Vec<&str> = summary
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default())
        .collect();
    assert_eq!(labels, ["avg_beam1", "avg_beam3"], "{summary}");
    assert!(
        summary
            .lines()
            .all(|l| l.contains("BLEU") && l.contains("chrF") && l.contains("40 steps")),
        "{summary}"
    );
}

#[test]
fn rnn_with_attention_trains_and_translates() {
    let s = scratch(RNN, "skip");
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    assert_loss_falls(&s.train_losses());
    s.write("input.en", "Wait!\n");
    s.ok(&[
        "translate",
        "exp",
        "-i",
        "input.en",
        "-o",
        "out.zh",
        "--beam",
        "3",
    ]);
    let out = std::fs::read_to_string(s.path().join("out.zh")).unwrap();
    assert_eq!(out.lines().count(), 1);
}
