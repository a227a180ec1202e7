//! Entity-level precision, recall and F1 for BIO/BIOES tagging, as conlleval and seqeval's
//! default mode compute them: entities are read off the tag sequences with conlleval's chunk
//! rules (an `I-X` after `O` or after another type starts an entity, as if it were `B-X`), and an
//! entity counts as correct when its type, start and end all match.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `(type, first token, last token)`.
pub type Entity = (String, usize, usize);

/// The (prefix, type) seqeval reads from a tag: `B-PER` -> ("B", "PER"), `O` -> ("O", "_").
fn split_tag(tag: &str) -> (&str, &str) {
    let prefix = tag.get(..1).unwrap_or("");
    let rest = tag.get(1..).unwrap_or("");
    let kind = rest.split_once('-').map_or(rest, |(_, t)| t);
    (prefix, if kind.is_empty() { "_" } else { kind })
}

fn end_of_chunk(prev_tag: &str, tag: &str, prev_type: &str, kind: &str) -> bool {
    matches!(prev_tag, "E" | "S")
        || (matches!(prev_tag, "B" | "I") && matches!(tag, "B" | "S" | "O"))
        || (prev_tag != "O" && prev_tag != "." && prev_type != kind)
}

fn start_of_chunk(prev_tag: &str, tag: &str, prev_type: &str, kind: &str) -> bool {
    matches!(tag, "B" | "S")
        || (matches!(prev_tag, "E" | "S" | "O") && matches!(tag, "E" | "I"))
        || (tag != "O" && tag != "." && prev_type != kind)
}

/// The entities of one tag sequence.
pub fn entities(tags: &[String]) -> Vec<Entity> {
    let mut chunks = Vec::new();
    let (mut prev_tag, mut prev_type) = ("O", String::new());
    let mut begin = 0;
    let end_marker = "O".to_string();
    for (i, chunk) in tags.iter().chain(std::iter::once(&end_marker)).enumerate() {
        let (tag, kind) = split_tag(chunk);
        if end_of_chunk(prev_tag, tag, &prev_type, kind) {
            chunks.push((prev_type.clone(), begin, i - 1));
        }
        if start_of_chunk(prev_tag, tag, &prev_type, kind) {
            begin = i;
        }
        prev_tag = tag;
        prev_type = kind.to_string();
    }
    chunks
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Gold entities.
    pub support: usize,
}

impl Prf {
    pub fn of(correct: usize, predicted: usize, gold: usize) -> Self {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let (precision, recall) = (ratio(correct, predicted), ratio(correct, gold));
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Self {
            precision,
            recall,
            f1,
            support: gold,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityScores {
    /// Micro-averaged over all entities (seqeval's `f1_score` default, conlleval's overall).
    pub overall: Prf,
    pub by_type: BTreeMap<String, Prf>,
    /// Tokens whose tag is right.
    pub token_accuracy: f64,
}

/// Score predicted tag sequences against gold ones, sentence by sentence.
pub fn score(gold: &[Vec<String>], predicted: &[Vec<String>]) -> EntityScores {
    let mut counts: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let (mut right, mut tokens) = (0, 0);
    for (g, p) in gold.iter().zip(predicted) {
        let gold_set: BTreeSet<Entity> = entities(g).into_iter().collect();
        let predicted_set: BTreeSet<Entity> = entities(p).into_iter().collect();
        for e in &gold_set {
            counts.entry(e.0.clone()).or_default()[2] += 1;
        }
        for e in &predicted_set {
            let c = counts.entry(e.0.clone()).or_default();
            c[1] += 1;
            if gold_set.contains(e) {
                c[0] += 1;
            }
        }
        right += g.iter().zip(p).filter(|(a, b)| a == b).count();
        tokens += g.len();
    }
    let total = counts
        .values()
        .fold([0; 3], |a, c| [a[0] + c[0], a[1] + c[1], a[2] + c[2]]);
    EntityScores {
        overall: Prf::of(total[0], total[1], total[2]),
        by_type: counts
            .into_iter()
            .map(|(k, c)| (k, Prf::of(c[0], c[1], c[2])))
            .collect(),
        token_accuracy: right as f64 / tokens.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn chunks_follow_conlleval() {
        assert_eq!(
            entities(&tags("B-PER I-PER O B-LOC")),
            [("PER".into(), 0, 1), ("LOC".into(), 3, 3)]
        );
        // I- after O starts an entity; a type change splits one.
        assert_eq!(
            entities(&tags("O I-PER I-PER I-LOC")),
            [("PER".into(), 1, 2), ("LOC".into(), 3, 3)]
        );
        assert_eq!(
            entities(&tags("S-PER B-LOC E-LOC")),
            [("PER".into(), 0, 0), ("LOC".into(), 1, 2)]
        );
    }

    /// Entities and scores equal seqeval's on its own fixtures (tests/fixtures/seqeval.json,
    /// made by make_seqeval_fixtures.py), broken and nested-looking BIO and BIOES included.
    #[test]
    fn equals_seqeval_on_the_fixtures() {
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/seqeval.json")).unwrap();
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        };
        let entity_list = |v: &serde_json::Value| -> Vec<Entity> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let kind = e[0].as_str().unwrap().to_string();
                    (
                        kind,
                        e[1].as_u64().unwrap() as usize,
                        e[2].as_u64().unwrap() as usize,
                    )
                })
                .collect()
        };
        let close = |a: f64, b: &serde_json::Value, what: &str| {
            assert!(
                (a - b.as_f64().unwrap()).abs() < 1e-12,
                "{what}: {a} vs {b}"
            );
        };
        let mut checked = 0;
        for corpus in fixtures["corpora"].as_array().unwrap() {
            let name = corpus["name"].as_str().unwrap();
            let (mut gold, mut predicted) = (Vec::new(), Vec::new());
            for s in corpus["sentences"].as_array().unwrap() {
                let (g, p) = (strings(&s["gold"]), strings(&s["predicted"]));
                assert_eq!(
                    entities(&g),
                    entity_list(&s["gold_entities"]),
                    "{name}: {g:?}"
                );
                assert_eq!(
                    entities(&p),
                    entity_list(&s["predicted_entities"]),
                    "{name}: {p:?}"
                );
                gold.push(g);
                predicted.push(p);
            }
            let scores = score(&gold, &predicted);
            let expected = &corpus["scores"];
            close(scores.overall.precision, &expected["precision"], name);
            close(scores.overall.recall, &expected["recall"], name);
            close(scores.overall.f1, &expected["f1"], name);
            let by_type = expected["by_type"].as_object().unwrap();
            assert_eq!(scores.by_type.len(), by_type.len(), "{name}");
            for (kind, e) in by_type {
                let got = scores.by_type[kind];
                close(got.f1, &e["f1"], kind);
                close(got.precision, &e["precision"], kind);
                assert_eq!(
                    got.support as u64,
                    e["support"].as_u64().unwrap(),
                    "{name} {kind}"
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 7);
    }
}
