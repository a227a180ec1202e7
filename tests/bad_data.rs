//! A battery of bad inputs beside the recipe's: data files of every format, tokenizer files,
//! checkpoints and command-line arguments. Each ends with exit 2 and a message naming the file
//! (and line) or argument, never a panic; the inputs users' tools write (CRLF, a byte-order
//! mark, one long line, a tagging file without blank lines) work.

mod common;

use common::{Scratch, tiny_recipe, truncate_to_a_fraction};
use std::process::Output;

/// The line of `prepare-data`'s report that gives the vocabulary size.
fn vocabulary(report: &str) -> String {
    let line = report.lines().find(|l| l.starts_with("vocabulary"));
    line.expect("a vocabulary line").to_string()
}

/// `nlpkit ARGS` must exit with `code` and say every one of `needles` on stderr, no panic.
fn expect(s: &Scratch, args: &[&str], code: i32, needles: &[&str]) -> String {
    let out: Output = s.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let what = format!("nlpkit {args:?}");
    assert_eq!(out.status.code(), Some(code), "{what}:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal failure"),
        "{what}:\n{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: stderr lacks {needle:?}:\n{stderr}"
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const CSV_RECIPE: &str = "output_dir: exp\ndata:\n  format: csv\n  train: reviews.csv\n  csv:\n    \
    text_column: review\n    label_column: label\n  split:\n    train: 0.8\n    valid: 0.1\n    \
    test: 0.1\n  tokenizer:\n    type: char\nmodel:\n  type: cnn\ntrain:\n  max_steps: 2\n";

/// Ten reviews with `eol` line ends.
fn reviews(eol: &str) -> String {
    let rows = [
        "label,review",
        "1,好吃",
        "0,太慢了",
        "1,不错",
        "0,差",
        "1,好",
        "0,慢",
        "1,快",
        "0,冷",
        "1,热",
        "0,贵",
    ];
    rows.iter().map(|r| format!("{r}{eol}")).collect()
}

#[test]
fn csv_files() {
    let s = Scratch::new();
    s.write("recipe.yaml", CSV_RECIPE);
    let prepare = ["prepare-data", "recipe.yaml", "--force"];
    for (csv, needles) in [
        (
            "label,review\n".to_string(),
            &["reviews.csv has no examples"][..],
        ),
        (
            "label,text\n1,好\n0,差\n".into(),
            &[
                "reviews.csv:1: the header has no column `review`",
                "label, text",
            ],
        ),
        (
            "label,review\n1,好吃\n,太慢了\n".into(),
            &["reviews.csv:3: the label is empty"],
        ),
        (
            "label,review\n1,好吃\n0,\"太慢了\n".into(),
            &["reviews.csv:3: a quoted field is never closed"],
        ),
        (
            "label,review\n1,好吃\n0\n".into(),
            &["reviews.csv:3: 1 column"],
        ),
    ] {
        s.write("reviews.csv", &csv);
        expect(&s, &prepare, 2, needles);
    }
    s.write(
        "reviews.csv",
        b"label,review\n1,\xe5\xa5\xbd\n0,caf\xe9\n".as_slice(),
    );
    expect(
        &s,
        &prepare,
        2,
        &["reviews.csv:3:", "not valid UTF-8", "iconv"],
    );
    std::fs::create_dir(s.path().join("folder.csv")).unwrap();
    s.write(
        "folder.yaml",
        CSV_RECIPE.replace("reviews.csv", "folder.csv"),
    );
    expect(
        &s,
        &["prepare-data", "folder.yaml"],
        2,
        &["folder.csv (from `data.train`) is a folder"],
    );
    // What spreadsheets and Windows tools write: CRLF line ends, and a byte-order mark.
    for (name, csv) in [
        ("CRLF", reviews("\r\n")),
        ("BOM + CRLF", format!("\u{feff}{}", reviews("\r\n"))),
    ] {
        s.write("reviews.csv", &csv);
        let out = expect(&s, &prepare, 0, &[]);
        assert!(out.contains("labels (2)"), "{name}: {out}");
    }
}

const TAGGING_RECIPE: &str = "output_dir: exp\ndata:\n  format: tagging\n  train: ner.txt\n  \
    tokenizer:\n    type: char\nmodel:\n  type: bert\n  head: token_classification\ntrain:\n  max_steps: 1\n";

#[test]
fn tagging_files() {
    let s = Scratch::new();
    s.write("recipe.yaml", TAGGING_RECIPE);
    let prepare = ["prepare-data", "recipe.yaml", "--force"];
    for (text, needles) in [
        (
            "中\tB-LOC\n国\tI-LOC\n\n他\tO\n说\tX-PER\n",
            &["ner.txt:5: `X-PER` is not a BIO/BIOES tag"][..],
        ),
        ("中\tB-LOC\n国\n", &["ner.txt:2:"]),
        ("\n\n\n", &["ner.txt", "is empty"]),
    ] {
        s.write("ner.txt", text);
        expect(&s, &prepare, 2, needles);
    }
    // A file without blank lines is one long sentence, with CRLF line ends and a BOM: it works.
    let sentence: String = (0..3000)
        .map(|i| {
            format!(
                "{}\t{}\r\n",
                ["中", "国", "人"][i % 3],
                ["B-LOC", "I-LOC", "O"][i % 3]
            )
        })
        .collect();
    s.write("ner.txt", &sentence);
    let plain = expect(&s, &prepare, 0, &[]);
    s.write("ner.txt", format!("\u{feff}{sentence}"));
    let with_bom = expect(&s, &prepare, 0, &[]);
    assert!(with_bom.contains("labels (3)"), "{with_bom}");
    assert_eq!(
        vocabulary(&with_bom),
        vocabulary(&plain),
        "the byte-order mark is no token"
    );
}

#[test]
fn text_files() {
    let s = Scratch::new();
    s.write("recipe.yaml", tiny_recipe("flex", 2));
    let prepare = ["prepare-data", "recipe.yaml", "--force"];
    // One 10 MB line: prepared, not refused.
    s.write(
        "input.txt",
        "to be or not to be, that is the question ".repeat(250_000),
    );
    let out = expect(&s, &prepare, 0, &[]);
    assert!(out.contains("10250000"), "{out}");
    // A byte-order mark is not a character of the text.
    s.write(
        "input.txt",
        format!("\u{feff}{}", "to be\r\nor not\r\n".repeat(100)),
    );
    let with_bom = expect(&s, &prepare, 0, &[]);
    s.write("input.txt", "to be\r\nor not\r\n".repeat(100));
    let without = expect(&s, &prepare, 0, &[]);
    assert_eq!(vocabulary(&with_bom), vocabulary(&without));
}

#[test]
fn parallel_files() {
    let s = Scratch::new();
    let recipe = "output_dir: exp\ndata:\n  format: parallel\n  train: corpus\n  parallel:\n    \
        source_lang: en\n    target_lang: zh\n    layout: files\n  tokenizer:\n    type: char\n\
        model:\n  type: transformer_seq2seq\ntrain:\n  max_steps: 1\n";
    s.write("recipe.yaml", recipe);
    s.write("corpus.en", "Hi.\nRun.\nWait.\n");
    s.write("corpus.zh", "你好。\n跑。\n");
    expect(
        &s,
        &["prepare-data", "recipe.yaml"],
        2,
        &[
            "corpus.en has 3 lines but",
            "corpus.zh has 2",
            "line-aligned",
        ],
    );
    std::fs::remove_file(s.path().join("corpus.zh")).unwrap();
    expect(
        &s,
        &["prepare-data", "recipe.yaml"],
        2,
        &["corpus.zh", "does not exist"],
    );
}

#[test]
fn tokenizer_files() {
    let s = Scratch::with_recipe(
        &tiny_recipe("flex", 2).replace("    type: char\n", "    type: file\n    path: tok.json\n"),
    );
    expect(
        &s,
        &["prepare-data", "recipe.yaml"],
        2,
        &["tok.json", "does not exist"],
    );
    s.write("tok.json", "{ this is not json");
    expect(&s, &["prepare-data", "recipe.yaml"], 2, &["tok.json"]);
}

/// Checkpoints that are not there, not checkpoints, damaged, or of another model.
#[test]
fn checkpoints_and_arguments() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 10));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    s.ok(&[
        "train",
        "recipe.yaml",
        "--quiet",
        "--set",
        "output_dir=wide",
        "--set",
        "model.n_embd=64",
    ]);
    fn eval(checkpoint: &str) -> Vec<&str> {
        vec![
            "eval",
            "exp",
            "--split",
            "valid",
            "--checkpoint",
            checkpoint,
        ]
    }
    expect(
        &s,
        &eval("exp/checkpoints/step_00000099"),
        2,
        &["step_00000099"],
    );
    expect(&s, &eval("exp"), 2, &["is not a checkpoint"]);
    expect(
        &s,
        &eval("wide/checkpoints/step_00000010"),
        2,
        &["does not match this model"],
    );

    let step = s.path().join("exp/checkpoints/step_00000010");
    std::fs::copy(step.join("trainer_state.json"), s.path().join("state.bak")).unwrap();
    s.write(
        "exp/checkpoints/step_00000010/trainer_state.json",
        "{\"step\": ",
    );
    expect(
        &s,
        &eval("exp/checkpoints/step_00000010"),
        2,
        &["trainer_state.json is damaged"],
    );
    std::fs::copy(s.path().join("state.bak"), step.join("trainer_state.json")).unwrap();
    // Truncated weights of a checkpoint without a manifest (as written before manifests).
    std::fs::remove_file(step.join("manifest.json")).unwrap();
    let weights = step.join("model.safetensors");
    truncate_to_a_fraction(&weights, 3);
    expect(
        &s,
        &eval("exp/checkpoints/step_00000010"),
        2,
        &["model.safetensors"],
    );

    // Arguments.
    expect(&s, &["eval", "input.txt"], 2, &["input.txt"]);
    expect(&s, &["eval", "no_such_folder"], 2, &["no_such_folder"]);
    expect(
        &s,
        &["generate", "wide", "--temperature=-1"],
        2,
        &["--temperature"],
    );
    expect(
        &s,
        &["generate", "wide", "--max-new-tokens", "many"],
        2,
        &["--max-new-tokens"],
    );
    expect(
        &s,
        &["average", "wide", "--best", "5", "-o", "wide/avg"],
        2,
        &["asked to average 5 checkpoints"],
    );
    expect(
        &s,
        &["train", "no_such.yaml"],
        2,
        &["no_such.yaml", "does not exist"],
    );
    expect(
        &s,
        &["train", "recipe.yaml", "--set", "output_dir=wide"],
        2,
        &["already holds checkpoints", "--resume"],
    );
}
