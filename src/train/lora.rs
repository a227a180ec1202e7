//! LoRA's training side (the adapters themselves are `models::lora`): which parameters train
//! (the adapters and the task head), the count printed at start, and merging the adapters into
//! the base weights (`W + alpha/r * A B`) for `nlpkit export` and `nlpkit average`, whose
//! merged checkpoints record it so that `eval` loads them into the LoRA-shaped model.

use super::freeze::{freeze_where, trainable_params};
use crate::error::{Error, Result};
use crate::hf::HfTensor;
use crate::recipe::ModelSection;
use burn::module::Module;
use std::collections::{BTreeMap, HashMap};

/// The safetensors metadata key (value `merged`) of a file whose adapters were merged into the
/// base weights: loading it leaves the model's adapters at their initial value, `B = 0`, which
/// adds nothing.
pub const MERGED_KEY: &str = "nlpkit_lora";

/// Whether `path` (a dotted parameter path) is a LoRA adapter.
pub fn is_adapter(path: &str) -> bool {
    path.ends_with(".lora_a") || path.ends_with(".lora_b")
}

/// The recipe model's LoRA scale alpha / r, when it has adapters.
pub fn scale_of(section: &ModelSection) -> Option<f64> {
    let lora = match section {
        ModelSection::Bert(o) => o.lora.as_ref(),
        ModelSection::Gpt2(o) => o.lora.as_ref(),
        _ => None,
    }?;
    Some(lora.config().scale())
}

/// With LoRA, `model` with every parameter but the adapters and the task head frozen (no
/// gradient, so no optimiser state): a BERT's head is what lies outside its encoder `bert.`
/// (classifier, CRF, MLM and sentence heads); a GPT-2's LM head is its tied token embedding,
/// which stays frozen, so only the adapters train. Without LoRA, `model` unchanged.
pub fn freeze_base<M: Module>(section: &ModelSection, model: M) -> M {
    match section {
        ModelSection::Bert(o) if o.lora.is_some() => {
            freeze_where(model, |p| p.starts_with("bert.") && !is_adapter(p))
        }
        ModelSection::Gpt2(o) if o.lora.is_some() => freeze_where(model, |p| !is_adapter(p)),
        _ => model,
    }
}

/// "trainable: X of Y parameters (Z%)", PEFT's `print_trainable_parameters`.
pub fn trainable_line<M: Module>(model: &M) -> String {
    let (trainable, all) = (trainable_params(model), model.num_params());
    format!(
        "trainable: {trainable} of {all} parameters ({:.2}%)",
        100.0 * trainable as f64 / all.max(1) as f64
    )
}

/// Fold every `X.lora_a`/`X.lora_b` pair into `X.weight` (`W + scale * A B`) and drop them;
/// returns how many layers were merged.
pub fn merge_adapters(tensors: &mut BTreeMap<String, HfTensor>, scale: f64) -> Result<usize> {
    let layers: Vec<String> = (tensors.keys())
        .filter_map(|name| name.strip_suffix(".lora_a").map(str::to_string))
        .collect();
    for layer in &layers {
        let missing = |what: &str| Error::Data(format!("LoRA layer `{layer}` has no `{what}`"));
        let a = (tensors.remove(&format!("{layer}.lora_a"))).ok_or_else(|| missing("lora_a"))?;
        let b = (tensors.remove(&format!("{layer}.lora_b"))).ok_or_else(|| missing("lora_b"))?;
        let w = (tensors.get_mut(&format!("{layer}.weight"))).ok_or_else(|| missing("weight"))?;
        let (&[d_in, rank], &[rank_b, d_out]) = (a.shape.as_slice(), b.shape.as_slice()) else {
            return Err(Error::Data(format!(
                "LoRA layer `{layer}`: adapters not 2-D"
            )));
        };
        if rank != rank_b || w.shape != [d_in, d_out] {
            return Err(Error::Data(format!(
                "LoRA layer `{layer}`: A {:?}, B {:?} do not fit its weight {:?}",
                a.shape, b.shape, w.shape
            )));
        }
        for i in 0..d_in {
            let row = &mut w.values[i * d_out..(i + 1) * d_out];
            for k in 0..rank {
                let factor = (scale * a.values[i * rank + k] as f64) as f32;
                let b_row = &b.values[k * d_out..(k + 1) * d_out];
                for (w, b) in row.iter_mut().zip(b_row) {
                    *w += factor * b;
                }
            }
        }
    }
    if let Some(orphan) = tensors.keys().find(|n| n.ends_with(".lora_b")) {
        return Err(Error::Data(format!("`{orphan}` has no `lora_a` beside it")));
    }
    Ok(layers.len())
}

/// A checkpoint file's bytes with its adapters merged (`origin` names it in errors), its
/// metadata kept and [`MERGED_KEY`] added.
pub fn merged_file(bytes: &[u8], scale: f64, origin: &str) -> Result<Vec<u8>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Data(format!("cannot read {origin}: {e}")))?;
    let mut metadata: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    let mut tensors = crate::hf::parse_safetensors(bytes, origin)?;
    merge_adapters(&mut tensors, scale)?;
    metadata.insert(MERGED_KEY.into(), "merged".into());
    Ok(crate::hf::serialize(&tensors, Some(metadata)))
}

/// Whether the safetensors file at `path` has merged adapters (only its header is read).
pub fn file_is_merged(path: &std::path::Path) -> Result<bool> {
    use crate::error::IoContext;
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_path("open", path)?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).with_path("read", path)?;
    let length = u64::from_le_bytes(length).min(100 << 20) as usize;
    let mut header = vec![0u8; length];
    file.read_exact(&mut header).with_path("read", path)?;
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap_or_default();
    Ok(header["__metadata__"][MERGED_KEY] == "merged")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::bert::{BertHead, BertInput, BertOptions};
    use crate::models::gpt2::Gpt2Options;
    use crate::models::lora::LoraOptions;
    use crate::recipe::ModelOptions;
    use burn::module::{ModuleMapper, Param};
    use burn::prelude::*;
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    use burn::tensor::Distribution;

    fn lora(rank: usize, target: &[&str]) -> Option<LoraOptions> {
        Some(LoraOptions {
            rank,
            alpha: 6.0,
            dropout: 0.0,
            target: Some(target.iter().map(|t| t.to_string()).collect()),
        })
    }

    fn bert(lora: Option<LoraOptions>) -> BertOptions {
        let mut o = BertOptions {
            head: BertHead::SequenceClassification,
            n_layer: Some(2),
            n_head: Some(2),
            width: Some(8),
            ffn_width: Some(12),
            max_len: Some(10),
            dropout: Some(0.0),
            vocab_size: Some(20),
            labels: Some(vec!["a".into(), "b".into(), "c".into()]),
            lora,
            ..BertOptions::default()
        };
        o.resolve().unwrap();
        o
    }

    fn gpt2(lora: Option<LoraOptions>) -> Gpt2Options {
        let mut o = Gpt2Options {
            n_layer: Some(2),
            n_head: Some(2),
            n_embd: Some(8),
            block_size: Some(8),
            vocab_size: Some(11),
            lora,
            ..Gpt2Options::default()
        };
        o.resolve().unwrap();
        o
    }

    /// Every `lora_b` (zero at the start) drawn at random, so the adapters change the output.
    fn random_adapters<M: Module>(model: M) -> M {
        struct Draw(Vec<String>);
        impl ModuleMapper for Draw {
            fn enter_module(&mut self, name: &str, _container: &str) {
                self.0.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container: &str) {
                self.0.pop();
            }
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                match self.0.last().is_some_and(|n| n == "lora_b") {
                    true => p.map(|t| {
                        Tensor::random(t.shape(), Distribution::Normal(0.0, 0.5), &t.device())
                    }),
                    false => p,
                }
            }
        }
        model.map(&mut Draw(Vec::new()))
    }

    fn tensors_of<M: ModuleSnapshot>(model: &M) -> BTreeMap<String, HfTensor> {
        let mut store = SafetensorsStore::from_bytes(None);
        model.save_into(&mut store).unwrap();
        crate::hf::parse_safetensors(&store.get_bytes().unwrap(), "model").unwrap()
    }

    fn loaded<M: ModuleSnapshot + Module>(mut model: M, t: &BTreeMap<String, HfTensor>) -> M {
        let mut store = SafetensorsStore::from_bytes(Some(crate::hf::to_safetensors(t)));
        let result = model.load_from(&mut store).unwrap();
        assert!(
            result.missing.is_empty() && result.unused.is_empty(),
            "{result}"
        );
        model
    }

    fn largest_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// `W + alpha/r * A B` in a model without adapters computes what the adapted model does.
    #[test]
    fn merged_weights_give_the_adapted_models_outputs() {
        let device = Device::flex();
        let _generator = crate::rng::seeded_for_test(&device, 5);
        let all = lora(3, &["all"]);
        let scale = all.as_ref().unwrap().config().scale();

        let adapted = random_adapters(bert(all.clone()).config().unwrap().init_classifier(&device));
        let mut tensors = tensors_of(&adapted);
        assert_eq!(merge_adapters(&mut tensors, scale).unwrap(), 2 * 4);
        assert!(!tensors.keys().any(|n| is_adapter(n)));
        let plain = bert(None).config().unwrap().init_classifier(&device);
        let merged = loaded(plain, &tensors);
        let input = || BertInput {
            ids: Tensor::from_data([[2, 5, 7, 1, 0], [2, 9, 3, 4, 1]], &device),
            segments: Tensor::zeros([2, 5], &device),
            padding: Tensor::from_data([[false, false, false, false, true]; 2], &device),
        };
        // The encoder's hidden states: the logits of tiny N(0, 0.02) heads hardly move.
        let (a, m) = (adapted.bert.forward(input()), merged.bert.forward(input()));
        let base = loaded(
            bert(all.clone()).config().unwrap().init_classifier(&device),
            &{
                let mut t = tensors_of(&adapted);
                t.iter_mut()
                    .filter(|(n, _)| n.ends_with("lora_b"))
                    .for_each(|(_, t)| t.values.fill(0.0));
                t
            },
        );
        // The adapters matter (else the comparison proves nothing), and merging keeps them.
        assert!(largest_difference(a.clone(), base.bert.forward(input())) > 0.1);
        let difference = largest_difference(a, m);
        assert!(difference < 1e-5, "bert: {difference}");

        let adapted = random_adapters(gpt2(all).config().unwrap().init(&device));
        let mut tensors = tensors_of(&adapted);
        assert_eq!(merge_adapters(&mut tensors, scale).unwrap(), 2 * 4);
        let merged = loaded(gpt2(None).config().unwrap().init(&device), &tensors);
        let tokens = || Tensor::<2, Int>::from_data([[1, 4, 2, 7, 3, 9]], &device);
        let difference = largest_difference(adapted.forward(tokens()), merged.forward(tokens()));
        assert!(difference < 1e-5, "gpt2: {difference}");
    }

    /// Only the adapters (r (d_in + d_out) each) and the head train.
    #[test]
    fn trainable_parameters_are_the_adapters_and_the_head() {
        let device = Device::flex().autodiff();
        let r = 3;
        let options = bert(lora(r, &["all"]));
        let model = options.config().unwrap().init_classifier(&device);
        let model = freeze_base(&ModelSection::Bert(options), model);
        // Per layer: qkv 8 -> 24, out 8 -> 8, ffn_in 8 -> 12, ffn_out 12 -> 8; the classifier
        // 8 -> 3 with its bias.
        let adapters = 2 * r * ((8 + 24) + (8 + 8) + (8 + 12) + (12 + 8));
        assert_eq!(trainable_params(&model), adapters + 8 * 3 + 3);

        let options = gpt2(lora(r, &["c_attn", "mlp.c_proj"]));
        let model = options.config().unwrap().init(&device);
        let model = freeze_base(&ModelSection::Gpt2(options), model);
        let adapters = 2 * r * ((8 + 24) + (32 + 8));
        assert_eq!(trainable_params(&model), adapters);
        assert!(trainable_line(&model).starts_with(&format!("trainable: {adapters} of ")));
    }
}
