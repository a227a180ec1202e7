//! Picking the next token from logits: temperature, top-k, top-p (nucleus), or greedy.

use crate::rng::SplitMix64;

#[derive(Debug, Clone, PartialEq)]
pub struct Sampler {
    /// 0 means greedy (arg-max).
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
}

impl Sampler {
    pub fn sample(&self, logits: &[f32], rng: &mut SplitMix64) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, best first.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if let Some(k) = self.top_k {
            order.truncate(k.max(1));
        }
        let top = logits[order[0]] as f64;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - top) / self.temperature).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if let Some(p) = self.top_p {
            // Keep the smallest prefix whose mass reaches p (always at least one token).
            let mut mass = 0.0;
            let keep = probs
                .iter()
                .position(|q| {
                    mass += q;
                    mass >= p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
            let kept: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= kept);
        }
        let mut u = rng.unit();
        for (q, &id) in probs.iter().zip(&order) {
            if u < *q {
                return id as u32;
            }
            u -= q;
        }
        *order.last().expect("at least one candidate") as u32
    }
}

pub fn argmax(values: &[f32]) -> u32 {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .expect("non-empty logits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_and_top_p_restrict_the_choice() {
        let logits = [0.0f32, 3.0, 2.9, -1.0];
        let mut rng = SplitMix64::new(0);
        let greedy = Sampler {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        };
        assert_eq!(greedy.sample(&logits, &mut rng), 1);
        let top2 = Sampler {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        };
        let tight = Sampler {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.3),
        };
        for _ in 0..200 {
            assert!(matches!(top2.sample(&logits, &mut rng), 1 | 2));
            assert_eq!(tight.sample(&logits, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // probabilities 1/4, 3/4
        let sampler = Sampler {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        let mut rng = SplitMix64::new(42);
        let ones = (0..4000)
            .filter(|_| sampler.sample(&logits, &mut rng) == 1)
            .count();
        assert!((ones as f64 / 4000.0 - 0.75).abs() < 0.03, "{ones}");
    }
}
