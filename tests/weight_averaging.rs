//! Weight averaging in the training loop: Lookahead's slow weights (`optim.lookahead`) and the
//! EMA of the weights (`train.ema_decay`): what each changes, exact resume, `--reset-optimizer`,
//! evaluating the EMA weights, and their recipe checks.

mod common;

use common::{Scratch, resumable_recipe, same_weights, tiny_recipe};
use std::path::{Path, PathBuf};

fn file(s: &Scratch, exp: &str, step: u64, name: &str) -> PathBuf {
    s.path()
        .join(format!("{exp}/checkpoints/step_{step:08}/{name}"))
}

/// The f32 values of every tensor of a safetensors file, in name order.
fn values(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    names
        .into_iter()
        .flat_map(|name| {
            let data = file.tensor(name).unwrap().data().to_vec();
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

const LOOKAHEAD: &str = "  weight_decay: 0.0\n  lookahead: {k: 3, alpha: 0.5}\n";

/// `resumable_recipe` (dropout, accumulation, clipping, warm-up and cosine; saved every 5 steps)
/// with Lookahead synchronising every 3 steps and/or an EMA of decay 0.9.
fn averaging_recipe(steps: usize, lookahead: bool, ema: bool) -> String {
    let mut recipe = resumable_recipe(steps);
    if lookahead {
        recipe = recipe.replace("  weight_decay: 0.0\n", LOOKAHEAD);
    }
    if ema {
        recipe += "  ema_decay: 0.9\n";
    }
    recipe
}

#[test]
fn lookahead_and_ema_change_what_they_should_and_resume_exactly() {
    let s = Scratch::with_recipe(&averaging_recipe(20, true, true));
    s.write("plain.yaml", averaging_recipe(20, false, false));
    s.write("lookahead.yaml", averaging_recipe(20, true, false));
    s.write("ema.yaml", averaging_recipe(20, false, true));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    for name in ["plain", "lookahead", "ema"] {
        let yaml = format!("{name}.yaml");
        let dir = format!("output_dir={name}");
        s.ok(&["train", &yaml, "--quiet", "--set", &dir]);
    }
    let (plain, lookahead, ema) = (
        s.metric_values_of("plain", "train"),
        s.metric_values_of("lookahead", "train"),
        s.metric_values_of("ema", "train"),
    );
    // Lookahead first acts after step 3: the losses of steps 1-3 are plain AdamW's, step 4's not.
    assert_eq!(lookahead[..3], plain[..3]);
    assert_ne!(lookahead[3], plain[3]);
    // The EMA does not touch training, but validation measures it.
    assert_eq!(ema, plain);
    let (plain_valid, ema_valid) = (
        s.metric_values_of("plain", "valid"),
        s.metric_values_of("ema", "valid"),
    );
    assert_eq!(plain_valid.len(), ema_valid.len());
    assert!(
        plain_valid.iter().zip(&ema_valid).all(|(p, e)| p != e),
        "{plain_valid:?} vs {ema_valid:?}"
    );
    // The checkpoint holds both weight sets, listed in its manifest.
    let manifest = std::fs::read_to_string(file(&s, "exp", 20, "manifest.json")).unwrap();
    assert!(
        manifest.contains("\"lookahead.safetensors\"") && manifest.contains("\"ema.safetensors\""),
        "{manifest}"
    );

    // Cut at step 7 (between two synchronisations, after a checkpoint) and resumed: the same
    // losses, and the same weights, slow weights and EMA at the end.
    let cut = Scratch::with_recipe(&averaging_recipe(20, true, true));
    cut.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.max_steps=7",
    ]);
    cut.ok(&["train", "recipe.yaml", "--quiet", "--resume"]);
    for name in [
        "model.safetensors",
        "lookahead.safetensors",
        "ema.safetensors",
    ] {
        same_weights(&file(&s, "exp", 20, name), &file(&cut, "exp", 20, name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(s.train_losses(), cut.train_losses());
    // The cut run's own last evaluation (step 7) stays in its metrics; the others are equal.
    let mut resumed_valid = cut.metric_values("valid");
    assert_eq!(resumed_valid.len(), 5, "steps 5, 7, 10, 15, 20");
    resumed_valid.remove(1);
    assert_eq!(s.metric_values("valid"), resumed_valid);
}

#[test]
fn reset_optimizer_restarts_the_slow_weights_and_keeps_the_ema() {
    let s = Scratch::with_recipe(&averaging_recipe(10, true, true));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    let from = ["--resume-from", "exp/checkpoints/step_00000010"];
    let one_more = ["--set", "train.max_steps=11", "--quiet"];
    for (exp, flags) in [("reset", &["--reset-optimizer"][..]), ("kept", &[])] {
        let dir = format!("output_dir={exp}");
        let args = [
            &["train", "recipe.yaml"][..],
            flags,
            &from,
            &one_more,
            &["--set", &dir],
        ];
        s.ok(&args.concat());
    }
    // Step 11 is no synchronisation (k = 3): the slow weights are where the run started them.
    same_weights(
        &file(&s, "reset", 11, "lookahead.safetensors"),
        &file(&s, "exp", 10, "model.safetensors"),
    )
    .expect("--reset-optimizer: the slow weights restart from the checkpoint's weights");
    same_weights(
        &file(&s, "kept", 11, "lookahead.safetensors"),
        &file(&s, "exp", 10, "lookahead.safetensors"),
    )
    .expect("a plain continuation keeps the checkpoint's slow weights");
    // The EMA went on from the checkpoint's: ema_11 = 0.9 ema_10 + 0.1 w_11.
    let ema_10 = values(&file(&s, "exp", 10, "ema.safetensors"));
    let w_11 = values(&file(&s, "reset", 11, "model.safetensors"));
    let ema_11 = values(&file(&s, "reset", 11, "ema.safetensors"));
    assert_eq!(ema_11.len(), w_11.len());
    for ((e, before), w) in ema_11.iter().zip(&ema_10).zip(&w_11) {
        let expected = 0.9 * before + 0.1 * w;
        assert!((e - expected).abs() < 1e-6, "{e} vs {expected}");
    }
}

#[test]
fn eval_picks_the_ema_weights_by_their_file() {
    let s = Scratch::with_recipe(&averaging_recipe(10, false, true));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    let step = "exp/checkpoints/step_00000010";
    let report = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(s.path().join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    s.ok(&["eval", "exp", "--split", "valid", "--checkpoint", step]);
    let ema = format!("{step}/ema.safetensors");
    s.ok(&["eval", "exp", "--split", "valid", "--checkpoint", &ema]);
    let (model, averaged) = (
        report("exp/eval_valid_step_00000010.json"),
        report("exp/eval_valid_step_00000010_ema.json"),
    );
    assert!(
        averaged["checkpoint"]
            .as_str()
            .unwrap()
            .ends_with("step_00000010/ema.safetensors"),
        "{averaged}"
    );
    assert_ne!(model["loss"], averaged["loss"], "{model} vs {averaged}");
    // `average` reads the model's weights, as before.
    s.ok(&["average", "exp", "--last", "1", "-o", "exp/avg"]);
    same_weights(
        &s.path().join("exp/avg/model.safetensors"),
        &s.path().join(format!("{step}/model.safetensors")),
    )
    .unwrap();

    // A run without Lookahead has no slow weights to pick.
    let out = s.run(&[
        "eval",
        "exp",
        "--checkpoint",
        &format!("{step}/lookahead.safetensors"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`optim.lookahead`"), "{stderr}");
}

#[test]
fn bad_lookahead_and_ema_settings_are_refused_with_their_key() {
    let with = |optim: &str, train: &str| {
        tiny_recipe("flex", 10).replace(
            "  weight_decay: 0.0\n",
            &format!("  weight_decay: 0.0\n{optim}"),
        ) + train
    };
    for (recipe, key) in [
        (
            with("  lookahead: {k: 0}\n", ""),
            "`optim.lookahead.k` must be at least 1",
        ),
        (
            with("  lookahead: {alpha: 0.0}\n", ""),
            "`optim.lookahead.alpha` must be in (0, 1]",
        ),
        (
            with("  lookahead: {alpha: 1.5}\n", ""),
            "`optim.lookahead.alpha` must be in (0, 1]",
        ),
        (with("  lookahead: {k: 5, step: 2}\n", ""), "step"),
        (
            with("", "  ema_decay: 1.0\n"),
            "`train.ema_decay` must be in (0, 1)",
        ),
        (
            with("", "  ema_decay: 0.0\n"),
            "`train.ema_decay` must be in (0, 1)",
        ),
    ] {
        let s = Scratch::with_recipe(&recipe);
        let out = s.run(&["train", "recipe.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
