//! Classification, tagging and BERT pretraining end to end, as a user runs them: CSV and BIO
//! readers with file:line errors, TextCNN, BERT pretraining with weighted losses, fine-tuning
//! from the pretraining experiment, a CRF tagger, and `eval`'s reports.

mod common;

use common::{Scratch, assert_loss_falls, repository_file, reviews, same_weights};
use std::path::Path;

/// The first `n` sentences of the MSRA NER corpus.
fn tagged_sentences(n: usize) -> String {
    repository_file("data/msra_ner/dh_msra.txt")
        .split("\n\n")
        .take(n)
        .collect::<Vec<_>>()
        .join("\n\n")
        + "\n"
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report")).expect("JSON")
}

/// The one `eval_test_*.json` of an experiment.
fn eval_report(s: &Scratch, exp: &str) -> serde_json::Value {
    let dir = s.path().join(exp);
    let report = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("eval_test") && name.ends_with(".json")
        })
        .expect("an eval report");
    json(&report)
}

const CSV_DATA: &str = "data:\n  format: csv\n  train: reviews.csv\n  csv:\n    text_column: review\n    \
    label_column: label\n  split:\n    train: 0.8\n    valid: 0.1\n    test: 0.1\n    shuffle: true\n  \
    tokenizer:\n    type: char\n";

const TRAIN: &str = "optim:\n  lr: 2.0e-3\n  weight_decay: 0.0\n\
    train:\n  max_steps: 60\n  batch_size: 32\n  log_interval: 2\n  eval_interval: 30\n  save_interval: 30\n";

const TINY_BERT: &str =
    "  n_layer: 2\n  n_head: 2\n  width: 32\n  ffn_width: 64\n  max_len: 64\n  dropout: 0.0\n";

#[test]
fn csv_rows_with_a_bad_label_or_too_few_columns_are_reported_with_file_and_line() {
    let s = Scratch::new();
    let recipe = format!("output_dir: exp\n{CSV_DATA}model:\n  type: cnn\n{TRAIN}");
    s.write("recipe.yaml", &recipe);
    // Line 4 has a label outside the declared ones.
    s.write(
        "reviews.csv",
        "label,review\n1,好吃\n0,太慢了\n2,\"还行, 一般\"\n1,不错\n",
    );
    let out = s.run(&[
        "prepare-data",
        "recipe.yaml",
        "--set",
        "data.csv.labels=[\"0\", \"1\"]",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reviews.csv:4: label `2` is not one of `data.csv.labels`: 0, 1"),
        "{stderr}"
    );
    // A row that ends before the review column (line 3; the quoted line break keeps line 2 one
    // row).
    s.write("reviews.csv", "label,review\n1,\"好吃\n又快\"\n0\n1,不错\n");
    let out = s.run(&["prepare-data", "recipe.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reviews.csv:4: 1 column"), "{stderr}");
    // A quote that is never closed names the line it opens on.
    s.write("reviews.csv", "label,review\n1,好吃\n0,\"太慢了\n1,不错\n");
    let out = s.run(&["prepare-data", "recipe.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reviews.csv:3: a quoted field is never closed"),
        "{stderr}"
    );
}

#[test]
fn textcnn_learns_sentiment_and_eval_reports_accuracy_f1_and_confusion() {
    let s = Scratch::new();
    s.write("reviews.csv", reviews(300));
    let model = "model:\n  type: cnn\n  embedding_dim: 32\n  kernel_sizes: [2, 3]\n  channels: 32\n  \
        batch_norm: true\n  residual_blocks: 1\n  dropout: 0.2\n";
    s.write(
        "recipe.yaml",
        format!("seed: 5\noutput_dir: exp\n{CSV_DATA}{model}{TRAIN}"),
    );
    let out = s.ok(&["train", "recipe.yaml"]);
    assert!(out.contains("labels (2): 0 1"), "{out}");
    assert_loss_falls(&s.train_losses());
    let out = s.ok(&["eval", "exp"]);
    assert!(out.contains("macro-F1"), "{out}");
    let report = eval_report(&s, "exp");
    let texts = report["texts"].as_u64().unwrap();
    assert_eq!(texts, 60);
    let confusion: u64 = report["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(confusion, texts);
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.7, "accuracy {accuracy}");
    assert!(report["macro_f1"].as_f64().unwrap() > 0.6);
    let summary = s.ok(&["summary", "exp"]);
    assert!(
        summary.contains(&format!("accuracy {accuracy:.4}")),
        "{summary}"
    );
    // Predictions: a header and one row per text.
    let predictions = std::fs::read_dir(s.path().join("exp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tsv"))
        .expect("predictions file");
    assert_eq!(
        std::fs::read_to_string(predictions)
            .unwrap()
            .lines()
            .count(),
        61
    );
}

#[test]
fn rnn_classifier_learns_sentiment_with_attention_pooling() {
    let s = Scratch::new();
    s.write("reviews.csv", reviews(300));
    let model = "model:\n  type: rnn\n  cell: gru\n  embedding_dim: 32\n  hidden_size: 32\n  \
        pooling: attention\n  dropout: 0.1\n  max_len: 64\n";
    s.write(
        "recipe.yaml",
        format!("seed: 5\noutput_dir: exp\n{CSV_DATA}{model}{TRAIN}"),
    );
    let out = s.ok(&["train", "recipe.yaml"]);
    assert!(out.contains("model: rnn"), "{out}");
    assert_loss_falls(&s.train_losses());
    s.ok(&["eval", "exp"]);
    let report = eval_report(&s, "exp");
    assert_eq!(report["texts"].as_u64().unwrap(), 60);
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.7, "accuracy {accuracy}");
}

fn pretraining_recipe(weighting: &str, next_sentence: &str) -> String {
    format!(
        "seed: 7\noutput_dir: pre\n{CSV_DATA}  prepared_dir: pre_data\n\
         model:\n  type: bert\n  head: pretraining\n  next_sentence: {next_sentence}\n  \
         embedding_size: 16\n{TINY_BERT}\
         loss:\n  weighting: {weighting}\n  window_steps: 3\n{TRAIN}"
    )
}

#[test]
fn bert_pretraining_weights_its_losses_and_fine_tuning_starts_from_it() {
    let s = Scratch::new();
    s.write("reviews.csv", reviews(200));
    s.write("pre.yaml", pretraining_recipe("uncertainty", "nsp"));
    let out = s.ok(&["train", "pre.yaml"]);
    assert!(out.contains("masked LM + NSP"), "{out}");
    // The progress line shows each loss with its weight; the metrics have them and the s_i.
    assert!(
        out.contains("| mlm ") && out.contains("| nsp ") && out.contains("(w "),
        "{out}"
    );
    assert!(
        out.contains("learned uncertainty weights: mlm: s = "),
        "{out}"
    );
    let metrics = std::fs::read_to_string(s.path().join("pre/metrics.jsonl")).unwrap();
    let last: serde_json::Value = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|v| v["split"] == "train")
        .unwrap();
    for key in [
        "mlm_loss",
        "nsp_loss",
        "mlm_weight",
        "nsp_weight",
        "mlm_log_variance",
    ] {
        assert!(last[key].is_number(), "{key} missing: {last}");
    }
    // The weights are exp(-s) of the learned s, which moved from 0.
    let s_mlm = last["mlm_log_variance"].as_f64().unwrap();
    assert!(s_mlm.abs() > 1e-4);
    let mlm_losses: Vec<f64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| v["mlm_loss"].as_f64().unwrap())
        .collect();
    assert_loss_falls(&mlm_losses);
    let out = s.ok(&["eval", "pre"]);
    assert!(
        out.contains("masked LM: loss") && out.contains("NSP: loss"),
        "{out}"
    );

    // Fine-tuning with a vanishing learning rate keeps the encoder as pretrained (to 1e-20: a
    // zero bias moves by about lr): every `bert.*` tensor was loaded.
    let finetune = |output: &str, lr: &str, steps: &str| {
        format!(
            "seed: 7\noutput_dir: {output}\ninit_from: pre\n{CSV_DATA}  prepared_dir: ft_data\n\
             model:\n  type: bert\n  head: sequence_classification\n\
             optim:\n  lr: {lr}\n  weight_decay: 0.0\n\
             train:\n  max_steps: {steps}\n  batch_size: 32\n  log_interval: 2\n  eval_interval: 20\n  \
             save_interval: 20\n"
        )
    };
    s.write("frozen.yaml", finetune("frozen", "1.0e-30", "1"));
    s.ok(&["train", "frozen.yaml"]);
    let pretrained = best_weights(&s.path().join("pre"));
    let tuned = s
        .path()
        .join("frozen/checkpoints/step_00000001/model.safetensors");
    let bert_only = |path: &Path| -> Vec<(String, Vec<f32>)> {
        let bytes = std::fs::read(path).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut out: Vec<(String, Vec<f32>)> = tensors
            .names()
            .into_iter()
            .filter(|n| n.starts_with("bert."))
            .map(|n| {
                let data = tensors.tensor(n).unwrap().data().to_vec();
                let floats = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                (n.to_string(), floats)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let (a, b) = (bert_only(&pretrained), bert_only(&tuned));
    assert!(a.len() > 10);
    assert_eq!(
        a.iter().map(|t| &t.0).collect::<Vec<_>>(),
        b.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-20,
            "{name} moved by {worst}: not loaded from the pretraining"
        );
    }
    // The resolved recipe states the inherited shape.
    let recipe = std::fs::read_to_string(s.path().join("frozen/recipe.yaml")).unwrap();
    assert!(
        recipe.contains("width: 32") && recipe.contains("embedding_size: 16"),
        "{recipe}"
    );

    s.write("ft.yaml", finetune("ft", "1.0e-3", "40"));
    s.ok(&["train", "ft.yaml"]);
    assert_loss_falls(&s.metric_values_of("ft", "train"));
    let out = s.ok(&["eval", "ft"]);
    assert!(out.contains("accuracy"), "{out}");
    // A shape that contradicts the pretrained one is refused, naming the key.
    let out = s.run(&[
        "train",
        "ft.yaml",
        "--set",
        "model.width=64",
        "--set",
        "output_dir=x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`model.width: 64` differs"));
}

/// The best checkpoint's weights of an experiment (the only one kept here is the last).
fn best_weights(exp: &Path) -> std::path::PathBuf {
    let mut steps: Vec<_> = std::fs::read_dir(exp.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step_")
        })
        .collect();
    steps.sort();
    // keep_best 1 and keep_last 2 by default: the ranking is by validation loss.
    let best = steps
        .iter()
        .min_by(|a, b| {
            let loss = |p: &Path| {
                json(&p.join("trainer_state.json"))["valid_loss"]
                    .as_f64()
                    .unwrap()
            };
            loss(a).total_cmp(&loss(b))
        })
        .unwrap();
    best.join("model.safetensors")
}

/// Dynamic weights depend on what earlier steps observed; that state is in the checkpoint, so
/// a resumed run ends with the weights of an uninterrupted one.
#[test]
fn resumed_pretraining_with_dynamic_weights_matches_an_uninterrupted_run() {
    for weighting in ["dwa", "dtp"] {
        let whole = Scratch::new();
        whole.write("reviews.csv", reviews(100));
        let recipe = pretraining_recipe(weighting, "sop").replace(
            "max_steps: 60\n  batch_size: 32\n  log_interval: 2\n  eval_interval: 30\n  save_interval: 30",
            "max_steps: 12\n  batch_size: 16\n  log_interval: 1\n  eval_interval: 6\n  save_interval: 6",
        );
        whole.write("pre.yaml", &recipe);
        let out = whole.ok(&["train", "pre.yaml"]);
        assert!(out.contains("| sop "), "{out}");
        // The weights moved away from 1 during the run.
        let metrics = std::fs::read_to_string(whole.path().join("pre/metrics.jsonl")).unwrap();
        assert!(
            metrics
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter_map(|v| v["sop_weight"].as_f64())
                .any(|w| (w - 1.0).abs() > 1e-6),
            "{weighting}: {metrics}"
        );

        let halves = Scratch::new();
        halves.write("reviews.csv", reviews(100));
        halves.write("pre.yaml", &recipe);
        halves.ok(&["train", "pre.yaml", "--set", "train.max_steps=6"]);
        halves.ok(&["train", "pre.yaml", "--resume"]);
        let last = "pre/checkpoints/step_00000012/model.safetensors";
        same_weights(&whole.path().join(last), &halves.path().join(last))
            .unwrap_or_else(|e| panic!("{weighting}: {e}"));
    }
}

#[test]
fn crf_tagger_trains_decodes_legal_bio_and_scores_entities() {
    let s = Scratch::new();
    s.write("msra.txt", tagged_sentences(400));
    s.write(
        "ner.yaml",
        format!(
            "seed: 11\noutput_dir: exp\n\
             data:\n  format: tagging\n  train: msra.txt\n  split:\n    train: 0.8\n    valid: 0.1\n    \
             test: 0.1\n    shuffle: true\n  tokenizer:\n    type: char\n\
             model:\n  type: bert\n  head: token_classification\n  crf: true\n{TINY_BERT}{TRAIN}"
        ),
    );
    let out = s.ok(&["train", "ner.yaml"]);
    assert!(out.contains("7 tags, CRF"), "{out}");
    assert_loss_falls(&s.train_losses());
    let out = s.ok(&["eval", "exp"]);
    assert!(out.contains("entities: precision"), "{out}");
    let report = eval_report(&s, "exp");
    assert!(report["crf"].as_bool().unwrap());
    assert_eq!(report["sentences"].as_u64().unwrap(), 40);
    assert!(report["token_accuracy"].as_f64().unwrap() > 0.8);
    // Viterbi with the scheme's constraints never predicts I-X after O or another type.
    let conll = std::fs::read_dir(s.path().join("exp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "conll"))
        .expect("predictions");
    let text = std::fs::read_to_string(conll).unwrap();
    let mut lines = 0;
    for sentence in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut previous = "O".to_string();
        for line in sentence.lines() {
            let predicted = line.rsplit(' ').next().unwrap().to_string();
            if let Some(kind) = predicted.strip_prefix("I-") {
                assert!(
                    previous == format!("B-{kind}") || previous == predicted,
                    "{previous} -> {predicted} in\n{sentence}"
                );
            }
            previous = predicted;
            lines += 1;
        }
    }
    let gold_tokens = report["tokens"].as_u64().unwrap();
    assert_eq!(lines as u64, gold_tokens);

    // Exported as HF's BertForTokenClassification (which has no pooler); the CRF's transitions,
    // which HF has no place for, beside it.
    let out = s.ok(&["export", "exp", "-o", "hf"]);
    assert!(
        out.contains("BertForTokenClassification") && out.contains("crf.safetensors"),
        "{out}"
    );
    let weights = nlpkit::hf::read_safetensors(&s.path().join("hf/model.safetensors")).unwrap();
    assert!(weights.contains_key("classifier.weight"));
    assert!(!weights.keys().any(|k| k.contains("pooler")));
    let crf = nlpkit::hf::read_safetensors(&s.path().join("hf/crf.safetensors")).unwrap();
    assert!(crf.keys().all(|k| k.starts_with("crf.")) && !crf.is_empty());
}

#[test]
fn a_tagging_file_with_a_bad_tag_names_its_line() {
    let s = Scratch::new();
    s.write("bad.txt", "中\tB-LOC\n国\tI-LOC\n\n他\tO\n说\tX-PER\n");
    s.write(
        "ner.yaml",
        "output_dir: exp\ndata:\n  format: tagging\n  train: bad.txt\n  tokenizer:\n    type: char\n\
         model:\n  type: bert\n  head: token_classification\ntrain:\n  max_steps: 1\n",
    );
    let out = s.run(&["prepare-data", "ner.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.txt:5: `X-PER` is not a BIO/BIOES tag"),
        "{stderr}"
    );
}

/// Multi-sample dropout (`model.multi_sample_dropout`): one sample at the model's rate trains
/// exactly the plain model, more samples another; a run resumed half-way ends with the weights
/// of an uninterrupted one, for a TextCNN and for a BERT + CRF tagger (the CRF NLLs of the
/// samples' emissions averaged).
#[test]
fn multi_sample_dropout_trains_the_plain_model_with_one_sample_and_resumes_exactly() {
    let short = |recipe: String| {
        recipe.replace(
            "max_steps: 60\n  batch_size: 32\n  log_interval: 2\n  eval_interval: 30\n  save_interval: 30",
            "max_steps: 12\n  batch_size: 16\n  log_interval: 1\n  eval_interval: 6\n  save_interval: 6",
        )
    };
    let msd = |samples: usize, rate: f64| {
        format!("  multi_sample_dropout:\n    samples: {samples}\n    rate: {rate}\n")
    };
    let cnn = |head: &str| {
        short(format!(
            "seed: 3\noutput_dir: exp\n{CSV_DATA}model:\n  type: cnn\n  embedding_dim: 16\n  \
             kernel_sizes: [2, 3]\n  channels: 8\n  dropout: 0.2\n{head}{TRAIN}"
        ))
    };
    let last = "exp/checkpoints/step_00000012/model.safetensors";
    let trained = |recipe: &str, data: (&str, &str), halves: bool| {
        let s = Scratch::new();
        s.write(data.0, data.1);
        s.write("recipe.yaml", recipe);
        if halves {
            s.ok(&["train", "recipe.yaml", "--set", "train.max_steps=6"]);
            s.ok(&["train", "recipe.yaml", "--resume"]);
        } else {
            s.ok(&["train", "recipe.yaml"]);
        }
        s
    };
    let reviews = reviews(100);
    let data = ("reviews.csv", reviews.as_str());
    let plain = trained(&cnn(""), data, false);
    let one = trained(&cnn(&msd(1, 0.2)), data, false);
    same_weights(&plain.path().join(last), &one.path().join(last)).unwrap();
    let three = trained(&cnn(&msd(3, 0.2)), data, false);
    assert!(same_weights(&plain.path().join(last), &three.path().join(last)).is_err());
    let resumed = trained(&cnn(&msd(3, 0.2)), data, true);
    same_weights(&three.path().join(last), &resumed.path().join(last)).unwrap();

    let sentences = tagged_sentences(100);
    let data = ("msra.txt", sentences.as_str());
    let tagger = short(format!(
        "seed: 11\noutput_dir: exp\n\
         data:\n  format: tagging\n  train: msra.txt\n  split:\n    train: 0.8\n    valid: 0.1\n    \
         test: 0.1\n    shuffle: true\n  tokenizer:\n    type: char\n\
         model:\n  type: bert\n  head: token_classification\n  crf: true\n{TINY_BERT}{}{TRAIN}",
        msd(3, 0.3)
    ));
    let whole = trained(&tagger, data, false);
    let resumed = trained(&tagger, data, true);
    same_weights(&whole.path().join(last), &resumed.path().join(last)).unwrap();
}
