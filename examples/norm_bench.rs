//! The fused LayerNorm and cross-entropy (`models/layer_norm.rs`, `loss.rs`) against Burn's
//! composition on flex, forward + backward under autodiff, interleaved in one process so that a
//! busy machine slows both alike; median milliseconds per call.
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

fn measure() {
    let device = Device::flex().autodiff();
    for (rows, width) in [(768usize, 128usize), (2048, 256), (1024, 768)] {
        let ln = LayerNormConfig::new(width).init(&device);
        let x = Tensor::<2>::random([rows, width], Distribution::Normal(0.0, 1.0), &device);
        let (mut a, mut b) = (vec![], vec![]);
        for _ in 0..30 {
            for fused in [false, true] {
                let xr = x.clone().require_grad();
                let t = Instant::now();
                let y = if fused {
                    ln.forward_fused(xr.clone())
                } else {
                    ln.forward(xr.clone())
                };
                let g = (y * x.clone()).sum().backward();
                let _ = xr.grad(&g).unwrap().into_data();
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if fused { b.push(ms) } else { a.push(ms) }
            }
        }
        println!(
            "layer_norm [{rows}, {width}] fwd+bwd: burn {:.3} ms, fused {:.3} ms",
            median(a),
            median(b)
        );
    }
    for (rows, classes) in [(768usize, 65usize), (2048, 65), (512, 50257)] {
        let logits = Tensor::<2>::random([rows, classes], Distribution::Normal(0.0, 1.0), &device);
        let targets =
            Tensor::<1>::random([rows], Distribution::Uniform(0.0, classes as f64), &device).int();
        let (mut a, mut b) = (vec![], vec![]);
        for _ in 0..10 {
            for fused in [false, true] {
                let l = logits.clone().require_grad();
                let t = Instant::now();
                let loss = if fused {
                    nlpkit::loss::cross_entropy_kept(l.clone(), targets.clone(), 0.1, None).0
                } else {
                    old_ce(l.clone(), targets.clone(), 0.1)
                };
                let g = loss.backward();
                let _ = l.grad(&g).unwrap().into_data();
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if fused { b.push(ms) } else { a.push(ms) }
            }
        }
        println!(
            "cross_entropy [{rows}, {classes}] fwd+bwd: burn {:.3} ms, fused {:.3} ms",
            median(a),
            median(b)
        );
    }
}
