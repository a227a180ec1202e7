//! HF BERT checkpoints (`BertModel`, `BertForPreTraining`, `BertForMaskedLM`,
//! `BertForSequenceClassification`, `BertForTokenClassification`) as nlpkit's BERT encoder.
//!
//! The layouts differ in two ways: HF's `nn.Linear` weights are `[out, in]` where Burn's are
//! `[in, out]`, and HF keeps the query, key and value projections apart where nlpkit's encoder
//! has one fused `qkv` projection (`[q | k | v]` on the output side, heads contiguous within
//! each, as HF splits them).

use super::HfTensor;
use crate::error::{Error, Result};
use crate::models::bert::BertOptions;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The encoder's shape from `config.json`; a field that would make nlpkit compute something
/// other than transformers does is refused, naming it.
pub fn options(config: &Value, dir: &Path) -> Result<BertOptions> {
    let refuse = |field: &str, why: String| {
        Error::Data(format!(
            "{}: `{field}` {why}",
            dir.join(super::CONFIG_FILE).display()
        ))
    };
    let text = |field: &str| config.get(field).and_then(Value::as_str);
    let size = |field: &str| -> Result<usize> {
        config
            .get(field)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| refuse(field, "is missing or not a whole number".into()))
    };
    match text("model_type") {
        Some("bert") => {}
        other => {
            return Err(refuse(
                "model_type",
                format!(
                    "is {}; nlpkit imports `bert` checkpoints so far",
                    other.map_or("missing".to_string(), |t| format!("`{t}`"))
                ),
            ));
        }
    }
    let act = text("hidden_act").unwrap_or("gelu");
    if act != "gelu" {
        return Err(refuse(
            "hidden_act",
            format!("is `{act}`; nlpkit's BERT uses the exact GELU (`gelu`)"),
        ));
    }
    if let Some(kind) = text("position_embedding_type").filter(|k| *k != "absolute") {
        return Err(refuse(
            "position_embedding_type",
            format!("is `{kind}`; nlpkit's BERT has absolute position embeddings only"),
        ));
    }
    let eps = config
        .get("layer_norm_eps")
        .and_then(Value::as_f64)
        .unwrap_or(1e-12);
    if eps != 1e-12 {
        return Err(refuse(
            "layer_norm_eps",
            format!("is {eps}; nlpkit's BERT normalises with 1e-12"),
        ));
    }
    let segments = size("type_vocab_size")?;
    if segments != 2 {
        return Err(refuse(
            "type_vocab_size",
            format!("is {segments}; nlpkit's BERT has 2 segment embeddings"),
        ));
    }
    for flag in ["is_decoder", "add_cross_attention"] {
        if config.get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(refuse(
                flag,
                "is true; only encoder checkpoints are imported".into(),
            ));
        }
    }
    let (width, heads) = (size("hidden_size")?, size("num_attention_heads")?);
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(refuse(
            "num_attention_heads",
            format!("({heads}) does not divide `hidden_size` ({width})"),
        ));
    }
    Ok(BertOptions {
        n_layer: Some(size("num_hidden_layers")?),
        n_head: Some(heads),
        width: Some(width),
        ffn_width: Some(size("intermediate_size")?),
        embedding_size: Some(width),
        share_layers: Some(false),
        max_len: Some(size("max_position_embeddings")?),
        vocab_size: Some(size("vocab_size")?),
        dropout: config.get("hidden_dropout_prob").and_then(Value::as_f64),
        ..BertOptions::default()
    })
}

/// The encoder's tensors under nlpkit's names (`bert.*`), and the names of the checkpoint's
/// tensors left unused (a pretraining or classification head, which a fine-tuning model
/// replaces).
pub fn encoder_tensors(
    mut hf: BTreeMap<String, HfTensor>,
    n_layer: usize,
) -> Result<(BTreeMap<String, HfTensor>, Vec<String>)> {
    // `BertModel` saved alone has no prefix; the task models put it under `bert.`.
    let prefix = if hf.contains_key("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    };
    let mut take = |name: &str| -> Result<HfTensor> {
        let full = format!("{prefix}{name}");
        // Old checkpoints name LayerNorm's parameters gamma and beta.
        let old = full
            .replace("LayerNorm.weight", "LayerNorm.gamma")
            .replace("LayerNorm.bias", "LayerNorm.beta");
        let tensor = hf
            .remove(&full)
            .or_else(|| hf.remove(&old))
            .ok_or_else(|| Error::Data(format!("the checkpoint has no tensor `{full}`")))?;
        // Biases and LayerNorm's parameters are vectors, the rest matrices.
        let rank = if name.contains("LayerNorm") || name.ends_with("bias") {
            1
        } else {
            2
        };
        if tensor.shape.len() != rank {
            return Err(Error::Data(format!(
                "tensor `{full}` has shape {:?}; a {rank}-D tensor was expected",
                tensor.shape
            )));
        }
        Ok(tensor)
    };
    let mut out = BTreeMap::new();
    let mut put = |name: String, tensor: HfTensor| {
        out.insert(format!("bert.{name}"), tensor);
    };
    put(
        "tokens.weight".into(),
        take("embeddings.word_embeddings.weight")?,
    );
    put(
        "positions.weight".into(),
        take("embeddings.position_embeddings.weight")?,
    );
    put(
        "segments.weight".into(),
        take("embeddings.token_type_embeddings.weight")?,
    );
    put(
        "embedding_norm.gamma".into(),
        take("embeddings.LayerNorm.weight")?,
    );
    put(
        "embedding_norm.beta".into(),
        take("embeddings.LayerNorm.bias")?,
    );
    for layer in 0..n_layer {
        let hf_layer = format!("encoder.layer.{layer}");
        let ours = format!("encoder.layers.{layer}");
        let [q, k, v] = ["query", "key", "value"].map(|p| {
            let at = format!("{hf_layer}.attention.self.{p}");
            Ok::<_, Error>((take(&format!("{at}.weight"))?, take(&format!("{at}.bias"))?))
        });
        let (q, k, v) = (q?, k?, v?);
        if q.0.shape != k.0.shape || q.0.shape != v.0.shape {
            return Err(Error::Data(format!(
                "layer {layer}: query, key and value weights differ in shape ({:?}, {:?}, {:?})",
                q.0.shape, k.0.shape, v.0.shape
            )));
        }
        put(
            format!("{ours}.qkv.weight"),
            concat_columns(&[transpose(&q.0), transpose(&k.0), transpose(&v.0)]),
        );
        put(
            format!("{ours}.qkv.bias"),
            concat_vectors(&[&q.1, &k.1, &v.1]),
        );
        let linears = [
            ("attention.output.dense", "out"),
            ("intermediate.dense", "ffn_in"),
            ("output.dense", "ffn_out"),
        ];
        for (theirs, mine) in linears {
            put(
                format!("{ours}.{mine}.weight"),
                transpose(&take(&format!("{hf_layer}.{theirs}.weight"))?),
            );
            put(
                format!("{ours}.{mine}.bias"),
                take(&format!("{hf_layer}.{theirs}.bias"))?,
            );
        }
        for (theirs, mine) in [
            ("attention.output.LayerNorm", "norm_1"),
            ("output.LayerNorm", "norm_2"),
        ] {
            put(
                format!("{ours}.{mine}.gamma"),
                take(&format!("{hf_layer}.{theirs}.weight"))?,
            );
            put(
                format!("{ours}.{mine}.beta"),
                take(&format!("{hf_layer}.{theirs}.bias"))?,
            );
        }
    }
    put(
        "pooler.weight".into(),
        transpose(&take("pooler.dense.weight")?),
    );
    put("pooler.bias".into(), take("pooler.dense.bias")?);
    // A buffer of 0..max_len, not a weight; transformers ignores it too.
    hf.remove(&format!("{prefix}embeddings.position_ids"));
    Ok((out, hf.into_keys().collect()))
}

/// A `[rows, columns]` matrix transposed.
fn transpose(t: &HfTensor) -> HfTensor {
    let (rows, columns) = (t.shape[0], t.shape[1]);
    let mut values = vec![0.0; t.values.len()];
    for r in 0..rows {
        for c in 0..columns {
            values[c * rows + r] = t.values[r * columns + c];
        }
    }
    HfTensor {
        shape: vec![columns, rows],
        values,
    }
}

/// Matrices with equal row counts side by side.
fn concat_columns(parts: &[HfTensor]) -> HfTensor {
    let rows = parts[0].shape[0];
    let columns: usize = parts.iter().map(|p| p.shape[1]).sum();
    let mut values = Vec::with_capacity(rows * columns);
    for r in 0..rows {
        for p in parts {
            let c = p.shape[1];
            values.extend_from_slice(&p.values[r * c..(r + 1) * c]);
        }
    }
    HfTensor {
        shape: vec![rows, columns],
        values,
    }
}

fn concat_vectors(parts: &[&HfTensor]) -> HfTensor {
    let values: Vec<f32> = parts
        .iter()
        .flat_map(|p| p.values.iter().copied())
        .collect();
    HfTensor {
        shape: vec![values.len()],
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::bert::BertInput;
    use crate::recipe::ModelOptions;
    use burn::prelude::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf")
            .join(name)
    }

    fn floats(value: &Value) -> Vec<f32> {
        let list = value.as_array().expect("a list");
        list.iter().map(|v| v.as_f64().unwrap() as f32).collect()
    }

    fn largest_difference(a: Tensor<2>, b: &[f32]) -> f32 {
        let a: Vec<f32> = a.try_into_vec_as::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The largest differences between nlpkit's hidden states and pooled output and those
    /// transformers computed (`expected.json` in `dir`, from tests/fixtures/make_hf_fixtures.py)
    /// for the BERT folder `dir`.
    fn differences_from_transformers(dir: &Path) -> (f32, f32) {
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let mut options = options(&crate::hf::read_config(dir).unwrap(), dir).unwrap();
        options.resolve().unwrap();
        let device = Device::flex();
        let model = options.config().unwrap().init_pretraining(0, &device);
        let model = crate::train::checkpoint::with_pretrained_encoder(model, Some(dir)).unwrap();

        let rows = |key: &str| -> Vec<Vec<i64>> {
            let rows = expected[key].as_array().unwrap();
            let row = |r: &Value| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect()
            };
            rows.iter().map(row).collect()
        };
        let (ids, mask) = (rows("input_ids"), rows("attention_mask"));
        let (batch, time) = (ids.len(), ids[0].len());
        let flat = |rows: Vec<Vec<i64>>| TensorData::new(rows.concat(), [batch, time]);
        let ids = Tensor::<2, Int>::from_data(flat(ids), &device);
        let padding = Tensor::<2, Int>::from_data(flat(mask), &device).equal_elem(0);
        assert!(
            padding.clone().any().into_scalar::<bool>(),
            "the batch has padding"
        );
        let segments = ids.zeros_like();
        let hidden = model.bert.forward(BertInput {
            ids,
            segments,
            padding,
        });
        let width = hidden.dims()[2];
        let pooled = model.bert.pool(hidden.clone());
        let hidden = hidden.reshape([batch * time, width]);
        (
            largest_difference(hidden, &floats(&expected["last_hidden_state"])),
            largest_difference(pooled, &floats(&expected["pooler_output"])),
        )
    }

    /// transformers' BERT with random weights of an unusual shape, a padded batch: nlpkit's
    /// hidden states and pooled output equal transformers'.
    #[test]
    fn an_imported_encoder_computes_what_transformers_computes() {
        let (hidden, pooled) = differences_from_transformers(&fixture("bert_tiny_cls"));
        println!("hidden states within {hidden:e}, pooled output within {pooled:e}");
        assert!(hidden < 1e-4, "hidden states differ by {hidden}");
        assert!(pooled < 1e-4, "pooled outputs differ by {pooled}");
    }

    /// The same for a real checkpoint outside the repository (NLPKIT_HF_FOLDER, with the
    /// expected.json the fixture script writes for it): `cargo test --release --lib hf:: --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "needs NLPKIT_HF_FOLDER: a real checkpoint, not in the repository"]
    fn a_real_checkpoint_computes_what_transformers_computes() {
        let dir = std::path::PathBuf::from(std::env::var("NLPKIT_HF_FOLDER").unwrap());
        let (hidden, pooled) = differences_from_transformers(&dir);
        println!(
            "{}: hidden states within {hidden:e}, pooled output within {pooled:e}",
            dir.display()
        );
        assert!(hidden < 1e-4 && pooled < 1e-4);
    }

    /// A checkpoint that does not hold what its names say is an error naming the tensor, not a
    /// panic in the layout code.
    #[test]
    fn a_tensor_of_the_wrong_rank_is_an_error_naming_it() {
        let mut tensors = crate::hf::read_weights(&fixture("bert_tiny_cls")).unwrap();
        let name = "bert.encoder.layer.1.attention.self.key.weight";
        let key = tensors.get_mut(name).unwrap();
        key.shape = vec![key.values.len()];
        let error = encoder_tensors(tensors, 2).unwrap_err().to_string();
        assert!(error.contains(name) && error.contains("2-D"), "{error}");
    }

    fn matrix(rows: usize, columns: usize, first: f32) -> HfTensor {
        HfTensor {
            shape: vec![rows, columns],
            values: (0..rows * columns).map(|i| first + i as f32).collect(),
        }
    }

    #[test]
    fn transposes_and_side_by_side_concatenation_keep_every_value_in_place() {
        let a = matrix(2, 3, 0.0);
        let t = transpose(&a);
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.values, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let joined = concat_columns(&[matrix(2, 1, 10.0), matrix(2, 2, 20.0)]);
        assert_eq!(joined.shape, [2, 3]);
        assert_eq!(joined.values, [10.0, 20.0, 21.0, 11.0, 22.0, 23.0]);
    }
}
