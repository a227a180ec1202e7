//! `--set key.path=value` overrides, as wenet's `--override_config` and nanoGPT's `--key=value`.
//!
//! The value is read as YAML, so `1e-3` is a number, `true` a bool, `[0.9, 0.95]` a list and
//! anything else a string. The overridden recipe is re-checked as a whole, so a wrong key or type
//! is reported like one in the file.

use super::Recipe;
use super::load::{unknown_key, unknown_value};
use crate::error::{Error, Result};
use serde_json::Value;

pub fn apply_overrides(recipe: Recipe, overrides: &[String]) -> Result<Recipe> {
    if overrides.is_empty() {
        return Ok(recipe);
    }
    let mut tree = serde_json::to_value(&recipe).expect("a recipe always serialises");
    for item in overrides {
        let (path, raw) = item.split_once('=').ok_or_else(|| {
            Error::Recipe(format!(
                "--set {item}: expected KEY.PATH=VALUE, e.g. --set train.batch_size=32"
            ))
        })?;
        let value: Value = if raw.trim().is_empty() {
            Value::String(String::new())
        } else {
            serde_saphyr::from_str(raw).map_err(|e| {
                Error::Recipe(format!("--set {item}: the value is not valid YAML: {e}"))
            })?
        };
        set_path(&mut tree, path, value)
            .map_err(|why| Error::Recipe(format!("--set {item}: {why}")))?;
        // Check each override on its own so the message names the one that is wrong.
        serde_json::from_value::<Recipe>(tree.clone()).map_err(|e| {
            Error::Recipe(format!("--set {item}: {}", describe(&e.to_string(), path)))
        })?;
    }
    Ok(serde_json::from_value(tree).expect("checked above"))
}

/// serde_json's errors are only text: the unknown key or value is read out of it, to give the
/// hints a recipe file's errors give.
fn describe(message: &str, path: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    if let Some((key, expected)) = named(message, "unknown field `") {
        let path = if path.rsplit('.').next() == Some(key) {
            path.to_string()
        } else {
            format!("{path}.{key}")
        };
        return unknown_key(&path, "", key, &expected);
    }
    if let Some((value, expected)) = named(message, "unknown variant `") {
        return unknown_value(value, path, "", &expected);
    }
    format!("`{path}`: {message}")
}

/// For `prefix` "unknown field `": "unknown field `x`, expected one of `a`, `b`" gives
/// ("x", ["a", "b"]).
fn named<'a>(message: &'a str, prefix: &str) -> Option<(&'a str, Vec<&'a str>)> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    let (name, rest) = rest.split_once('`')?;
    let list = (rest
        .split_once("expected one of ")
        .or_else(|| rest.split_once("expected ")))
    .map_or("", |(_, list)| list);
    let expected = list
        .split(", ")
        .map(|name| name.trim().trim_matches('`'))
        .filter(|name| !name.is_empty() && !name.contains(' '))
        .collect();
    Some((name, expected))
}

fn set_path(tree: &mut Value, path: &str, value: Value) -> std::result::Result<(), String> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(format!(
            "`{path}` is not a key path (use dots: train.batch_size)"
        ));
    }
    let mut node = tree;
    for (depth, key) in keys.iter().enumerate() {
        let map = node.as_object_mut().ok_or_else(|| {
            format!(
                "`{}` is not a section, it cannot hold `{key}`",
                keys[..depth].join(".")
            )
        })?;
        if depth + 1 == keys.len() {
            map.insert((*key).to_string(), value);
            return Ok(());
        }
        let child = map
            .entry((*key).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if child.is_null() {
            *child = Value::Object(Default::default());
        }
        node = child;
    }
    Ok(())
}
