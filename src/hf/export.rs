//! `nlpkit export`: an experiment's checkpoint as an HF model folder that
//! `transformers.AutoModelFor…` and `AutoTokenizer.from_pretrained` read: `config.json`,
//! `model.safetensors` under HF's tensor names, `tokenizer.json`, `tokenizer_config.json`,
//! `special_tokens_map.json`; a CRF's transitions, which HF's classes have no place for, in
//! `crf.safetensors` beside them.

use super::tokenizer::TOKENIZER_FILE;
use super::{CONFIG_FILE, Exported, HfTensor, WEIGHTS_FILE};
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Error, Result, write_atomic};
use crate::experiment::Experiment;
use crate::recipe::ModelSection;
use crate::train::checkpoint;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

pub const CRF_FILE: &str = "crf.safetensors";
const BERT_SPECIALS: [(&str, &str); 5] = [
    ("pad_token", "[PAD]"),
    ("unk_token", "[UNK]"),
    ("cls_token", "[CLS]"),
    ("sep_token", "[SEP]"),
    ("mask_token", "[MASK]"),
];

/// Write the HF folder `out` from `exp_dir`'s checkpoint `named` (default: the best by
/// validation loss); what was written, for the user.
pub fn export(exp_dir: &Path, named: Option<&Path>, out: &Path) -> Result<String> {
    let (exp, recipe) = Experiment::open(exp_dir)?;
    let chosen = checkpoint::choose(&exp, named)?;
    let mut ours = super::read_safetensors(&chosen.model_path())?;
    // HF folders have no LoRA: the adapters go into the weights they adapt.
    if let Some(scale) = crate::train::lora::scale_of(&recipe.model) {
        crate::train::lora::merge_adapters(&mut ours, scale)?;
    }
    let mut tokenizer = TextTokenizer::load(&exp.tokenizer_path())?;
    let (exported, max_len, specials) = match &recipe.model {
        ModelSection::Bert(options) => {
            let pad = tokenizer.token_to_id("[PAD]").ok_or_else(|| {
                Error::Data("the experiment's tokenizer has no [PAD] token".into())
            })?;
            tokenizer.wrap_like_bert("[CLS]", "[SEP]")?;
            let exported = super::bert::export(options, &ours, pad)?;
            (exported, options.max_len, &BERT_SPECIALS[..])
        }
        ModelSection::Gpt2(options) => (
            super::gpt2::export(options, &ours)?,
            options.block_size,
            &[][..],
        ),
        other => {
            return Err(Error::Usage(format!(
                "`nlpkit export` writes HF folders of bert and gpt2 models; {} is a {} \
                 experiment",
                exp_dir.display(),
                other.name()
            )));
        }
    };
    std::fs::create_dir_all(out)
        .map_err(|e| Error::io(format!("cannot create {}", out.display()), e))?;
    write_folder(out, &exported, &tokenizer, max_len, specials)?;
    let class = exported.config["architectures"][0].as_str().unwrap_or("");
    let mut said = format!(
        "wrote {} ({class}, {} tensors) from {}",
        out.display(),
        exported.tensors.len(),
        chosen.dir.display()
    );
    if !exported.extra.is_empty() {
        said += &format!("; the CRF's transitions in {CRF_FILE}");
    }
    if !exported.left_out.is_empty() {
        said += &format!(
            "; not exported (unused by {class}): {}",
            exported.left_out.join(", ")
        );
    }
    Ok(said)
}

fn write_folder(
    out: &Path,
    exported: &Exported,
    tokenizer: &TextTokenizer,
    max_len: Option<usize>,
    specials: &[(&str, &str)],
) -> Result<()> {
    let json_bytes = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON serialises");
    write_atomic(&out.join(CONFIG_FILE), &json_bytes(&exported.config))?;
    write_atomic(
        &out.join(WEIGHTS_FILE),
        &safetensors_for_torch(&exported.tensors),
    )?;
    if !exported.extra.is_empty() {
        write_atomic(&out.join(CRF_FILE), &safetensors_for_torch(&exported.extra))?;
    }
    tokenizer.save(&out.join(TOKENIZER_FILE))?;
    let map: serde_json::Map<String, Value> = specials
        .iter()
        .map(|(role, token)| (role.to_string(), Value::from(*token)))
        .collect();
    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
    });
    for (role, token) in &map {
        config[role] = token.clone();
    }
    write_atomic(&out.join("tokenizer_config.json"), &json_bytes(&config))?;
    write_atomic(
        &out.join("special_tokens_map.json"),
        &json_bytes(&Value::Object(map)),
    )
}

/// The tensors as a safetensors file with the `format: pt` metadata transformers looks for.
fn safetensors_for_torch(tensors: &BTreeMap<String, HfTensor>) -> Vec<u8> {
    let metadata = Some([("format".to_string(), "pt".to_string())].into());
    super::serialize(tensors, metadata)
}
