//! How an architecture's tensors correspond between HF and nlpkit, as one list of rules read in
//! both directions: [`import`] turns a checkpoint's tensors into nlpkit's, [`export`] turns
//! nlpkit's back, so the two cannot drift apart.
//!
//! The layouts differ in two ways: HF's `nn.Linear` weights are `[out, in]` where Burn's are
//! `[in, out]`, and HF's BERT keeps the query, key and value projections apart where nlpkit has
//! one fused projection (`[q | k | v]` on the output side, heads contiguous within each, as HF
//! splits them).

use super::HfTensor;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// One correspondence between HF's tensors and one of nlpkit's.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// The same tensor; `transpose` for an `nn.Linear` weight.
    Same {
        hf: String,
        ours: String,
        transpose: bool,
    },
    /// HF's query, key and value projections (weights when `weight`, else biases), nlpkit's
    /// fused one.
    Fused {
        hf: [String; 3],
        ours: String,
        weight: bool,
    },
}

impl Rule {
    pub fn same(hf: impl Into<String>, ours: impl Into<String>) -> Self {
        Rule::Same {
            hf: hf.into(),
            ours: ours.into(),
            transpose: false,
        }
    }

    pub fn transposed(hf: impl Into<String>, ours: impl Into<String>) -> Self {
        Rule::Same {
            hf: hf.into(),
            ours: ours.into(),
            transpose: true,
        }
    }

    fn hf_names(&self) -> Vec<&str> {
        match self {
            Rule::Same { hf, .. } => vec![hf],
            Rule::Fused { hf, .. } => hf.iter().map(String::as_str).collect(),
        }
    }

    pub fn ours_name(&self) -> &str {
        match self {
            Rule::Same { ours, .. } | Rule::Fused { ours, .. } => ours,
        }
    }

    /// The rank every tensor of the rule has on HF's side.
    fn hf_rank(&self) -> usize {
        match self {
            Rule::Same { transpose, .. } => {
                if *transpose {
                    2
                } else {
                    0 // any: embeddings are 2-D, vectors 1-D, both copied as they are
                }
            }
            Rule::Fused { weight, .. } => {
                if *weight {
                    2
                } else {
                    1
                }
            }
        }
    }
}

/// A `Linear` layer's weight and bias.
pub fn linear(rules: &mut Vec<Rule>, hf: &str, ours: &str) {
    rules.push(Rule::transposed(
        format!("{hf}.weight"),
        format!("{ours}.weight"),
    ));
    rules.push(Rule::same(format!("{hf}.bias"), format!("{ours}.bias")));
}

/// A `LayerNorm`'s scale and shift (Burn names them `gamma` and `beta`).
pub fn layer_norm(rules: &mut Vec<Rule>, hf: &str, ours: &str) {
    rules.push(Rule::same(format!("{hf}.weight"), format!("{ours}.gamma")));
    rules.push(Rule::same(format!("{hf}.bias"), format!("{ours}.beta")));
}

/// The tensors the rules give nlpkit, and the names of the checkpoint's tensors no rule took.
/// A rule whose tensors the checkpoint lacks is skipped: the caller decides which of nlpkit's
/// tensors must have been given.
pub fn import(
    rules: &[Rule],
    mut hf: BTreeMap<String, HfTensor>,
) -> Result<(BTreeMap<String, HfTensor>, Vec<String>)> {
    let mut ours = BTreeMap::new();
    for rule in rules {
        let names = rule.hf_names();
        let Some(found) = names
            .iter()
            .map(|n| present_name(&hf, n))
            .collect::<Option<Vec<String>>>()
        else {
            continue;
        };
        let tensors: Vec<HfTensor> = found
            .iter()
            .map(|n| hf.remove(n).expect("present"))
            .collect();
        for (name, tensor) in names.iter().zip(&tensors) {
            let rank = rule.hf_rank();
            if rank > 0 && tensor.shape.len() != rank {
                return Err(Error::Data(format!(
                    "tensor `{name}` has shape {:?}; a {rank}-D tensor was expected",
                    tensor.shape
                )));
            }
        }
        let tensor = match rule {
            Rule::Same { transpose, .. } => {
                let tensor = tensors.into_iter().next().expect("one");
                if *transpose {
                    transpose_matrix(&tensor)
                } else {
                    tensor
                }
            }
            Rule::Fused { weight, .. } => {
                if tensors.iter().any(|t| t.shape != tensors[0].shape) {
                    let shapes: Vec<_> = tensors.iter().map(|t| t.shape.clone()).collect();
                    return Err(Error::Data(format!(
                        "`{}`, `{}` and `{}` differ in shape ({shapes:?})",
                        names[0], names[1], names[2]
                    )));
                }
                if *weight {
                    let transposed: Vec<HfTensor> = tensors.iter().map(transpose_matrix).collect();
                    concat_columns(&transposed)
                } else {
                    concat_vectors(&tensors)
                }
            }
        };
        ours.insert(rule.ours_name().to_string(), tensor);
    }
    Ok((ours, hf.into_keys().collect()))
}

/// The name `name` has in the checkpoint: itself, or, for a LayerNorm parameter of an old
/// checkpoint, `gamma`/`beta`.
fn present_name(hf: &BTreeMap<String, HfTensor>, name: &str) -> Option<String> {
    let old = name
        .replace("LayerNorm.weight", "LayerNorm.gamma")
        .replace("LayerNorm.bias", "LayerNorm.beta");
    [name.to_string(), old]
        .into_iter()
        .find(|n| hf.contains_key(n))
}

/// HF's tensors from nlpkit's by the same rules; every rule's tensor must be there.
pub fn export(
    rules: &[Rule],
    ours: &BTreeMap<String, HfTensor>,
) -> Result<BTreeMap<String, HfTensor>> {
    let mut hf = BTreeMap::new();
    for rule in rules {
        let name = rule.ours_name();
        let tensor = ours
            .get(name)
            .ok_or_else(|| Error::Data(format!("the checkpoint has no tensor `{name}`")))?;
        match rule {
            Rule::Same {
                hf: to, transpose, ..
            } => {
                let tensor = if *transpose {
                    transpose_matrix(tensor)
                } else {
                    tensor.clone()
                };
                hf.insert(to.clone(), tensor);
            }
            Rule::Fused { hf: to, weight, .. } => {
                let parts = if *weight {
                    split_columns(tensor, 3)
                        .iter()
                        .map(transpose_matrix)
                        .collect()
                } else {
                    split_vector(tensor, 3)
                };
                for (name, part) in to.iter().zip(parts) {
                    hf.insert(name.clone(), part);
                }
            }
        }
    }
    Ok(hf)
}

/// A `[rows, columns]` matrix transposed.
pub fn transpose_matrix(t: &HfTensor) -> HfTensor {
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

/// The inverse of [`concat_columns`] for `n` equal parts.
fn split_columns(t: &HfTensor, n: usize) -> Vec<HfTensor> {
    let (rows, columns) = (t.shape[0], t.shape[1]);
    let part = columns / n;
    (0..n)
        .map(|i| HfTensor {
            shape: vec![rows, part],
            values: (0..rows)
                .flat_map(|r| {
                    let start = r * columns + i * part;
                    t.values[start..start + part].iter().copied()
                })
                .collect(),
        })
        .collect()
}

fn concat_vectors(parts: &[HfTensor]) -> HfTensor {
    let values: Vec<f32> = parts
        .iter()
        .flat_map(|p| p.values.iter().copied())
        .collect();
    HfTensor {
        shape: vec![values.len()],
        values,
    }
}

fn split_vector(t: &HfTensor, n: usize) -> Vec<HfTensor> {
    t.values
        .chunks(t.values.len() / n)
        .map(|c| HfTensor {
            shape: vec![c.len()],
            values: c.to_vec(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, columns: usize, first: f32) -> HfTensor {
        HfTensor {
            shape: vec![rows, columns],
            values: (0..rows * columns).map(|i| first + i as f32).collect(),
        }
    }

    #[test]
    fn transposes_and_side_by_side_concatenation_keep_every_value_in_place() {
        let a = matrix(2, 3, 0.0);
        let t = transpose_matrix(&a);
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.values, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let joined = concat_columns(&[matrix(2, 1, 10.0), matrix(2, 1, 20.0)]);
        assert_eq!(joined.shape, [2, 2]);
        assert_eq!(joined.values, [10.0, 20.0, 11.0, 21.0]);
        assert_eq!(
            split_columns(&joined, 2),
            [matrix(2, 1, 10.0), matrix(2, 1, 20.0)]
        );
    }

    /// Export undoes import, rule by rule, and import takes the old `gamma`/`beta` names.
    #[test]
    fn export_gives_back_what_import_took() {
        let names = |p: &str| ["query", "key", "value"].map(|s| format!("{p}.{s}"));
        let rules = vec![
            Rule::Fused {
                hf: names("w"),
                ours: "qkv.weight".into(),
                weight: true,
            },
            Rule::Fused {
                hf: names("b"),
                ours: "qkv.bias".into(),
                weight: false,
            },
            Rule::transposed("dense.weight", "out.weight"),
            Rule::same("LayerNorm.weight", "norm.gamma"),
        ];
        let mut hf = BTreeMap::new();
        for (i, name) in names("w").iter().enumerate() {
            hf.insert(name.clone(), matrix(2, 3, 10.0 * i as f32));
        }
        for (i, name) in names("b").iter().enumerate() {
            hf.insert(name.clone(), matrix(1, 2, 5.0 * i as f32));
            hf.get_mut(name).unwrap().shape = vec![2];
        }
        hf.insert("dense.weight".into(), matrix(4, 2, 0.0));
        hf.insert("LayerNorm.gamma".into(), matrix(1, 4, 0.0));
        hf.insert("extra".into(), matrix(1, 1, 0.0));
        let (ours, unused) = import(&rules, hf.clone()).unwrap();
        assert_eq!(unused, ["extra"]);
        assert_eq!(ours["qkv.weight"].shape, [3, 6]);
        assert_eq!(ours["out.weight"].shape, [2, 4]);
        let back = export(&rules, &ours).unwrap();
        hf.remove("extra");
        let gamma = hf.remove("LayerNorm.gamma").unwrap();
        hf.insert("LayerNorm.weight".into(), gamma);
        assert_eq!(back, hf);
    }
}
