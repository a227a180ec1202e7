//! Transformer-XL language models through the binary: training with the memory carried between
//! the segments of each window, exact resume, `eval` over a whole split and `generate` with the
//! memory, and the recipes it refuses.

mod common;

use common::{Scratch, resumable_recipe, same_weights};
use std::path::PathBuf;

const GPT2: &str = "  type: gpt2\n  n_layer: 1\n  n_head: 2\n  n_embd: 32\n  block_size: 16\n";

/// `resumable_recipe` (dropout 0.1, accumulation, clipping, warm-up and cosine; saved every 5
/// steps) with a one-layer Transformer-XL reading windows of 3 segments of 8 tokens, with a
/// memory of 8; `set` changes or adds model keys.
fn xl_recipe(steps: usize, set: &[(&str, &str)]) -> String {
    let mut keys = vec![
        ("n_layer", "1"),
        ("n_head", "2"),
        ("n_embd", "32"),
        ("segment_len", "8"),
        ("mem_len", "8"),
        ("segments_per_sample", "3"),
    ];
    for &(key, value) in set {
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => keys.push((key, value)),
        }
    }
    let model: String = keys.iter().map(|(k, v)| format!("  {k}: {v}\n")).collect();
    let recipe = resumable_recipe(steps);
    assert!(recipe.contains(GPT2));
    recipe.replace(GPT2, &format!("  type: transformer_xl\n{model}"))
}

fn weights(s: &Scratch, step: u64) -> PathBuf {
    s.path()
        .join(format!("exp/checkpoints/step_{step:08}/model.safetensors"))
}

#[test]
fn transformer_xl_resumes_exactly_evaluates_and_generates_with_its_memory() {
    let s = Scratch::with_recipe(&xl_recipe(20, &[]));
    let out = s.ok(&["train", "recipe.yaml"]);
    assert!(
        out.contains("(8 windows of 3 segments of 8, memory 8)"),
        "{out}"
    );
    let losses = s.train_losses();
    assert_eq!(losses.len(), 20);
    assert!(losses[19] < losses[0], "{losses:?}");

    // Cut at step 7 (after the checkpoint of step 5) and resumed: the same losses and weights.
    let cut = Scratch::with_recipe(&xl_recipe(20, &[]));
    cut.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.max_steps=7",
    ]);
    cut.ok(&["train", "recipe.yaml", "--quiet", "--resume"]);
    same_weights(&weights(&s, 20), &weights(&cut, 20)).expect("resumed equals straight");
    assert_eq!(s.train_losses(), cut.train_losses());

    // Perplexity over the whole split, read in 4 rows: every token but fewer than 4.
    let out = s.ok(&["eval", "exp", "--split", "valid", "--batch-size", "4"]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("eval prints JSON");
    let tokens = report["tokens"].as_u64().unwrap();
    let loss = report["loss"].as_f64().unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join("prepared/meta.json")).unwrap(),
    )
    .unwrap();
    let predicted = meta["valid"]["tokens"].as_u64().unwrap() - 1;
    assert!(
        tokens <= predicted && tokens > predicted - 4,
        "{report} of {predicted}"
    );
    assert!(loss > 0.5 && loss < 4.5, "{report}");

    // Generation past several segments: keeping the memory from token to token and rebuilding
    // it for every token give the same text.
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "exp",
            "--prompt",
            "ROMEO: my",
            "--max-new-tokens",
            "30",
            "--seed",
            "3",
        ];
        args.extend_from_slice(extra);
        s.ok(&args)
    };
    let text = generate(&[]);
    assert!(
        text.starts_with("ROMEO: my") && text.chars().count() >= 39,
        "{text:?}"
    );
    assert_eq!(text, generate(&["--no-kv-cache"]));
}

#[test]
fn bad_transformer_xl_recipes_are_refused_with_their_key() {
    for (set, key) in [
        (
            &[("segments_per_sample", "1")][..],
            "`model.segments_per_sample` is 1, so training never attends to the memory",
        ),
        (
            &[("n_embd", "15"), ("n_head", "3")],
            "`model.n_embd` (15) must be even",
        ),
        (&[("block_size", "16")], "block_size"),
        (
            &[("segment_len", "4000")],
            "tokens, fewer than one training window (`model.segments_per_sample` x \
             `model.segment_len`) + 1 = 12001",
        ),
    ] {
        let s = Scratch::with_recipe(&xl_recipe(5, set));
        let out = s.run(&["train", "recipe.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
