//! Bad recipes and bad data fail with a clear message and exit code 2, never a panic.

mod common;
use common::{Scratch, tiny_recipe};

/// Train with `recipe` (and `input.txt` = `data`), expect exit 2 and every `needle` in stderr.
fn rejects(recipe: &str, data: Option<&[u8]>, needles: &[&str]) {
    let s = Scratch::with_recipe(recipe);
    if let Some(data) = data {
        s.write("input.txt", data);
    }
    let out = s.run(&["train", "recipe.yaml", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal failure"),
        "{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
}

fn recipe_with(from: &str, to: &str) -> String {
    let base = tiny_recipe("flex", 5);
    assert!(base.contains(from), "test recipe has no {from:?}");
    base.replacen(from, to, 1)
}

#[test]
fn unknown_top_level_key() {
    let recipe = format!("{}colour: blue\n", tiny_recipe("flex", 5));
    rejects(&recipe, None, &["unknown key `colour`", "line 31"]);
}

#[test]
fn misspelt_key_suggests_the_right_one() {
    rejects(
        &recipe_with("  batch_size: 8", "  bach_size: 8"),
        None,
        &[
            "unknown key `train.bach_size`",
            "did you mean `batch_size`?",
            "line",
        ],
    );
}

#[test]
fn misspelt_key_inside_the_model_section() {
    rejects(
        &recipe_with("  n_head: 2", "  n_heads: 2"),
        None,
        &["unknown key `model.n_heads`", "did you mean `n_head`?"],
    );
}

#[test]
fn wrong_type() {
    rejects(
        &recipe_with("  batch_size: 8", "  batch_size: eight"),
        None,
        &["train.batch_size", "line 26"],
    );
}

#[test]
fn negative_batch_size() {
    rejects(
        &recipe_with("  batch_size: 8", "  batch_size: -4"),
        None,
        &["train.batch_size"],
    );
}

#[test]
fn zero_batch_size() {
    rejects(
        &recipe_with("  batch_size: 8", "  batch_size: 0"),
        None,
        &["`train.batch_size` must be at least 1"],
    );
}

#[test]
fn unknown_backend() {
    rejects(
        &recipe_with("  type: flex", "  type: tpu"),
        None,
        &["unknown value `tpu`", "backend.type", "flex", "ndarray"],
    );
}

#[test]
fn missing_data_file() {
    rejects(
        &recipe_with("  train: input.txt", "  train: nowhere.txt"),
        None,
        &["nowhere.txt", "data.train", "does not exist"],
    );
}

#[test]
fn empty_data_file() {
    rejects(
        &tiny_recipe("flex", 5),
        Some(b""),
        &["input.txt", "is empty"],
    );
}

#[test]
fn invalid_utf8_in_data() {
    let mut data = b"First line\nSecond line with a bad byte: ".to_vec();
    data.push(0xff);
    data.extend_from_slice(b"\nthird\n");
    rejects(
        &tiny_recipe("flex", 5),
        Some(&data),
        &["input.txt:2:", "not valid UTF-8"],
    );
}

#[test]
fn yaml_syntax_error_names_the_line() {
    rejects(
        &recipe_with("  batch_size: 8", "  batch_size: [8"),
        None,
        &["recipe.yaml"],
    );
}

#[test]
fn model_shape_mistakes_are_explained() {
    rejects(
        &recipe_with("  n_embd: 32", "  n_embd: 33"),
        None,
        &["`model.n_embd` (33) must be a multiple of `model.n_head` (2)"],
    );
}

#[test]
fn a_device_template_with_an_unknown_placeholder() {
    let recipe = format!(
        "{}distributed:\n  device: \"cuda:{{gpu}}\"\n",
        tiny_recipe("flex", 5)
    );
    rejects(
        &recipe,
        None,
        &["`distributed.device`", "{local_rank}", "not {gpu}"],
    );
}

/// Under mpirun, a binary without the `mpi` feature would train one model per process into the
/// same folder: it must refuse instead.
#[cfg(not(feature = "mpi"))]
#[test]
fn launched_by_mpirun_without_the_mpi_feature() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 5));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nlpkit"))
        .args(["train", "recipe.yaml", "--quiet"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .current_dir(s.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--features mpi"), "{stderr}");
    assert!(!s.path().join("exp").exists(), "nothing may be written");
}

#[test]
fn a_model_that_does_not_suit_the_data_format_is_named() {
    // A CNN classifier on plain text.
    let recipe = recipe_with(
        "  type: gpt2\n  n_layer: 1\n  n_head: 2\n  n_embd: 32\n  block_size: 16\n",
        "  type: cnn\n",
    );
    rejects(
        &recipe,
        None,
        &[
            "`data.format` (text) does not suit `model.type: cnn`",
            "cnn on `csv`",
        ],
    );
}

#[test]
fn uncertainty_weighting_needs_several_losses() {
    let recipe = format!(
        "{}loss:\n  weighting: uncertainty\n",
        tiny_recipe("flex", 5)
    );
    rejects(
        &recipe,
        None,
        &["`loss.weighting: uncertainty` needs a task with several losses"],
    );
}
