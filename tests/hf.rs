//! HuggingFace model folders as the starting point of fine-tuning (`init_from: DIR`) and as what
//! `nlpkit export` writes, run as a user runs them, on the small BERT and GPT-2 checkpoints
//! transformers made for the fixtures (tests/fixtures/make_hf_fixtures.py).

mod common;

use common::{Scratch, assert_loss_falls, max_weight_difference, reviews, shakespeare};
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
         tokenizer: {{type: char}}  # unused: the folder's tokenizer is taken\n\
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
        stderr.contains("initialised the model from")
            && stderr.contains("newly initialised: classifier.bias, classifier.weight"),
        "{stderr}"
    );
    // The checkpoint's classifier is for other labels: said, and left unused.
    assert!(
        stderr.contains(
            "the checkpoint's classifier is for the labels [neg, neu, pos], the data's are [0, 1]"
        ) && stderr.contains("left unused from the checkpoint: classifier.bias, classifier.weight"),
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

    // Exported, the classifier is an HF folder whose labels are the data's; fine-tuning from it
    // again takes every tensor, the head included, and a step at a negligible learning rate
    // leaves the weights where the export put them: export and import are inverse.
    let out = s.ok(&["export", "exp", "-o", "exported"]);
    assert!(out.contains("BertForSequenceClassification"), "{out}");
    let config = std::fs::read_to_string(s.path().join("exported/config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["id2label"], serde_json::json!({"0": "0", "1": "1"}));
    for file in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(s.path().join("exported").join(file).is_file(), "{file}");
    }
    let again = recipe(&s.path().join("exported"), 1)
        .replace("output_dir: exp", "output_dir: again")
        .replace("lr: 1.0e-3", "lr: 1.0e-12");
    s.write("again.yaml", again);
    let out = s.run(&["train", "again.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("newly initialised: none"), "{stderr}");
    assert!(!stderr.contains("left unused"), "{stderr}");
    let difference = max_weight_difference(
        &s.path()
            .join("exp/checkpoints/step_00000004/model.safetensors"),
        &s.path()
            .join("again/checkpoints/step_00000001/model.safetensors"),
    );
    assert!(difference < 1e-6, "weights moved by {difference}");
}

fn gpt2_recipe(init_from: &Path, out: &str, lr: &str, steps: usize) -> String {
    format!(
        "seed: 3\noutput_dir: {out}\ninit_from: {}\n\
         data:\n  train: input.txt\n  tokenizer: {{type: char}}  # unused: the folder's is taken\n\
         model:\n  type: gpt2\n  block_size: 12\n\
         optim:\n  lr: {lr}\n\
         train:\n  max_steps: {steps}\n  batch_size: 4\n  log_interval: 1\n  eval_interval: {steps}\n  \
         save_interval: {steps}\n",
        init_from.display()
    )
}

/// GPT-2 fine-tunes from an HF folder with a shorter context than its 20 positions, generates
/// with the folder's tokenizer, exports a `GPT2LMHeadModel` of the shorter context, and
/// fine-tuning from the export starts exactly where the first run ended.
#[test]
fn gpt2_fine_tunes_from_an_hf_folder_generates_and_exports() {
    let s = Scratch::new();
    s.write("input.txt", shakespeare(4000));
    s.write(
        "lm.yaml",
        gpt2_recipe(&fixture("gpt2_tiny"), "exp", "1.0e-3", 3),
    );
    let out = s.run(&["train", "lm.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("newly initialised: none"), "{stderr}");
    let resolved = std::fs::read_to_string(s.path().join("exp/recipe.yaml")).unwrap();
    assert!(
        resolved.contains("n_embd: 24") && resolved.contains("activation: gelu_new"),
        "{resolved}"
    );
    let out = s.ok(&[
        "generate",
        "exp",
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "5",
    ]);
    assert!(out.starts_with("ROMEO:"), "{out}");

    let out = s.ok(&["export", "exp", "-o", "exported"]);
    assert!(out.contains("GPT2LMHeadModel"), "{out}");
    let config = std::fs::read_to_string(s.path().join("exported/config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["n_positions"], 12);
    assert_eq!(config["activation_function"], "gelu_new");
    s.write(
        "again.yaml",
        gpt2_recipe(&s.path().join("exported"), "again", "1.0e-12", 1),
    );
    s.ok(&["train", "again.yaml"]);
    let difference = max_weight_difference(
        &s.path()
            .join("exp/checkpoints/step_00000003/model.safetensors"),
        &s.path()
            .join("again/checkpoints/step_00000001/model.safetensors"),
    );
    assert!(difference < 1e-6, "weights moved by {difference}");

    // Resumed, the run starts from its checkpoint, and the HF folder's weights, which the
    // checkpoint's would replace, are not read again.
    let out = s.run(&["train", "lm.yaml", "--set", "train.max_steps=5", "--resume"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resuming from"), "{stdout}");
    assert!(!stderr.contains("initialised the model from"), "{stderr}");
}

/// Continued masked-LM pretraining starts from an HF BERT folder; the pretraining heads the
/// classifier checkpoint lacks are new and listed.
#[test]
fn bert_pretraining_continues_from_an_hf_folder() {
    let s = Scratch::new();
    s.write("reviews.csv", reviews(40));
    let recipe =
        recipe(&fixture("bert_tiny_cls"), 2).replace("sequence_classification", "pretraining");
    s.write("recipe.yaml", recipe);
    let out = s.run(&["train", "recipe.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("newly initialised: mlm_bias, mlm_dense.bias"),
        "{stderr}"
    );
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
        config.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\""),
    )
    .unwrap();
    let stderr = refused_to_train_from(&s, &dir);
    assert!(
        stderr.contains("config.json: `hidden_act` is `relu`"),
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

/// Many checkpoints ship only vocab.txt: nlpkit builds BERT's WordPiece tokenizer from it (as
/// transformers does), fine-tunes, and writes it as tokenizer.json into the experiment, which
/// eval then loads.
#[test]
fn a_classifier_fine_tunes_from_a_folder_with_vocab_txt_and_no_tokenizer_json() {
    let s = Scratch::new();
    let dir = copy_fixture(&s, "bert_tiny_cls");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    s.write("reviews.csv", reviews(60));
    s.write("recipe.yaml", recipe(&dir, 4));
    let out = s.run(&["train", "recipe.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("initialised the model from"), "{stderr}");

    let saved = std::fs::read_to_string(s.path().join("exp/tokenizer.json")).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    assert_eq!(saved["model"]["type"], "WordPiece");
    assert_eq!(
        saved["model"]["vocab"].as_object().unwrap().len(),
        vocab.lines().count()
    );
    assert_eq!(saved["normalizer"]["type"], "BertNormalizer");
    assert_eq!(saved["normalizer"]["lowercase"], true);
    let out = s.ok(&["eval", "exp"]);
    assert!(out.contains("accuracy"), "{out}");
}

#[test]
fn a_folder_with_no_tokenizer_is_refused_saying_what_to_do() {
    let s = Scratch::new();
    let dir = copy_fixture(&s, "bert_tiny_cls");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::remove_file(dir.join("vocab.txt")).unwrap();
    let stderr = refused_to_train_from(&s, &dir);
    assert!(
        stderr.contains("has neither tokenizer.json nor vocab.txt")
            && stderr.contains("save_pretrained"),
        "{stderr}"
    );
}

/// A GPT-2 recipe pointed at the wrong thing, or contradicting the checkpoint, fails with exit
/// 2 and a message saying what to change.
#[test]
fn a_gpt2_recipe_that_does_not_fit_its_checkpoint_is_refused_saying_why() {
    let s = Scratch::new();
    s.write("input.txt", shakespeare(2000));
    let gpt2 = fixture("gpt2_tiny");
    let cases = [
        (
            gpt2_recipe(&fixture("bert_tiny_cls"), "exp", "1.0e-3", 1),
            "`model_type` is `bert`; a gpt2 recipe imports `gpt2` checkpoints",
        ),
        (
            gpt2_recipe(s.path(), "exp", "1.0e-3", 1),
            "is not an HF model folder (no config.json)",
        ),
        (
            gpt2_recipe(&gpt2, "exp", "1.0e-3", 1).replace("block_size: 12", "block_size: 40"),
            "`model.block_size: 40` is longer than the pretrained model's 20 positions",
        ),
        (
            gpt2_recipe(&gpt2, "exp", "1.0e-3", 1).replace("block_size: 12", "preset: gpt2-tiny"),
            "`model.preset: gpt2-tiny` cannot apply to a pretrained model",
        ),
        (
            gpt2_recipe(&gpt2, "exp", "1.0e-3", 1).replace("block_size: 12", "n_embd: 32"),
            "`model.n_embd: 32` differs from the pretrained model's 24",
        ),
    ];
    for (recipe, needle) in cases {
        s.write("lm.yaml", &recipe);
        let out = s.run(&["train", "lm.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

/// Only bert and gpt2 experiments export; another is refused naming what it is.
#[test]
fn exporting_a_model_hf_has_no_class_for_is_refused() {
    let s = Scratch::new();
    s.write("reviews.csv", reviews(20));
    let recipe = recipe(&fixture("bert_tiny_cls"), 1)
        .replace(
            &format!("init_from: {}\n", fixture("bert_tiny_cls").display()),
            "",
        )
        .replace("type: bert\n  head: sequence_classification", "type: cnn");
    s.write("cnn.yaml", recipe);
    s.ok(&["train", "cnn.yaml"]);
    let out = s.run(&["export", "exp", "-o", "hf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("writes HF folders of bert and gpt2 models") && stderr.contains("a cnn"),
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
