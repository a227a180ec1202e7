//! Losses shared by every task.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Cross-entropy of `logits` `[n, classes]` against `targets` `[n]`, with label smoothing;
/// positions whose target is `ignore` (padding) count for nothing.
///
/// Returns `(loss, nll)`, means over the counted positions: the smoothed loss that is optimised,
/// and the plain negative log-likelihood that perplexity and comparisons use (equal when
/// `smoothing` is 0). With smoothing ε the target distribution is `(1 - ε)` on the label plus
/// `ε / classes` on every class, as in `torch.nn.CrossEntropyLoss(label_smoothing=ε,
/// ignore_index=ignore)`.
pub fn cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    smoothing: f64,
    ignore: Option<u32>,
) -> (Tensor<1>, Tensor<1>) {
    let keep = ignore.map(|pad| targets.clone().not_equal_elem(pad as i64).float());
    cross_entropy_kept(logits, targets, smoothing, keep)
}

/// [`cross_entropy`] counting only the positions where `keep` `[n]` is 1 (all when `None`).
pub fn cross_entropy_kept(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    smoothing: f64,
    keep: Option<Tensor<1>>,
) -> (Tensor<1>, Tensor<1>) {
    let log_probs = log_softmax(logits, 1);
    let nll_each = log_probs
        .clone()
        .gather(1, targets.unsqueeze_dim(1))
        .squeeze_dim::<1>(1)
        .neg();
    let mean = |each: Tensor<1>| match &keep {
        None => each.mean(),
        // Clamped so a batch of padding only gives 0, not NaN.
        Some(keep) => (each * keep.clone()).sum() / keep.clone().sum().clamp_min(1.0),
    };
    let nll = mean(nll_each.clone());
    if smoothing == 0.0 {
        return (nll.clone(), nll);
    }
    let uniform_each = log_probs.mean_dim(1).squeeze_dim::<1>(1).neg();
    let loss = mean(nll_each.mul_scalar(1.0 - smoothing) + uniform_each.mul_scalar(smoothing));
    (loss, nll)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_values() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data([[2.0f32, 0.0, -1.0], [0.5, 0.5, 0.5]], &device);
        let targets = Tensor::<1, Int>::from_data([0i64, 2], &device);
        // Row 0: log-sum-exp = ln(e^2 + 1 + e^-1); row 1: ln 3.
        let lse0 = (2f64.exp() + 1.0 + (-1f64).exp()).ln();
        let nll_expected = ((lse0 - 2.0) + 3f64.ln()) / 2.0;
        let (loss, nll) = cross_entropy(logits.clone(), targets.clone(), 0.0, None);
        let nll: f32 = nll.into_scalar();
        assert!((nll as f64 - nll_expected).abs() < 1e-5);
        assert_eq!(loss.into_scalar::<f32>(), nll);
        // Smoothing 0.1 over 3 classes: 0.9 * nll + 0.1 * mean over classes of -log p.
        let uniform0 = ((lse0 - 2.0) + lse0 + (lse0 + 1.0)) / 3.0;
        let expected = 0.9 * nll_expected + 0.1 * (uniform0 + 3f64.ln()) / 2.0;
        let (smoothed, _) = cross_entropy(logits.clone(), targets.clone(), 0.1, None);
        assert!((smoothed.into_scalar::<f32>() as f64 - expected).abs() < 1e-5);

        // Padding (class 2 as the pad id) is ignored: only row 0 counts.
        let row0 = 0.9 * (lse0 - 2.0) + 0.1 * uniform0;
        let (smoothed, nll) = cross_entropy(logits, targets, 0.1, Some(2));
        assert!((smoothed.into_scalar::<f32>() as f64 - row0).abs() < 1e-5);
        assert!((nll.into_scalar::<f32>() as f64 - (lse0 - 2.0)).abs() < 1e-5);
    }
}
