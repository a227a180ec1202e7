//! `--set key.path=value` overrides, as wenet's `--override_config` and nanoGPT's `--key=value`.
//!
//! The value is read as YAML, so `1e-3` is a number, `true` a bool, `[0.9, 0.95]` a list and
//! anything else a string. The overridden recipe is re-checked as a whole, so a wrong key or type
//! is reported like one in the file.

use super::Recipe;
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
            let message = e.to_string();
            let hint = super::load::describe_yaml_error(&message, "", "", None);
            Error::Recipe(format!("--set {item}: {}", hint.trim_start_matches(": ")))
        })?;
    }
    Ok(serde_json::from_value(tree).expect("checked above"))
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
