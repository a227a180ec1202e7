//! Our CPU kernels' loops compiled for the vector units this CPU has.
//!
//! Why: the binary is built for baseline x86-64, so a loop the compiler vectorises uses SSE2's
//! 4-lane registers even on CPUs with AVX2's 8 lanes. [`vectorised`] runs a kernel's work inside
//! a function compiled for AVX2 and FMA when the CPU has them (checked at run time, so the
//! binary still runs everywhere). Only code inlined into that function gets the wider vectors:
//! mark the closure passed in `#[inline(always)]`, and the functions it calls too.
//!
//! The results are the same to the bit on either path: Rust never fuses `a·b + c` on its own
//! and never reorders a floating-point sum, so wider vectors change speed, not arithmetic. A
//! checkpoint written on one CPU resumes on another to the same numbers. `NLPKIT_AVX2=off` runs
//! the baseline code, to measure what the wider vectors give (`examples/norm_bench.rs`).

/// `work()`, compiled for AVX2 and FMA where the CPU has them (x86-64), as is elsewhere.
#[inline(always)]
pub(crate) fn vectorised<R>(work: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: `wide` checked that the CPU has the features `on_avx2` is compiled for.
        return unsafe { on_avx2(work) };
    }
    work()
}

/// The CPU has AVX2 and FMA, and `NLPKIT_AVX2` is not `off` (which measures the baseline code
/// for comparison, as `NLPKIT_BLAS=off` does for the products).
#[cfg(target_arch = "x86_64")]
fn wide() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        std::env::var("NLPKIT_AVX2").as_deref() != Ok("off")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn on_avx2<R>(work: impl FnOnce() -> R) -> R {
    work()
}
