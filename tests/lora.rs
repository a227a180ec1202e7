//! LoRA fine-tuning (`model.lora`) run as a user runs it: from an HF BERT folder, the base
//! weights stay bit for bit, the adapters and the head train, a resumed run ends where a
//! straight one does, and eval, average (merged) and export take the experiment; bad `lora`
//! values are refused with their key.

mod common;

use common::{Scratch, reviews, same_weights, shakespeare, tiny_recipe};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn recipe(out: &str, steps: usize) -> String {
    format!(
        "seed: 7\noutput_dir: {out}\ninit_from: {}\n\
         data:\n  format: csv\n  train: reviews.csv\n  csv: {{text_column: review, label_column: label}}\n  \
         split: {{train: 0.8, valid: 0.1, test: 0.1, shuffle: true}}\n  tokenizer: {{type: char}}\n\
         model:\n  type: bert\n  head: sequence_classification\n  \
         lora: {{rank: 2, alpha: 4, dropout: 0.1, target: [all]}}\n\
         optim:\n  lr: 1.0e-2\n\
         train:\n  max_steps: {steps}\n  batch_size: 16\n  log_interval: 1\n  eval_interval: 2\n  \
         save_interval: 2\n  keep_last: 5\n",
        fixture("bert_tiny_cls").display()
    )
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

fn step(exp: &str, step: usize) -> PathBuf {
    PathBuf::from(exp).join(format!("checkpoints/step_{step:08}/model.safetensors"))
}

#[test]
fn lora_trains_only_adapters_and_head_resumes_exactly_and_merges() {
    let s = Scratch::new();
    s.write("reviews.csv", reviews(60));
    s.write("straight.yaml", recipe("straight", 4));
    let out = s.run(&["train", "straight.yaml"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("trainable: ") && stdout.contains("%)"),
        "{stdout}"
    );
    assert!(stderr.contains("LoRA adapters"), "{stderr}");

    // Between steps 2 and 4 the encoder's weights stayed bit for bit; the adapters (B started
    // at 0) and the classifier moved.
    let (two, four) = (
        tensors(&s.path().join(step("straight", 2))),
        tensors(&s.path().join(step("straight", 4))),
    );
    let adapters: Vec<&String> = two.keys().filter(|n| n.contains(".lora_")).collect();
    assert_eq!(adapters.len(), 2 * 4 * 2, "{adapters:?}");
    for (name, values) in &two {
        let moved = four[name] != *values;
        let trains = name.contains(".lora_") || name.starts_with("classifier.");
        assert_eq!(moved, trains, "{name}: moved {moved}");
    }
    let zero_b = four
        .iter()
        .filter(|(n, _)| n.ends_with("lora_b"))
        .any(|(_, v)| v.iter().all(|b| *b == 0));
    assert!(!zero_b, "an adapter's B is still zero");

    // Cut at step 2 and resumed, the run ends where the straight one did.
    s.write("cut.yaml", recipe("cut", 2));
    s.ok(&["train", "cut.yaml"]);
    s.ok(&[
        "train",
        "cut.yaml",
        "--resume",
        "--set",
        "train.max_steps=4",
    ]);
    same_weights(
        &s.path().join(step("straight", 4)),
        &s.path().join(step("cut", 4)),
    )
    .unwrap();

    // The checkpoint holds the adapters: eval needs nothing else. Averaged, the adapters are
    // merged into the weights, and eval takes that checkpoint too.
    let out = s.ok(&["eval", "straight"]);
    assert!(out.contains("accuracy"), "{out}");
    let out = s.ok(&["average", "straight", "--last", "2", "-o", "straight/avg"]);
    assert!(out.contains("merged"), "{out}");
    let averaged = tensors(&s.path().join("straight/avg/model.safetensors"));
    assert!(!averaged.keys().any(|n| n.contains(".lora_")));
    let out = s.ok(&["eval", "straight", "--checkpoint", "straight/avg"]);
    assert!(out.contains("accuracy"), "{out}");

    // Exported, HF's folder has the merged weights and no adapters.
    let out = s.ok(&["export", "straight", "-o", "exported"]);
    assert!(out.contains("BertForSequenceClassification"), "{out}");
    let exported = tensors(&s.path().join("exported/model.safetensors"));
    assert!(!exported.keys().any(|n| n.contains("lora")), "{exported:?}");
}

/// GPT-2 with LoRA: only the adapters train (the LM head is the frozen token embedding).
#[test]
fn gpt2_lora_trains_only_its_adapters() {
    let s = Scratch::new();
    s.write("input.txt", shakespeare(3000));
    let recipe = tiny_recipe("flex", 3).replace(
        "  dropout: 0.0\n",
        "  dropout: 0.0\n  lora: {rank: 4, target: [c_attn, c_fc]}\n",
    );
    s.write(
        "recipe.yaml",
        recipe.replace("save_interval: 10", "save_interval: 1\n  keep_last: 5"),
    );
    let out = s.ok(&["train", "recipe.yaml"]);
    // n_embd 32, one block: c_attn 32 -> 96 and c_fc 32 -> 128 at rank 4.
    let adapters = 4 * ((32 + 96) + (32 + 128));
    assert!(out.contains(&format!("trainable: {adapters} of ")), "{out}");
    let (one, three) = (
        tensors(&s.path().join(step("exp", 1))),
        tensors(&s.path().join(step("exp", 3))),
    );
    for (name, values) in &one {
        assert_eq!(three[name] != *values, name.contains(".lora_"), "{name}");
    }
    let out = s.ok(&[
        "generate",
        "exp",
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "3",
    ]);
    assert!(out.starts_with("ROMEO:"), "{out}");
}

/// Train with `recipe`, expect exit 2 and every `needle` in stderr.
fn rejects(recipe: &str, needles: &[&str]) {
    let s = Scratch::with_recipe(recipe);
    s.write("input.txt", shakespeare(500));
    let out = s.run(&["train", "recipe.yaml", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
}

#[test]
fn bad_lora_values_are_refused_with_their_key() {
    let with = |lora: &str| {
        tiny_recipe("flex", 2).replace("  dropout: 0.0\n", &format!("  dropout: 0.0\n{lora}"))
    };
    rejects(
        &with("  lora: {rank: 0}\n"),
        &["`model.lora.rank` must be at least 1"],
    );
    rejects(
        &with("  lora: {target: [query]}\n"),
        &[
            "`model.lora.target`: unknown layer `query`",
            "valid: all, c_attn, c_proj, attn.c_proj, c_fc, mlp.c_proj",
        ],
    );
    rejects(
        &with("  lora: {dropout: 1.5}\n"),
        &["`model.lora.dropout` must be in [0, 1)"],
    );
    let cnn = "seed: 1\ndata:\n  format: csv\n  train: input.txt\n  tokenizer: {type: char}\n\
               model:\n  type: cnn\n  lora: {rank: 4}\n";
    rejects(
        cnn,
        &[
            "unknown key `model.lora`",
            "LoRA (`model.lora`) is for bert and gpt2 models",
        ],
    );
}
