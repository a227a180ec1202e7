//! Token-tagging corpora (CoNLL style): one `token<TAB>tag` per line (or token and tag
//! separated by spaces), a blank line between sentences, tags in BIO or BIOES (`O`, `B-PER`,
//! `I-PER`, `E-PER`, `S-PER`).

use crate::error::{Error, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaggedSentence {
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
    /// The line of its first token (1-based).
    pub line: usize,
}

/// Is `tag` a BIO/BIOES tag?
pub fn is_valid_tag(tag: &str) -> bool {
    tag == "O"
        || tag
            .split_once('-')
            .is_some_and(|(p, t)| matches!(p, "B" | "I" | "E" | "S") && !t.is_empty())
}

pub fn read_tagged(path: &Path, key: &str) -> Result<Vec<TaggedSentence>> {
    let text = super::text::read_text(path, key)?;
    let file = path.display().to_string();
    parse_tagged(&text, &file)
}

pub fn parse_tagged(text: &str, file: &str) -> Result<Vec<TaggedSentence>> {
    let mut sentences = Vec::new();
    let mut current = TaggedSentence {
        tokens: vec![],
        tags: vec![],
        line: 1,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.strip_suffix('\r').unwrap_or(raw);
        if content.trim().is_empty() {
            if !current.tokens.is_empty() {
                sentences.push(std::mem::take(&mut current));
            }
            continue;
        }
        // The tag is the last field: after the last tab, else after the last run of spaces.
        let split = content
            .rsplit_once('\t')
            .or_else(|| content.trim_end().rsplit_once(' '));
        let Some((token, tag)) = split else {
            return Err(Error::Data(format!(
                "{file}:{line}: `{content}` has no tag; each line is `token<TAB>tag`, with a \
                 blank line between sentences"
            )));
        };
        let tag = tag.trim();
        if !is_valid_tag(tag) {
            return Err(Error::Data(format!(
                "{file}:{line}: `{tag}` is not a BIO/BIOES tag (O, B-X, I-X, E-X, S-X)"
            )));
        }
        if current.tokens.is_empty() {
            current.line = line;
        }
        // A space token (full-width or ASCII) is kept as itself; only the separator is cut.
        let token = if token.is_empty() { " " } else { token };
        current.tokens.push(token.to_string());
        current.tags.push(tag.to_string());
    }
    if !current.tokens.is_empty() {
        sentences.push(current);
    }
    Ok(sentences)
}

/// The tag set in id order: `O` first, then the others sorted (so `B-X` precedes `I-X`).
pub fn tag_list(sentences: &[TaggedSentence]) -> Vec<String> {
    let mut tags: Vec<String> = sentences.iter().flat_map(|s| s.tags.clone()).collect();
    tags.push("O".into());
    tags.sort_by(|a, b| (a != "O", a).cmp(&(b != "O", b)));
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sentences_and_names_bad_lines() {
        let text = "中\tB-LOC\n国\tI-LOC\n\n\n他 O\n";
        let sentences = parse_tagged(text, "t.txt").unwrap();
        assert_eq!(sentences.len(), 2);
        assert_eq!(sentences[0].tokens, ["中", "国"]);
        assert_eq!((sentences[1].tags[0].as_str(), sentences[1].line), ("O", 5));
        let error = parse_tagged("a\tO\nb\tX-PER\n", "t.txt")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.txt:2:"), "{error}");
        let error = parse_tagged("a\tO\nb\n", "t.txt").unwrap_err().to_string();
        assert!(
            error.starts_with("t.txt:2:") && error.contains("no tag"),
            "{error}"
        );
        assert_eq!(
            tag_list(&sentences),
            ["O", "B-LOC", "I-LOC"].map(String::from)
        );
    }
}
