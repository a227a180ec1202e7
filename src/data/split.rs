//! Deterministic train/valid/test splits of one text, always at line boundaries.

use crate::recipe::SplitSection;
use crate::rng::SplitMix64;

/// Cut `text` into (train, valid, test) by the recipe's ratios.
///
/// Contiguous mode keeps the text's order (train first), as nanoGPT does, so held-out text is
/// never interleaved with training text. Shuffled mode deals chunks of `chunk_lines` lines to the
/// splits with a seeded shuffle, for corpora whose order is not meaningful.
pub fn split_text(text: &str, split: &SplitSection, seed: u64) -> [String; 3] {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let unit = if split.shuffle { split.chunk_lines } else { 1 };
    let chunks: Vec<String> = lines.chunks(unit).map(|c| c.concat()).collect();
    // Cut by character count so the ratios hold for text, not for line counts.
    deal(chunks, split, seed, String::len).map(|parts| parts.concat())
}

/// Deal `units` to (train, valid, test) in order, or after a seeded shuffle when
/// `split.shuffle`, cutting where the running sum of `weight` passes each ratio.
pub fn deal<T>(
    mut units: Vec<T>,
    split: &SplitSection,
    seed: u64,
    weight: impl Fn(&T) -> usize,
) -> [Vec<T>; 3] {
    if split.shuffle {
        SplitMix64::new(seed ^ 0x5b1d_da7a).shuffle(&mut units);
    }
    let total: usize = units.iter().map(&weight).sum();
    let train_end = (total as f64 * split.train).round() as usize;
    let valid_end = (total as f64 * (split.train + split.valid)).round() as usize;
    let mut out: [Vec<T>; 3] = Default::default();
    let mut seen = 0;
    for unit in units {
        let index = if seen < train_end {
            0
        } else if seen < valid_end {
            1
        } else {
            2
        };
        seen += weight(&unit);
        out[index].push(unit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> String {
        (0..1000).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn contiguous_split_keeps_order_and_everything() {
        let [train, valid, test] = split_text(&text(), &SplitSection::default(), 1);
        assert_eq!(format!("{train}{valid}{test}"), text());
        assert!(train.starts_with("line 0\n"));
        let ratio = train.len() as f64 / text().len() as f64;
        assert!((ratio - 0.9).abs() < 0.01, "{ratio}");
        assert!(!valid.is_empty() && !test.is_empty());
    }

    #[test]
    fn shuffled_split_is_seeded_and_loses_nothing() {
        let section = SplitSection {
            shuffle: true,
            chunk_lines: 10,
            ..SplitSection::default()
        };
        let a = split_text(&text(), &section, 7);
        assert_eq!(a, split_text(&text(), &section, 7));
        assert_ne!(a, split_text(&text(), &section, 8));
        let mut all: Vec<&str> = a.iter().flat_map(|s| s.lines()).collect();
        all.sort();
        let mut expected: Vec<String> = text().lines().map(String::from).collect();
        expected.sort();
        assert_eq!(all, expected);
    }
}
