//! Helpers for end-to-end tests: a scratch folder with a slice of real data and a recipe, and a
//! way to run the `nlpkit` binary in it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Scratch {
    pub dir: tempfile::TempDir,
}

/// The first `chars` characters of tinyshakespeare, cut at a line end.
pub fn shakespeare(chars: usize) -> String {
    let full = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tinyshakespeare/input.txt"),
    )
    .expect("data/tinyshakespeare/input.txt is in the repository");
    let cut = full[..chars].rfind('\n').map_or(chars, |i| i + 1);
    full[..cut].to_string()
}

/// The train steps logged in `exp/metrics.jsonl` of `s`, in order.
pub fn logged_steps(s: &Scratch) -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string(s.path().join("exp/metrics.jsonl")) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole JSON lines"))
        .filter(|v| v["split"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

/// The step of the newest checkpoint in `exp` of `s`.
pub fn latest_step(s: &Scratch) -> Option<u64> {
    std::fs::read_dir(s.path().join("exp/checkpoints"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("step_")?.parse::<u64>().ok()
        })
        .max()
}

/// A file of the repository, as text.
pub fn repository_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|_| panic!("{path} is in the repository"))
}

/// The header, the first `each` (positive) and the last `each` (negative) reviews of the waimai
/// corpus.
pub fn reviews(each: usize) -> String {
    let full = repository_file("data/waimai_10k/waimai_10k.csv");
    let lines: Vec<&str> = full.lines().collect();
    let mut out = vec![lines[0]];
    out.extend(&lines[1..=each]);
    out.extend(&lines[lines.len() - each..]);
    out.join("\n") + "\n"
}

/// A recipe for a tiny GPT on `input.txt`, to which `extra` YAML is appended (later keys of the
/// same section are not merged, so pass whole sections in `extra` only when `base` lacks them).
pub fn tiny_recipe(backend: &str, max_steps: usize) -> String {
    format!(
        "backend:\n  type: {backend}\n  device: {device}\nseed: 7\noutput_dir: exp\n\
         data:\n  train: input.txt\n  prepared_dir: prepared\n  tokenizer:\n    type: char\n\
         model:\n  type: gpt2\n  n_layer: 1\n  n_head: 2\n  n_embd: 32\n  block_size: 16\n  dropout: 0.0\n\
         optim:\n  type: adamw\n  lr: 1.0e-2\n  weight_decay: 0.0\n\
         scheduler:\n  type: constant\n\
         train:\n  max_steps: {max_steps}\n  batch_size: 8\n  log_interval: 1\n  eval_interval: 10\n  \
         eval_batches: 2\n  save_interval: 10\n",
        device = if backend == "wgpu" { "cpu" } else { "default" },
    )
}

/// A run of `steps` steps with dropout, accumulation, clipping and a warm-up then cosine
/// schedule (over 30 steps), so everything that carries state across steps is used; evaluated
/// every 10 steps, saved every 5 keeping the last.
pub fn resumable_recipe(steps: usize) -> String {
    tiny_recipe("flex", steps)
        .replace("  dropout: 0.0", "  dropout: 0.1")
        .replace(
            "scheduler:\n  type: constant\n",
            "scheduler:\n  type: warmup_cosine\n  warmup_steps: 5\n  decay_steps: 30\n  min_lr: 1.0e-3\n",
        )
        .replace("  batch_size: 8\n", "  batch_size: 4\n  accum_grad: 2\n  grad_clip: 0.5\n")
        .replace("  save_interval: 10\n", "  save_interval: 5\n  keep_last: 1\n")
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write scratch file");
        path
    }

    /// A scratch folder holding `input.txt` (a slice of tinyshakespeare) and `recipe.yaml`.
    pub fn with_recipe(recipe: &str) -> Self {
        let s = Self::new();
        s.write("input.txt", shakespeare(60_000));
        s.write("recipe.yaml", recipe);
        s
    }

    /// A scratch folder holding `reviews.csv` (300 waimai reviews) and `recipe.yaml`: TextCNN
    /// with BatchNorm and dropout, `max_steps` steps, validated and saved every 4.
    pub fn batch_norm(max_steps: usize) -> Self {
        let s = Self::new();
        s.write("reviews.csv", reviews(150));
        s.write(
            "recipe.yaml",
            format!(
                "seed: 3\noutput_dir: exp\n\
                 data:\n  format: csv\n  train: reviews.csv\n  \
                 csv: {{text_column: review, label_column: label}}\n  \
                 split: {{train: 0.8, valid: 0.1, test: 0.1, shuffle: true}}\n  \
                 tokenizer: {{type: char}}\n\
                 model:\n  type: cnn\n  embedding_dim: 16\n  kernel_sizes: [2, 3]\n  channels: 16\n  \
                 batch_norm: true\n  dropout: 0.1\n\
                 optim:\n  lr: 2.0e-3\n\
                 train:\n  max_steps: {max_steps}\n  batch_size: 8\n  log_interval: 1\n  \
                 eval_interval: 4\n  save_interval: 4\n"
            ),
        );
        s
    }

    /// Run `nlpkit ARGS` in this folder.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nlpkit"))
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("nlpkit runs")
    }

    /// Run and require success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(&format!("nlpkit {args:?}"), self.run(args))
    }

    /// Train losses from `exp/metrics.jsonl`, in order.
    pub fn train_losses(&self) -> Vec<f64> {
        self.metric_values("train")
    }

    pub fn metric_values(&self, split: &str) -> Vec<f64> {
        self.metric_values_of("exp", split)
    }

    /// The losses of `split` in experiment folder `exp`'s metrics, in order.
    #[allow(dead_code)]
    pub fn metric_values_of(&self, exp: &str, split: &str) -> Vec<f64> {
        let path = self.path().join(exp).join("metrics.jsonl");
        let text = std::fs::read_to_string(path).expect("metrics");
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object a line"))
            .filter(|v| v["split"] == split)
            .map(|v| v["loss"].as_f64().expect("loss is a number"))
            .collect()
    }
}

/// Require that the command `what` succeeded, showing its output if not; returns stdout.
pub fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assert the loss fell clearly: the mean of the last five is below the mean of the first five
/// and at most 90% of the first loss (about ln(vocabulary) for a fresh model).
pub fn assert_loss_falls(losses: &[f64]) {
    assert!(losses.len() >= 10, "too few losses logged: {losses:?}");
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        last < first && last < 0.9 * losses[0],
        "loss did not fall: first {:.3}, first five {first:.3}, last five {last:.3} ({losses:?})",
        losses[0]
    );
}

/// Every tensor of two safetensors files, bit for bit.
pub fn same_weights(a: &Path, b: &Path) -> Result<(), String> {
    let (ba, bb) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (ta, tb) = (
        safetensors::SafeTensors::deserialize(&ba).unwrap(),
        safetensors::SafeTensors::deserialize(&bb).unwrap(),
    );
    let mut names = ta.names();
    names.sort();
    let mut other = tb.names();
    other.sort();
    if names != other {
        return Err(format!("different tensors: {names:?} vs {other:?}"));
    }
    for name in names {
        let (x, y) = (ta.tensor(name).unwrap(), tb.tensor(name).unwrap());
        if x.data() != y.data() {
            return Err(format!("tensor {name} differs"));
        }
    }
    Ok(())
}

/// Cut a file to `1 / parts` of its length, as an interrupted copy leaves it.
pub fn truncate_to_a_fraction(path: &Path, parts: u64) {
    let length = std::fs::metadata(path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(length / parts).unwrap();
}

/// The largest absolute difference between the f32 tensors of two safetensors files.
pub fn max_weight_difference(a: &Path, b: &Path) -> f32 {
    let (ba, bb) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (ta, tb) = (
        safetensors::SafeTensors::deserialize(&ba).unwrap(),
        safetensors::SafeTensors::deserialize(&bb).unwrap(),
    );
    let floats = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut worst = 0.0f32;
    for name in ta.names() {
        let (x, y) = (ta.tensor(name).unwrap(), tb.tensor(name).unwrap());
        assert_eq!(x.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(x.shape(), y.shape(), "{name}");
        for (p, q) in floats(x.data()).iter().zip(floats(y.data())) {
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

/// `(tag, step) -> value` of every scalar in the event files of `exp`, each step once.
pub fn tensorboard_scalars(exp: &Path) -> std::collections::BTreeMap<(String, i64), f32> {
    let mut out = std::collections::BTreeMap::new();
    for file in nlpkit::train::tensorboard::event_files(&exp.join("tensorboard")).unwrap() {
        let (events, damaged) =
            nlpkit::train::tensorboard::read_events(&std::fs::read(&file).unwrap());
        assert!(!damaged, "{} has a damaged record", file.display());
        if let Some(first) = events.first() {
            assert_eq!(first.file_version.as_deref(), Some("brain.Event:2"));
        }
        for e in events {
            for (tag, v) in e.scalars {
                let old = out.insert((tag.clone(), e.step), v);
                assert!(old.is_none(), "{tag} at step {} written twice", e.step);
            }
        }
    }
    out
}

/// `(split/field, step) -> value` of every numeric field of `exp/metrics.jsonl`, as f32.
pub fn metrics_as_scalars(exp: &Path) -> std::collections::BTreeMap<(String, i64), f32> {
    let text = std::fs::read_to_string(exp.join("metrics.jsonl")).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_i64().unwrap();
        let split = v["split"].as_str().unwrap();
        for (key, value) in v.as_object().unwrap() {
            if let (true, Some(x)) = (key != "step", value.as_f64()) {
                out.insert((format!("{split}/{key}"), step), x as f32);
            }
        }
    }
    out
}

/// The TensorBoard scalars of `exp` are the figures of its metrics.jsonl, each step once; the
/// message lists the first differences.
///
/// Equal to f32 rounding, not bit for bit: the event holds the f64 figure rounded to f32, while
/// here the figure comes back from the JSON text through serde_json, whose float parsing is not
/// always correctly rounded; a figure on the midpoint of two f32s (a validation mean of f32
/// sums) then rounds to the other one.
pub fn same_scalars(exp: &Path) {
    let (events, metrics) = (tensorboard_scalars(exp), metrics_as_scalars(exp));
    let keys: std::collections::BTreeSet<_> = events.keys().chain(metrics.keys()).collect();
    let close = |a: Option<&f32>, b: Option<&f32>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        _ => false,
    };
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| !close(events.get(*k), metrics.get(*k)))
        .map(|k| {
            format!(
                "{k:?}: tensorboard {:?}, metrics {:?}",
                events.get(k),
                metrics.get(k)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} figures differ, the first: {:#?}",
        differ.len(),
        metrics.len(),
        &differ[..differ.len().min(10)]
    );
}
