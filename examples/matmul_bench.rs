//! Matrix multiply throughput on flex for the shapes the benchmark rows' linear layers run, in
//! the three forms a linear layer needs: forward `x·W`, input gradient `dY·Wᵀ` and weight
//! gradient `xᵀ·dY` (transposed views, as autodiff passes them), through the models' own
//! `linear` op. Median GFLOP/s of 20 calls; `bench/torch_matmul.py` prints PyTorch's figures for
//! the same list. `NLPKIT_BLAS=off` measures the built-in gemm instead of the system BLAS.
//!
//!     cargo run --release --example matmul_bench
use burn::prelude::*;
use burn::tensor::Distribution;
use nlpkit::models::linear::linear;
use std::time::Instant;

/// (rows, inner, columns) of the forward `x·W`: tokens x in x out.
pub const SHAPES: [(usize, usize, usize); 9] = [
    (1024, 768, 3072), // BERT-base FFN up, batch 8 x 128
    (1024, 3072, 768), // BERT-base FFN down
    (1024, 768, 768),  // BERT-base attention projections
    (2048, 256, 1024), // cmn_en Transformer FFN up, batch 64 x 32; GPT-256 row FFN up
    (2048, 256, 3000), // cmn_en Transformer output projection
    (768, 128, 512),   // shakespeare_char GPT-2 FFN up, batch 12 x 64
    (2048, 256, 768),  // GPT-256 row QKV projection, batch 16 x 128
    (2048, 256, 256),  // GPT-256 row attention output projection
    (2048, 1024, 256), // GPT-256 row FFN down
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    nlpkit::backend::run_with_cpu_defaults(1, measure)
}

fn measure() {
    let device = Device::flex();
    println!("matmul on {}", nlpkit::backend::flex_matmul());
    let normal =
        |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    println!("| m x k x n | x·W GFLOP/s | dY·Wᵀ GFLOP/s | xᵀ·dY GFLOP/s |");
    println!("| --- | ---: | ---: | ---: |");
    for (m, k, n) in SHAPES {
        let (x, w, dy) = (normal([m, k]), normal([k, n]), normal([m, n]));
        let forms: [&dyn Fn() -> Tensor<2>; 3] = [
            &|| linear(x.clone(), w.clone(), None),
            &|| linear(dy.clone(), w.clone().transpose(), None),
            &|| linear(x.clone().transpose(), dy.clone(), None),
        ];
        let flops = 2.0 * (m * k * n) as f64;
        let rates: Vec<String> = forms
            .iter()
            .map(|form| {
                let mut times = Vec::new();
                for _ in 0..22 {
                    let t = Instant::now();
                    let _ = form().into_data();
                    times.push(t.elapsed().as_secs_f64());
                }
                format!("{:.1}", flops / median(times[2..].to_vec()) / 1e9)
            })
            .collect();
        println!("| {m} x {k} x {n} | {} |", rates.join(" | "));
    }
}
