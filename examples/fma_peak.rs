//! This CPU's fp32 multiply-add peak: the ceiling that no matrix product (ours or PyTorch's)
//! can pass, against which bench/README.md sets the GEMM-bound benchmark rows. Each thread runs
//! twelve independent chains of 8-lane fused multiply-adds (AVX2 + FMA), enough to keep both
//! FMA units busy; prints GFLOP/s on one thread and on every core of the pool.
//!
//!     cargo run --release --example fma_peak
use std::time::Instant;

/// Multiply-adds per chain: about a second of work at 3 GHz.
const ROUNDS: u64 = 250_000_000;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains() -> f32 {
    use std::arch::x86_64::*;
    // Opaque inputs, so that the compiler cannot work the chains out ahead.
    let (b, c) = std::hint::black_box((_mm256_set1_ps(0.999_999_9), _mm256_set1_ps(1e-7)));
    let mut acc = std::hint::black_box([_mm256_set1_ps(1.0); 12]);
    for _ in 0..ROUNDS {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, b, c);
        }
    }
    // Summed so the chains are not optimised away.
    let mut lanes = [0.0f32; 8];
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
    // SAFETY: `lanes` holds the 8 floats written.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// GFLOP/s of `threads` threads running the chains at once (2 flops per lane per FMA).
#[cfg(target_arch = "x86_64")]
fn measure(threads: usize) -> f64 {
    let start = Instant::now();
    let sums: Vec<f32> = std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads)
            // SAFETY: `main` calls this only on a CPU with AVX2 and FMA.
            .map(|_| scope.spawn(|| unsafe { chains() }))
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    assert!(sums.iter().all(|s| s.is_finite()));
    (threads as u64 * ROUNDS * 12 * 8 * 2) as f64 / seconds / 1e9
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for threads in [1, cores] {
            println!(
                "fp32 FMA peak, {threads} thread(s): {:.1} GFLOP/s",
                measure(threads)
            );
        }
        return;
    }
    println!("this probe needs an x86-64 CPU with AVX2 and FMA");
}
