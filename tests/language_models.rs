//! The language models besides GPT-2, end to end through the binary: the recurrent LM trained by
//! truncated BPTT (its carried state saved in each checkpoint, exact resume, eval and generate)
//! and the recipe checks of its options.

mod common;

use common::{Scratch, same_weights, tiny_recipe};
use std::path::PathBuf;

/// `tiny_recipe`'s GPT-2 swapped for a small LSTM LM (`model_extra` appended to its section),
/// with dropout, accumulation, clipping and a warm-up then cosine schedule; saved every 5 steps.
fn rnn_recipe(steps: usize, model_extra: &str) -> String {
    let gpt = "model:\n  type: gpt2\n  n_layer: 1\n  n_head: 2\n  n_embd: 32\n  block_size: 16\n  dropout: 0.0\n";
    let base = tiny_recipe("flex", steps);
    assert!(base.contains(gpt), "tiny_recipe's model section changed");
    base.replace(
        gpt,
        &format!(
            "model:\n  type: rnn_lm\n  cell: lstm\n  embedding_dim: 16\n  hidden_size: 16\n  \
             num_layers: 2\n  dropout: 0.1\n  bptt: 8\n{model_extra}"
        ),
    )
    .replace(
        "scheduler:\n  type: constant\n",
        "scheduler:\n  type: warmup_cosine\n  warmup_steps: 5\n  decay_steps: 30\n  min_lr: 1.0e-3\n",
    )
    .replace(
        "  batch_size: 8\n",
        "  batch_size: 4\n  accum_grad: 2\n  grad_clip: 0.5\n",
    )
    .replace("  save_interval: 10\n", "  save_interval: 5\n  keep_last: 1\n")
}

fn file(s: &Scratch, step: u64, name: &str) -> PathBuf {
    s.path()
        .join(format!("exp/checkpoints/step_{step:08}/{name}"))
}

#[test]
fn rnn_lm_resumes_exactly_with_its_carried_state() {
    for cell in ["lstm", "gru"] {
        let recipe = rnn_recipe(20, "").replace("cell: lstm", &format!("cell: {cell}"));
        let straight = Scratch::with_recipe(&recipe);
        let out = straight.ok(&["train", "recipe.yaml"]);
        assert!(out.contains("8 streams x 8 tokens"), "{out}");
        let manifest = std::fs::read_to_string(file(&straight, 20, "manifest.json")).unwrap();
        assert!(
            manifest.contains("\"carried_state.safetensors\""),
            "{manifest}"
        );

        // Cut at step 7 (mid-stream, after the checkpoint of step 5) and resumed.
        let cut = Scratch::with_recipe(&recipe);
        let first = [
            "train",
            "recipe.yaml",
            "--quiet",
            "--set",
            "train.max_steps=7",
        ];
        cut.ok(&first);
        cut.ok(&["train", "recipe.yaml", "--quiet", "--resume"]);
        for name in ["model.safetensors", "carried_state.safetensors"] {
            same_weights(&file(&straight, 20, name), &file(&cut, 20, name))
                .unwrap_or_else(|e| panic!("{cell} {name}: {e}"));
        }
        assert_eq!(straight.train_losses(), cut.train_losses(), "{cell}");
        let mut cut_valid = cut.metric_values("valid");
        cut_valid.remove(1); // the cut run's own evaluation at step 7
        assert_eq!(straight.metric_values("valid"), cut_valid, "{cell}");
    }
}

#[test]
fn rnn_lm_evaluates_generates_and_learns() {
    let recipe = rnn_recipe(40, "  tie_weights: true\n")
        .replace("  dropout: 0.1\n", "  dropout: 0.0\n")
        .replace("  save_interval: 5\n", "  save_interval: 20\n");
    let s = Scratch::with_recipe(&recipe);
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    common::assert_loss_falls(&s.train_losses());
    let out = s.ok(&["eval", "exp", "--split", "valid"]);
    assert!(out.contains("\"perplexity\""), "{out}");
    let report = std::fs::read_to_string(s.path().join("exp/eval_valid_step_00000040.json"))
        .expect("the eval report");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    // Every token of the split after the first is scored (u16 tokens on disk).
    let valid = std::fs::read(s.path().join("prepared/valid.bin")).unwrap();
    assert_eq!(report["tokens"].as_u64(), Some(valid.len() as u64 / 2 - 1));
    let ppl = report["perplexity"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 40.0, "{report}");
    let sample = s.ok(&[
        "generate",
        "exp",
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "30",
        "--seed",
        "3",
    ]);
    assert!(
        sample.starts_with("ROMEO:") && sample.len() > 30,
        "{sample}"
    );
    let again = s.ok(&[
        "generate",
        "exp",
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "30",
        "--seed",
        "3",
    ]);
    assert_eq!(sample, again);
}

#[test]
fn tied_weights_with_different_widths_are_refused_with_the_key() {
    let s = Scratch::with_recipe(
        &rnn_recipe(5, "  tie_weights: true\n")
            .replace("  hidden_size: 16\n", "  hidden_size: 24\n"),
    );
    let out = s.run(&["train", "recipe.yaml", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "`model.tie_weights` needs `model.hidden_size` (24) equal to `model.embedding_dim` (16)"
        ),
        "{stderr}"
    );
}

/// `tiny_recipe` with Bengio's NNLM (context 3, direct connections) in place of GPT-2.
fn nnlm_recipe(steps: usize) -> String {
    let gpt = "model:\n  type: gpt2\n  n_layer: 1\n  n_head: 2\n  n_embd: 32\n  block_size: 16\n  dropout: 0.0\n";
    tiny_recipe("flex", steps).replace(
        gpt,
        "model:\n  type: nnlm\n  context: 3\n  embedding_dim: 16\n  hidden_size: 32\n  \
         direct: true\n  dropout: 0.1\n  block_size: 16\n",
    )
}

#[test]
fn nnlm_trains_resumes_exactly_evaluates_and_generates() {
    let straight = Scratch::with_recipe(&nnlm_recipe(30));
    straight.ok(&["train", "recipe.yaml", "--quiet"]);
    common::assert_loss_falls(&straight.train_losses());
    let cut = Scratch::with_recipe(&nnlm_recipe(30));
    cut.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.max_steps=10",
    ]);
    cut.ok(&["train", "recipe.yaml", "--quiet", "--resume"]);
    let name = "model.safetensors";
    same_weights(&file(&straight, 30, name), &file(&cut, 30, name)).unwrap();
    assert_eq!(straight.train_losses(), cut.train_losses());

    straight.ok(&["eval", "exp", "--split", "valid"]);
    let report = std::fs::read_to_string(straight.path().join("exp/eval_valid_step_00000030.json"))
        .expect("the eval report");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let ppl = report["perplexity"].as_f64().unwrap();
    // Below the uniform guess over the vocabulary of about 60 characters.
    assert!(ppl > 1.0 && ppl < 40.0, "{report}");
    let sample = straight.ok(&[
        "generate",
        "exp",
        "--prompt",
        "KING",
        "--max-new-tokens",
        "20",
    ]);
    assert!(sample.starts_with("KING") && sample.len() > 20, "{sample}");
}

/// Where the streams wrap to their start the state restarts from zeros: with weights that do
/// not move (a learning rate far below their precision), the step after the wrap reads the
/// first step's tokens from the first step's state and has its loss, bit for bit.
#[test]
fn rnn_lm_streams_wrap_with_a_fresh_state() {
    let recipe = rnn_recipe(10, "")
        .replace("  dropout: 0.1\n", "  dropout: 0.0\n")
        .replace("  bptt: 8\n", "  bptt: 32\n")
        .replace("  lr: 1.0e-2\n", "  lr: 1.0e-30\n")
        .replace("  min_lr: 1.0e-3\n", "  min_lr: 0.0\n")
        .replace(
            "  batch_size: 4\n  accum_grad: 2\n",
            "  batch_size: 8\n  accum_grad: 1\n",
        );
    let s = Scratch::with_recipe(&recipe);
    // About 1,800 training characters: 8 streams of 225, 8 segments of up to 32.
    s.write("input.txt", common::shakespeare(2_000));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    let losses = s.train_losses();
    let train = std::fs::read(s.path().join("prepared/train.bin")).unwrap();
    let segments = (train.len() / 2 - 1) / 8;
    let segments = segments.div_ceil(32);
    assert!(segments < losses.len(), "{segments} segments, {losses:?}");
    assert_eq!(losses[segments], losses[0], "{losses:?}");
}
