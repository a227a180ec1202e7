//! Fine-tuning controls end to end: `train.freeze` (frozen weights bit-identical, no optimiser
//! state, no weight decay, kept through `--resume` and a pretrained load) and the per-layer
//! learning rates (`optim.layer_lr_decay`, `optim.head_lr_scale`) with an exact resume.

mod common;

use common::{Scratch, resumable_recipe, reviews, same_weights};
use std::collections::BTreeMap;
use std::path::Path;

/// Every f32 tensor of a safetensors file, by name.
fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.names()
        .into_iter()
        .map(|n| (n.to_string(), file.tensor(n).unwrap().data().to_vec()))
        .collect()
}

fn step_dir(s: &Scratch, exp: &str, step: usize) -> std::path::PathBuf {
    s.path().join(format!("{exp}/checkpoints/step_{step:08}"))
}

/// The optimiser state's tensors (Burn's pack of `optimizer.bpk`) and their total elements.
fn optimizer_state(dir: &Path) -> (Vec<String>, usize) {
    let pack = burn_pack::Reader::from_file_exact(dir.join("optimizer.bpk")).unwrap();
    let tensors = pack.into_tensors().unwrap();
    let elements = tensors.iter().map(|t| t.shape.num_elements()).sum();
    (tensors.into_iter().map(|t| t.name).collect(), elements)
}

/// A two-layer GPT-2 with AdamW's weight decay on, dropout, accumulation, clipping and a
/// warm-up + cosine schedule, saved every 2 steps; `extra` goes under `train:`.
fn recipe(steps: usize, freeze: &str, optim: &str) -> String {
    resumable_recipe(steps)
        .replace("  n_layer: 1\n", "  n_layer: 2\n")
        .replace(
            "  weight_decay: 0.0\n",
            &format!("  weight_decay: 0.1\n{optim}"),
        )
        .replace(
            "  save_interval: 5\n  keep_last: 1\n",
            &format!("  save_interval: 2\n  keep_last: 5\n{freeze}"),
        )
}

const FREEZE: &str = "  freeze:\n    embeddings: true\n    bottom_layers: 1\n";

fn frozen_name(name: &str) -> bool {
    name.starts_with("wte.") || name.starts_with("wpe.") || name.starts_with("blocks.0.")
}

#[test]
fn frozen_weights_stay_bit_identical_without_optimiser_state_and_resume_exactly() {
    let s = Scratch::with_recipe(&recipe(6, FREEZE, "  layer_lr_decay: 0.5\n"));
    let out = s.ok(&["train", "recipe.yaml", "--set", "output_dir=straight"]);
    assert!(out.contains("M trainable)"), "{out}");

    // Frozen tensors never move (weight decay 0.1 would shrink them), the others do.
    let first = tensors(&step_dir(&s, "straight", 2).join("model.safetensors"));
    let last = tensors(&step_dir(&s, "straight", 6).join("model.safetensors"));
    let frozen: Vec<&String> = first.keys().filter(|n| frozen_name(n)).collect();
    assert!(frozen.len() >= 3, "{:?}", first.keys());
    for (name, values) in &first {
        match frozen_name(name) {
            true => assert!(values == &last[name], "{name} moved while frozen"),
            false if name.ends_with("weight") => {
                assert!(values != &last[name], "{name} did not train")
            }
            false => {}
        }
    }

    // AdamW keeps two moments per trained element, none for frozen ones: compare with the
    // same run unfrozen.
    let (names, elements) = optimizer_state(&step_dir(&s, "straight", 6));
    s.write("plain.yaml", recipe(2, "", ""));
    s.ok(&["train", "plain.yaml", "-q", "--set", "output_dir=plain"]);
    let (plain_names, plain_elements) = optimizer_state(&step_dir(&s, "plain", 2));
    let sizes = |map: &BTreeMap<String, Vec<u8>>, frozen: bool| -> usize {
        map.iter()
            .filter(|(n, _)| frozen_name(n) == frozen)
            .map(|(_, v)| v.len() / 4)
            .sum()
    };
    assert!(names.len() < plain_names.len(), "{names:?}");
    assert_eq!(
        plain_elements - elements,
        2 * sizes(&first, true),
        "the frozen tensors' moments are missing, and only theirs"
    );

    // Stopped at step 4 and resumed: the weights of the straight run, frozen ones still equal.
    s.ok(&["train", "recipe.yaml", "-q", "--set", "train.max_steps=4"]);
    s.ok(&["train", "recipe.yaml", "-q", "--resume"]);
    same_weights(
        &step_dir(&s, "straight", 6).join("model.safetensors"),
        &step_dir(&s, "exp", 6).join("model.safetensors"),
    )
    .expect("a resumed run with freeze and layer-wise decay ends where the straight one does");
}

/// A fine-tuning run from a pretrained experiment keeps the frozen embeddings exactly as they
/// were pretrained: the freeze is applied after the pretrained load.
#[test]
fn frozen_embeddings_keep_their_pretrained_values() {
    let s = Scratch::new();
    s.write("reviews.csv", reviews(100));
    let data = "data:\n  format: csv\n  train: reviews.csv\n  \
                csv: {text_column: review, label_column: label}\n  \
                split: {train: 0.8, valid: 0.1, test: 0.1, shuffle: true}\n  \
                tokenizer: {type: char}\n";
    let train = "train:\n  max_steps: 4\n  batch_size: 16\n  log_interval: 2\n  eval_interval: 4\n  \
                 save_interval: 4\n";
    s.write(
        "pre.yaml",
        format!(
            "seed: 7\noutput_dir: pre\n{data}  prepared_dir: pre_data\n\
             model:\n  type: bert\n  head: pretraining\n  n_layer: 2\n  n_head: 2\n  width: 32\n  \
             ffn_width: 64\n  max_len: 64\n  dropout: 0.0\n{train}"
        ),
    );
    s.ok(&["train", "pre.yaml", "-q"]);
    s.write(
        "ft.yaml",
        format!(
            "seed: 7\noutput_dir: ft\ninit_from: pre\n{data}  prepared_dir: ft_data\n\
             model:\n  type: bert\n  head: sequence_classification\n\
             optim:\n  lr: 1.0e-2\n  weight_decay: 0.1\n  head_lr_scale: 5.0\n\
             {train}  freeze:\n    embeddings: true\n    modules: [bert.encoder.layers.0.qkv]\n"
        ),
    );
    s.ok(&["train", "ft.yaml", "-q"]);
    let pre = tensors(&step_dir(&s, "pre", 4).join("model.safetensors"));
    let ft = tensors(&step_dir(&s, "ft", 4).join("model.safetensors"));
    let frozen = [
        "bert.tokens.weight",
        "bert.positions.weight",
        "bert.embedding_norm.gamma",
        "bert.encoder.layers.0.qkv.weight",
    ];
    for name in frozen {
        assert!(pre.contains_key(name), "{name} in {:?}", pre.keys());
        assert!(pre[name] == ft[name], "{name} moved while frozen");
    }
    let trained = "bert.encoder.layers.1.qkv.weight";
    assert!(pre[trained] != ft[trained], "{trained} did not train");
}
