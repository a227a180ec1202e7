//! Ending and continuing runs: early stopping (where a run stops, and that a run cut short and
//! resumed stops at the same step with the same weights), `--resume-from` a chosen checkpoint of
//! this experiment or another, `--reset-optimizer` and `--reset-schedule`.

mod common;

use common::{Scratch, latest_step, logged_steps, resumable_recipe, same_weights, tiny_recipe};
use std::path::{Path, PathBuf};

fn checkpoint(s: &Scratch, exp: &str, step: u64) -> PathBuf {
    s.path().join(format!("{exp}/checkpoints/step_{step:08}"))
}

fn weights(s: &Scratch, exp: &str, step: u64) -> PathBuf {
    checkpoint(s, exp, step).join("model.safetensors")
}

/// The (step, lr) of each train record of `exp`'s metrics, in order.
fn train_records(s: &Scratch, exp: &str) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(s.path().join(exp).join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["lr"].as_f64().unwrap()))
        .collect()
}

/// A tiny GPT evaluated every 5 steps, saved every 10, for up to 100 steps, stopping early when
/// the validation loss has not improved by more than 10 (it never does) for 2 evaluations: the
/// evaluation of step 5 sets the best, those of steps 10 and 15 are bad, so it stops at 15.
fn early_stopping_recipe() -> String {
    tiny_recipe("flex", 100).replace("  eval_interval: 10\n", "  eval_interval: 5\n")
        + "  early_stopping: {patience: 2, min_delta: 10.0, metric: valid_loss}\n"
}

#[test]
fn early_stopping_stops_at_the_expected_step_and_a_resumed_run_stops_there_too() {
    let straight = Scratch::with_recipe(&early_stopping_recipe());
    let out = straight.ok(&["train", "recipe.yaml"]);
    assert!(
        out.contains(
            "early stopping: valid loss has not improved by more than 10 for 2 evaluations \
             (best "
        ) && out.contains("at step 5); stopped after step 15 of 100"),
        "{out}"
    );
    // The stop saved its step, off the save interval, as the end of a run does.
    assert_eq!(latest_step(&straight), Some(15));
    assert_eq!(logged_steps(&straight), (1..=15).collect::<Vec<_>>());
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(checkpoint(&straight, "exp", 15).join("trainer_state.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state["early_stopping"]["bad_evaluations"], 2, "{state}");
    assert_eq!(state["early_stopping"]["best"][1], 5, "{state}");

    // Cut short at step 12 (its last-step evaluation must not count), then resumed: the same
    // stop, the same weights, every step logged once.
    let cut = Scratch::with_recipe(&early_stopping_recipe());
    cut.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.max_steps=12",
    ]);
    assert_eq!(latest_step(&cut), Some(12));
    let out = cut.ok(&["train", "recipe.yaml", "--resume"]);
    assert!(out.contains("stopped after step 15 of 100"), "{out}");
    assert_eq!(latest_step(&cut), Some(15));
    same_weights(&weights(&straight, "exp", 15), &weights(&cut, "exp", 15))
        .expect("the resumed run stops with the straight run's weights");
    assert_eq!(logged_steps(&cut), (1..=15).collect::<Vec<_>>());
    assert_eq!(straight.train_losses(), cut.train_losses());

    // Resuming a stopped run does nothing; with a larger patience it trains on to the next bad
    // evaluation.
    let out = straight.ok(&["train", "recipe.yaml", "--resume"]);
    assert!(
        out.contains("the run stopped at step 15, nothing to do"),
        "{out}"
    );
    assert_eq!(latest_step(&straight), Some(15));
    let more = ["--set", "train.early_stopping.patience=3"];
    straight.ok(&[&["train", "recipe.yaml", "--resume", "--quiet"][..], &more].concat());
    assert_eq!(latest_step(&straight), Some(20));
}

#[test]
fn bad_early_stopping_sections_and_reset_flags_alone_are_refused() {
    for (section, key) in [
        (
            "{patience: 0}",
            "`train.early_stopping.patience` must be at least 1",
        ),
        (
            "{patience: 2, min_delta: -0.1}",
            "`train.early_stopping.min_delta` must be 0",
        ),
        ("{patience: 2, metric: accuracy}", "valid_loss"),
        ("{patience: 2, delta: 0.1}", "delta"),
    ] {
        let s = Scratch::with_recipe(
            &(tiny_recipe("flex", 20) + &format!("  early_stopping: {section}\n")),
        );
        let out = s.run(&["train", "recipe.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{section}: {stderr}");
        assert!(stderr.contains(key), "{section}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let s = Scratch::with_recipe(
        &(tiny_recipe("flex", 20).replace("  eval_interval: 10\n", "  eval_interval: 50\n")
            + "  early_stopping: {patience: 2}\n"),
    );
    let out = s.run(&["train", "recipe.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`train.eval_interval` (50) is past"),
        "{stderr}"
    );

    let s = Scratch::with_recipe(&tiny_recipe("flex", 20));
    for flag in ["--reset-optimizer", "--reset-schedule"] {
        let out = s.run(&["train", "recipe.yaml", flag]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("--resume-from"),
            "{stderr}"
        );
    }
    let out = s.run(&["train", "recipe.yaml", "--resume-from", "nowhere"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nowhere is not a checkpoint"), "{stderr}");
}

#[test]
fn resume_from_a_chosen_checkpoint_of_this_or_another_experiment_continues_exactly() {
    let s = Scratch::with_recipe(&(tiny_recipe("flex", 30) + "  keep_last: 5\n"));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    // Back to step 10 of the same experiment: the later checkpoints are moved aside, the later
    // metrics dropped, and the run ends where the straight one did.
    let out = s.ok(&[
        "train",
        "recipe.yaml",
        "--resume-from",
        "exp/checkpoints/step_00000010",
    ]);
    assert!(
        out.contains("resuming from") && out.contains("(step 10)"),
        "{out}"
    );
    assert!(out.contains("moved 2 checkpoint(s) past step 10"), "{out}");
    let superseded = s.path().join("exp/checkpoints/superseded/step_00000030");
    same_weights(
        &superseded.join("model.safetensors"),
        &weights(&s, "exp", 30),
    )
    .expect("resumed from step 10, the run ends with the first run's weights");
    assert_eq!(logged_steps(&s), (1..=30).collect::<Vec<_>>());

    // Another experiment's checkpoint (fairseq's --restore-file): the new experiment continues
    // from its step with its optimiser state.
    s.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "output_dir=exp2",
        "--resume-from",
        "exp/checkpoints/step_00000020",
    ]);
    same_weights(&weights(&s, "exp", 30), &weights(&s, "exp2", 30))
        .expect("continued in another folder, the run ends with the same weights");
    let steps: Vec<u64> = train_records(&s, "exp2").iter().map(|r| r.0).collect();
    assert_eq!(steps, (21..=30).collect::<Vec<_>>());
}

/// The f32 values of every tensor of a safetensors file, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The largest move of a weight from `before` to `after`, and the share of weights that moved as
/// the first step of a fresh AdamW moves them (constant lr, no weight decay): its bias-corrected
/// moments are g and g², so a weight moves by lr * |g| / (|g| + eps), which is lr to within 1%
/// unless the gradient is as small as 1e-6 (a key bias's), never more, and 0 without a gradient.
fn fresh_adamw_moves(before: &Path, after: &Path, lr: f32) -> (f32, f64) {
    let (mut fresh, mut all, mut largest) = (0usize, 0usize, 0f32);
    for ((name, a), (other, b)) in tensors(before).into_iter().zip(tensors(after)) {
        assert_eq!(name, other);
        for (x, y) in a.iter().zip(&b) {
            let moved = (y - x).abs();
            largest = largest.max(moved);
            all += 1;
            if moved < 1e-7 || (0.99 * lr..=1.0001 * lr).contains(&moved) {
                fresh += 1;
            }
        }
    }
    (largest, fresh as f64 / all as f64)
}

#[test]
fn reset_optimizer_takes_the_first_step_of_a_fresh_adamw() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 10));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    let from = ["--resume-from", "exp/checkpoints/step_00000010"];
    let one_more = ["--set", "train.max_steps=11", "--quiet"];
    let reset = [
        &["train", "recipe.yaml", "--reset-optimizer"][..],
        &from,
        &one_more,
    ];
    s.ok(&[&reset.concat()[..], &["--set", "output_dir=reset"]].concat());
    let kept = [&["train", "recipe.yaml"][..], &from, &one_more];
    s.ok(&[&kept.concat()[..], &["--set", "output_dir=kept"]].concat());
    let before = weights(&s, "exp", 10);
    // tiny_recipe: AdamW, constant lr 1e-2, no weight decay.
    let (reset_largest, reset_share) = fresh_adamw_moves(&before, &weights(&s, "reset", 11), 1e-2);
    let (_, kept_share) = fresh_adamw_moves(&before, &weights(&s, "kept", 11), 1e-2);
    assert!(
        reset_largest <= 1.0001e-2,
        "reset: a weight moved by {reset_largest}"
    );
    assert!(reset_share > 0.99, "reset: {reset_share}");
    // The check tells the two apart: moments of 10 steps move the weights otherwise.
    assert!(kept_share < 0.5, "kept: {kept_share}");
}

#[test]
fn reset_schedule_starts_the_step_count_and_the_schedule_again() {
    // Warm-up then cosine decay, so the learning rate says where in the schedule a step is.
    let s = Scratch::with_recipe(&resumable_recipe(10));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    s.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--resume-from",
        "exp/checkpoints/step_00000010",
        "--reset-schedule",
        "--set",
        "output_dir=again",
        "--set",
        "train.max_steps=4",
    ]);
    let first = train_records(&s, "exp");
    let again = train_records(&s, "again");
    assert_eq!(
        again,
        first[..4].to_vec(),
        "steps 1-4 with the first run's learning rates"
    );
    assert_eq!(latest_step(&s), Some(10));
    assert!(checkpoint(&s, "again", 4).is_dir());
    // The weights are the checkpoint's, not a fresh initialisation: the first loss is lower.
    let losses = s.metric_values_of("again", "train");
    assert!(losses[0] < s.train_losses()[0] - 0.1, "{losses:?}");
}
