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

/// `recipe_with` for several replacements in turn.
fn recipe_with_all(pairs: &[(&str, &str)]) -> String {
    let mut recipe = tiny_recipe("flex", 5);
    for (from, to) in pairs {
        assert!(recipe.contains(from), "test recipe has no {from:?}");
        recipe = recipe.replacen(from, to, 1);
    }
    recipe
}

/// A "billion laughs" document: nine levels of nine aliases, 9^9 values once expanded.
fn billion_laughs(indent: &str) -> String {
    let mut yaml = format!("{indent}a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (from, to) in "abcdefgh".chars().zip("bcdefghi".chars()) {
        let refs = vec![format!("*{from}"); 9].join(", ");
        yaml.push_str(&format!("{indent}{to}: &{to} [{refs}]\n"));
    }
    yaml
}

/// Every kind of broken recipe, through `recipe check`: exit 2, no panic, and the message names
/// the key path and the line (or the file, for whole-file problems). The line numbers are those
/// of `tiny_recipe` (`train.batch_size` is on line 26).
#[test]
fn a_battery_of_bad_recipes() {
    let model = "model:\n  type: gpt2\n  n_layer: 1\n  n_head: 2\n  n_embd: 32\n  block_size: 16\n  dropout: 0.0\n";
    let base = tiny_recipe("flex", 5);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        // YAML syntax.
        (
            "unclosed bracket",
            recipe_with("  batch_size: 8", "  batch_size: [8").into(),
            vec!["recipe.yaml: line 27, column 15:"],
        ),
        (
            "unclosed quote",
            recipe_with("  device: default", "  device: \"default").into(),
            vec!["recipe.yaml: line 4, column 1:", "quoted scalar"],
        ),
        (
            "bad indentation",
            recipe_with("  n_head: 2", " n_head: 2").into(),
            vec!["recipe.yaml: line 14, column 2:"],
        ),
        (
            "tab indentation",
            recipe_with("  batch_size: 8", "\tbatch_size: 8").into(),
            vec!["recipe.yaml: line 25,", "tab"],
        ),
        // Flow mappings and nested flow sequences.
        (
            "flow mapping, buffered model section",
            recipe_with(
                model,
                "model: {type: gpt2, n_layr: 1, n_head: 2, n_embd: 32, block_size: 16}\n",
            )
            .into(),
            vec!["unknown key `model.n_layr` at line 11; did you mean `n_layer`?"],
        ),
        (
            "flow mapping",
            recipe_with(
                "train:\n  max_steps: 5\n",
                "train: {max_steps: 5, bach_size: 8}\nxtrain:\n",
            )
            .into(),
            vec!["unknown key `train.bach_size` at line 24; did you mean `batch_size`?"],
        ),
        (
            "nested flow sequence",
            recipe_with("  lr: 1.0e-2", "  lr: 1.0e-2\n  betas: [[0.9], 0.95]").into(),
            vec!["`optim.betas[0]` at line 21: expected a single value"],
        ),
        (
            "list in a list of strings",
            recipe_with(
                "    type: char",
                "    type: char\n    special_tokens: [a, [b, c]]",
            )
            .into(),
            vec!["`data.tokenizer.special_tokens[1]` at line 11"],
        ),
        // Duplicate keys: both lines.
        (
            "duplicate key",
            format!("{base}  batch_size: 4\n").into(),
            vec!["duplicate key `train.batch_size` at lines 26 and 31; keep one"],
        ),
        (
            "duplicate key in a flow mapping",
            recipe_with(
                "scheduler:\n  type: constant\n",
                "scheduler: {type: constant, type: noam}\n",
            )
            .into(),
            vec!["duplicate key `scheduler.type` at line 22, columns 13 and 29"],
        ),
        (
            "duplicate section",
            format!("{base}train:\n  max_steps: 3\n").into(),
            vec!["duplicate key `train` at lines 24 and 31"],
        ),
        (
            "duplicate key in the model section",
            recipe_with("  n_head: 2", "  n_head: 2\n  n_head: 4").into(),
            vec!["duplicate key `model.n_head` at lines 14 and 15"],
        ),
        // Aliases.
        (
            "alias to a wrong-typed value",
            recipe_with_all(&[
                ("output_dir: exp", "output_dir: &out exp"),
                ("  batch_size: 8", "  batch_size: *out"),
            ])
            .into(),
            vec![
                "`train.batch_size` at line 26 (an alias of line 5) has `exp`: expected a whole number",
            ],
        ),
        (
            "alias to a mapping of the wrong kind",
            recipe_with_all(&[
                ("backend:\n", "backend: &b\n"),
                ("  tokenizer:\n    type: char\n", "  tokenizer: *b\n"),
            ])
            .into(),
            vec![
                "unknown value `flex` for `data.tokenizer.type` at line 2 (through the alias at line 9)",
                "valid values: char, bpe",
            ],
        ),
        (
            "billion laughs in the model section",
            recipe_with(
                "  type: gpt2\n",
                &format!("  type: gpt2\n{}", billion_laughs("  ")),
            )
            .into(),
            vec!["recipe.yaml: line 13: the aliases (`*name`) expand to more than 10000"],
        ),
        (
            "billion laughs at the top",
            format!("{}{base}", billion_laughs("")).into(),
            vec!["unknown key `a` at line 1; valid keys here: backend"],
        ),
        // Wrong types.
        (
            "string for a number",
            recipe_with("  batch_size: 8", "  batch_size: eight").into(),
            vec!["`train.batch_size` at line 26 has `eight`: expected a whole number"],
        ),
        (
            "string for a float",
            recipe_with("  lr: 1.0e-2", "  lr: fast").into(),
            vec!["`optim.lr` at line 20 has `fast`: expected a number"],
        ),
        (
            "not a boolean",
            recipe_with("  lr: 1.0e-2", "  lr: 1.0e-2\n  nesterov: maybe").into(),
            vec!["`optim.nesterov` at line 21 has `maybe`: expected true or false"],
        ),
        (
            "list for a mapping",
            recipe_with(
                "optim:\n  type: adamw\n  lr: 1.0e-2\n  weight_decay: 0.0\n",
                "optim: [adamw]\n",
            )
            .into(),
            vec!["`optim` at line 18: expected a mapping"],
        ),
        (
            "mapping for a scalar",
            recipe_with("seed: 7", "seed: {value: 7}").into(),
            vec!["`seed` at line 4: expected a single value"],
        ),
        // The model section, which serde buffers.
        (
            "scalar for the model section",
            recipe_with(model, "model: gpt2\n").into(),
            vec![
                "`model` at line 11 has `gpt2`: expected a mapping with the model's `type` and \
                 options, e.g. `model: {type: gpt2}`; valid values for `model.type`: gpt2, \
                 rnn_seq2seq,",
            ],
        ),
        (
            "list for the model section",
            recipe_with(model, "model: [gpt2]\n").into(),
            vec![
                "`model` at line 11 is a list: expected a mapping",
                "valid values for `model.type`: gpt2,",
            ],
        ),
        (
            "empty model section",
            recipe_with(model, "model:\n").into(),
            vec!["`model` at line 11 is empty: expected a mapping"],
        ),
        (
            "model section without a type",
            recipe_with("  type: gpt2\n", "").into(),
            vec![
                "missing key `model.type` in `model` at line 11; valid values for `model.type`: \
                 gpt2, rnn_seq2seq,",
            ],
        ),
        (
            "wrong type in the buffered model section",
            recipe_with("  n_layer: 1", "  n_layer: four").into(),
            vec!["`model.n_layer` at line 13 has `four`: expected a whole number"],
        ),
        (
            "wrong type in the buffered model section, its type last",
            recipe_with_all(&[("  type: gpt2\n", ""), ("  n_layer: 1", "  n_layer: four")])
                .replacen("  dropout: 0.0\n", "  dropout: 0.0\n  type: gpt2\n", 1)
                .into(),
            vec!["`model.n_layer` at line 12 has `four`: expected a whole number"],
        ),
        (
            "wrong type beside a merge key in the model section",
            recipe_with("  type: gpt2", "  <<: {type: gpt2}")
                .replacen("  n_layer: 1", "  n_layer: four", 1)
                .into(),
            vec!["`model.n_layer` at line 13 has `four`: expected a whole number"],
        ),
        (
            "not a boolean in the buffered model section",
            recipe_with("  dropout: 0.0", "  dropout: 0.0\n  bias: maybe").into(),
            vec!["`model.bias` at line 18 has `maybe`: expected true or false"],
        ),
        (
            "wrong type in a flow model section",
            recipe_with(
                model,
                "model: {type: gpt2, n_layer: four, n_head: 2, n_embd: 32, block_size: 16}\n",
            )
            .into(),
            vec!["`model.n_layer` at line 11 has `four`: expected a whole number"],
        ),
        (
            "wrong type in a flow model section over two lines",
            recipe_with(
                model,
                "model: {type: gpt2, n_head: 2,\n  n_embd: 32, n_layer: four}\n",
            )
            .into(),
            vec!["`model.n_layer` at line 12 has `four`: expected a whole number"],
        ),
        // Out of range.
        (
            "negative whole number",
            recipe_with("  batch_size: 8", "  batch_size: -4").into(),
            vec!["`train.batch_size` at line 26 has `-4`: expected a whole number from 0"],
        ),
        (
            "zero where positive is needed",
            recipe_with("  batch_size: 8", "  batch_size: 0").into(),
            vec![
                "recipe.yaml: invalid recipe:\n  - line 26: `train.batch_size` must be at least 1",
            ],
        ),
        (
            "dropout above 1",
            recipe_with("  dropout: 0.0", "  dropout: 1.5").into(),
            vec![
                "recipe.yaml: invalid recipe:\n  - line 17: `model.dropout` must be in [0, 1), got 1.5",
            ],
        ),
        // Not finite, too large.
        (
            "NaN learning rate",
            recipe_with("  lr: 1.0e-2", "  lr: .nan").into(),
            vec!["`optim.lr` must be positive, got NaN"],
        ),
        (
            "infinite epsilon",
            recipe_with("  lr: 1.0e-2", "  lr: 1.0e-2\n  eps: .inf").into(),
            vec!["`optim.eps` must be positive, got inf"],
        ),
        (
            "infinite weight decay",
            recipe_with("  weight_decay: 0.0", "  weight_decay: .inf").into(),
            vec!["`optim.weight_decay` must be 0 or positive, got inf"],
        ),
        (
            "NaN DWA temperature",
            format!("{base}loss:\n  temperature: .nan\n").into(),
            vec!["`loss.temperature` must be positive, got NaN"],
        ),
        (
            "NaN in the buffered model section",
            recipe_with("  dropout: 0.0", "  dropout: .nan").into(),
            vec![
                "`model.dropout` at line 17 has `.nan`",
                "not a finite number",
            ],
        ),
        (
            "float beyond f64",
            recipe_with("  lr: 1.0e-2", "  lr: 1e400").into(),
            vec!["`optim.lr` at line 20 has `1e400`: expected a number"],
        ),
        (
            "integer beyond u64",
            recipe_with("  max_steps: 5", "  max_steps: 99999999999999999999999").into(),
            vec![
                "`train.max_steps` at line 25 has `99999999999999999999999`: expected a whole number from 0 to 18446744073709551615",
            ],
        ),
        // Whole-file shapes.
        (
            "empty file",
            Vec::new(),
            vec!["recipe.yaml: the recipe is empty"],
        ),
        (
            "only a comment",
            b"# nothing yet\n".to_vec(),
            vec!["recipe.yaml: the recipe is empty"],
        ),
        (
            "a list, not a mapping",
            b"- data\n- model\n".to_vec(),
            vec!["recipe.yaml: the recipe is a list (line 1); it must be a mapping"],
        ),
        (
            "not UTF-8",
            [base.as_bytes(), b"# \xff\xfe\n"].concat(),
            vec!["recipe.yaml is not valid UTF-8"],
        ),
        // Missing and unknown.
        (
            "missing section",
            base.replace(model, "").into(),
            vec!["missing key `model` at the top level"],
        ),
        (
            "missing key",
            recipe_with("  train: input.txt\n", "").into(),
            vec!["missing key `data.train` in `data` at line 6"],
        ),
        (
            "unknown model type",
            recipe_with("  type: gpt2", "  type: gpt3").into(),
            vec![
                "unknown value `gpt3` for `model.type` at line 12; did you mean `gpt2`? valid values: gpt2,",
            ],
        ),
        (
            "unknown model type in a flow section",
            recipe_with(model, "model: {n_layer: 1, type: gtp2}\n").into(),
            vec![
                "unknown value `gtp2` for `model.type` at line 11; did you mean `gpt2`? valid values: gpt2,",
            ],
        ),
        // Fine-tuning controls.
        (
            "layer_lr_decay above 1",
            recipe_with("  lr: 1.0e-2", "  lr: 1.0e-2\n  layer_lr_decay: 1.5").into(),
            vec!["line 21: `optim.layer_lr_decay` must be in (0, 1]"],
        ),
        (
            "head_lr_scale of 0",
            recipe_with("  lr: 1.0e-2", "  lr: 1.0e-2\n  head_lr_scale: 0").into(),
            vec!["line 21: `optim.head_lr_scale` must be positive"],
        ),
        (
            "misspelt freeze key",
            format!("{base}  freeze:\n    embedding: true\n").into(),
            vec![
                "unknown key `train.freeze.embedding` at line 32",
                "did you mean `embeddings`?",
            ],
        ),
        (
            "unknown tokenizer type",
            recipe_with("    type: char", "    type: chars").into(),
            vec![
                "unknown value `chars` for `data.tokenizer.type` at line 10; did you mean `char`?",
            ],
        ),
    ];
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (name, recipe, needles) in &cases {
        let s = Scratch::new();
        s.write("recipe.yaml", recipe);
        let out = s.run(&["recipe", "check", "recipe.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let bad = out.status.code() != Some(2)
            || stderr.contains("panicked")
            || stderr.contains("internal failure")
            || needles.iter().any(|n| !stderr.contains(n));
        if bad {
            failures.push(format!(
                "{name} (exit {:?}, wanted {needles:?}):\n{stderr}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A validation problem says where its key was given: the line in the file, or the `--set`
/// that set it (also for a key the file has), and nothing for a default.
#[test]
fn a_validation_problem_names_where_its_key_was_given() {
    let s = Scratch::with_recipe(&recipe_with_all(&[
        ("  max_steps: 5\n", ""),
        ("  log_interval: 1", "  log_interval: 0"),
    ]));
    let out = s.run(&[
        "recipe",
        "check",
        "recipe.yaml",
        "--set",
        "train.batch_size=0",
        "--set",
        "train.accum_grad=0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [
        "recipe.yaml: invalid recipe:",
        // In the file, and set again: the --set decides.
        "\n  - --set train.batch_size=0: `train.batch_size` must be at least 1",
        // Only through --set.
        "\n  - --set train.accum_grad=0: `train.accum_grad` must be at least 1",
        // In the file only.
        "\n  - line 26: `train.log_interval` must be at least 1",
        // Nowhere: the default is no step limit.
        "\n  - `train.max_steps` or `train.max_epochs` must be given",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
}

/// A byte-order mark and Windows line ends, alone or together, are read as the plain recipe.
#[test]
fn a_recipe_with_a_bom_or_crlf_line_ends_loads() {
    let base = tiny_recipe("flex", 5);
    let crlf = base.replace('\n', "\r\n");
    for (name, recipe) in [
        ("BOM", format!("\u{feff}{base}")),
        ("CRLF", crlf.clone()),
        ("BOM and CRLF", format!("\u{feff}{crlf}")),
    ] {
        let s = Scratch::new();
        s.write("recipe.yaml", &recipe);
        let out = s.run(&["recipe", "check", "recipe.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("batch_size: 8"),
            "{name}"
        );
    }
}

#[test]
fn a_folder_given_as_the_recipe() {
    let s = Scratch::new();
    std::fs::create_dir(s.path().join("exp")).unwrap();
    let out = s.run(&["recipe", "check", "exp"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("exp is a folder; give the recipe file"),
        "{stderr}"
    );
}

/// What a model cannot freeze or decay is refused when training starts, naming the key, the
/// model and what would do.
#[test]
fn fine_tuning_controls_the_model_cannot_honour() {
    let train = |extra: &str| {
        recipe_with(
            "  save_interval: 10\n",
            &format!("  save_interval: 10\n{extra}"),
        )
    };
    rejects(
        &train("  freeze:\n    bottom_layers: 2\n"),
        None,
        &["`train.freeze.bottom_layers` is 2, more than the 1 layers of this gpt2 model"],
    );
    rejects(
        &train("  freeze:\n    modules: [blocks.0.attn.qkv]\n"),
        None,
        &[
            "`train.freeze.modules[0]`: `blocks.0.attn.qkv` is no parameter path or prefix",
            "`blocks.0.attn.c_attn`",
        ],
    );
    rejects(
        &train("  freeze:\n    embeddings: true\n    modules: [blocks, ln_f]\n"),
        None,
        &["`train.freeze` freezes every parameter of this gpt2 model"],
    );
    rejects(
        &recipe_with("  lr: 1.0e-2", "  lr: 1.0e-2\n  head_lr_scale: 10"),
        None,
        &["`optim.head_lr_scale`: a gpt2 model has no task head of its own"],
    );
    // TextCNN has embeddings but no stack of layers.
    let s = Scratch::batch_norm(2);
    let recipe = std::fs::read_to_string(s.path().join("recipe.yaml")).unwrap();
    for (extra, needle) in [
        (
            "  freeze:\n    bottom_layers: 1\n",
            "`train.freeze.bottom_layers`: a cnn model has no stack of layers",
        ),
        (
            "  freeze:\n    embeddings: true\noptim:\n  layer_lr_decay: 0.9\n",
            "`optim.layer_lr_decay`: a cnn model has no stack of layers",
        ),
    ] {
        let changed = recipe.replace("optim:\n  lr: 2.0e-3\n", "") + extra;
        s.write("recipe.yaml", &changed);
        let out = s.run(&["train", "recipe.yaml", "-q"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

/// `model.multi_sample_dropout` mistakes name their key and line: no samples, a rate of 1, a
/// misspelt key, and the pretraining head, which has no classification head to repeat.
#[test]
fn multi_sample_dropout_mistakes_name_their_key() {
    let cnn = |section: &str| {
        format!(
            "output_dir: exp\ndata:\n  format: csv\n  train: reviews.csv\n  tokenizer:\n    \
             type: char\nmodel:\n  type: cnn\n{section}train:\n  max_steps: 5\n"
        )
    };
    for (recipe, needles) in [
        (
            cnn("  multi_sample_dropout:\n    samples: 0\n    rate: 1.0\n"),
            &[
                "line 10: `model.multi_sample_dropout.samples` must be at least 1",
                "line 11: `model.multi_sample_dropout.rate` must be in [0, 1), got 1",
            ][..],
        ),
        (
            cnn("  multi_sample_dropout: {samples: 2, rat: 0.5}\n"),
            &[
                "unknown key `model.multi_sample_dropout.rat`",
                "did you mean `rate`?",
            ][..],
        ),
        (
            cnn("  multi_sample_dropout: {samples: 2, rate: 0.5}\n").replace(
                "  type: cnn\n",
                "  type: bert\n  head: pretraining\n  n_layer: 1\n",
            ),
            &["`model.multi_sample_dropout` is for the classification and tagging heads"][..],
        ),
    ] {
        let s = Scratch::new();
        s.write("recipe.yaml", &recipe);
        s.write("reviews.csv", "label,review\n1,good\n0,bad\n");
        let out = s.run(&["recipe", "check", "recipe.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{recipe}\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "lacks {needle:?}:\n{stderr}");
        }
    }
}
