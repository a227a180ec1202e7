//! Classification metrics: accuracy, per-label and macro-averaged precision/recall/F1 (as
//! scikit-learn's `classification_report`, a label never predicted scoring precision 0), and the
//! confusion matrix.

use super::entities::Prf;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationScores {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub by_label: Vec<(String, Prf)>,
    /// `confusion[gold][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

pub fn score(labels: &[String], gold: &[usize], predicted: &[usize]) -> ClassificationScores {
    let n = labels.len();
    let mut confusion = vec![vec![0usize; n]; n];
    for (&g, &p) in gold.iter().zip(predicted) {
        confusion[g][p] += 1;
    }
    let by_label: Vec<(String, Prf)> = (0..n)
        .map(|k| {
            let correct = confusion[k][k];
            let predicted: usize = confusion.iter().map(|row| row[k]).sum();
            let support: usize = confusion[k].iter().sum();
            (labels[k].clone(), Prf::of(correct, predicted, support))
        })
        .collect();
    let mean =
        |f: fn(&Prf) -> f64| by_label.iter().map(|(_, p)| f(p)).sum::<f64>() / n.max(1) as f64;
    let right: usize = (0..n).map(|k| confusion[k][k]).sum();
    ClassificationScores {
        accuracy: right as f64 / gold.len().max(1) as f64,
        macro_f1: mean(|p| p.f1),
        macro_precision: mean(|p| p.precision),
        macro_recall: mean(|p| p.recall),
        by_label,
        confusion,
    }
}

/// The confusion matrix as text, gold labels down, predictions across.
pub fn confusion_table(labels: &[String], confusion: &[Vec<usize>]) -> String {
    let width = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1)
        .max(6);
    let mut out = format!("{:>width$} | predicted\n", "gold");
    out += &format!("{:>width$} |", "");
    for l in labels {
        out += &format!(" {l:>width$}");
    }
    out.push('\n');
    for (l, row) in labels.iter().zip(confusion) {
        out += &format!("{l:>width$} |");
        for c in row {
            out += &format!(" {c:>width$}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_and_confusion_by_hand() {
        let labels = ["a", "b", "c"].map(String::from).to_vec();
        let gold = [0, 0, 1, 1, 2, 2];
        let predicted = [0, 1, 1, 1, 0, 2];
        let s = score(&labels, &gold, &predicted);
        assert_eq!(s.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]]);
        assert!((s.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // a: p 1/2 r 1/2 f 1/2; b: p 2/3 r 1 f 0.8; c: p 1 r 1/2 f 2/3.
        let expected = (0.5 + 0.8 + 2.0 / 3.0) / 3.0;
        assert!((s.macro_f1 - expected).abs() < 1e-12, "{}", s.macro_f1);
    }
}
