//! Reading a recipe file: YAML parsing with errors that name the key path and the line, and a
//! "did you mean" for misspelt keys.

use super::Recipe;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Read, parse, apply `--set` overrides, fill presets and defaults, make paths absolute and
/// validate. The result is the resolved recipe.
pub fn load_recipe(path: &Path, overrides: &[String]) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::Recipe(format!("recipe file {} does not exist", path.display()))
        }
        std::io::ErrorKind::InvalidData => {
            Error::Recipe(format!("recipe file {} is not valid UTF-8", path.display()))
        }
        _ => Error::io(format!("cannot read recipe {}", path.display()), e),
    })?;
    let recipe = parse_recipe(&text, &path.display().to_string())?;
    let recipe = super::apply_overrides(recipe, overrides)?;
    resolve(recipe)
}

/// Parse recipe text; `origin` names the file in error messages.
pub fn parse_recipe(text: &str, origin: &str) -> Result<Recipe> {
    serde_saphyr::from_str::<Recipe>(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize);
        Error::Recipe(describe_yaml_error(&raw_message(&e), text, origin, line))
    })
}

/// Fill the model preset and defaults, make paths absolute, then validate.
fn resolve(mut recipe: Recipe) -> Result<Recipe> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("cannot read current directory", e))?;
    let absolute = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = cwd.join(&*p);
        }
    };
    let output_dir = recipe.output_dir.get_or_insert_with(|| "exp".into());
    absolute(output_dir);
    absolute(&mut recipe.data.train);
    recipe.data.valid.as_mut().map(absolute);
    recipe.data.test.as_mut().map(absolute);
    let prepared = recipe
        .data
        .prepared_dir
        .get_or_insert_with(|| recipe.output_dir.clone().unwrap_or_default().join("data"));
    absolute(prepared);
    recipe.data.tokenizer.path.as_mut().map(absolute);
    if let Some(target) = recipe.data.target_tokenizer.as_mut() {
        target.path.as_mut().map(absolute);
    }
    recipe.init_from.as_mut().map(absolute);
    // A fine-tuning recipe takes the encoder's shape from the pretrained experiment. A resolved
    // recipe (an experiment's) already has it: then the pretrained folder is only read if it is
    // still there.
    if let super::ModelSection::Bert(options) = &mut recipe.model {
        let resolved = options.n_layer.is_some() && options.width.is_some();
        if let Some(dir) = recipe
            .init_from
            .as_ref()
            .filter(|d| !resolved || d.exists())
        {
            let (_, pretrained) = crate::experiment::Experiment::open(dir)?;
            let super::ModelSection::Bert(base) = &pretrained.model else {
                return Err(Error::Recipe(format!(
                    "`init_from: {}` is a {} experiment; fine-tuning starts from a bert one",
                    dir.display(),
                    pretrained.model.name()
                )));
            };
            options.inherit(base)?;
        }
    }
    recipe.model.options_mut().resolve()?;
    super::validate::validate(&recipe)?;
    Ok(recipe)
}

/// The message of a YAML error without its "error: line N column M:" prefix and the rendered
/// source snippet (we say where ourselves).
fn raw_message(e: &serde_saphyr::Error) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or_default().trim();
    let first = first.strip_prefix("error:").unwrap_or(first).trim_start();
    match first
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, message)) if position.contains("column") => message.to_string(),
        _ => first.to_string(),
    }
}

/// Turn a serde/YAML error message into one that says what, where and what to do.
pub(crate) fn describe_yaml_error(
    message: &str,
    text: &str,
    origin: &str,
    line: Option<usize>,
) -> String {
    let message = strip_location_suffix(message);
    if let Some((unknown, expected)) = parse_unknown_field(&message) {
        // Serde's own line may point at the enclosing mapping (internally tagged sections are
        // buffered), so find the offending key in the text.
        let key_line = find_key_line(text, &unknown, line).or(line);
        let path = key_line
            .map(|l| key_path_at_line(text, l))
            .unwrap_or_else(|| unknown.clone());
        let at = key_line
            .map(|l| format!(" at line {l}"))
            .unwrap_or_default();
        let hint = match nearest(&unknown, &expected) {
            Some(best) => format!("; did you mean `{best}`?"),
            None if !expected.is_empty() => format!("; valid keys here: {}", expected.join(", ")),
            None => String::new(),
        };
        return format!("{origin}: unknown key `{path}`{at}{hint}");
    }
    if let Some((variant, expected)) = parse_unknown_variant(&message) {
        let key_line = line.or_else(|| find_value_line(text, &variant));
        let path = key_line
            .map(|l| key_path_at_line(text, l))
            .unwrap_or_default();
        let at = key_line
            .map(|l| format!(" at line {l}"))
            .unwrap_or_default();
        let hint = match nearest(&variant, &expected) {
            Some(best) => format!("did you mean `{best}`? "),
            None => String::new(),
        };
        return format!(
            "{origin}: unknown value `{variant}` for `{path}`{at}; {hint}valid values: {}",
            expected.join(", ")
        );
    }
    let message = explain_type_error(&message);
    match line {
        Some(l) => {
            let path = key_path_at_line(text, l);
            let value = value_at_line(text, l)
                .map(|v| format!(" has `{v}`"))
                .unwrap_or_default();
            if path.is_empty() {
                format!("{origin}: line {l}: {message}")
            } else {
                format!("{origin}: `{path}` at line {l}{value}: {message}")
            }
        }
        None => format!("{origin}: {message}"),
    }
}

/// serde-saphyr says "invalid u64"; say what is expected instead.
fn explain_type_error(message: &str) -> String {
    let expected = match message.trim() {
        "invalid u64" | "invalid u32" | "invalid usize" => "expected a whole number (0 or more)",
        "invalid i64" | "invalid i32" => "expected a whole number",
        "invalid f64" | "invalid f32" => "expected a number",
        "invalid bool" | "invalid boolean" => "expected true or false",
        _ => return message.to_string(),
    };
    format!("{message}: {expected}")
}

/// The value written after `key:` on `line` (1-based), if any.
fn value_at_line(text: &str, line: usize) -> Option<String> {
    let raw = text.lines().nth(line.checked_sub(1)?)?;
    let (_, value) = raw.split_once(':')?;
    let value = value.split(" #").next()?.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// serde_saphyr appends " at line X column Y" to some messages; we say it our way.
fn strip_location_suffix(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// "unknown field `x`, expected one of `a`, `b`" -> ("x", ["a", "b"]).
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    let end = rest.find('`')?;
    Some((rest[..end].to_string(), backticked(&rest[end + 1..])))
}

fn parse_unknown_variant(message: &str) -> Option<(String, Vec<String>)> {
    let rest = &message[message.find("unknown variant `")? + "unknown variant `".len()..];
    let end = rest.find('`')?;
    Some((rest[..end].to_string(), backticked(&rest[end + 1..])))
}

/// The names after "expected one of" (or "expected"), with or without backticks:
/// serde writes "`a`, `b`", serde-saphyr "a, b".
fn backticked(text: &str) -> Vec<String> {
    let list = text
        .split_once("expected one of ")
        .or_else(|| text.split_once("expected "))
        .map_or("", |(_, list)| list);
    list.split(", ")
        .map(|name| name.trim().trim_matches('`').to_string())
        .filter(|name| !name.is_empty() && !name.contains(' '))
        .collect()
}

/// The closest valid name, if it is close enough to be a plausible typo.
pub(crate) fn nearest(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

/// The line (1-based) where `key:` is written, preferring the one nearest `near`.
fn find_key_line(text: &str, key: &str, near: Option<usize>) -> Option<usize> {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map(|(i, _)| i + 1)
        .collect();
    match near {
        Some(n) => lines.into_iter().filter(|&l| l >= n).min_by_key(|&l| l - n),
        None => lines.into_iter().next(),
    }
}

/// The line (1-based) where `value` is written as a mapping value.
fn find_value_line(text: &str, value: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.split_once(':').is_some_and(|(_, v)| {
                v.split('#')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\''])
                    == value
            })
        })
        .map(|i| i + 1)
}

/// The dotted key path of the mapping key written on `line` (1-based), found from indentation:
/// `train:\n  batch_size: 0` at line 2 gives `train.batch_size`.
pub(crate) fn key_path_at_line(text: &str, line: usize) -> String {
    let mut stack: Vec<(usize, String)> = Vec::new();
    for raw in text.lines().take(line) {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let Some((key, _)) = trimmed.trim_start_matches("- ").split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(['"', '\'']);
        if key.is_empty() || key.contains(' ') {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
    }
    stack
        .into_iter()
        .map(|(_, k)| k)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "seed: 1\ntrain:\n  max_steps: 10\n  bach_size: 4\nmodel:\n  type: gpt2\n";

    #[test]
    fn key_path_follows_indentation() {
        assert_eq!(key_path_at_line(TEXT, 4), "train.bach_size");
        assert_eq!(key_path_at_line(TEXT, 1), "seed");
        assert_eq!(key_path_at_line(TEXT, 6), "model.type");
    }

    #[test]
    fn misspelt_key_gets_a_suggestion() {
        for msg in [
            "unknown field `bach_size`, expected one of `max_steps`, `batch_size`",
            "unknown field `bach_size`, expected one of max_steps, batch_size",
        ] {
            let out = describe_yaml_error(msg, TEXT, "r.yaml", Some(2));
            assert_eq!(
                out,
                "r.yaml: unknown key `train.bach_size` at line 4; did you mean `batch_size`?"
            );
        }
    }

    #[test]
    fn unrelated_key_lists_valid_keys() {
        assert_eq!(nearest("zzzzzz", &["batch_size".into()]), None);
    }
}
