//! A small counter-based random generator for data order.
//!
//! Data windows are drawn from `SplitMix64::for_step(seed, step, micro)`: a pure function of the
//! step, so a resumed run draws exactly the batches an uninterrupted one would, with no generator
//! state to save.

#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator for one micro-batch of one step.
    pub fn for_step(seed: u64, step: u64, micro: u64) -> Self {
        let mut mix = Self(seed ^ 0x9e37_79b9_7f4a_7c15);
        let a = mix.next_u64() ^ step.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        Self(a ^ micro.wrapping_mul(0x94d0_49bb_1331_11eb))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias worth caring about for n << 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Seeds `device`'s generator for a test and holds it until the guard drops. Burn's flex
/// generator is one for the process, and the test harness runs tests side by side: without the
/// guard, another test's `seed` (or draws) between this test's seed and its draws changed the
/// weights it got, and a test whose checks need particular weights failed about one run in ten
/// on two threads.
#[cfg(test)]
pub(crate) fn seeded_for_test(
    device: &burn::tensor::Device,
    seed: u64,
) -> std::sync::MutexGuard<'static, ()> {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it leaves nothing to repair: the next one seeds afresh.
    let guard = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    guard
}
