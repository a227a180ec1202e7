//! Forward and backward of one attention call, timed: nlpkit's fused op
//! (`models::attention`) against Burn's `module::attention` (what the models called before), on
//! the benchmark models' shapes, alternating, in one process (bench/README.md).
//!
//!     cargo run --release --example attention_step -- [--steps 20]
//!
//! Prints one JSON line per shape: the median milliseconds of each.

use burn::prelude::*;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tolerance};
use nlpkit::models::attention::{Mask, attention};
use std::time::Instant;

fn main() {
    // The settings `nlpkit` itself runs under (one process on this machine).
    nlpkit::backend::run_with_cpu_defaults(1, measure)
}

fn measure() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps = match args.as_slice() {
        [] => 20,
        [flag, n] if flag == "--steps" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    };
    let device = Device::flex().autodiff();
    // name, [batch, heads, time, head_dim], causal: the GPT recipe, gpt-256, the encoder.
    let shapes = [
        ("gpt", [12, 4, 64, 32], true),
        ("gpt-256", [16, 4, 128, 64], true),
        ("encoder", [8, 12, 128, 64], false),
    ];
    for (name, shape, causal) in shapes {
        let [q, k, v] = [0, 1, 2].map(|_| {
            Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad()
        });
        let step = |fused: bool| {
            let (q, k, v) = (q.clone(), k.clone(), v.clone());
            let y = if fused {
                let mask = if causal { Mask::Causal } else { Mask::None };
                attention(q.clone(), k, v, mask, None, 0.0)
            } else {
                let options = AttentionModuleOptions {
                    scale: None,
                    softcap: None,
                    is_causal: causal,
                };
                burn_attention(q.clone(), k, v, None, None, options)
            };
            let out = y.clone().into_data();
            let grads = y.sum().backward();
            (out, q.grad(&grads).expect("q takes part").into_data())
        };
        // Same values, so the two timings measure the same thing.
        let (ours, theirs) = (step(true), step(false));
        ours.0
            .assert_approx_eq::<f32>(&theirs.0, Tolerance::rel_abs(1e-4, 1e-5));
        ours.1
            .assert_approx_eq::<f32>(&theirs.1, Tolerance::rel_abs(1e-4, 1e-5));
        let (mut fused, mut burn) = (vec![], vec![]);
        for _ in 0..steps {
            for (times, is_fused) in [(&mut fused, true), (&mut burn, false)] {
                let start = Instant::now();
                step(is_fused);
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let (fused, burn) = (median(fused), median(burn));
        println!(
            "{}",
            serde_json::json!({
                "shape": name, "dims": shape, "causal": causal,
                "fused_ms": fused, "burn_ms": burn, "speedup": burn / fused,
            })
        );
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn usage() -> ! {
    eprintln!("usage: attention_step [--steps N]");
    std::process::exit(2)
}
