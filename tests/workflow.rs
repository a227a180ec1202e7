//! The user's workflow end to end: prepare, train, resume, eval, generate.

mod common;
use common::{Scratch, resumable_recipe, same_weights, tiny_recipe};
use std::path::Path;

#[test]
fn set_overrides_change_the_resolved_recipe() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 5));
    let yaml = s.ok(&[
        "recipe",
        "check",
        "recipe.yaml",
        "--set",
        "train.batch_size=3",
        "--set",
        "optim.lr=3e-4",
        "--set",
        "optim.betas=[0.8, 0.95]",
        "--set",
        "scheduler.type=warmup_cosine",
        "--set",
        "model.n_layer=2",
    ]);
    assert!(yaml.contains("batch_size: 3"), "{yaml}");
    assert!(yaml.contains("lr: 0.0003"), "{yaml}");
    assert!(yaml.contains("0.8") && yaml.contains("0.95"), "{yaml}");
    assert!(yaml.contains("type: warmup_cosine"), "{yaml}");
    assert!(yaml.contains("n_layer: 2"), "{yaml}");
    // Defaults are filled and paths made absolute in the resolved recipe.
    assert!(
        yaml.contains("eps: 1.0e-8") || yaml.contains("eps: 1e-8"),
        "{yaml}"
    );
    assert!(
        yaml.contains(&s.path().join("input.txt").display().to_string()),
        "{yaml}"
    );

    // The experiment folder gets the resolved recipe, overrides included.
    s.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.max_steps=2",
        "--set",
        "seed=99",
    ]);
    let saved = std::fs::read_to_string(s.path().join("exp/recipe.yaml")).unwrap();
    assert!(
        saved.contains("max_steps: 2") && saved.contains("seed: 99"),
        "{saved}"
    );
    assert!(
        saved.contains("vocab_size:"),
        "the model's vocabulary is written out: {saved}"
    );
}

#[test]
fn bad_overrides_are_explained() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 5));
    for (set, needle) in [
        ("train.bach_size=3", "did you mean `batch_size`?"),
        ("train.batch_size=many", "train.batch_size"),
        ("train.batch_size", "expected KEY.PATH=VALUE"),
        ("seed.deeper=1", "not a section"),
    ] {
        let out = s.run(&["recipe", "check", "recipe.yaml", "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--set {set}: {stderr}");
        assert!(stderr.contains(needle), "--set {set}: {stderr}");
    }
}

fn final_weights(s: &Scratch) -> std::path::PathBuf {
    s.path()
        .join("exp/checkpoints/step_00000030/model.safetensors")
}

#[test]
fn resume_after_interruption_ends_with_identical_weights() {
    let straight = Scratch::with_recipe(&resumable_recipe(30));
    straight.ok(&["train", "recipe.yaml", "--quiet"]);

    let interrupted = Scratch::with_recipe(&resumable_recipe(30));
    // Stop after 15 steps (the run ends as an interruption would: checkpoints up to step 15).
    interrupted.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "train.max_steps=15",
    ]);
    // Without --resume the binary refuses to overwrite the experiment.
    let refused = interrupted.run(&["train", "recipe.yaml", "--quiet"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    interrupted.ok(&["train", "recipe.yaml", "--quiet", "--resume"]);

    same_weights(&final_weights(&straight), &final_weights(&interrupted))
        .expect("resumed run must end with the uninterrupted run's weights");
    // The losses logged after the resume point are those of the uninterrupted run.
    let (a, b) = (straight.train_losses(), interrupted.train_losses());
    assert_eq!(a.len(), 30);
    assert_eq!(b.len(), 30);
    assert_eq!(a[15..], b[15..]);
}

/// A run holds its folder: a second one is refused (exit 2, the holder's pid) while it trains,
/// and a run killed outright leaves no lock behind (the OS releases it).
#[test]
fn a_killed_run_leaves_a_loadable_checkpoint_and_resumes() {
    let s = Scratch::with_recipe(
        &tiny_recipe("flex", 100_000).replace("  save_interval: 10\n", "  save_interval: 3\n"),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nlpkit"))
        .args(["train", "recipe.yaml", "--quiet"])
        .current_dir(s.path())
        .spawn()
        .unwrap();
    let checkpoints = s.path().join("exp/checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while count_checkpoints(&checkpoints) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = s.run(&["train", "recipe.yaml", "--resume", "--quiet"]);
    let refusal = String::from_utf8_lossy(&second.stderr);
    let held = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(
        count_checkpoints(&checkpoints) >= 2,
        "no checkpoint appeared in time"
    );
    assert!(held, "the first run ended before the second one started");
    assert_eq!(second.status.code(), Some(2), "{refusal}");
    assert!(
        refusal.contains("is in use") && refusal.contains(&format!("process {}", child.id())),
        "{refusal}"
    );
    // The latest complete checkpoint loads and training continues from it.
    let out = s.ok(&[
        "train",
        "recipe.yaml",
        "--resume",
        "--set",
        "train.max_steps=40",
    ]);
    assert!(out.contains("resuming from"), "{out}");
    // Steps the killed run logged after its last checkpoint are not logged twice.
    let text = std::fs::read_to_string(s.path().join("exp/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=40).collect::<Vec<u64>>());
    s.ok(&["eval", "exp", "--split", "valid"]);
}

fn count_checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("step_"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn eval_writes_perplexity_and_generate_is_reproducible() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 20));
    s.ok(&["train", "recipe.yaml", "--quiet"]);

    let out = s.ok(&["eval", "exp", "--split", "test"]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("eval prints JSON");
    let loss = report["loss"].as_f64().unwrap();
    let ppl = report["perplexity"].as_f64().unwrap();
    assert!((ppl - loss.exp()).abs() < 1e-9 * ppl, "{report}");
    assert!(
        loss > 0.5 && loss < 4.5,
        "a char model's loss is in a sane range: {loss}"
    );
    assert!(report["tokens"].as_u64().unwrap() > 1000);
    let written = s.path().join(format!(
        "exp/eval_test_step_{:08}.json",
        report["step"].as_u64().unwrap()
    ));
    assert!(written.exists(), "report file {written:?}");

    let generate = |seed: &str, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "exp",
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "40",
            "--seed",
            seed,
        ];
        args.extend_from_slice(extra);
        s.ok(&args)
    };
    let first = generate("5", &[]);
    assert!(
        first.starts_with("ROMEO:") && first.chars().count() >= 46,
        "{first:?}"
    );
    assert_eq!(first, generate("5", &[]), "same seed, same text");
    assert_ne!(first, generate("6", &[]), "another seed, another text");
    // The KV-cache path and the full recompute pick the same tokens.
    assert_eq!(first, generate("5", &["--no-kv-cache"]));
    // Past the block size (16) the cache is rebuilt; still the same as recomputing.
    let long = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "exp",
            "--prompt",
            "A",
            "--max-new-tokens",
            "50",
            "--temperature",
            "0",
        ];
        args.extend_from_slice(extra);
        s.ok(&args)
    };
    assert_eq!(long(&[]), long(&["--no-kv-cache"]));

    let bad = s.run(&["generate", "exp", "--prompt", "\u{1F600}"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not know"));
}

#[test]
fn prepare_data_is_idempotent() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 5));
    let first = s.ok(&["prepare-data", "recipe.yaml"]);
    assert!(first.contains("prepared"), "{first}");
    let second = s.ok(&["prepare-data", "recipe.yaml"]);
    assert!(second.contains("up to date"), "{second}");
    let forced = s.ok(&["prepare-data", "recipe.yaml", "--force"]);
    assert!(!forced.contains("up to date"), "{forced}");
    // Changing the input redoes the work.
    s.write("input.txt", common::shakespeare(50_000));
    assert!(
        !s.ok(&["prepare-data", "recipe.yaml"])
            .contains("up to date")
    );
    // Token counts are reported and add up to the text (char level: one token a character).
    let text = common::shakespeare(50_000);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join("prepared/meta.json")).unwrap(),
    )
    .unwrap();
    let tokens: u64 = ["train", "valid", "test"]
        .iter()
        .map(|k| meta[k]["tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(tokens as usize, text.chars().count());
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let recipe = tiny_recipe("flex", 50)
        .replace(
            "optim:\n  type: adamw\n  lr: 1.0e-2\n",
            "optim:\n  type: sgd\n  lr: 1.0e+30\n",
        )
        .replace("  save_interval: 10\n", "  save_interval: 1\n");
    let s = Scratch::with_recipe(&recipe);
    let out = s.run(&["train", "recipe.yaml", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the loss became") && stderr.contains("last good checkpoint"),
        "{stderr}"
    );
    // The checkpoint it names still loads.
    s.ok(&["eval", "exp", "--split", "valid"]);
}

#[test]
fn resume_on_a_fresh_folder_starts_and_summary_lists_the_reports() {
    // The recipes' run.sh always pass --resume: on a folder without checkpoints it starts.
    let s = Scratch::with_recipe(&tiny_recipe("flex", 10));
    let out = s.ok(&["train", "recipe.yaml", "--resume"]);
    assert!(out.contains("starting from step 0"), "{out}");
    assert_eq!(s.train_losses().len(), 10);
    for split in ["valid", "test"] {
        s.ok(&["eval", "exp", "--split", split]);
    }
    let summary = s.ok(&["summary", "exp", "--split", "valid"]);
    let rows: Vec<&str> = summary.lines().collect();
    assert_eq!(rows.len(), 1, "{summary}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.path().join("exp/eval_valid_step_00000010.json")).unwrap(),
    )
    .unwrap();
    let loss = format!("loss {:.4}", report["loss"].as_f64().unwrap());
    assert!(
        rows[0].starts_with("exp ")
            && rows[0].contains("step_00000010")
            && rows[0].contains(&loss)
            && rows[0].contains("10 steps in"),
        "{summary}"
    );
    // The report counts the model's parameters: every weight the checkpoint holds.
    let checkpoint = s.path().join("exp/checkpoints/step_00000010");
    let weights = std::fs::read(checkpoint.join("model.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let elements: usize = weights
        .tensors()
        .iter()
        .map(|(_, t)| t.shape().iter().product::<usize>())
        .sum();
    assert_eq!(report["parameters"].as_u64(), Some(elements as u64));
    // A folder without reports of the split says what to run.
    let none = s.ok(&["summary", "exp", "--split", "train"]);
    assert!(none.contains("nlpkit eval"), "{none}");
}

#[test]
fn eval_refuses_data_prepared_by_another_tokenizer() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 5));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    // The same recipe on other text: another character vocabulary in the prepared folder.
    s.write("input.txt", "abc\n".repeat(2000));
    s.ok(&["prepare-data", "recipe.yaml"]);
    let out = s.run(&["eval", "exp"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("differs from the experiment's") && stderr.contains("prepare-data"),
        "{stderr}"
    );
}

/// On a terminal the bar and the evaluation lines are drawn on stdout, the stream tested for a
/// terminal, so `nlpkit train r.yaml 2>err.log` still shows them.
#[test]
fn progress_shows_on_the_terminal_when_only_stderr_is_redirected() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 20));
    // util-linux's `script` runs the command on a pseudo-terminal and copies what it shows.
    let command = format!(
        "'{}' train recipe.yaml 2>err.log",
        env!("CARGO_BIN_EXE_nlpkit")
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(s.path())
        .output()
        .expect("script (util-linux) runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("step 20: valid loss"), "{shown}");
    assert!(shown.contains("20/20"), "{shown}");
}
