//! CSV/TSV tables of labelled texts (RFC 4180: a quoted field may hold the delimiter, doubled
//! quotes and line breaks), read with the line each row starts on so every problem is reported
//! as `file:line`.

use crate::error::{Error, Result};
use crate::recipe::CsvSection;
use std::path::Path;

/// One row of a table: its fields and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Split `text` into records. Blank lines are skipped; an unterminated quote or text after a
/// closing quote is an error naming the line.
pub fn parse_records(text: &str, delimiter: char, file: &str) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start_line = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted_field = false;
        loop {
            let Some(c) = chars.next() else {
                fields.push(std::mem::take(&mut field));
                break;
            };
            if c == '"' && field.is_empty() && !quoted_field {
                quoted_field = true;
                loop {
                    match chars.next() {
                        None => {
                            return Err(Error::Data(format!(
                                "{file}:{start_line}: a quoted field is never closed (a `\"` \
                                 inside a field must be doubled: `\"\"`)"
                            )));
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                match chars.peek() {
                    None | Some('\n') | Some('\r') => {}
                    Some(&d) if d == delimiter => {}
                    Some(_) => {
                        return Err(Error::Data(format!(
                            "{file}:{line}: text after the closing quote of a field (quote the \
                             whole field and double the quotes inside it)"
                        )));
                    }
                }
                continue;
            }
            match c {
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    line += 1;
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                c if c == delimiter => {
                    fields.push(std::mem::take(&mut field));
                    quoted_field = false;
                }
                c => field.push(c),
            }
        }
        let blank = fields.len() == 1 && fields[0].trim().is_empty() && !quoted_field;
        if !blank {
            records.push(Record {
                line: start_line,
                fields,
            });
        }
    }
    Ok(records)
}

/// A labelled text and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledText {
    pub text: String,
    pub label: String,
    pub line: usize,
}

/// The delimiter of `path` under `section`: given, or a tab for `.tsv` files, else a comma.
pub fn delimiter_for(path: &Path, section: &CsvSection) -> char {
    section.delimiter.unwrap_or_else(|| {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
        {
            '\t'
        } else {
            ','
        }
    })
}

/// Read the texts and labels of a table. A row without the text or label column, or with an
/// empty label, is an error naming its line.
pub fn read_labelled(path: &Path, key: &str, section: &CsvSection) -> Result<Vec<LabelledText>> {
    let text = super::text::read_text(path, key)?;
    let file = path.display().to_string();
    parse_labelled(&text, &file, delimiter_for(path, section), section)
}

pub fn parse_labelled(
    text: &str,
    file: &str,
    delimiter: char,
    section: &CsvSection,
) -> Result<Vec<LabelledText>> {
    let mut records = parse_records(text, delimiter, file)?.into_iter();
    let column = |name: &str, header: Option<&Record>| -> Result<usize> {
        match header {
            Some(header) => header
                .fields
                .iter()
                .position(|f| f.trim() == name)
                .ok_or_else(|| {
                    Error::Data(format!(
                        "{file}:{}: the header has no column `{name}` (it has: {}); set \
                         `data.csv.text_column` / `label_column`",
                        header.line,
                        header.fields.join(", ")
                    ))
                }),
            None => name.parse().map_err(|_| {
                Error::Data(format!(
                    "`data.csv` has `header: false`, so columns are 0-based numbers, not `{name}`"
                ))
            }),
        }
    };
    let header = if section.header { records.next() } else { None };
    if section.header && header.is_none() {
        return Err(Error::Data(format!("{file} is empty: no header row")));
    }
    let text_at = column(&section.text_column, header.as_ref())?;
    let label_at = column(&section.label_column, header.as_ref())?;
    let needed = text_at.max(label_at) + 1;
    records
        .map(|r| {
            if r.fields.len() < needed {
                return Err(Error::Data(format!(
                    "{file}:{}: {} column{}, but the {} column is number {} (a missing \
                     delimiter, or an unquoted line break?)",
                    r.line,
                    r.fields.len(),
                    if r.fields.len() == 1 { "" } else { "s" },
                    if label_at + 1 == needed {
                        "label"
                    } else {
                        "text"
                    },
                    needed
                )));
            }
            let label = r.fields[label_at].trim().to_string();
            if label.is_empty() {
                return Err(Error::Data(format!(
                    "{file}:{}: the label is empty",
                    r.line
                )));
            }
            Ok(LabelledText {
                text: r.fields[text_at].clone(),
                label,
                line: r.line,
            })
        })
        .collect()
}

/// Labels in id order: the recipe's list, or those seen in training sorted (numerically when
/// every label is a number).
pub fn label_list(section: &CsvSection, train: &[LabelledText]) -> Vec<String> {
    if let Some(labels) = &section.labels {
        return labels.clone();
    }
    let mut labels: Vec<String> = train.iter().map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    if labels.iter().all(|l| l.parse::<f64>().is_ok()) {
        labels.sort_by(|a, b| a.parse::<f64>().unwrap().total_cmp(&b.parse().unwrap()));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> CsvSection {
        CsvSection {
            delimiter: None,
            header: true,
            text_column: "review".into(),
            label_column: "label".into(),
            labels: None,
        }
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() {
        let text = "label,review\r\n1,\"good, \"\"very\"\" good\"\n\n0,\"two\nlines\"\n1,plain\n";
        let rows = parse_labelled(text, "t.csv", ',', &section()).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].text, "good, \"very\" good");
        assert_eq!((rows[1].text.as_str(), rows[1].line), ("two\nlines", 4));
        assert_eq!((rows[2].label.as_str(), rows[2].line), ("1", 6));
    }

    #[test]
    fn short_rows_and_bad_quotes_name_their_line() {
        let error = parse_labelled("label,review\n1,ok\n0\n", "t.csv", ',', &section())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.csv:3: 1 column"), "{error}");
        let error = parse_labelled("label,review\n1,\"open\n", "t.csv", ',', &section())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.csv:2:"), "{error}");
        let error = parse_labelled("label,text\n1,x\n", "t.csv", ',', &section())
            .unwrap_err()
            .to_string();
        assert!(error.contains("no column `review`"), "{error}");
    }

    #[test]
    fn numeric_labels_sort_as_numbers() {
        let rows: Vec<LabelledText> = ["10", "9", "1"]
            .iter()
            .map(|l| LabelledText {
                text: String::new(),
                label: l.to_string(),
                line: 1,
            })
            .collect();
        assert_eq!(label_list(&section(), &rows), ["1", "9", "10"]);
    }
}
