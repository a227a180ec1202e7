//! HuggingFace model folders as a fine-tuning recipe's starting point (`init_from: DIR`):
//! `config.json`, the weights in `model.safetensors` (or the shards that
//! `model.safetensors.index.json` lists) and the tokenizer (`tokenizer.json`, or `vocab.txt`:
//! `tokenizer.rs`). Pickled PyTorch weights (`pytorch_model.bin`) are refused: loading them
//! would execute code from the file.
//!
//! Each architecture's module maps the config to nlpkit's model options (refusing what would
//! compute something else) and HF's tensors to nlpkit's, by name and layout.

pub mod bert;
pub mod export;
pub mod gpt2;
pub mod layout;
pub mod tokenizer;

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
const PICKLED_WEIGHTS_FILE: &str = "pytorch_model.bin";

/// Whether `dir` is an HF model folder (rather than an nlpkit experiment).
pub fn is_model_folder(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

/// A tensor read from an HF checkpoint, as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// What an HF folder gives an nlpkit model.
pub struct Imported {
    /// Tensors under nlpkit's names, in nlpkit's layout.
    pub tensors: BTreeMap<String, HfTensor>,
    /// The checkpoint's tensors left unused (a head the model does not have).
    pub unused: Vec<String>,
    /// Why something was left to initialisation.
    pub notes: Vec<String>,
    /// Which of the model's tensors the checkpoint must give (the rest may be new: a head).
    pub required: fn(&str) -> bool,
}

/// What an nlpkit model becomes in an HF folder.
pub struct Exported {
    pub config: serde_json::Value,
    /// Under HF's names.
    pub tensors: BTreeMap<String, HfTensor>,
    /// Tensors HF's class has no place for, under nlpkit's names, for a file beside.
    pub extra: BTreeMap<String, HfTensor>,
    /// nlpkit tensors the HF class does not use (BERT's pooler under a token classifier).
    pub left_out: Vec<String>,
}

/// Keep the first `rows` rows of the matrix `name`: a position table cut to the recipe's
/// shorter maximum length (the rows past it are never looked up).
pub fn keep_rows(tensors: &mut BTreeMap<String, HfTensor>, name: &str, rows: usize) {
    if let Some(t) = tensors.get_mut(name)
        && t.shape.len() == 2
        && t.shape[0] > rows
    {
        t.values.truncate(rows * t.shape[1]);
        t.shape[0] = rows;
    }
}

/// A `config.json`'s fields, read with errors that name the file and the field.
pub struct ConfigFields<'a> {
    config: &'a serde_json::Value,
    path: PathBuf,
}

impl<'a> ConfigFields<'a> {
    pub fn new(config: &'a serde_json::Value, dir: &Path) -> Self {
        Self {
            config,
            path: dir.join(CONFIG_FILE),
        }
    }

    /// The error for a field nlpkit cannot take, and why.
    pub fn refuse(&self, field: &str, why: String) -> Error {
        Error::Data(format!("{}: `{field}` {why}", self.path.display()))
    }

    /// A whole number the config must have.
    pub fn size(&self, field: &str) -> Result<usize> {
        self.config
            .get(field)
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| self.refuse(field, "is missing or not a whole number".into()))
    }

    pub fn text(&self, field: &str) -> Option<&'a str> {
        self.config.get(field).and_then(serde_json::Value::as_str)
    }
}

/// `config.json`, parsed.
pub fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Data(format!("{}: not valid JSON: {e}", path.display())))
}

/// Every tensor of the folder's checkpoint (all shards), by HF name, as f32.
pub fn read_weights(dir: &Path) -> Result<BTreeMap<String, HfTensor>> {
    let mut tensors = BTreeMap::new();
    for file in weight_files(dir)? {
        tensors.extend(read_safetensors(&file)?);
    }
    Ok(tensors)
}

/// The floating-point tensors of one safetensors file, as f32. Integer tensors are buffers
/// (BERT's `position_ids`), not weights, and are left out.
pub fn read_safetensors(file: &Path) -> Result<BTreeMap<String, HfTensor>> {
    let bytes =
        std::fs::read(file).map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
    parse_safetensors(&bytes, &file.display().to_string())
}

/// [`read_safetensors`] of bytes read from `origin`.
pub fn parse_safetensors(bytes: &[u8], origin: &str) -> Result<BTreeMap<String, HfTensor>> {
    let bad =
        |e: &dyn std::fmt::Display| Error::Data(format!("{origin}: not a safetensors file: {e}"));
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(&e))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if is_integer(view.dtype()) {
            continue;
        }
        let values = to_f32(view.dtype(), view.data())
            .ok_or_else(|| bad(&format!("tensor `{name}` has dtype {:?}", view.dtype())))?;
        let shape = view.shape().to_vec();
        tensors.insert(name, HfTensor { shape, values });
    }
    Ok(tensors)
}

/// The safetensors files holding the checkpoint.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| Error::io(format!("cannot read {}", index.display()), e))?;
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Data(format!("{}: not valid JSON: {e}", index.display())))?;
        let map = parsed["weight_map"]
            .as_object()
            .ok_or_else(|| Error::Data(format!("{}: no `weight_map` object", index.display())))?;
        let files: std::collections::BTreeSet<&str> =
            map.values().filter_map(|f| f.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    if dir.join(PICKLED_WEIGHTS_FILE).is_file() {
        return Err(Error::Data(format!(
            "{} holds its weights only as {PICKLED_WEIGHTS_FILE}, a pickle, which nlpkit does not \
             load (loading one runs code from the file); convert it once with transformers: \
             `AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`",
            dir.display()
        )));
    }
    Err(Error::Data(format!(
        "{} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE}",
        dir.display()
    )))
}

fn is_integer(dtype: safetensors::Dtype) -> bool {
    use safetensors::Dtype;
    matches!(
        dtype,
        Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64
    )
}

fn to_f32(dtype: safetensors::Dtype, data: &[u8]) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    let words = |size: usize| data.chunks_exact(size);
    Some(match dtype {
        Dtype::F32 => words(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => words(2)
            .map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => words(2)
            .map(|b| burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => words(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

/// nlpkit-named tensors as safetensors bytes, for Burn's store to load like a checkpoint.
pub fn to_safetensors(tensors: &BTreeMap<String, HfTensor>) -> Vec<u8> {
    serialize(tensors, None)
}

/// Tensors as an f32 safetensors file's bytes, with `metadata` in its header.
pub fn serialize(
    tensors: &BTreeMap<String, HfTensor>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let bytes: Vec<(&String, &HfTensor, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name,
                t,
                t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes.iter().map(|(name, t, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), data)
                .expect("shape and length agree");
        (name.to_string(), view)
    });
    safetensors::serialize(views, metadata).expect("in-memory serialisation")
}

/// What the conformance tests of each architecture share: the fixtures
/// tests/fixtures/make_hf_fixtures.py wrote, and comparisons with what transformers computed.
#[cfg(test)]
pub(crate) mod test_support {
    use burn::prelude::*;
    use serde_json::Value;
    use std::path::{Path, PathBuf};

    pub fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf")
            .join(name)
    }

    /// The folder's `expected.json`.
    pub fn expected(dir: &Path) -> Value {
        let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn floats(value: &Value) -> Vec<f32> {
        let list = value.as_array().expect("a list");
        list.iter().map(|v| v.as_f64().unwrap() as f32).collect()
    }

    /// A list of equal-length integer rows (token ids, a mask) as a `[rows, columns]` tensor.
    pub fn int_rows(expected: &Value, key: &str, device: &Device) -> Tensor<2, Int> {
        let rows: Vec<Vec<i64>> = expected[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect()
            })
            .collect();
        let shape = [rows.len(), rows[0].len()];
        Tensor::from_data(TensorData::new(rows.concat(), shape), device)
    }

    pub fn largest_difference<const D: usize>(a: Tensor<D>, b: &[f32]) -> f32 {
        let a: Vec<f32> = a.try_into_vec_as::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }
}
