//! The fused LayerNorm, cross-entropy and GELU (`models/layer_norm.rs`, `loss.rs`,
//! `models/gelu.rs`) against Burn's on flex, forward + backward under autodiff, interleaved in
//! one process so that a busy machine slows both alike; median milliseconds per call.
//! `NLPKIT_AVX2=off` runs our kernels' loops as baseline x86-64 code (`models/vectorised.rs`).
//!
//!     cargo run --release --example norm_bench
use burn::nn::LayerNormConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::log_softmax;
use nlpkit::models::layer_norm::ForwardFused;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn old_ce(logits: Tensor<2>, targets: Tensor<1, Int>, smoothing: f64) -> Tensor<1> {
    let log_probs = log_softmax(logits, 1);
    let nll = log_probs
        .clone()
        .gather(1, targets.unsqueeze_dim(1))
        .squeeze_dim::<1>(1)
        .neg();
    let uniform = log_probs.mean_dim(1).squeeze_dim::<1>(1).neg();
    (nll.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing)).mean()
}

fn main() {
    nlpkit::backend::run_with_cpu_defaults(1, measure)
}

/// Median milliseconds of `call(false)` (Burn's) and `call(true)` (ours), interleaved `rounds`
/// times.
fn burn_and_fused(rounds: usize, mut call: impl FnMut(bool)) -> (f64, f64) {
    let (mut burn, mut fused) = (vec![], vec![]);
    for _ in 0..rounds {
        for ours in [false, true] {
            let t = Instant::now();
            call(ours);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if ours { fused.push(ms) } else { burn.push(ms) }
        }
    }
    (median(burn), median(fused))
}

fn measure() {
    let device = Device::flex().autodiff();
    for (rows, width) in [(768usize, 128usize), (2048, 256), (1024, 768)] {
        let ln = LayerNormConfig::new(width).init(&device);
        let x = Tensor::<2>::random([rows, width], Distribution::Normal(0.0, 1.0), &device);
        let (burn, fused) = burn_and_fused(30, |fused| {
            let xr = x.clone().require_grad();
            let y = if fused {
                ln.forward_fused(xr.clone())
            } else {
                ln.forward(xr.clone())
            };
            let g = (y * x.clone()).sum().backward();
            let _ = xr.grad(&g).unwrap().into_data();
        });
        println!("layer_norm [{rows}, {width}] fwd+bwd: burn {burn:.3} ms, fused {fused:.3} ms");
    }
    for (rows, classes) in [(768usize, 65usize), (2048, 65), (512, 50257)] {
        let logits = Tensor::<2>::random([rows, classes], Distribution::Normal(0.0, 1.0), &device);
        let targets =
            Tensor::<1>::random([rows], Distribution::Uniform(0.0, classes as f64), &device).int();
        let (burn, fused) = burn_and_fused(10, |fused| {
            let l = logits.clone().require_grad();
            let loss = if fused {
                nlpkit::loss::cross_entropy_kept(l.clone(), targets.clone(), 0.1, None).0
            } else {
                old_ce(l.clone(), targets.clone(), 0.1)
            };
            let g = loss.backward();
            let _ = l.grad(&g).unwrap().into_data();
        });
        println!(
            "cross_entropy [{rows}, {classes}] fwd+bwd: burn {burn:.3} ms, fused {fused:.3} ms"
        );
    }
    // The feed-forward activations of the GPT recipe, the seq2seq Transformer and the encoder.
    for (rows, width) in [(768usize, 512usize), (2048, 1024), (1024, 3072)] {
        let x = Tensor::<2>::random([rows, width], Distribution::Normal(0.0, 1.0), &device);
        let (burn, fused) = burn_and_fused(30, |fused| {
            let xr = x.clone().require_grad();
            let y = if fused {
                nlpkit::models::gelu::gelu(xr.clone())
            } else {
                burn::tensor::activation::gelu(xr.clone())
            };
            let g = (y * x.clone()).sum().backward();
            let _ = xr.grad(&g).unwrap().into_data();
        });
        println!("gelu [{rows}, {width}] fwd+bwd: burn {burn:.3} ms, fused {fused:.3} ms");
    }
}
