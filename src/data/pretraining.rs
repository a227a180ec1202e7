//! BERT's pretraining data: documents cut into sentences, sentences packed into sequences
//! `[CLS] A [SEP] B [SEP]` (Devlin et al.'s `create_instances_from_document`), and masking.
//!
//! Packing: a sequence gathers whole sentences of one document up to `max_len - 3` tokens (with
//! probability `short_seq_prob` up to a shorter random target, so the model also sees short
//! inputs); A is a random number of its first sentences, B the rest. NSP replaces B by text of
//! another document half the time (always when A took everything); SOP swaps A and B half the
//! time (ALBERT); without a sentence task the sentences form one segment `[CLS] A [SEP]`
//! (RoBERTa's DOC-SENTENCES).
//!
//! Masking: `mask_prob` of the non-special tokens (rounded, at least one) are picked; each
//! becomes `[MASK]` with `mask_token_prob`, a random non-special token with
//! `random_token_prob`, and stays otherwise.

use super::labelled::Specials;
use crate::models::bert::NextSentence;
use crate::recipe::MlmSection;
use crate::rng::SplitMix64;

/// Cut a document into sentences after sentence- and clause-ending punctuation (Chinese and
/// Western) and at line breaks; the pieces keep their punctuation, so they add up to the text.
pub fn sentences(text: &str) -> Vec<&str> {
    const ENDS: &[char] = &[
        '。', '！', '？', '；', '，', '…', '!', '?', ';', '.', ',', '\n',
    ];
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        // A run of ending marks ("！！", "...") stays with its sentence.
        let next_is_end = chars.peek().is_some_and(|(_, n)| ENDS.contains(n));
        if ENDS.contains(&c) && !next_is_end {
            let end = i + c.len_utf8();
            if !text[start..end].trim().is_empty() {
                out.push(&text[start..end]);
            }
            start = end;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(&text[start..]);
    }
    out
}

/// One packed sequence before masking.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `[CLS] A [SEP] B [SEP]` (or `[CLS] A [SEP]`).
    pub ids: Vec<u32>,
    /// Tokens of `[CLS] A [SEP]`: segment 0; the rest is segment 1.
    pub first_segment: usize,
    /// NSP: 1 when B is random; SOP: 1 when swapped; 0 otherwise (and without a sentence task).
    pub sentence_label: u8,
}

/// Pack every document (its sentences already encoded) into instances, seeded.
pub fn create_instances(
    documents: &[Vec<Vec<u32>>],
    max_len: usize,
    next_sentence: NextSentence,
    section: &MlmSection,
    specials: &Specials,
    seed: u64,
) -> Vec<Instance> {
    let mut rng = SplitMix64::new(seed ^ 0x1e57_a11c);
    let mut out = Vec::new();
    for (d, doc) in documents.iter().enumerate() {
        create_from_document(
            documents,
            d,
            doc,
            max_len,
            next_sentence,
            section,
            specials,
            &mut rng,
            &mut out,
        );
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn create_from_document(
    documents: &[Vec<Vec<u32>>],
    index: usize,
    doc: &[Vec<u32>],
    max_len: usize,
    next_sentence: NextSentence,
    section: &MlmSection,
    specials: &Specials,
    rng: &mut SplitMix64,
    out: &mut Vec<Instance>,
) {
    let pair = next_sentence != NextSentence::None;
    let max_tokens = max_len - if pair { 3 } else { 2 };
    let target_of = |rng: &mut SplitMix64| {
        if rng.unit() < section.short_seq_prob {
            2 + rng.below((max_tokens - 1) as u64) as usize
        } else {
            max_tokens
        }
    };
    let mut target = target_of(rng);
    let mut chunk: Vec<&Vec<u32>> = Vec::new();
    let mut length = 0;
    let mut i = 0;
    while i < doc.len() {
        chunk.push(&doc[i]);
        length += doc[i].len();
        if i + 1 == doc.len() || length >= target {
            if !pair {
                let mut a: Vec<u32> = chunk.iter().flat_map(|s| s.iter().copied()).collect();
                a.truncate(max_tokens);
                if !a.is_empty() {
                    out.push(assemble(a, vec![], 0, specials));
                }
            } else {
                let a_end = if chunk.len() >= 2 {
                    1 + rng.below((chunk.len() - 1) as u64) as usize
                } else {
                    1
                };
                let mut a: Vec<u32> = chunk[..a_end]
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                let mut b: Vec<u32>;
                let mut label = 0;
                let other_document = documents.len() > 1
                    && (chunk.len() == 1
                        || (next_sentence == NextSentence::Nsp && rng.unit() < 0.5));
                if other_document {
                    // B from a random other document; the sentences not used go back.
                    label = 1;
                    let want = target.saturating_sub(a.len()).max(1);
                    let mut other = rng.below(documents.len() as u64 - 1) as usize;
                    if other >= index {
                        other += 1;
                    }
                    let other_doc = &documents[other];
                    let start = rng.below(other_doc.len().max(1) as u64) as usize;
                    b = Vec::new();
                    for s in other_doc.iter().skip(start) {
                        b.extend(s);
                        if b.len() >= want {
                            break;
                        }
                    }
                    i -= chunk.len() - a_end;
                } else {
                    b = chunk[a_end..]
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                    if next_sentence == NextSentence::Sop && rng.unit() < 0.5 {
                        std::mem::swap(&mut a, &mut b);
                        label = 1;
                    }
                }
                truncate_pair(&mut a, &mut b, max_tokens, rng);
                if !a.is_empty() && !b.is_empty() {
                    out.push(assemble(a, b, label, specials));
                }
            }
            chunk.clear();
            length = 0;
            target = target_of(rng);
        }
        i += 1;
    }
}

/// Trim the longer segment, from its front or its back at random, until both fit.
fn truncate_pair(a: &mut Vec<u32>, b: &mut Vec<u32>, max_tokens: usize, rng: &mut SplitMix64) {
    while a.len() + b.len() > max_tokens {
        let longer = if a.len() > b.len() { &mut *a } else { &mut *b };
        if rng.unit() < 0.5 {
            longer.remove(0);
        } else {
            longer.pop();
        }
    }
}

fn assemble(a: Vec<u32>, b: Vec<u32>, label: u8, specials: &Specials) -> Instance {
    let mut ids = Vec::with_capacity(a.len() + b.len() + 3);
    ids.push(specials.cls);
    ids.extend(&a);
    ids.push(specials.sep);
    let first_segment = ids.len();
    if !b.is_empty() {
        ids.extend(&b);
        ids.push(specials.sep);
    }
    Instance {
        ids,
        first_segment,
        sentence_label: label,
    }
}

/// A masked sequence: the model's input and what it must predict where.
#[derive(Debug, Clone, PartialEq)]
pub struct Masked {
    pub input: Vec<u32>,
    /// `(position, original id)`, by position.
    pub targets: Vec<(usize, u32)>,
}

/// Mask `ids` as BERT does; special tokens are never picked, random replacements are drawn from
/// the non-special ids below `vocab_size`.
pub fn mask_tokens(
    ids: &[u32],
    specials: &Specials,
    vocab_size: usize,
    section: &MlmSection,
    rng: &mut SplitMix64,
) -> Masked {
    let mut candidates: Vec<usize> = (0..ids.len())
        .filter(|&i| !specials.contains(ids[i]))
        .collect();
    let mut input = ids.to_vec();
    if candidates.is_empty() {
        return Masked {
            input,
            targets: vec![],
        };
    }
    let picks = ((candidates.len() as f64 * section.mask_prob).round() as usize).max(1);
    rng.shuffle(&mut candidates);
    let mut picked = candidates[..picks].to_vec();
    picked.sort_unstable();
    for &position in &picked {
        let draw = rng.unit();
        if draw < section.mask_token_prob {
            input[position] = specials.mask;
        } else if draw < section.mask_token_prob + section.random_token_prob {
            input[position] = loop {
                let id = rng.below(vocab_size as u64) as u32;
                if !specials.contains(id) {
                    break id;
                }
            };
        }
    }
    Masked {
        input,
        targets: picked.iter().map(|&p| (p, ids[p])).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> Specials {
        Specials {
            pad: 0,
            unk: 1,
            cls: 2,
            sep: 3,
            mask: 4,
        }
    }

    #[test]
    fn sentences_add_up_to_the_text() {
        let text = "味道不错，送餐很快！！下次还来。ok";
        let parts = sentences(text);
        assert_eq!(parts, ["味道不错，", "送餐很快！！", "下次还来。", "ok"]);
        assert_eq!(parts.concat(), text);
    }

    /// 15% of the non-special tokens, 80/10/10, never a special token, over many sequences.
    #[test]
    fn masking_statistics_match_bert() {
        let section = MlmSection::default();
        let mut rng = SplitMix64::new(7);
        let (mut tokens, mut picked, mut masked, mut random, mut kept) = (0, 0, 0, 0, 0);
        for n in 0..2000u32 {
            // [CLS] 20 tokens [SEP] 20 tokens [SEP] [PAD] [PAD]
            let mut ids = vec![2];
            ids.extend((0..20).map(|i| 5 + (n * 7 + i) % 995));
            ids.push(3);
            ids.extend((0..20).map(|i| 5 + (n * 13 + i) % 995));
            ids.extend([3, 0, 0]);
            let m = mask_tokens(&ids, &specials(), 1000, &section, &mut rng);
            tokens += 40;
            for &(p, original) in &m.targets {
                assert!(!specials().contains(original), "picked a special token");
                assert_eq!(ids[p], original);
                picked += 1;
                match m.input[p] {
                    4 => masked += 1,
                    id if id == original => kept += 1,
                    id => {
                        assert!(!specials().contains(id));
                        random += 1
                    }
                }
            }
            // Nothing outside the targets changed.
            for (p, (&a, &b)) in ids.iter().zip(&m.input).enumerate() {
                if a != b {
                    assert!(m.targets.iter().any(|t| t.0 == p));
                }
            }
        }
        let share = |n: usize, of: usize| n as f64 / of as f64;
        assert_eq!(picked, 2000 * 6, "round(40 * 0.15) = 6 per sequence");
        assert!((share(picked, tokens) - 0.15).abs() < 1e-9);
        assert!((share(masked, picked) - 0.8).abs() < 0.02, "{masked}");
        // A random draw may hit the original token (1 in ~995): it then counts as kept.
        assert!((share(random, picked) - 0.1).abs() < 0.015, "{random}");
        assert!((share(kept, picked) - 0.1).abs() < 0.015, "{kept}");
    }

    fn documents() -> Vec<Vec<Vec<u32>>> {
        (0..40u32)
            .map(|d| (0..6).map(|s| vec![10 + d * 10 + s; 5]).collect())
            .collect()
    }

    #[test]
    fn nsp_instances_fit_and_half_are_random() {
        let section = MlmSection::default();
        let instances = create_instances(
            &documents(),
            24,
            NextSentence::Nsp,
            &section,
            &specials(),
            3,
        );
        let random = instances.iter().filter(|i| i.sentence_label == 1).count();
        let share = random as f64 / instances.len() as f64;
        assert!((0.35..0.7).contains(&share), "{share}");
        for i in &instances {
            assert!(i.ids.len() <= 24);
            assert_eq!(i.ids[0], 2);
            assert_eq!(*i.ids.last().unwrap(), 3);
            assert_eq!(i.ids[i.first_segment - 1], 3);
        }
        // A pair that is not random continues its document: B's first token follows A's last.
        for i in instances.iter().filter(|i| i.sentence_label == 0) {
            let (a_last, b_first) = (i.ids[i.first_segment - 2], i.ids[i.first_segment]);
            assert!(b_first / 10 == a_last / 10, "{:?}", i.ids);
        }
    }

    #[test]
    fn sop_swaps_and_single_segment_packs() {
        let section = MlmSection {
            short_seq_prob: 0.0,
            ..MlmSection::default()
        };
        let sop = create_instances(
            &documents(),
            24,
            NextSentence::Sop,
            &section,
            &specials(),
            3,
        );
        let mut swapped = 0;
        for i in &sop {
            let (a_last, b_first) = (i.ids[i.first_segment - 2], i.ids[i.first_segment]);
            // A document's last lone sentence is paired with another document (as ALBERT does).
            if a_last / 10 == b_first / 10 {
                assert_eq!(i.sentence_label == 1, b_first < a_last, "{:?}", i.ids);
                swapped += usize::from(i.sentence_label);
            }
        }
        assert!(swapped > 0 && swapped < sop.len());
        let single = create_instances(
            &documents(),
            24,
            NextSentence::None,
            &section,
            &specials(),
            3,
        );
        assert!(
            single
                .iter()
                .all(|i| i.first_segment == i.ids.len() && i.ids.len() <= 24)
        );
        // Full-length packing: 5 five-token sentences reach the 22-token target and are cut to it.
        assert!(single.iter().any(|i| i.ids.len() == 24));
    }
}
