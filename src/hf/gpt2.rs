//! HF GPT-2 checkpoints (`GPT2LMHeadModel`, `GPT2Model`) as nlpkit's GPT-2, and back.
//!
//! GPT-2's `Conv1D` stores its weights `[in, out]`, Burn's layout, and its `c_attn` is already
//! the fused `[q | k | v]` projection, so every tensor is copied as it is; the output head is
//! tied to the token embedding on both sides.

use super::layout::{self, Rule};
use super::{Exported, HfTensor, Imported};
use crate::error::{Error, Result};
use crate::models::activation::Activation;
use crate::models::gpt2::Gpt2Options;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// nlpkit's GPT-2 normalises with LayerNorm's default epsilon.
const LAYER_NORM_EPSILON: f64 = 1e-5;

/// The model's shape from `config.json`; a field that would make nlpkit compute something other
/// than transformers does is refused, naming it.
pub fn options(config: &Value, dir: &Path) -> Result<Gpt2Options> {
    let fields = super::ConfigFields::new(config, dir);
    let refuse = |field: &str, why: String| fields.refuse(field, why);
    let size = |field: &str| fields.size(field);
    let flag = |field: &str| config.get(field).and_then(Value::as_bool);
    match fields.text("model_type") {
        Some("gpt2") => {}
        other => {
            return Err(refuse(
                "model_type",
                format!(
                    "is {}; a gpt2 recipe imports `gpt2` checkpoints",
                    other.map_or("missing".to_string(), |t| format!("`{t}`"))
                ),
            ));
        }
    }
    let name = config
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new");
    let activation = Activation::from_hf_name(name).ok_or_else(|| {
        refuse(
            "activation_function",
            format!("is `{name}`; nlpkit's GPT-2 has `gelu` and `gelu_new`"),
        )
    })?;
    let eps = config
        .get("layer_norm_epsilon")
        .and_then(Value::as_f64)
        .unwrap_or(LAYER_NORM_EPSILON);
    if eps != LAYER_NORM_EPSILON {
        return Err(refuse(
            "layer_norm_epsilon",
            format!("is {eps}; nlpkit's GPT-2 normalises with {LAYER_NORM_EPSILON}"),
        ));
    }
    let n_embd = size("n_embd")?;
    if let Some(inner) = config.get("n_inner").and_then(Value::as_u64)
        && inner as usize != 4 * n_embd
    {
        return Err(refuse(
            "n_inner",
            format!(
                "is {inner}; nlpkit's GPT-2 has an MLP of 4 x n_embd ({})",
                4 * n_embd
            ),
        ));
    }
    for (field, supported) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("add_cross_attention", false),
        ("tie_word_embeddings", true),
    ] {
        if let Some(value) = flag(field).filter(|v| *v != supported) {
            return Err(refuse(
                field,
                format!("is {value}; nlpkit's GPT-2 computes what {supported} does"),
            ));
        }
    }
    let (n_head, n_layer) = (size("n_head")?, size("n_layer")?);
    if n_head == 0 || !n_embd.is_multiple_of(n_head) {
        return Err(refuse(
            "n_head",
            format!("({n_head}) does not divide `n_embd` ({n_embd})"),
        ));
    }
    Ok(Gpt2Options {
        preset: None,
        n_layer: Some(n_layer),
        n_head: Some(n_head),
        n_embd: Some(n_embd),
        block_size: Some(size("n_positions")?),
        vocab_size: Some(size("vocab_size")?),
        dropout: config.get("resid_pdrop").and_then(Value::as_f64),
        bias: Some(true),
        activation: Some(activation),
        lora: None,
    })
}

/// The rules for every tensor: HF's under `hf` (`transformer.` in `GPT2LMHeadModel`, nothing in
/// a `GPT2Model` saved alone).
fn rules(hf: &str, n_layer: usize) -> Vec<Rule> {
    let mut rules = vec![
        Rule::same(format!("{hf}wte.weight"), "wte.weight"),
        Rule::same(format!("{hf}wpe.weight"), "wpe.weight"),
    ];
    for layer in 0..n_layer {
        let (theirs, ours) = (format!("{hf}h.{layer}"), format!("blocks.{layer}"));
        for norm in ["ln_1", "ln_2"] {
            layout::layer_norm(
                &mut rules,
                &format!("{theirs}.{norm}"),
                &format!("{ours}.{norm}"),
            );
        }
        for conv in ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"] {
            for part in ["weight", "bias"] {
                rules.push(Rule::same(
                    format!("{theirs}.{conv}.{part}"),
                    format!("{ours}.{conv}.{part}"),
                ));
            }
        }
    }
    layout::layer_norm(&mut rules, &format!("{hf}ln_f"), "ln_f");
    rules
}

/// An HF GPT-2 folder's tensors for the model `options` describes (resolved): every one is
/// required.
pub fn import(dir: &Path, options: &Gpt2Options) -> Result<Imported> {
    let weights = super::read_weights(dir)?;
    let hf = if weights.contains_key("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let rules = rules(hf, options.n_layer.expect("resolved"));
    let (mut tensors, unused) = layout::import(&rules, weights)
        .map_err(|e| Error::Data(format!("{}: {e}", dir.display())))?;
    super::keep_rows(
        &mut tensors,
        "wpe.weight",
        options.block_size.expect("resolved"),
    );
    // Older files keep the causal mask as buffers, and some the head tied to `wte`.
    let buffer = |n: &str| {
        n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias") || n == "lm_head.weight"
    };
    Ok(Imported {
        tensors,
        unused: unused.into_iter().filter(|n| !buffer(n)).collect(),
        notes: Vec::new(),
        required: |_| true,
    })
}

/// What `nlpkit export` writes for a GPT-2 experiment: a `GPT2LMHeadModel`. A model without
/// biases (nanoGPT's `bias: false`) gets zero ones, which HF's GPT-2 always has and which
/// compute the same.
pub fn export(options: &Gpt2Options, ours: &BTreeMap<String, HfTensor>) -> Result<Exported> {
    let n_layer = options.n_layer.expect("resolved");
    let rules = rules("transformer.", n_layer);
    let mut ours = ours.clone();
    for rule in &rules {
        let name = rule.ours_name();
        if ours.contains_key(name) {
            continue;
        }
        // A Linear's bias has its weight's output size, a LayerNorm's shift its scale's size.
        let size = if let Some(layer) = name.strip_suffix(".bias") {
            ours.get(&format!("{layer}.weight")).map(|w| w.shape[1])
        } else if let Some(norm) = name.strip_suffix(".beta") {
            ours.get(&format!("{norm}.gamma")).map(|g| g.shape[0])
        } else {
            None
        };
        if let Some(size) = size {
            let zeros = HfTensor {
                shape: vec![size],
                values: vec![0.0; size],
            };
            ours.insert(name.to_string(), zeros);
        }
    }
    let tensors = layout::export(&rules, &ours)?;
    let dropout = options.dropout.unwrap_or(0.0);
    let config = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": options.vocab_size,
        "n_positions": options.block_size,
        "n_embd": options.n_embd,
        "n_layer": n_layer,
        "n_head": options.n_head,
        "n_inner": null,
        "activation_function": options.activation.unwrap_or_default().hf_name(),
        "resid_pdrop": dropout,
        "embd_pdrop": dropout,
        "attn_pdrop": dropout,
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "initializer_range": 0.02,
        "tie_word_embeddings": true,
        // nlpkit's tokenizers have no `<|endoftext|>` unless trained with one.
        "bos_token_id": null,
        "eos_token_id": null,
        "dtype": "float32",
    });
    Ok(Exported {
        config,
        tensors,
        extra: BTreeMap::new(),
        left_out: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::test_support::{expected, fixture, floats, int_rows, largest_difference};
    use crate::recipe::ModelOptions;
    use crate::train::pretrained::Pretrained;
    use burn::prelude::*;

    fn resolved(dir: &Path) -> Gpt2Options {
        let mut options = options(&crate::hf::read_config(dir).unwrap(), dir).unwrap();
        options.resolve().unwrap();
        options
    }

    /// transformers' GPT-2 with random weights of an unusual shape and `gelu_new`: nlpkit's
    /// logits equal transformers'.
    #[test]
    fn an_imported_gpt2_computes_what_transformers_computes() {
        let dir = fixture("gpt2_tiny");
        let options = resolved(&dir);
        assert_eq!(options.activation, Some(Activation::GeluNew));
        let device = Device::flex();
        let model = options.config().unwrap().init(&device);
        let section = crate::recipe::ModelSection::Gpt2(options);
        let model = Pretrained::hf_folder(&dir, section)
            .load_into(model)
            .unwrap();
        let expected = expected(&dir);
        let logits = model.forward(int_rows(&expected, "input_ids", &device));
        let difference = largest_difference(logits, &floats(&expected["logits"]));
        println!("logits within {difference:e}");
        assert!(difference < 1e-4, "logits differ by {difference}");
    }

    #[test]
    fn export_gives_back_the_imported_tensors() {
        let dir = fixture("gpt2_tiny");
        let options = resolved(&dir);
        let imported = import(&dir, &options).unwrap();
        assert!(imported.unused.is_empty(), "{:?}", imported.unused);
        let exported = export(&options, &imported.tensors).unwrap();
        assert_eq!(exported.tensors, crate::hf::read_weights(&dir).unwrap());
        assert_eq!(exported.config["activation_function"], "gelu_new");
    }

    /// A model without biases exports with zero ones, and computes the same.
    #[test]
    fn a_model_without_biases_exports_with_zero_biases() {
        let device = Device::flex();
        let mut options = Gpt2Options {
            preset: Some("gpt2-tiny".into()),
            n_layer: Some(1),
            vocab_size: Some(11),
            ..Gpt2Options::default()
        };
        options.resolve().unwrap();
        assert_eq!(options.bias, Some(false));
        let model = options.config().unwrap().init(&device);
        let store = |m: &crate::models::gpt2::Gpt2| {
            let mut store = burn::store::SafetensorsStore::from_bytes(None);
            burn::store::ModuleSnapshot::save_into(m, &mut store).unwrap();
            crate::hf::parse_safetensors(&store.get_bytes().unwrap(), "the model").unwrap()
        };
        let exported = export(&options, &store(&model)).unwrap();
        let bias = &exported.tensors["transformer.h.0.mlp.c_fc.bias"];
        assert_eq!(bias.shape, [4 * 128]);
        assert!(bias.values.iter().all(|v| *v == 0.0));
        assert!(exported.tensors.contains_key("transformer.ln_f.bias"));
    }

    /// A config nlpkit would compute differently from is refused, naming the field.
    #[test]
    fn an_unsupported_config_is_refused_naming_the_field() {
        let dir = fixture("gpt2_tiny");
        let config = crate::hf::read_config(&dir).unwrap();
        for (field, value) in [
            ("activation_function", serde_json::json!("relu")),
            ("layer_norm_epsilon", serde_json::json!(1e-6)),
            ("n_inner", serde_json::json!(50)),
            ("scale_attn_by_inverse_layer_idx", serde_json::json!(true)),
            ("model_type", serde_json::json!("gpt_neo")),
        ] {
            let mut changed = config.clone();
            changed[field] = value;
            let error = options(&changed, &dir).unwrap_err().to_string();
            assert!(error.contains(field), "{field}: {error}");
        }
    }
}
