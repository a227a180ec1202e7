//! One training step of a BERT-base-shaped encoder layer stack, timed: the twin of
//! `bench/torch_encoder.py`, run by `bench/compare_pytorch.py`.
//!
//!     cargo run --release --example encoder_step -- [--backend flex] [--layers 2] [--batch 8]
//!         [--seq 128] [--steps 10] [--warmup 2]
//!
//! Post-norm layers of width 768, 12 heads, feed-forward 3072, no dropout; the loss is the mean
//! squared output; AdamW. Prints one JSON line: the median milliseconds per step.

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use nlpkit::backend::device_for;
use nlpkit::models::encoder::EncoderConfig;
use nlpkit::recipe::{BackendKind, BackendSection};
use std::time::Instant;

fn main() {
    // The settings `nlpkit` itself runs under (one process on this machine).
    nlpkit::backend::run_with_cpu_defaults(1, measure)
}

fn measure() {
    let mut options = std::collections::HashMap::from([
        ("--backend", "flex".to_string()),
        ("--layers", "2".into()),
        ("--batch", "8".into()),
        ("--seq", "128".into()),
        ("--steps", "10".into()),
        ("--warmup", "2".into()),
    ]);
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match (options.get_mut(pair[0].as_str()), pair.get(1)) {
            (Some(slot), Some(value)) => *slot = value.clone(),
            _ => {
                eprintln!(
                    "usage: encoder_step [--backend B] [--layers N] [--batch N] [--seq N] [--steps N] [--warmup N]"
                );
                std::process::exit(2);
            }
        }
    }
    let number = |key: &str| -> usize {
        options[key].parse().unwrap_or_else(|_| {
            eprintln!("{key} wants a whole number, got {}", options[key]);
            std::process::exit(2)
        })
    };
    let kind: BackendKind = serde_json::from_value(serde_json::json!(options["--backend"]))
        .unwrap_or_else(|_| {
            eprintln!("unknown backend {}", options["--backend"]);
            std::process::exit(2)
        });
    let section = BackendSection {
        kind,
        device: "default".into(),
    };
    let device = device_for(&section)
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        })
        .autodiff();
    let config = EncoderConfig {
        n_layer: number("--layers"),
        dropout: 0.0,
        ..EncoderConfig::bert_base()
    };
    let (batch, seq) = (number("--batch"), number("--seq"));
    let mut model = config.init(&device);
    let mut optimizer = ModuleOptimizer::from(AdamWConfig::new().with_weight_decay(0.01).build());
    let x = Tensor::<3>::random(
        [batch, seq, config.width],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let warmup = number("--warmup");
    let mut times = Vec::new();
    for step in 0..warmup + number("--steps") {
        let start = Instant::now();
        let loss = model.forward(x.clone(), None).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-4, model, grads);
        let _: f32 = loss.into_scalar();
        if step >= warmup {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "backend": options["--backend"],
            "ms_per_step": times[times.len() / 2],
            "params": model.num_params(),
        })
    );
}
