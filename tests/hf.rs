//! HuggingFace model folders as the starting point of fine-tuning (`init_from: DIR`), run as a
//! user runs them, on the small BERT checkpoint transformers made for the fixtures
//! (tests/fixtures/make_hf_fixtures.py).

mod common;

use common::{Scratch, assert_loss_falls, reviews};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn recipe(init_from: &Path, steps: usize) -> String {
    format!(
        "seed: 7\noutput_dir: exp\ninit_from: {}\n\
         data:\n  format: csv\n  train: reviews.csv\n  csv: {{text_column: review, label_column: label}}\n  \
         split: {{train: 0.8, valid: 0.1, test: 0.1, shuffle: true}}\n  \
         tokenizer: {{type: char}}  # unused: the folder's tokenizer.json is taken\n\
         model:\n  type: bert\n  head: sequence_classification\n\
         optim:\n  lr: 1.0e-3\n\
         train:\n  max_steps: {steps}\n  batch_size: 16\n  log_interval: 1\n  eval_interval: {steps}\n  \
         save_interval: {steps}\n",
        init_from.display()
    )
}

/// A copy of the fixture folder in the scratch folder, to be spoiled by a test.
fn copy_fixture(s: &Scratch, name: &str) -> PathBuf {
    let to = s.path().join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

#[test]
fn a_classifier_fine_tunes_from_an_hf_bert_folder() {
    let s = Scratch::new();
    s.write("reviews.csv", reviews(60));
    s.write("recipe.yaml", recipe(&fixture("bert_tiny_cls"), 4));
    let out = s.run(&["train", "recipe.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Like transformers' report: the new head, and the checkpoint's own head left unused.
    assert!(
        stderr.contains("initialised the encoder from")
            && stderr.contains("newly initialised: classifier.bias, classifier.weight"),
        "{stderr}"
    );
    assert!(
        stderr.contains("left unused from the checkpoint: classifier.bias, classifier.weight"),
        "{stderr}"
    );
    // The experiment records the shape from config.json and keeps the HF tokenizer, so eval
    // needs nothing else.
    let resolved = std::fs::read_to_string(s.path().join("exp/recipe.yaml")).unwrap();
    assert!(
        resolved.contains("width: 24") && resolved.contains("n_head: 3"),
        "{resolved}"
    );
    let out = s.ok(&["eval", "exp"]);
    assert!(out.contains("accuracy"), "{out}");
}

/// A run fine-tuning from `dir` must end with exit 2; its stderr.
fn refused_to_train_from(s: &Scratch, dir: &Path) -> String {
    s.write("reviews.csv", reviews(20));
    s.write("recipe.yaml", recipe(dir, 2));
    let out = s.run(&["train", "recipe.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

#[test]
fn a_config_nlpkit_would_compute_differently_is_refused_naming_the_field() {
    let s = Scratch::new();
    let dir = copy_fixture(&s, "bert_tiny_cls");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"gelu_new\""),
    )
    .unwrap();
    let stderr = refused_to_train_from(&s, &dir);
    assert!(
        stderr.contains("config.json: `hidden_act` is `gelu_new`"),
        "{stderr}"
    );
}

#[test]
fn pickled_weights_are_refused_with_the_conversion_command() {
    let s = Scratch::new();
    let dir = copy_fixture(&s, "bert_tiny_cls");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), b"\x80\x02pickled").unwrap();
    let stderr = refused_to_train_from(&s, &dir);
    assert!(
        stderr.contains("pytorch_model.bin") && stderr.contains("safe_serialization=True"),
        "{stderr}"
    );
}

/// A copy of the fixture whose vocabulary is English word pieces instead of characters (same
/// ids, so the weights still fit): `washington` is `wash ##ing ##ton`.
fn english_fixture(s: &Scratch) -> PathBuf {
    const PIECES: [&str; 32] = [
        "wash", "##ing", "##ton", "bos", "lon", "##don", "par", "##is", "berl", "##in", "visit",
        "##ed", "live", "##s", "love", "in", "anna", "john", "mar", "##y", "smith", "jones", "met",
        "and", "the", "city", "of", "to", "went", "new", "york", ".",
    ];
    let dir = copy_fixture(s, "bert_tiny_cls");
    let path = dir.join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = tokenizer["model"]["vocab"].as_object_mut().unwrap();
    assert_eq!(vocab.len(), 5 + PIECES.len());
    vocab.retain(|_, id| id.as_u64().unwrap() < 5);
    for (i, piece) in PIECES.iter().enumerate() {
        vocab.insert(piece.to_string(), (5 + i).into());
    }
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    dir
}

/// `token<TAB>tag` lines of sentences written as `word/TAG` (`O` when no tag), blank-separated.
fn tagged(sentences: &[String]) -> String {
    sentences
        .iter()
        .map(|s| {
            s.split(' ')
                .map(|w| {
                    let (word, tag) = w.split_once('/').unwrap_or((w, "O"));
                    format!("{word}\t{tag}\n")
                })
                .collect::<String>()
                + "\n"
        })
        .collect()
}

/// Sentences about people and places whose words the fixture's vocabulary mostly splits.
fn english_sentences(n: usize) -> Vec<String> {
    let people = [
        "Anna/B-PER",
        "John/B-PER Smith/I-PER",
        "Mary/B-PER Jones/I-PER",
        "John/B-PER",
    ];
    let places = [
        "Washington/B-LOC",
        "Boston/B-LOC",
        "London/B-LOC",
        "Paris/B-LOC",
        "Berlin/B-LOC",
        "New/B-LOC York/I-LOC",
    ];
    let frames = [
        "{p} visited {l} .",
        "{p} lives in {l} .",
        "{p} met {q} in {l} .",
        "the city of {l} loves {p} .",
        "{p} went to {l} and {m} .",
    ];
    (0..n)
        .map(|i| {
            frames[i % frames.len()]
                .replace("{p}", people[i % people.len()])
                .replace("{q}", people[(i / 3 + 1) % people.len()])
                .replace("{l}", places[i % places.len()])
                .replace("{m}", places[(i / 2 + 2) % places.len()])
        })
        .collect()
}

#[test]
fn a_tagger_fine_tunes_from_an_hf_folder_on_sub_tokens_and_predicts_every_word() {
    let s = Scratch::new();
    let dir = english_fixture(&s);
    let sentences = english_sentences(80);
    s.write("train.txt", tagged(&sentences[..64]));
    s.write("valid.txt", tagged(&sentences[64..]));
    // 28 sub-tokens, more than the model's window of 22 (max_len 24 less [CLS] and [SEP]); a
    // zero-width space (no sub-token at all) and a word the vocabulary cannot spell ([UNK]).
    let test = [
        "Anna/B-PER visited Washington/B-LOC and John/B-PER Smith/I-PER visited Boston/B-LOC and \
         Mary/B-PER Jones/I-PER visited London/B-LOC and John/B-PER visited Paris/B-LOC ."
            .to_string(),
        "Mary/B-PER \u{200b} lives in Berlin/B-LOC .".into(),
        "the city of Oslo/B-LOC loves Anna/B-PER .".into(),
        sentences[3].clone(),
    ];
    let gold = tagged(&test);
    s.write("test.txt", &gold);
    for crf in [false, true] {
        let exp = if crf { "crf" } else { "softmax" };
        s.write(
            "ner.yaml",
            format!(
                "seed: 7\noutput_dir: {exp}\ninit_from: {}\n\
                 data:\n  format: tagging\n  train: train.txt\n  valid: valid.txt\n  test: test.txt\n  \
                 tokenizer: {{type: char}}  # unused: the folder's tokenizer.json is taken\n\
                 model:\n  type: bert\n  head: token_classification\n  crf: {crf}\n  dropout: 0.0\n\
                 optim:\n  lr: 3.0e-3\n  weight_decay: 0.0\n\
                 train:\n  max_steps: 40\n  batch_size: 16\n  log_interval: 1\n  eval_interval: 40\n  \
                 save_interval: 40\n",
                dir.display()
            ),
        );
        let out = s.ok(&["train", "ner.yaml"]);
        assert!(
            out.contains("tags: on each token's first sub-token"),
            "{out}"
        );
        // The words are spelt by their pieces, not one [UNK] each.
        let ratio: f64 = out
            .lines()
            .flat_map(|l| l.split(", "))
            .find_map(|p| p.strip_suffix(" sub-tokens per token"))
            .unwrap_or_else(|| panic!("no sub-token ratio in {out}"))
            .parse()
            .unwrap();
        assert!(ratio > 1.2, "{ratio}");
        assert_loss_falls(&s.metric_values_of(exp, "train"));
        let out = s.ok(&["eval", exp]);
        assert!(out.contains("entities: precision"), "{out}");
        // One predicted tag per corpus token: the CoNLL file is the test file's tokens and gold
        // tags, then a prediction.
        let conll = std::fs::read_dir(s.path().join(exp))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "conll"))
            .expect("predictions");
        let predicted = std::fs::read_to_string(conll).unwrap();
        let (gold_lines, predicted_lines): (Vec<&str>, Vec<&str>) =
            (gold.lines().collect(), predicted.lines().collect());
        assert_eq!(gold_lines.len(), predicted_lines.len(), "{predicted}");
        for (g, p) in gold_lines.iter().zip(&predicted_lines) {
            let (token, tag) = g.split_once('\t').unwrap_or(("", ""));
            let fields: Vec<&str> = p.split(' ').collect();
            if token.is_empty() {
                assert!(p.is_empty(), "{predicted}");
            } else {
                assert_eq!(fields[..2], [token, tag], "{predicted}");
            }
        }
        let report = std::fs::read_to_string(
            s.path().join(exp).join(
                std::fs::read_dir(s.path().join(exp))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .find(|n| n.starts_with("eval_test") && n.ends_with(".json"))
                    .unwrap(),
            ),
        )
        .unwrap();
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(report["sentences"], 4);
        assert_eq!(
            report["tokens"],
            gold.lines().filter(|l| !l.is_empty()).count()
        );
        assert!(report["token_accuracy"].as_f64().unwrap() > 0.8, "{report}");
    }

    // A folder prepared before sub-tokens (same inputs, one id per token, no alignment in its
    // meta) is prepared again rather than read the old way.
    let out = s.ok(&["prepare-data", "ner.yaml"]);
    assert!(out.contains("up to date"), "{out}");
    let meta_path = s.path().join("crf/data/meta.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    let mut old: serde_json::Value = serde_json::from_str(&meta).unwrap();
    let fingerprint = old["fingerprint"].as_str().unwrap().to_string();
    old["fingerprint"] = fingerprint.replace("-tagged-subtokens", "-labelled").into();
    old.as_object_mut().unwrap().remove("alignment");
    std::fs::write(&meta_path, old.to_string()).unwrap();
    let out = s.ok(&["prepare-data", "ner.yaml"]);
    assert!(
        out.contains("prepared ") && !out.contains("up to date"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&meta_path).unwrap(), meta);
}
